"""Finding a run's artifacts by file type: sample grids and frames, audio, video, per-item tables, text.

Only files inside the run's artifact folder are listed (symbolic links are not followed), at a bounded
depth and count, so a huge shard folder cannot stall the page. Generated image and video batches that
tasks keep as `.npy` shards (uint8, NHWC or NTHWC) are turned into a sample grid and a strip of frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KINDS = {
    "image": (".png", ".jpg", ".jpeg", ".webp", ".gif"),
    "audio": (".wav", ".flac", ".mp3", ".ogg"),
    "video": (".mp4", ".webm"),
    "table": (".csv", ".tsv", ".jsonl"),
    "text": (".txt", ".log"),
    "array": (".npy",),
}
MAX_DEPTH = 4
MAX_FILES_SCANNED = 5000
MAX_PER_KIND = {"image": 24, "audio": 8, "video": 4, "table": 4, "text": 4, "array": 4}
GRID_SIDE = 8


@dataclass
class Artifacts:
    root: Path
    found: dict[str, list[Path]] = field(default_factory=lambda: {k: [] for k in KINDS})
    truncated: bool = False

    @property
    def empty(self) -> bool:
        return not any(self.found.values())


def discover(root: str | os.PathLike | None) -> Artifacts | None:
    """The displayable files under `root`, shallow files first, then by name; None if there is no folder."""
    if not root:
        return None
    base = Path(root)
    if not base.is_dir():
        return None
    base = base.resolve()
    result = Artifacts(base)
    by_suffix = {s: kind for kind, suffixes in KINDS.items() for s in suffixes}
    candidates: list[tuple[int, str, Path, str]] = []
    scanned = 0
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        depth = len(Path(dirpath).relative_to(base).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < MAX_DEPTH else []
        for name in filenames:
            scanned += 1
            if scanned > MAX_FILES_SCANNED:
                result.truncated = True
                break
            path = Path(dirpath) / name
            kind = by_suffix.get(path.suffix.lower())
            if kind and not name.startswith(".") and not path.is_symlink():
                candidates.append((depth, str(path.relative_to(base)), path, kind))
        if result.truncated:
            break
    for _, _, path, kind in sorted(candidates):
        bucket = result.found[kind]
        if len(bucket) < MAX_PER_KIND[kind]:
            bucket.append(path)
        else:
            result.truncated = True
    return result


def sample_grid(path: Path, side: int = GRID_SIDE) -> np.ndarray | None:
    """A side x side grid of the first images of a uint8 image batch (N,H,W[,C]) or of the frames of the
    first clip of a video batch (N,T,H,W,C); None for any other array. Never unpickles (allow_pickle=False)."""
    try:
        batch = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError):
        return None
    if batch.dtype != np.uint8:
        return None
    if batch.ndim == 5 and batch.shape[-1] in (1, 3):
        tiles = np.asarray(batch[0, : side * side])  # the frames of one clip
    elif batch.ndim == 4 and batch.shape[-1] in (1, 3):
        tiles = np.asarray(batch[: side * side])
    elif batch.ndim == 3 and batch.shape[1] >= 8 and batch.shape[2] >= 8:
        tiles = np.asarray(batch[: side * side])[..., None]
    else:
        return None
    if len(tiles) == 0:
        return None
    n, h, w, c = tiles.shape
    cols = min(side, n)
    rows = -(-n // cols)
    grid = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for k, tile in enumerate(tiles):
        r, q = divmod(k, cols)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = tile
    return grid[..., 0] if c == 1 else grid
