"""The offline mini generators: LlamaGen-architecture GPTs over scikit-learn's 8x8 digits, quantised
to a few grey levels, one trained in raster order and one in PAR region-parallel order.

Tokenisation: each of the 64 pixels (0..16) becomes one of `LEVELS` grey levels, so the "VQ codebook"
is a 4-entry grey lookup; decoding maps levels back to grey and resizes (nearest) to the task's size.
Models are trained by `train_digits.py` in this folder and bundled as safetensors next to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from baselines.imagegen.llamagen_gpt import GPTConfig, LlamaGenGPT
from baselines.imagegen.par import PARConfig, PARGPT
from harness.datasets.digits import DIGIT_MAX, digits_to_images

LEVELS = 4
WEIGHTS_DIR = Path(__file__).with_name("weights")
MINI_CONFIG = GPTConfig(dim=48, n_layer=3, n_head=4, multiple_of=32, num_classes=10, class_dropout_prob=0.1,
                        vocab_size=LEVELS, block_size=64)
MINI_PAR = PARConfig(regions_per_side=2)
FILES = {"raster": WEIGHTS_DIR / "digits_raster.safetensors", "par": WEIGHTS_DIR / "digits_par.safetensors"}


def quantise(images: np.ndarray) -> np.ndarray:
    """(N, 8, 8) digits 0..16 -> (N, 64) token ids in 0..LEVELS-1 (raster)."""
    levels = np.rint(np.asarray(images, dtype=np.float64) / DIGIT_MAX * (LEVELS - 1)).astype(np.int64)
    return levels.reshape(len(levels), -1)


IMAGE_SIZE = 32  # the digits-c2i rendering, used when a request does not say


def tokens_to_images(tokens: torch.Tensor | np.ndarray, size: int) -> np.ndarray:
    """(N, 64) token ids -> uint8 NHWC RGB in the digits-c2i format (level -> value level * 16 / 3,
    rendered by `harness.datasets.digits.digits_to_images`)."""
    levels = np.asarray(tokens, dtype=np.float64).reshape(-1, 8, 8)
    return digits_to_images(levels * DIGIT_MAX / (LEVELS - 1), size)


def build(order: str) -> LlamaGenGPT:
    return PARGPT(MINI_CONFIG, MINI_PAR) if order == "par" else LlamaGenGPT(MINI_CONFIG)


def file_metadata(path: Path) -> dict:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {k: json.loads(v) for k, v in meta.items()}
