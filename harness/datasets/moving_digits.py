"""Moving-digit clips built from scikit-learn's 8x8 digits: the offline video data ARBench ships.

A clip is one digit sprite (the 8x8 image upscaled 2x to 16x16) moving at a constant velocity across a
32x32 black canvas for 16 frames, bouncing off the borders. Its class is the digit. The 1,797 digits are
split by index: every fifth digit (`i % 5 == 0`, 360 images) is held out for the *reference* set the
offline FVD task compares against; the other 1,437 train the bundled feature network and generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

NUM_CLASSES = 10


@dataclass(frozen=True)
class MovingDigitsConfig:
    """Geometry and motion prior of the clips (defaults in one place)."""

    num_frames: int = 16
    canvas: int = 32
    sprite_scale: int = 2
    max_speed: float = 1.5  # pixels per frame, per axis, drawn uniformly in [-max_speed, max_speed]


DEFAULT = MovingDigitsConfig()


@lru_cache(maxsize=None)
def digit_sprites(split: str) -> tuple[np.ndarray, np.ndarray]:
    """float32 sprites in [0, 1] `[N, 8, 8]` and their labels, for split "train" or "reference"."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    held_out = np.arange(len(digits.target)) % 5 == 0
    keep = held_out if split == "reference" else ~held_out
    if split not in ("train", "reference"):
        raise ValueError(f"split must be 'train' or 'reference', got {split!r}")
    return (digits.images[keep] / 16.0).astype(np.float32), digits.target[keep].astype(np.int64)


def bounce(start: float, velocity: float, steps: np.ndarray, room: float) -> np.ndarray:
    """Positions of a point moving in [0, room] with reflection at both ends."""
    pos = np.mod(start + velocity * steps, 2 * room)
    return np.where(pos > room, 2 * room - pos, pos)


def render_clips(sprites: np.ndarray, starts: np.ndarray, velocities: np.ndarray,
                 config: MovingDigitsConfig = DEFAULT) -> np.ndarray:
    """uint8 `[N, T, canvas, canvas, 3]`: 8x8 sprites in [0, 1] moving from `starts` (y, x) at `velocities`."""
    scale, size = config.sprite_scale, 8 * config.sprite_scale
    big = np.clip(sprites, 0, 1).repeat(scale, axis=1).repeat(scale, axis=2)  # [N, size, size]
    room = config.canvas - size
    steps = np.arange(config.num_frames, dtype=np.float64)
    ys = np.rint(bounce(starts[:, :1], velocities[:, :1], steps, room)).astype(int)  # [N, T]
    xs = np.rint(bounce(starts[:, 1:], velocities[:, 1:], steps, room)).astype(int)
    n, t = ys.shape
    offsets = np.arange(size)
    rows = (ys[:, :, None] + offsets)[:, :, :, None]  # [N, T, size, 1]
    cols = (xs[:, :, None] + offsets)[:, :, None, :]  # [N, T, 1, size]
    clips = np.zeros((n, t, config.canvas, config.canvas), np.float32)
    clips[np.arange(n)[:, None, None, None], np.arange(t)[None, :, None, None], rows, cols] = big[:, None]
    gray = np.rint(clips * 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def random_motion(rng: np.random.Generator, config: MovingDigitsConfig = DEFAULT) -> tuple[np.ndarray, np.ndarray]:
    """A start position and a velocity drawn from the data's motion prior."""
    room = config.canvas - 8 * config.sprite_scale
    return rng.uniform(0, room, size=2), rng.uniform(-config.max_speed, config.max_speed, size=2)


def sample_clips(split: str, labels: np.ndarray, seed: int, config: MovingDigitsConfig = DEFAULT
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Real clips of the given classes: sprites drawn from `split`, motion from the prior, all seeded.

    Returns the uint8 clips `[N, T, canvas, canvas, 3]` and the velocities `[N, 2]`.
    """
    sprites, sprite_labels = digit_sprites(split)
    by_class = [np.flatnonzero(sprite_labels == c) for c in range(NUM_CLASSES)]
    chosen, starts, velocities = [], [], []
    for i, label in enumerate(labels):
        rng = np.random.default_rng([seed, i])
        chosen.append(rng.choice(by_class[int(label)]))
        start, velocity = random_motion(rng, config)
        starts.append(start)
        velocities.append(velocity)
    starts, velocities = np.stack(starts), np.stack(velocities)
    return render_clips(sprites[chosen], starts, velocities, config), velocities.astype(np.float32)


def balanced_labels(count: int) -> np.ndarray:
    """Class labels 0..9 in round-robin order (every class within one of count/10)."""
    return np.arange(count, dtype=np.int64) % NUM_CLASSES
