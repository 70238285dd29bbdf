"""The offline text-to-video prompt suite on moving digits ("a 3 moving left"): NOT VBench.

A toy suite in the structure of VBench's `VBench_full_info.json`: one record per prompt, {"prompt_en", "dimension",
"auxiliary_info"}, each dimension scored only on its own prompts. Prompts are a digit and a motion:

- "a {digit} moving {left|right|up|down}" (40 prompts): the digit moves 1 canvas pixel a frame in that direction
  without bouncing; scored for digit class, motion direction and subject consistency;
- "a {digit} standing still" (10 prompts): scored for digit class and temporal flickering (VBench's own
  flickering prompts are still scenes too).

Clips as `harness.datasets.moving_digits` renders them (scikit-learn's 8x8 digits on a black canvas), on a 16x16
canvas for 8 frames, then upscaled 2x (nearest) to the 32x32 of the videos: the 16x16 sprite of `moving-digits-fvd`
moving 2 video pixels a frame. `render_prompt_clips` draws ground-truth clips for a prompt (tests; training data
for `baselines/video/train_digits_t2v.py`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from harness.datasets.moving_digits import NUM_CLASSES, MovingDigitsConfig, digit_sprites, render_clips

#: (dy, dx) per frame, in canvas pixels, of each direction word; "still" does not move.
DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
STILL = "still"
MOTIONS = (*DIRECTIONS, STILL)
CANVAS = MovingDigitsConfig(num_frames=8, canvas=16, sprite_scale=1)
UPSCALE = 2
NUM_FRAMES, SIZE, FPS = CANVAS.num_frames, CANVAS.canvas * UPSCALE, 8
SPRITE = 8 * CANVAS.sprite_scale * UPSCALE  # the digit's side in video pixels (16)
ROOM = CANVAS.canvas - 8 * CANVAS.sprite_scale  # free canvas pixels per axis (8)


def prompt_text(digit: int, motion: str) -> str:
    """The prompt of a digit and a motion word.

    >>> prompt_text(3, "left"), prompt_text(7, "still")
    ('a 3 moving left', 'a 7 standing still')
    """
    return f"a {digit} standing still" if motion == STILL else f"a {digit} moving {motion}"


@lru_cache(maxsize=1)
def _suite() -> tuple[dict, ...]:
    records = []
    for digit in range(NUM_CLASSES):
        for motion in MOTIONS:
            dims = (["digit_class", "temporal_flickering"] if motion == STILL
                    else ["digit_class", "motion_direction", "subject_consistency_digits"])
            records.append({"prompt_en": prompt_text(digit, motion), "dimension": dims,
                            "auxiliary_info": {"digit": digit, "motion": motion}})
    return tuple(records)


def prompt_suite() -> list[dict]:
    """The 50 records (digit-major, then left, right, up, down, still), VBench_full_info.json's layout.

    >>> suite = prompt_suite()
    >>> len(suite), suite[0]["prompt_en"], suite[4]["dimension"]
    (50, 'a 0 moving left', ['digit_class', 'temporal_flickering'])
    """
    return [dict(r, dimension=list(r["dimension"]), auxiliary_info=dict(r["auxiliary_info"])) for r in _suite()]


def start_and_velocity(motion: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A start (y, x) on the canvas from which the motion's 7 steps stay inside it, and the velocity."""
    if motion == STILL:
        return rng.integers(0, ROOM + 1, size=2).astype(np.float64), np.zeros(2)
    velocity = np.array(DIRECTIONS[motion], dtype=np.float64)
    travel = NUM_FRAMES - 1
    start = rng.integers(0, ROOM + 1, size=2).astype(np.float64)  # the still axis anywhere
    for axis in (0, 1):
        if velocity[axis] > 0:
            start[axis] = rng.integers(0, ROOM - travel + 1)
        elif velocity[axis] < 0:
            start[axis] = rng.integers(travel, ROOM + 1)
    return start, velocity


def upscale(clips: np.ndarray) -> np.ndarray:
    """`[N, T, 16, 16, C]` canvas clips -> `[N, T, 32, 32, C]` videos (nearest)."""
    return clips.repeat(UPSCALE, axis=2).repeat(UPSCALE, axis=3)


def render_prompt_clips(sprites: np.ndarray, motions: list[str], rng: np.random.Generator) -> np.ndarray:
    """uint8 `[N, 8, 32, 32, 3]` clips of 8x8 sprites in [0, 1], each moving as its motion word says."""
    starts, velocities = zip(*(start_and_velocity(m, rng) for m in motions))
    return upscale(render_clips(sprites, np.stack(starts), np.stack(velocities), CANVAS))


def reference_clips(record: dict, count: int, seed: int, split: str = "reference") -> np.ndarray:
    """`count` ground-truth clips of a prompt record: digits of the prompt's class from `split`, seeded."""
    sprites, labels = digit_sprites(split)
    info = record["auxiliary_info"]
    rng = np.random.default_rng([seed, info["digit"], MOTIONS.index(info["motion"])])
    pool = np.flatnonzero(labels == info["digit"])
    chosen = rng.choice(pool, size=count, replace=False)
    return render_prompt_clips(sprites[chosen], [info["motion"]] * count, rng)
