"""Reading untrusted input files at bounded memory, with a clear message for each way they can be bad.

Every task reads what users give it (`arbench score` samples, lists, references) through these helpers,
before a run row exists:

* only regular files are opened: a FIFO, a device (`/dev/zero`), a socket or a folder is refused from
  `os.stat`, so nothing ever blocks on a pipe or reads an endless device;
* text is read up to a cap;
* `.npz` members are judged by their headers first: each `.npy` header (shape, dtype, no pickles) and the
  zip's declared sizes are checked against what the protocol expects before any data is read, so a member
  declaring 10^12 elements or a zip bomb is refused from a few hundred bytes; a member whose body is
  shorter than its header says is refused as truncated;
* images are opened under a pixel cap (PIL's `DecompressionBombError` is not an `OSError`) and decoded
  once, so a truncated PNG/JPEG in a folder is found before scoring;
* audio durations come from the file header and are capped.

A protocol declares its limits as `caps` (an `InputCaps`) on its task class; messages name the cap.

The parsing is NumPy's (`numpy.lib.format`), zipfile's, Pillow's and libsndfile's; what is written here is only
the order of the checks (headers and declared sizes before data) and the caps, which no library applies for us
(`np.load` reads a member whole before its shape can be judged).
"""

from __future__ import annotations

import math
import os
import stat
import struct
import warnings
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from harness.errors import InputError

MiB = 2**20
GiB = 2**30


@dataclass(frozen=True)
class InputCaps:
    """Limits a protocol puts on the files it reads (declared as `caps` on the task class)."""

    #: Any one text file (hypotheses, lists, labels, prompts).
    text_bytes: int = 64 * MiB
    #: Any one image whose size the protocol does not fix (a fixed size is checked exactly).
    image_pixels: int = 4096 * 4096
    #: Any one audio file, from its header.
    audio_seconds: float = 600.0
    #: A compressed `.npz` member is decompressed into memory (a stored one is memory-mapped).
    in_memory_bytes: int = 4 * GiB

    def describe(self, name: str, owner: str = "") -> str:
        """How a message names a cap: `text_bytes = 64 MiB (the caps of task 'x')`."""
        value = getattr(self, name)
        shown = (f"{value / MiB:g} MiB" if name.endswith("bytes") else
                 f"{value:g} s" if name.endswith("seconds") else f"{value:,} pixels")
        where = f"the caps of {owner}" if owner else "harness.inputs.InputCaps"
        return f"{name} = {shown} ({where}; a protocol that needs more declares larger caps)"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def regular_file(path: str | Path, what: str = "input") -> os.stat_result:
    """`os.stat` of `path` if it is a regular file (symlinks followed); InputError otherwise. Never opens it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"the {what} file {path} does not exist.") from None
    except OSError as exc:
        raise InputError(f"cannot read the {what} file {path} ({exc.strerror}).") from exc
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"the {what} {path} is {_kind(info.st_mode)}, not a regular file: give a file "
                         f"(ARBench does not read pipes, devices or sockets).")
    return info


@contextmanager
def open_regular(path: str | Path, what: str = "input") -> Iterator:
    """A binary file object for a regular file, opened without blocking (checked again after opening)."""
    regular_file(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(f"cannot open the {what} file {path} ({exc.strerror}).") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between stat and open
        os.close(fd)
        raise InputError(f"the {what} {path} is not a regular file.")
    with os.fdopen(fd, "rb") as handle:
        yield handle


def read_bytes(path: str | Path, what: str, caps: InputCaps = InputCaps(), owner: str = "") -> bytes:
    """The whole of a regular file of at most `caps.text_bytes` bytes."""
    cap = caps.text_bytes
    size = regular_file(path, what).st_size
    if size > cap:
        raise InputError(f"the {what} file {path} is {size / MiB:.1f} MiB, over the cap {caps.describe('text_bytes', owner)}. "
                         f"Is it the right file?")
    with open_regular(path, what) as handle:
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise InputError(f"the {what} file {path} grew past the cap {caps.describe('text_bytes', owner)} while read.")
    return data


def read_text(path: str | Path, what: str, caps: InputCaps = InputCaps(), owner: str = "") -> str:
    """A UTF-8 text file (a BOM is dropped) under the text cap; other encodings are refused with the line."""
    data = read_bytes(path, what, caps, owner)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(f"the {what} file {path} is not UTF-8 (line {line}, byte {exc.start}). Convert it, e.g. "
                         f"`iconv -f latin1 -t utf-8 {Path(path).name} > fixed.txt`.") from exc


# -- .npz members ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NpyMember:
    """One `.npy` member of an `.npz`, known from its headers only."""

    path: Path
    name: str  # the key, without ".npy"
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    header_bytes: int  # where the array data starts inside the member

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize

    @property
    def stored(self) -> bool:
        return self.info.compress_type == zipfile.ZIP_STORED


def read_npy_header(stream) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of a .npy stream, leaving it at the start of the data."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)
    raise ValueError(f"unsupported .npy format version {version}")


def open_npz(path: Path, what: str = "samples") -> zipfile.ZipFile:
    """An `.npz` opened as a zip (a regular file only); InputError for anything else."""
    regular_file(path, what)
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path} is not a readable .npz file ({exc}). Write it with np.savez(path, arr_0=...).") from exc


def npz_members(path: Path, what: str = "samples") -> dict[str, NpyMember]:
    """Every `.npy` member of an `.npz`, from headers only: the array header of each is parsed, pickled
    (object) arrays are refused, and each member's size declared in the zip must be exactly its header plus
    the data its header declares (else it is truncated or padded). Nothing beyond the headers is read."""
    size = regular_file(path, what).st_size
    members: dict[str, NpyMember] = {}
    with open_npz(path, what) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[:-4]
            try:
                with archive.open(info) as stream:
                    shape, fortran, dtype = read_npy_header(stream)
                    header_bytes = stream.tell()
            except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error, struct.error,
                    NotImplementedError, SyntaxError) as exc:
                raise InputError(f"{path}: member {name} is not a readable NumPy array ({exc}).") from exc
            if dtype.hasobject:
                raise InputError(f"{path}: {name} is an object (pickled) array; refusing to unpickle it. "
                                 f"Save plain numeric arrays with np.savez.")
            member = NpyMember(path, name, info, tuple(int(d) for d in shape), dtype, bool(fortran), header_bytes)
            declared = header_bytes + member.nbytes
            if info.file_size != declared:
                raise InputError(f"{path}: member {name} declares an array of shape {member.shape} ({dtype}, "
                                 f"{declared:,} bytes with its header) but the archive holds {info.file_size:,} "
                                 f"bytes for it: the file is truncated or corrupt; write it again.")
            if member.stored and _data_offset(path, info) + info.compress_size > size:
                raise InputError(f"{path}: member {name} is cut off (the file ends inside its data): the file is "
                                 f"truncated; write or copy it again.")
            members[name] = member
    return members


def _data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where a member's bytes start in the archive (after its local header, whose extra field may differ
    from the central directory's)."""
    with open_regular(path) as handle:
        handle.seek(info.header_offset)
        header = handle.read(zipfile.sizeFileHeader)
    if len(header) != zipfile.sizeFileHeader or header[:4] != zipfile.stringFileHeader:
        raise InputError(f"{path}: the zip header of {info.filename} is damaged; write the file again.")
    fields = struct.unpack(zipfile.structFileHeader, header)
    return (info.header_offset + zipfile.sizeFileHeader + fields[zipfile._FH_FILENAME_LENGTH]
            + fields[zipfile._FH_EXTRA_FIELD_LENGTH])


def verify_member(member: NpyMember) -> None:
    """Read a compressed member through once (1 MiB at a time) so that a truncated or corrupt body is found
    now (zip's CRC and length checks), not halfway through scoring. Stored members were checked by size."""
    if member.stored:
        return
    try:
        with zipfile.ZipFile(member.path) as archive, archive.open(member.info) as stream:
            while stream.read(MiB):
                pass
    except (EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
        raise InputError(f"{member.path}: member {member.name} is truncated or corrupt ({exc}); write it again.") from exc


def load_member(member: NpyMember, caps: InputCaps = InputCaps(), owner: str = "") -> np.ndarray:
    """The member's array: memory-mapped when stored uncompressed (np.savez), else read into memory under
    `caps.in_memory_bytes` (np.savez_compressed)."""
    if member.fortran_order:
        raise InputError(f"{member.path}: {member.name} is Fortran-ordered; save np.ascontiguousarray(x) instead.")
    if member.stored:
        if member.count == 0:
            return np.empty(member.shape, member.dtype)
        offset = _data_offset(member.path, member.info) + member.header_bytes
        return np.memmap(member.path, dtype=member.dtype, mode="r", offset=offset, shape=member.shape)
    if member.nbytes > caps.in_memory_bytes:
        raise InputError(f"{member.path}: {member.name} is compressed and {member.nbytes / GiB:.1f} GiB unpacked, over "
                         f"the cap {caps.describe('in_memory_bytes', owner)}. Save it uncompressed (np.savez, "
                         f"which is read memory-mapped) or as .npy.")
    verify_member(member)
    with zipfile.ZipFile(member.path) as archive, archive.open(member.info) as stream:
        read_npy_header(stream)
        data = stream.read(member.nbytes)
    return np.frombuffer(data, dtype=member.dtype).reshape(member.shape)


def npy_header(path: Path, what: str = "samples") -> tuple[tuple[int, ...], bool, np.dtype]:
    """The header of a `.npy` file, checked against the file's size (a truncated file is refused)."""
    size = regular_file(path, what).st_size
    try:
        with open_regular(path, what) as handle:
            shape, fortran, dtype = read_npy_header(handle)
            start = handle.tell()
    except (ValueError, EOFError, OSError, struct.error, SyntaxError) as exc:
        raise InputError(f"{path} is not a readable .npy file ({exc}); save it with np.save.") from exc
    if dtype.hasobject:
        raise InputError(f"{path} is an object (pickled) array, not a plain NumPy array; refusing to unpickle it. Save a numeric array.")
    if start + math.prod(shape) * dtype.itemsize != size:
        raise InputError(f"{path} declares an array of shape {tuple(shape)} ({dtype}) but is {size:,} bytes long: "
                         f"the file is truncated or corrupt; write it again.")
    return tuple(int(d) for d in shape), bool(fortran), dtype


# -- images -----------------------------------------------------------------------------------------
def decode_image(path: Path, caps: InputCaps = InputCaps(), owner: str = "",
                 size: tuple[int, int] | None = None) -> str:
    """Open and fully decode one image under the pixel cap (or exactly `size` = (width, height)); returns
    its mode. Bombs, truncated and undecodable files are InputErrors."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_regular(path, "image") as handle, Image.open(handle) as image:
                width, height = image.size
                if size is not None and (width, height) != size:
                    raise InputError(f"{path} is {width}x{height}; this protocol scores {size[0]}x{size[1]}.")
                if width * height > caps.image_pixels:
                    raise InputError(f"{path} is {width}x{height} pixels, over the cap "
                                     f"{caps.describe('image_pixels', owner)}.")
                image.load()  # decode every pixel: truncated data fails here, not while scoring
                return image.mode
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{path} declares more pixels than any protocol scores ({exc}).") from exc
    except InputError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, MemoryError) as exc:
        raise InputError(f"{path} is not a readable PNG/JPEG image ({exc}); re-save it as PNG.") from exc


# -- audio ------------------------------------------------------------------------------------------
def audio_duration(path: Path, caps: InputCaps = InputCaps(), owner: str = "", what: str = "audio",
                   unreadable_ok: bool = False) -> float | None:
    """Seconds of audio from the file header only; InputError for a file that is not regular or over
    `caps.audio_seconds`, and for an unreadable one unless `unreadable_ok` (then None)."""
    import soundfile as sf

    regular_file(path, what)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError, TypeError)
        if unreadable_ok:
            return None
        raise InputError(f"the {what} file {path} is not readable audio ({type(exc).__name__}: {str(exc)[:120]}).") from exc
    seconds = info.frames / info.samplerate if info.samplerate else math.inf
    if seconds > caps.audio_seconds:
        raise InputError(f"the {what} file {path} is {seconds:,.0f} s long (from its header), over the cap "
                         f"{caps.describe('audio_seconds', owner)}. Trim it or check that it is the right file.")
    return seconds
