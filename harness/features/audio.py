"""Audio as the speech evaluators take it: mono, 16 kHz, float32, from one resampler.

The TTS tasks read every file through `to_16k_mono`, and the speaker network's training script uses it too,
so that evaluator inputs are prepared the same way wherever they come from.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import resample_poly

SAMPLE_RATE = 16000
RESAMPLER = "scipy.signal.resample_poly(window=('kaiser',5.0))"


def to_16k_mono(samples: np.ndarray, rate: int) -> np.ndarray:
    """Average channels, then resample to 16 kHz with the one resampler of every speech score."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        g = math.gcd(rate, SAMPLE_RATE)
        samples = resample_poly(samples, SAMPLE_RATE // g, rate // g)
    return samples.astype(np.float32)
