"""A small class-conditional video generator for the offline FVD task.

Appearance: a per-class Gaussian over the 64 pixels of the 8x8 digit, restricted to its top principal
components (fitted on the training digits by `train_video_models.py`, stored as safetensors). Motion:
the same constant-velocity, bouncing prior the data uses. So `moving-digits-pca` is an honest but
weak generator (blurry, sometimes off-class digits, correct motion), and `moving-digits-pca-static`
draws the same digits standing still: its worse score shows the metric sees motion.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from safetensors.numpy import load_file

from harness.datasets.moving_digits import DEFAULT, random_motion, render_clips
from harness.api import Method, Request
from harness.errors import MissingAssetError
from harness.provenance import sha256_file
from harness.registry import register_method

WEIGHTS_PATH = Path(__file__).resolve().parent / "digits_pca_generator.safetensors"


@lru_cache(maxsize=2)
def load_pca_generator(path: str = str(WEIGHTS_PATH)) -> dict[str, np.ndarray]:
    """`mean` [10, 64] and `basis` [10, k, 64] (components scaled by their standard deviations)."""
    if not Path(path).is_file():
        raise MissingAssetError(f"the bundled digit generator is missing at {path}; "
                                f"recreate it with `python -m baselines.video.train_video_models`")
    return load_file(path)


def sample_sprite(params: dict[str, np.ndarray], label: int, rng: np.random.Generator) -> np.ndarray:
    basis = params["basis"][label]
    pixels = params["mean"][label] + rng.standard_normal(basis.shape[0]).astype(np.float32) @ basis
    return np.clip(pixels, 0.0, 1.0).reshape(8, 8)


@dataclass
class PCAGeneratorConfig:
    motion: bool = True


@dataclass
class StaticConfig:
    motion: bool = False


@register_method("moving-digits-pca")
class MovingDigitsPCA(Method):
    """Per-class PCA-Gaussian digit appearance, moved by the data's motion prior."""

    description = "per-class PCA-Gaussian digits with constant-velocity motion (offline demo generator)"
    modality = "class-to-video"
    family = "gaussian"
    Config = PCAGeneratorConfig

    def checkpoint_sha256(self) -> str | None:
        return sha256_file(WEIGHTS_PATH)

    def generate(self, requests: Sequence[Request]) -> np.ndarray:
        params = load_pca_generator()
        sprites, starts, velocities = [], [], []
        for request in requests:
            rng = np.random.default_rng(request.seed)
            sprites.append(sample_sprite(params, int(request.condition["label"]), rng))
            start, velocity = random_motion(rng, DEFAULT)
            starts.append(start)
            velocities.append(velocity if self.config.motion else np.zeros(2))
        return render_clips(np.stack(sprites), np.stack(starts), np.stack(velocities), DEFAULT)


@register_method("moving-digits-pca-static")
class MovingDigitsPCAStatic(MovingDigitsPCA):
    """The same digits without motion (a control: appearance right, dynamics missing)."""

    description = "per-class PCA-Gaussian digits standing still (control for the motion-sensitivity of FVD)"
    Config = StaticConfig
