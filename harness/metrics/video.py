"""Video metrics: clip sampling and resizing rules, video reading and validation, FVD.

FVD is the Fréchet distance (`harness.metrics.frechet`) between Gaussians fitted, with the unbiased
covariance in float64, to clip features of the real and the generated set. Which clips, how many, at
what resolution and frame stride is the *protocol*; it lives in `tasks/video_fvd.py` and in every
signature, because FVD numbers from different protocols are not comparable.

Rules used everywhere here:
- a clip is `num_frames` frames taken `stride` apart starting at `offset` (frame indices
  `offset + stride * k`); generated videos use offset 0, real videos a seeded random offset;
- frames of real videos are resized short side first (bilinear, antialiased) and centre-cropped to
  the protocol resolution; generated videos must already have that resolution (we never resize them
  silently);
- the feature network then resizes to its own input size (I3D: 224x224 bilinear, see `harness.features.i3d`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import InputError
from harness.inputs import InputCaps, load_member, npy_header, npz_members, read_text, regular_file
from harness.metrics.frechet import FeatureStatistics, frechet_distance

VIDEO_EXTENSIONS = (".mp4", ".avi", ".gif", ".webm", ".mkv", ".mov")
ARRAY_EXTENSIONS = (".npy", ".npz")
FVD_VERSION = "1"


# -- clip rules ---------------------------------------------------------------------------------


def clip_span(num_frames: int, stride: int) -> int:
    """How many source frames a clip of `num_frames` frames at `stride` covers.

    Example:
        >>> clip_span(16, 2)
        31
    """
    return (num_frames - 1) * stride + 1


def clip_indices(length: int, num_frames: int, stride: int = 1, offset: int = 0) -> np.ndarray:
    """Frame indices of one clip.

    Args:
        length: frames in the video.
        num_frames: frames in the clip.
        stride: step between the clip's frames.
        offset: the clip's first frame.

    Returns:
        (num_frames,) int array of frame indices.

    Raises:
        InputError: when the settings are invalid or the video is too short for the clip.

    Example:
        >>> clip_indices(10, 4, stride=2, offset=1).tolist()
        [1, 3, 5, 7]
    """
    if num_frames < 1 or stride < 1 or offset < 0:
        raise InputError(f"invalid clip: num_frames={num_frames}, stride={stride}, offset={offset}")
    last = offset + clip_span(num_frames, stride) - 1
    if last >= length:
        raise InputError(f"a {num_frames}-frame clip at stride {stride} from frame {offset} needs "
                         f"{last + 1} frames, but the video has {length}")
    return offset + stride * np.arange(num_frames)


def random_clip_offset(rng: np.random.Generator, length: int, num_frames: int, stride: int = 1) -> int:
    """A uniformly drawn start frame such that the whole clip fits in the video."""
    room = length - clip_span(num_frames, stride)
    if room < 0:
        raise InputError(f"video of {length} frames is shorter than a {num_frames}-frame clip at stride {stride}")
    return int(rng.integers(0, room + 1))


def resize_short_side_center_crop(frames: np.ndarray | torch.Tensor, size: int) -> np.ndarray:
    """uint8 `[T, H, W, 3]` -> uint8 `[T, size, size, 3]`: short side to `size` (bilinear, antialiased,
    rounded half up), then a centre crop. The preprocessing of real videos in every protocol."""
    x = torch.as_tensor(np.asarray(frames)).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, int(h * scale + 0.5)), max(size, int(w * scale + 0.5))
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))  # torchvision's centre_crop
    x = x[:, :, top:top + size, left:left + size]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


# -- reading videos -----------------------------------------------------------------------------


def read_video(path: Path, max_frames: int | None = None) -> np.ndarray:
    """Decode a video file (mp4, avi, gif, ...) with PyAV into uint8 RGB `[T, H, W, 3]`."""
    import av

    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path} has no video stream; give a video file (mp4, avi, gif)")
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InputError(f"cannot decode {path} ({exc}); re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)") from exc
    if not frames:
        raise InputError(f"{path} decodes to zero frames; the file is empty or corrupt")
    return np.stack(frames)


def write_video(path: Path, frames: np.ndarray, fps: int = 8) -> None:
    """Write uint8 `[T, H, W, 3]` losslessly (FFV1 in .avi/.mkv; H.264 at crf 0 in .mp4) with PyAV."""
    import av

    codec = "libx264rgb" if path.suffix == ".mp4" else "ffv1"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "rgb24" if codec == "libx264rgb" else "bgr0"
        if codec == "libx264rgb":
            stream.options = {"crf": "0", "preset": "ultrafast"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        container.mux(stream.encode())


@dataclass
class VideoSamples:
    """Validated generated videos: uint8 arrays `[n_i, T, H, W, 3]` (e.g. memory-mapped shards) or a list of
    files, plus optional labels. Clips come out in batches, so 40,000 videos are never all in memory."""

    num_frames: int
    stride: int
    arrays: Sequence[np.ndarray] = ()
    files: Sequence[Path] = ()
    labels: np.ndarray | None = None

    def __post_init__(self):
        self._starts = np.cumsum([0] + [len(a) for a in self.arrays])

    def __len__(self) -> int:
        return int(self._starts[-1]) if self.arrays else len(self.files)

    def clip(self, index: int) -> np.ndarray:
        """Clip `index`: the first `num_frames` frames at `stride`."""
        if self.arrays:
            part = int(np.searchsorted(self._starts, index, side="right")) - 1
            video = self.arrays[part][index - self._starts[part]]
        else:
            video = read_video(self.files[index], max_frames=clip_span(self.num_frames, self.stride))
        return np.asarray(video[clip_indices(len(video), self.num_frames, self.stride)])

    def batches(self, batch_size: int, indices: Sequence[int] | None = None) -> Iterator[np.ndarray]:
        order = list(range(len(self)) if indices is None else indices)
        for start in range(0, len(order), batch_size):
            yield np.stack([self.clip(i) for i in order[start:start + batch_size]])


def load_video_samples(path: Path, *, count: int, num_frames: int, stride: int = 1, resolution: int | None = None,
                       num_classes: int | None = None, min_frames: int = 10, what: str = "the protocol",
                       caps: InputCaps = InputCaps()) -> VideoSamples:
    """Read and validate generated videos for scoring: `.npy`/`.npz` uint8 `[N, T, H, W, 3]` or a folder of
    video files, with class labels (`labels` in the npz, or `labels.txt` beside the array or in the folder:
    one integer per line, in sorted file-name order) when `num_classes` is given.

    Checks count, frame count, dtype, shape, resolution and labels from the array headers before any data is
    read (arrays are then memory-mapped; a compressed npz member is read into memory under
    `caps.in_memory_bytes`), decodes the clip frames of every video file once, and raises InputError with the fix.

    Args:
        path: the `.npy`/`.npz` file or the folder of videos.
        count: how many videos the protocol scores.
        num_frames: frames per clip.
        stride: step between a clip's frames.
        resolution: the frames' required height and width, if fixed.
        num_classes: the number of classes of a class-conditional protocol (labels required), else None.
        min_frames: the fewest clip frames the feature network takes.
        what: the protocol's name, for messages.
        caps: size limits on what is read.

    Returns:
        The validated `VideoSamples`.

    Raises:
        InputError: for every problem found, with what to do about it.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "videos.npy"
        >>> np.save(path, np.zeros((2, 16, 8, 8, 3), np.uint8))
        >>> samples = load_video_samples(path, count=2, num_frames=16, resolution=8)
        >>> len(samples), samples.clip(1).shape
        (2, (16, 8, 8, 3))
    """
    needed = clip_span(num_frames, stride)
    if num_frames < min_frames:
        raise InputError(f"{what} uses {num_frames}-frame clips; FVD needs at least {min_frames}")
    labels = None
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
        if not files:
            raise InputError(f"{path} holds no video files ({', '.join(VIDEO_EXTENSIONS)}); put one file per sample there")
        samples = VideoSamples(num_frames, stride, files=files)
        _check_count(len(files), count, what, path)
        for file in files:  # header probe, then the frames scoring reads are decoded once (a truncated file fails now)
            _probe_video(file, needed, resolution)
            frames = read_video(file, max_frames=needed)
            if len(frames) < needed:
                raise InputError(f"{file} decodes to {len(frames)} frames; {what} needs {needed} "
                                 f"({num_frames} frames at stride {stride})")
        label_file = path / "labels.txt"
    elif path.suffix.lower() in ARRAY_EXTENSIONS:
        members = npz_members(path) if path.suffix.lower() == ".npz" else {}
        if path.suffix.lower() == ".npy":
            shape, fortran, dtype = npy_header(path)
        else:
            key = "videos" if "videos" in members else ("arr_0" if "arr_0" in members else None)
            if key is None:
                raise InputError(f"{path} has arrays {sorted(members)}; put the videos under 'videos' (or 'arr_0')")
            shape, fortran, dtype = members[key].shape, members[key].fortran_order, members[key].dtype
        if dtype != np.uint8:
            raise InputError(f"{path} has dtype {dtype}; FVD takes uint8 frames in 0..255 "
                             f"(convert with (x * 255).round().clip(0, 255).astype(np.uint8) from [0, 1])")
        if len(shape) != 5 or shape[-1] != 3:
            raise InputError(f"{path} has shape {shape}; expected [N, T, H, W, 3] RGB "
                             f"(for [N, T, 3, H, W] use array.transpose(0, 1, 3, 4, 2))")
        _check_count(shape[0], count, what, path)
        if shape[1] < needed:
            raise InputError(f"{path} has {shape[1]} frames per video; {what} needs {needed} "
                             f"({num_frames} frames at stride {stride})")
        if resolution is not None and shape[2:4] != (resolution, resolution):
            raise InputError(f"{path} has {shape[2]}x{shape[3]} frames; {what} is defined at "
                             f"{resolution}x{resolution}: generate at that size (ARBench never resizes samples)")
        if fortran:
            raise InputError(f"{path} is Fortran-ordered; save np.ascontiguousarray(videos) instead")
        if "labels" in members:
            member = members["labels"]
            if member.shape != (count,) or member.dtype.kind not in "iu":
                raise InputError(f"labels must be {count} integers (one per sample); got {member.dtype} {member.shape}")
            labels = load_member(member, caps)
        array = np.load(path, mmap_mode="r", allow_pickle=False) if not members else load_member(members[key], caps)
        samples = VideoSamples(num_frames, stride, arrays=[array])
        label_file = path.with_name("labels.txt")
    else:
        raise InputError(f"{path} is neither a folder of videos nor an .npy/.npz array")
    if num_classes is not None:
        if labels is None:
            if not label_file.exists():
                raise InputError(f"{what} is class-conditional: give class labels (a 'labels' array in the .npz, "
                                 f"or {label_file} with one 0-based class index per line in sample order)")
            labels = _read_labels(label_file, caps)
        labels = np.asarray(labels)
        if labels.shape != (len(samples),) or not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"labels must be {len(samples)} integers (one per sample); got {labels.dtype} {labels.shape}")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise InputError(f"labels must lie in 0..{num_classes - 1}; got {labels.min()}..{labels.max()}")
        samples.labels = labels.astype(np.int64)
    return samples


def _check_count(found: int, count: int, what: str, path: Path) -> None:
    if found != count:
        raise InputError(f"{path} holds {found} videos; {what} scores exactly {count} "
                         f"({'generate more' if found < count else 'remove the extra ones'})")


def _read_labels(path: Path, caps: InputCaps = InputCaps()) -> np.ndarray:
    try:
        return np.array([int(line) for line in read_text(path, "labels", caps).split()], dtype=np.int64)
    except ValueError as exc:
        raise InputError(f"{path} must hold one integer class index per line ({exc})") from exc


def _probe_video(path: Path, needed_frames: int, resolution: int | None) -> None:
    import av

    regular_file(path, "video")  # FFmpeg would block on a FIFO
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path} has no video stream")
            stream = container.streams.video[0]
            width, height, frames = stream.codec_context.width, stream.codec_context.height, stream.frames
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InputError(f"cannot open {path} as a video ({exc}); re-encode it as mp4 or avi") from exc
    if resolution is not None and (width, height) != (resolution, resolution):
        raise InputError(f"{path} is {width}x{height}; the protocol is defined at {resolution}x{resolution}: "
                         f"generate at that size (ARBench never resizes samples)")
    if frames and frames < needed_frames:
        raise InputError(f"{path} has {frames} frames; the protocol needs {needed_frames}")


# -- FVD ----------------------------------------------------------------------------------------


FeatureFn = Callable[[np.ndarray], torch.Tensor]


def clip_statistics(batches: Iterator[np.ndarray], features: FeatureFn, feature_dim: int,
                    progress: Callable[[Iterator], Iterator] = lambda it: it) -> tuple[np.ndarray, np.ndarray, int]:
    """Float64 mean, unbiased covariance and count of the features of every clip in `batches`.

    Args:
        batches: uint8 clip batches `[B, T, H, W, 3]`.
        features: the feature network, a batch to (B, feature_dim) features.
        feature_dim: the features' width.
        progress: wraps the iterator (e.g. a progress bar).

    Returns:
        (mean (d,), covariance (d, d), number of clips).

    Raises:
        InputError: when a batch's features are not (B, feature_dim) or there are fewer than 2 clips.

    Example:
        >>> clips = np.stack([np.full((2, 1, 1, 3), v, np.uint8) for v in (0, 2, 4, 6)])
        >>> mean, cov, count = clip_statistics(iter([clips[:3], clips[3:]]), _mean_colour, 3)
        >>> mean.tolist(), count
        ([3.0, 3.0, 3.0], 4)
    """
    stats = FeatureStatistics(feature_dim)
    for batch in progress(batches):
        stats.update(features(batch))
    mean, cov = stats.statistics()
    return mean, cov, int(stats.count)


def _mean_colour(clips: np.ndarray) -> torch.Tensor:
    """A stand-in feature network for the examples: each clip's mean colour, (B, 3)."""
    return torch.from_numpy(clips.mean(axis=(1, 2, 3), dtype=np.float64))


def maximum_likelihood_covariance(cov: np.ndarray, count: int) -> np.ndarray:
    """The covariance divided by N instead of N - 1, from the unbiased one: what StyleGAN-V's and cd-fvd's
    `FeatureStats.get_mean_cov` return, and so part of cd-FVD's definition (FVD here follows the TF
    reference and TATS, which use the unbiased one).

    Example:
        >>> maximum_likelihood_covariance(np.eye(2) * 3, 4).tolist()
        [[2.25, 0.0], [0.0, 2.25]]
    """
    if count < 2:
        raise InputError(f"a covariance needs at least 2 clips; got {count}")
    return np.asarray(cov) * ((count - 1) / count)


def fvd(real: tuple[np.ndarray, np.ndarray], generated: tuple[np.ndarray, np.ndarray]) -> float:
    """Fréchet video distance between (mean, covariance) pairs of real and generated clip features.

    Args:
        real: (mean, covariance) of the real clips' features.
        generated: (mean, covariance) of the generated clips' features.

    Returns:
        The Fréchet distance.

    Raises:
        InputError: as `harness.metrics.frechet.frechet_distance`.

    Example:
        >>> fvd((np.zeros(2), np.eye(2)), (np.ones(2), np.eye(2)))
        2.0
    """
    return frechet_distance(real[0], real[1], generated[0], generated[1])


def fvd_from_clips(real: np.ndarray, generated: np.ndarray, features: FeatureFn, feature_dim: int,
                   batch_size: int = 8) -> float:
    """FVD of two uint8 clip arrays `[N, T, H, W, 3]` (convenience for small sets and tests).

    Args:
        real: the real clips.
        generated: the generated clips.
        features: the feature network (I3D in the protocols), a batch to (B, feature_dim) features.
        feature_dim: the features' width.
        batch_size: clips per call of `features`.

    Returns:
        The Fréchet distance of the two clip sets' feature statistics.

    Raises:
        InputError: as `clip_statistics` and `fvd`.

    Example:
        >>> real = np.stack([np.full((2, 1, 1, 3), v, np.uint8) for v in (0, 2, 4, 6)])
        >>> round(fvd_from_clips(real, real + 10, _mean_colour, 3), 6)  # only the means differ: 3 * 10^2
        300.0
    """
    def chunks(a):
        return (a[i:i + batch_size] for i in range(0, len(a), batch_size))
    r = clip_statistics(chunks(real), features, feature_dim)
    g = clip_statistics(chunks(generated), features, feature_dim)
    return fvd(r[:2], g[:2])
