"""`digits-pca-gaussian`: the bundled class-conditional generator of digits-c2i (not autoregressive).

Each class is a Gaussian in a 16-component PCA space of the 8x8 digits, fitted by
`fit_pca_generator.py` (weights in `pca_generator.safetensors`): z ~ N(mean_c, L_c L_c^T), image =
clip(pca_mean + z @ components, 0, 16), rendered in the task's format. A simple, honest baseline that
the autoregressive digits models can be compared with; each request is drawn with its own seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.datasets.digits import NATIVE_SIZE, digits_to_images
from harness.api import Method, Request
from harness.errors import InputError, MissingAssetError
from harness.provenance import sha256_file
from harness.registry import register_method
from harness.settings import Annotated, Field, Temperature

WEIGHTS_PATH = Path(__file__).resolve().parent / "pca_generator.safetensors"


@dataclass
class PCAGaussianConfig:
    temperature: Temperature = 1.0  # scales the class covariance's square root
    image_size: Annotated[int, Field(ge=8, le=256)] = 32


def load_pca_generator(path: Path = WEIGHTS_PATH) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    if not path.is_file():
        raise MissingAssetError(f"{path} is missing; it ships with the project. Recreate it with "
                                f"`python -m baselines.digits.fit_pca_generator`.")
    return load_file(str(path))


@register_method("digits-pca-gaussian")
class DigitsPCAGaussian(Method):
    description = "class-conditional Gaussian in 16-d PCA space of sklearn digits (bundled, non-AR baseline)"
    modality = "class-to-image"
    family = "gaussian"
    Config = PCAGaussianConfig

    def __init__(self, config=None, device: str = "cpu"):
        super().__init__(config, device)
        self.params = load_pca_generator()

    def checkpoint_sha256(self) -> str:
        return sha256_file(WEIGHTS_PATH)

    def sample(self, label: int, seed: int) -> np.ndarray:
        """One (8, 8) digit in 0..16 for `label`, drawn with its own generator."""
        p = self.params
        if not 0 <= label < len(p["class_mean"]):
            raise InputError(f"label {label} is not a digit class (0..{len(p['class_mean']) - 1}).")
        noise = np.random.default_rng(seed).standard_normal(p["class_mean"].shape[1])
        z = p["class_mean"][label] + self.config.temperature * p["class_chol"][label] @ noise
        return np.clip(p["pca_mean"] + z @ p["components"], 0, 16).reshape(NATIVE_SIZE, NATIVE_SIZE)

    def generate(self, requests: Sequence[Request]) -> np.ndarray:
        size = int(requests[0].condition.get("image_size", self.config.image_size)) if requests else 0
        digits = np.stack([self.sample(int(r.condition["label"]), r.seed) for r in requests])
        return digits_to_images(digits, size)
