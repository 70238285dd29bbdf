"""Image sample sets for the class-to-image tasks: ADM-format `.npz` batches, PNG/JPEG folders and
generated shards, validated up front and read in chunks (a 50k x 256 x 256 x 3 batch is 9.8 GB).

ADM's format: an `.npz` whose `arr_0` is uint8 NHWC RGB; labels, where given, are `arr_1` (or `labels`)
of integers. Every member's header and declared size are checked against the protocol before any data is
read (`harness.inputs.npz_members`), labels only once their shape is right; the images are streamed out of
the zip member as ADM's `StreamingNpzArrayReader` does, so memory stays at one chunk. A folder's images are
each decoded once up front (truncated files are found before a run is stored).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np

from harness.api import Request, Task
from harness.errors import InputError
from harness.inputs import (InputCaps, NpyMember, decode_image, load_member, npz_members, read_npy_header, regular_file,
                            verify_member)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABEL_KEYS = ("arr_1", "labels")


@dataclass(frozen=True)
class ArraySource:
    """One array: in memory, memory-mapped, or a member of an npz read in chunks."""

    path: Path
    member: str | None  # npz member name, or None for an in-memory / .npy array
    shape: tuple[int, ...]
    dtype: np.dtype
    array: np.ndarray | None = None

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        if self.array is not None:
            for start in range(0, self.shape[0], size):
                yield np.asarray(self.array[start:start + size])
            return
        row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        with zipfile.ZipFile(self.path) as archive, archive.open(self.member) as stream:
            read_npy_header(stream)  # already validated; skip it
            for start in range(0, self.shape[0], size):
                rows = min(size, self.shape[0] - start)
                data = stream.read(rows * row_bytes)
                if len(data) != rows * row_bytes:
                    raise InputError(f"{self.path} is truncated: {self.member} ends before image {start + rows}.")
                yield np.frombuffer(data, dtype=self.dtype).reshape(rows, *self.shape[1:])


@dataclass
class ImageSamples:
    """Validated images (uint8 NHWC RGB), their count, optional labels, and where they came from."""

    sources: Sequence[ArraySource | list[Path]]
    count: int
    height: int
    width: int
    labels: np.ndarray | None
    origin: str

    def chunks(self, size: int = 256) -> Iterator[np.ndarray]:
        """The images in order, `size` at a time (the last chunk of each source may be shorter)."""
        for source in self.sources:
            if isinstance(source, ArraySource):
                yield from source.chunks(size)
            else:
                for start in range(0, len(source), size):
                    yield np.stack([_read_image(p) for p in source[start:start + size]])

    def array(self) -> np.ndarray:
        """All images in memory (for small sets)."""
        return np.concatenate(list(self.chunks()))


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except OSError as exc:
        raise InputError(f"{path} cannot be decoded ({exc}); re-save it as PNG.") from exc


def read_labels(path: Path, member: NpyMember, count: int, caps: InputCaps = InputCaps()) -> np.ndarray:
    """The labels member, once its header shows one integer per image (nothing is read before)."""
    if member.dtype.kind not in "iu" or len(member.shape) != 1:
        raise InputError(f"{path}: labels ({member.name}) must be a 1-D integer array; got {member.dtype} {member.shape}.")
    if member.shape != (count,):
        raise InputError(f"{path}: {member.shape[0]:,} labels for {count} images; give one label per image.")
    return np.asarray(load_member(member, caps), dtype=np.int64)


def load_image_samples(path: Path, expected_count: int, image_size: int, num_classes: int,
                       caps: InputCaps = InputCaps()) -> ImageSamples:
    """Open and fully validate samples (npz or folder) before anything is scored.

    Checks: format, dtype uint8, NHWC with 3 channels, `image_size` square, exactly `expected_count`
    images, and for labels: integers in [0, num_classes) with exactly expected_count / num_classes each.
    An npz is judged from its headers (and a compressed member read through once); every image of a
    folder is decoded once.
    """
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{path} holds no {'/'.join(IMAGE_SUFFIXES)} images.")
        _check_count(path, len(files), expected_count)
        _check_folder_images(files, image_size, caps)
        return ImageSamples([files], len(files), image_size, image_size, None, str(path))
    if path.suffix != ".npz":
        regular_file(path, "samples")
        raise InputError(f"{path}: give an ADM-format .npz (arr_0 = uint8 N x H x W x 3) or a folder of PNG/JPEG files.")
    members = npz_members(path)
    if "arr_0" not in members:
        raise InputError(f"{path} has no arr_0 (it has {sorted(members)}). ADM's format keeps the images in "
                         f"arr_0: np.savez(path, arr_0=images).")
    images = members["arr_0"]
    check_image_array_header(path, images.shape, images.dtype, image_size)
    if images.fortran_order:
        raise InputError(f"{path}: arr_0 is Fortran-ordered; save np.ascontiguousarray(images) instead.")
    _check_count(path, images.shape[0], expected_count)
    label_key = next((k for k in LABEL_KEYS if k in members), None)
    labels = read_labels(path, members[label_key], images.shape[0], caps) if label_key else None
    if labels is not None:
        check_labels(path, labels, images.shape[0], num_classes)
    verify_member(images)  # a compressed member is read through once; a stored one was checked by its size
    return ImageSamples([ArraySource(path, "arr_0.npy", images.shape, images.dtype)], images.shape[0],
                        images.shape[1], images.shape[2], labels, str(path))


def check_image_array_header(path, shape: tuple[int, ...], dtype: np.dtype, image_size: int) -> None:
    if dtype != np.uint8:
        hint = " (floats: np.clip(np.round(x * 255), 0, 255).astype(np.uint8))" if dtype.kind == "f" else ""
        raise InputError(f"{path}: images must be uint8 in [0, 255]; got {dtype}{hint}.")
    if len(shape) != 4 or shape[3] != 3:
        raise InputError(f"{path}: images must be NHWC RGB, shape (N, H, W, 3); got {shape}. "
                         f"From NCHW use images.transpose(0, 2, 3, 1).")
    if shape[1:3] != (image_size, image_size):
        raise InputError(f"{path}: images are {shape[1]}x{shape[2]}; this protocol scores {image_size}x{image_size} "
                         f"(resize with the model's own method before saving).")


def _check_count(path: Path, count: int, expected: int) -> None:
    if count != expected:
        raise InputError(f"{path} holds {count} images; the protocol scores exactly {expected}. "
                         f"{'Generate the missing ones' if count < expected else 'Keep the first ' + str(expected)}, "
                         f"or set num_samples to score a different count (a different protocol).")


def check_labels(path, labels: np.ndarray, count: int, num_classes: int) -> None:
    if labels.shape != (count,):
        raise InputError(f"{path}: {labels.shape[0]} labels for {count} images; give one label per image.")
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes:
        raise InputError(f"{path}: labels must lie in [0, {num_classes}); found {labels.min()}..{labels.max()}.")
    per_class = np.bincount(labels, minlength=num_classes)
    want = count // num_classes
    if count % num_classes or (per_class != want).any():
        missing = np.flatnonzero(per_class == 0)
        detail = (f"{len(missing)} classes have no sample (e.g. {missing[:5].tolist()})" if len(missing)
                  else f"counts range {per_class.min()}..{per_class.max()}")
        raise InputError(f"{path}: the protocol needs {want} samples of each of the {num_classes} classes; {detail}.")


def _check_folder_images(files: list[Path], image_size: int, caps: InputCaps = InputCaps()) -> None:
    for file in files:  # each decoded once: a truncated PNG/JPEG is refused before anything is stored
        mode = decode_image(file, caps, size=(image_size, image_size))
        if mode not in ("RGB", "RGBA", "L", "P"):
            raise InputError(f"{file} has mode {mode}; save 8-bit RGB images.")


def write_image_shard(images: np.ndarray, labels: Sequence[int], directory: Path) -> None:
    """A generated shard: images.npy (uint8 NHWC) and labels.npy."""
    np.save(directory / "images.npy", np.ascontiguousarray(images))
    np.save(directory / "labels.npy", np.asarray(labels, dtype=np.int64))


def read_image_shards(shard_dirs: Sequence[Path], image_size: int) -> ImageSamples:
    """Generated shards as one sample set (memory-mapped)."""
    sources, labels = [], []
    for directory in shard_dirs:
        images = np.load(directory / "images.npy", mmap_mode="r", allow_pickle=False)
        check_image_array_header(directory, images.shape, images.dtype, image_size)
        sources.append(ArraySource(directory / "images.npy", None, images.shape, images.dtype, images))
        labels.append(np.load(directory / "labels.npy", allow_pickle=False))
    count = sum(s.shape[0] for s in sources)
    return ImageSamples(sources, count, image_size, image_size, np.concatenate(labels), "generated")


def class_balanced_labels(num_samples: int, num_classes: int) -> list[int]:
    """Request labels: every class num_samples / num_classes times, interleaved (0, 1, ..., C-1, 0, ...),
    so that each contiguous Inception Score split sees every class equally often."""
    if num_classes < 1 or num_samples < 1 or num_samples % num_classes:
        raise InputError(f"num_samples ({num_samples}) must be a positive multiple of num_classes ({num_classes}).")
    return [i % num_classes for i in range(num_samples)]


class ClassToImageTask(Task):
    """The protocol plumbing class-conditional image tasks share: class-balanced requests with their own
    seeds, generated uint8 NHWC images stored as shards, and user samples read from an npz or a folder.
    Subclass configs have `num_samples`, `num_classes`, `image_size` and `seed`."""

    modality = "class-to-image"
    id_digits: ClassVar[int] = 6

    def condition(self, label: int) -> dict[str, Any]:
        return {"label": label}

    def requests(self) -> list[Request]:
        cfg = self.config
        labels = class_balanced_labels(cfg.num_samples, cfg.num_classes)
        return [Request(i, f"{i:0{self.id_digits}d}", cfg.seed * 1_000_003 + i, self.condition(label))
                for i, label in enumerate(labels)]

    def write_shard(self, outputs, requests: Sequence[Request], directory: Path) -> None:
        images = np.asarray(outputs)
        check_image_array_header("generated images", images.shape, images.dtype, self.config.image_size)
        write_image_shard(images, [r.condition["label"] for r in requests], directory)

    def read_generated(self, shard_dirs, requests) -> ImageSamples:
        return read_image_shards(shard_dirs, self.config.image_size)

    def load_samples(self, path: Path) -> ImageSamples:
        return load_image_samples(path, self.config.num_samples, self.config.image_size, self.config.num_classes,
                                  self.caps)
