"""The bad-input corpus (issue #15): each bad file or setting, per input family, through the real command line.

Every case asserts a non-zero exit, a message naming the problem, no traceback, and nothing stored. The files
are tiny: huge sizes are declared in headers (or in sparse files), never written.
"""

from __future__ import annotations

import io
import os
import signal
import struct
import wave
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main

DIGITS = ["--set", "num_samples=10", "--set", "is_splits=2"]  # digits-c2i at 10 samples
N, SIZE = 10, 32


@pytest.fixture
def no_hang():
    """Fail (rather than hang the suite) when a command blocks, e.g. on a FIFO."""
    def expire(*_):
        raise TimeoutError("the command blocked for 60 s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def refused(argv: list[str], message: str, tmp_path: Path, capsys) -> str:
    """Run `arbench argv` in-process against a fresh database; assert the refusal and that nothing is stored."""
    db = tmp_path / "bad-input.db"
    code = main([*argv, "--db", f"sqlite:///{db}"])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert code != 0, output
    assert message in output, output
    assert "Traceback" not in output
    if db.exists():  # a command may open the database; it must hold nothing
        from harness.store import Store
        from harness.submissions import list_submissions

        store = Store(f"sqlite:///{db}")
        assert store.records() == [] and list_submissions(store) == []
    return output


# -- builders ---------------------------------------------------------------------------------------
def npy_bytes(shape: tuple[int, ...], dtype=np.uint8, body: bytes | None = None) -> bytes:
    """A .npy member whose header declares `shape`; `body` (default: all of it, zeros) may be shorter."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                               "shape": shape})
    if body is None:
        body = bytes(int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return out.getvalue() + body


def write_npz(path: Path, members: dict[str, bytes], compress: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compress) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


def images(n: int = N) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def png_bytes(image: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, fmt)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels and holds none."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def image_folder(tmp_path: Path, last: bytes | None = None, fifo: bool = False) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(images(N - 1)):
        (folder / f"{i:03d}.png").write_bytes(png_bytes(image))
    odd = folder / f"{N - 1:03d}.png"
    if fifo:
        os.mkfifo(odd)
    else:
        odd.write_bytes(last)
    return folder


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def sparse(path: Path, size: int, head: bytes = b"") -> Path:
    """A file of `size` bytes that takes no disk space beyond `head`."""
    with open(path, "wb") as handle:
        handle.write(head)
        handle.truncate(size)
    return path


def long_wav(path: Path, seconds: int = 3600, rate: int = 16000) -> Path:
    """A real one-hour 16 kHz PCM16 WAV (sparse: silence that is never written)."""
    frames = seconds * rate
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(b"")
    head = bytearray(out.getvalue())
    struct.pack_into("<I", head, 4, 36 + frames * 2)
    struct.pack_into("<I", head, 40, frames * 2)
    return sparse(path, len(head) + frames * 2, bytes(head))


# -- image samples: npz ------------------------------------------------------------------------------
def score_digits(path: Path) -> list[str]:
    return ["score", "digits-c2i", str(path), *DIGITS, "--no-progress", "--device", "cpu"]


def test_npz_labels_declaring_10_to_the_12_elements(tmp_path, capsys):
    path = write_npz(tmp_path / "s.npz", {"arr_0": npy_bytes((N, SIZE, SIZE, 3)),
                                          "arr_1": npy_bytes((10**12,), np.int64, body=bytes(80))})
    refused(score_digits(path), "member arr_1 declares an array of shape (1000000000000,) (int64", tmp_path, capsys)


def test_npz_zip_bomb_labels_are_refused_from_their_header(tmp_path, capsys):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("arr_0.npy", npy_bytes((N, SIZE, SIZE, 3)))
        with archive.open("arr_1.npy", "w", force_zip64=True) as member:  # 200 MB of zeros in ~200 kB
            member.write(npy_bytes((25_000_000,), np.int64, body=b""))
            zeros = bytes(2**22)
            for _ in range(25_000_000 * 8 // len(zeros)):
                member.write(zeros)
            member.write(bytes(25_000_000 * 8 % len(zeros)))
    assert path.stat().st_size < 2_000_000
    refused(score_digits(path), "25,000,000 labels for 10 images", tmp_path, capsys)


def test_npz_truncated_member_body(tmp_path, capsys):
    body = images().tobytes()[:-100]
    path = write_npz(tmp_path / "s.npz", {"arr_0": npy_bytes((N, SIZE, SIZE, 3), body=body)})
    refused(score_digits(path), "member arr_0 declares an array of shape (10, 32, 32, 3) (uint8", tmp_path, capsys)


def test_npz_cut_short(tmp_path, capsys):
    whole = tmp_path / "whole.npz"
    np.savez(whole, arr_0=images())
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    refused(score_digits(cut), "is not a readable .npz file", tmp_path, capsys)


def test_npz_corrupt_compressed_body(tmp_path, capsys):
    path = tmp_path / "s.npz"
    np.savez_compressed(path, arr_0=images())
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    refused(score_digits(path), "member arr_0 is truncated or corrupt", tmp_path, capsys)


def test_npz_that_is_a_fifo(tmp_path, capsys, no_hang):
    refused(score_digits(fifo(tmp_path / "s.npz")), "is a FIFO (named pipe), not a regular file", tmp_path, capsys)


# -- image samples: folders --------------------------------------------------------------------------
def test_folder_png_declaring_100000_squared_pixels(tmp_path, capsys):
    folder = image_folder(tmp_path, png_header_only(100_000, 100_000))
    refused(score_digits(folder), "declares more pixels than any protocol scores", tmp_path, capsys)


def test_folder_with_one_truncated_png(tmp_path, capsys):
    data = png_bytes(images(1)[0])
    folder = image_folder(tmp_path, data[:len(data) // 2])
    refused(score_digits(folder), "009.png is not a readable PNG/JPEG image", tmp_path, capsys)


def test_folder_with_one_truncated_jpeg(tmp_path, capsys):
    data = png_bytes(images(1)[0], "JPEG")
    folder = image_folder(tmp_path, data[:len(data) // 2])
    refused(score_digits(folder), "009.png is not a readable PNG/JPEG image", tmp_path, capsys)


def test_folder_with_a_fifo_image(tmp_path, capsys, no_hang):
    folder = image_folder(tmp_path, fifo=True)
    refused(score_digits(folder), "is a FIFO (named pipe), not a regular file", tmp_path, capsys)


# -- video samples -----------------------------------------------------------------------------------
def score_video(path: Path) -> list[str]:
    return ["score", "moving-digits-fvd", str(path), "--no-progress", "--device", "cpu"]


def test_video_npz_header_declaring_10_to_the_12_elements(tmp_path, capsys):
    shape = (512, 10**12 // (512 * 32 * 32 * 3), 32, 32, 3)
    path = write_npz(tmp_path / "v.npz", {"videos": npy_bytes(shape, body=bytes(1000))})
    refused(score_video(path), "member videos declares an array of shape (512, 635782, 32, 32, 3)", tmp_path, capsys)


def test_video_npy_truncated(tmp_path, capsys):
    path = tmp_path / "v.npy"
    path.write_bytes(npy_bytes((512, 16, 32, 32, 3), body=bytes(1000)))
    refused(score_video(path), "the file is truncated or corrupt", tmp_path, capsys)


# -- audio -------------------------------------------------------------------------------------------
def test_one_hour_wav_is_refused_from_its_header(tmp_path, capsys):
    folder = tmp_path / "wavs"
    folder.mkdir()
    long_wav(folder / "mini-001.wav")
    refused(["score", "espeak-tts-mini", str(folder), "--no-progress", "--device", "cpu"],
            "is 3,600 s long (from its header), over the cap audio_seconds = 120 s", tmp_path, capsys)


def test_fifo_wav(tmp_path, capsys, no_hang):
    folder = tmp_path / "wavs"
    folder.mkdir()
    fifo(folder / "mini-002.wav")
    refused(["score", "espeak-tts-mini", str(folder), "--no-progress", "--device", "cpu"],
            "is a FIFO (named pipe), not a regular file", tmp_path, capsys)


# -- text --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make,message", [
    (lambda tmp: Path("/dev/zero"), "/dev/zero is a character device, not a regular file"),
    (lambda tmp: fifo(tmp / "hyp.txt"), "is a FIFO (named pipe), not a regular file"),
    (lambda tmp: sparse(tmp / "hyp.txt", 65 * 2**20), "is 65.0 MiB, over the cap text_bytes = 64 MiB"),
])
def test_hypothesis_file(tmp_path, capsys, no_hang, make, message):
    refused(["score", "nat-mini", str(make(tmp_path)), "--no-progress"], message, tmp_path, capsys)


# -- settings and manifests --------------------------------------------------------------------------
@pytest.mark.parametrize("argv,message", [
    (["decoding-speedup-mini", "ar", "temperature=nan"], "temperature=nan: it must be a finite number"),
    (["decoding-speedup-mini", "ar", "temperature=inf"], "temperature=inf: it must be a finite number"),
    (["decoding-speedup-mini", "ar", "top_p=0"], "top_p=0: Input should be greater than 0"),
    (["digits-c2i", "digits-pca-gaussian", "temperature=-1"], "temperature=-1: Input should be greater than or"),
    (["digits-c2i", "digits-pca-gaussian", "num_samples=12.5"],
     "num_samples=12.5: it is an integer setting, and this number has a fractional part"),
    (["digits-c2i", "digits-pca-gaussian", "num_samples=1e12"],
     "num_samples=1e12: Input should be less than or equal to 100000 (digits-c2i scores 10..100,000 samples"),
    (["digits-c2i", "digits-pca-gaussian", "pr_k=5000"], "pr_k must be below num_samples (1000)"),
    (["digits-c2i", "digits-pca-gaussian", "is_splits=5000"], "is_splits=5000 is more than num_samples=1000"),
    (["digits-c2i", "digits-pca-gaussian", "seed=True"], "seed=True: it is an integer setting"),
    (["imagenet256-c2i", "digits-pca-gaussian", "pr_distance_dtype=float64"],
     "pr_distance_dtype=float64: Input should be 'float16' or 'float32'"),
])
def test_bad_settings_are_refused_when_the_run_is_planned(tmp_path, capsys, argv, message):
    task, method, setting = argv
    refused(["run", task, method, "--set", setting, "--no-progress", "--device", "cpu"], message, tmp_path, capsys)


def test_manifest_settings_are_checked_against_their_domain(tmp_path, capsys):
    path = tmp_path / "manifest.toml"
    path.write_text('task = "digits-c2i"\nmethod = "digits-pca-gaussian"\nlicense = "MIT"\n'
                    '[settings]\ntemperature = nan\n[task_settings]\nnum_samples = 12.5\n'
                    '[submitter]\nname = "Jane Doe"\n')
    output = refused(["submit", str(path)], "the manifest is not valid", tmp_path, capsys)
    assert "temperature=nan: it must be a finite number" in output
    assert "num_samples=12.5: it is an integer setting" in output


def test_manifest_that_is_a_fifo(tmp_path, capsys, no_hang):
    refused(["submit", str(fifo(tmp_path / "manifest.toml"))], "no manifest at", tmp_path, capsys)


def test_video_folder_with_a_truncated_file_or_a_fifo(tmp_path, no_hang):
    """Video folders are refused the same way (through the reader: the CLI's protocols need 512+ files)."""
    from harness.errors import InputError
    from harness.metrics.video import load_video_samples, write_video

    folder = tmp_path / "videos"
    folder.mkdir()
    clips = np.random.default_rng(0).integers(0, 256, (2, 12, 16, 16, 3), dtype=np.uint8)
    for i, clip in enumerate(clips):
        write_video(folder / f"{i:03d}.avi", clip)
    assert len(load_video_samples(folder, count=2, num_frames=10, resolution=16)) == 2
    data = (folder / "001.avi").read_bytes()
    (folder / "001.avi").write_bytes(data[:len(data) // 3])
    with pytest.raises(InputError, match="(cannot decode .*001.avi|001.avi decodes to [0-9] frames)"):
        load_video_samples(folder, count=2, num_frames=10, resolution=16)
    (folder / "001.avi").unlink()
    fifo(folder / "001.avi")
    with pytest.raises(InputError, match="001.avi is a FIFO"):
        load_video_samples(folder, count=2, num_frames=10, resolution=16)
