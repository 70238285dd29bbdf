"""Prompt-adherence rules of the offline moving-digits text-to-video task (`moving-digits-t2v-mini`): NOT VBench.

VBench scores what a prompt asks for with detectors (GRiT for object class, ...) that cannot run here. On a black
canvas with one 16x16 digit the project substitutes an exact localiser and the bundled digits classifier:

- `locate_sprite`: per frame, the top-left corner of the 16x16 window with the largest summed grey level (the
  digit's box on a black canvas; first in raster order on ties);
- **digit class** (the analogue of VBench's `object_class`, whose per-video score is the fraction of frames in
  which the detector finds the prompt's object): per frame, the bundled `DigitsNet` on the located window;
- **motion direction** (no VBench counterpart): the least-squares slope of the located corner over the frames must
  go the prompt's way at `MIN_SPEED` video pixels a frame or more (ground truth: 2), with the other axis under
  `MAX_CROSS_SPEED` (`follows_direction`).
"""

from __future__ import annotations

import numpy as np

#: Thresholds of `follows_direction`, in video pixels per frame (ground-truth clips move 2 and 0).
MIN_SPEED = 1.0
MAX_CROSS_SPEED = 0.5
#: Bumped when a rule changes.
DIGITS_T2V_METRICS_VERSION = "1"


def locate_sprite(frames: np.ndarray, side: int) -> np.ndarray:
    """Per frame, the (y, x) top-left corner of the `side` x `side` window with the largest summed grey level.

    Args:
        frames: uint8 ``[T, H, W, C]``.
        side: the window's side in pixels.

    Returns:
        int64 ``[T, 2]``.

    Example:
        >>> frames = np.zeros((2, 6, 6, 3), np.uint8)
        >>> frames[0, 1:3, 3:5] = 200; frames[1, 4:6, 0:2] = 200
        >>> locate_sprite(frames, 2).tolist()
        [[1, 3], [4, 0]]
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[1] < side or frames.shape[2] < side:
        raise ValueError(f"locate_sprite needs [T, H>={side}, W>={side}, C] frames, got {frames.shape}")
    grey = frames.astype(np.float64).sum(axis=-1)
    integral = np.pad(grey.cumsum(axis=1).cumsum(axis=2), ((0, 0), (1, 0), (1, 0)))
    boxes = (integral[:, side:, side:] - integral[:, :-side, side:] - integral[:, side:, :-side]
             + integral[:, :-side, :-side])
    flat = boxes.reshape(len(boxes), -1).argmax(axis=1)
    return np.stack(np.unravel_index(flat, boxes.shape[1:]), axis=1).astype(np.int64)


def crop_sprites(frames: np.ndarray, corners: np.ndarray, side: int) -> np.ndarray:
    """The located windows: ``[T, side, side, C]``.

    >>> frames = np.arange(2 * 3 * 3 * 1, dtype=np.uint8).reshape(2, 3, 3, 1)
    >>> crop_sprites(frames, np.array([[0, 0], [1, 1]]), 2)[:, :, :, 0].tolist()
    [[[0, 1], [3, 4]], [[13, 14], [16, 17]]]
    """
    return np.stack([f[y:y + side, x:x + side] for f, (y, x) in zip(frames, corners)])


def motion_slope(corners: np.ndarray) -> np.ndarray:
    """Least-squares (dy, dx) per frame of the located corners over time.

    >>> motion_slope(np.array([[5, 9], [5, 7], [5, 5], [5, 3]])).tolist()
    [0.0, -2.0]
    """
    corners = np.asarray(corners, dtype=np.float64)
    t = np.arange(len(corners), dtype=np.float64)
    t -= t.mean()
    return (t[:, None] * (corners - corners.mean(axis=0))).sum(axis=0) / (t * t).sum()


def follows_direction(corners: np.ndarray, direction: tuple[int, int]) -> bool:
    """Whether the located digit moves the prompt's way: the slope along the direction's axis has its sign and at
    least `MIN_SPEED` pixels a frame, the slope across it at most `MAX_CROSS_SPEED`.

    Args:
        corners: ``[T, 2]`` (y, x) from `locate_sprite`.
        direction: (dy, dx) unit step of the prompt, e.g. (0, -1) for "left".

    Example:
        >>> left = np.array([[4, 14 - 2 * t] for t in range(8)])
        >>> follows_direction(left, (0, -1)), follows_direction(left, (0, 1)), follows_direction(left, (1, 0))
        (True, False, False)
    """
    slope = motion_slope(corners)
    along = int(np.flatnonzero(direction)[0])
    return bool(slope[along] * np.sign(direction[along]) >= MIN_SPEED and abs(slope[1 - along]) <= MAX_CROSS_SPEED)
