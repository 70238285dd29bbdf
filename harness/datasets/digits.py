"""scikit-learn's bundled 8x8 digits (1,797 images, values 0..16) in the digits-c2i image format.

Format: uint8 NHWC RGB, grey = round(value * 255 / 16) on all three channels (ink bright, as in the
data), upscaled by nearest neighbour from 8x8 to `size` x `size` (a multiple of 8).
"""

from __future__ import annotations

import numpy as np

from harness.errors import InputError

DIGIT_MAX = 16
NATIVE_SIZE = 8


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float64 in 0..16, labels (1797,) int64)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float64), digits.target.astype(np.int64)


def held_out_mask(count: int) -> np.ndarray:
    """Every 10th image is held out from training (the split all digits models here use)."""
    return np.arange(count) % 10 == 0


def digits_to_images(values: np.ndarray, size: int) -> np.ndarray:
    """(N, 8, 8) values in 0..16 -> uint8 (N, size, size, 3)."""
    if size % NATIVE_SIZE:
        raise InputError(f"digits images are 8x8 upscaled by an integer factor; size {size} is not a multiple of 8.")
    grey = np.rint(np.clip(values, 0, DIGIT_MAX) * (255.0 / DIGIT_MAX)).astype(np.uint8)
    factor = size // NATIVE_SIZE
    grey = grey.repeat(factor, axis=1).repeat(factor, axis=2)
    return np.repeat(grey[..., None], 3, axis=-1)
