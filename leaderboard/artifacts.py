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
GAP = 4  # white pixels between tiles
MIN_TILE = 72  # smaller tiles (28 px digits) are enlarged to at least this
LABEL_HEIGHT = 16


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


def sample_grid(path: Path, side: int = GRID_SIDE, gap: int = GAP, min_tile: int = MIN_TILE,
                labels: bool = True) -> np.ndarray | None:
    """A side x side grid of the first images of a uint8 image batch (N,H,W[,C]) or of the frames of the
    first clip of a video batch (N,T,H,W,C); None for any other array. Never unpickles (allow_pickle=False).

    Tiles are enlarged by a whole factor to at least `min_tile` pixels (nearest neighbour, so pixels stay
    sharp) and separated by `gap` white pixels. Where the shard has a `labels.npy` beside it (the image
    tasks' class labels), each tile gets its class under it. The grid is RGB, or grey for grey images
    without labels."""
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
    classes = _labels_beside(path, len(tiles)) if labels and batch.ndim != 5 else None
    scale = max(1, -(-min_tile // max(tiles.shape[1], tiles.shape[2]))) if min_tile else 1
    if scale > 1:
        tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, c = tiles.shape
    if classes is not None and c == 1:
        tiles, c = np.repeat(tiles, 3, axis=3), 3  # a coloured caption strip needs RGB
    caption = LABEL_HEIGHT if classes is not None else 0
    cols = min(side, n)
    rows = -(-n // cols)
    grid = np.full((rows * (h + caption + gap) - gap, cols * (w + gap) - gap, c), 255, dtype=np.uint8)
    for k, tile in enumerate(tiles):
        r, q = divmod(k, cols)
        top, left = r * (h + caption + gap), q * (w + gap)
        grid[top:top + h, left:left + w] = tile
    if classes is not None:
        grid = _draw_labels(grid, classes, cols, h, w, caption, gap)
    return grid[..., 0] if c == 1 else grid


def _labels_beside(path: Path, count: int) -> list[int] | None:
    """The first `count` class labels of the shard (`labels.npy` beside the images), if there are."""
    label_path = path.with_name("labels.npy")
    if label_path == path or not label_path.is_file():
        return None
    try:
        labels = np.load(label_path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError):
        return None
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) < count:
        return None
    return [int(v) for v in labels[:count]]


def _draw_labels(grid: np.ndarray, classes: list[int], cols: int, h: int, w: int, caption: int,
                 gap: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(grid)
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=LABEL_HEIGHT - 4)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    for k, label in enumerate(classes):
        r, q = divmod(k, cols)
        draw.text((q * (w + gap) + 2, r * (h + caption + gap) + h + 1), f"class {label}", fill=(40, 40, 40),
                  font=font)
    return np.asarray(image)
