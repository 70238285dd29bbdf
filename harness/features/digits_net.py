"""DigitsNet: the bundled feature network of digits-c2i (plays the FID Inception's role on 8x8 digits).

A small CNN classifier trained on scikit-learn's digits by `train_feature_net.py` (weights in
`digits_net.safetensors`). Its 128-d penultimate layer gives the features of the Fréchet distance and
Precision/Recall and its 10 logits the Inception-Score analogue. Numbers on it are *digits* metrics
(`fd_digits`, ...), not ImageNet FID.

Input: uint8 NHWC RGB at any multiple of 8; images are averaged over channels and over each
(size/8)^2 block back to 8x8 (exact for the nearest-upscaled format of `data.py`), then scaled to 0..1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import InputError, MissingAssetError
from harness.provenance import sha256_file

WEIGHTS_PATH = Path(__file__).resolve().parent / "digits_net.safetensors"


@dataclass(frozen=True)
class DigitsNetConfig:
    widths: tuple[int, int, int] = (32, 64, 128)
    num_classes: int = 10


class DigitsNet(nn.Module):
    def __init__(self, config: DigitsNetConfig = DigitsNetConfig()):
        super().__init__()
        self.config = config
        c1, c2, c3 = config.widths
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1)
        self.head = nn.Linear(c3, config.num_classes)

    @staticmethod
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float (N, 1, 8, 8) in 0..1."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise InputError(f"DigitsNet takes uint8 (N, H, W, 3) images; got {images.dtype} {tuple(images.shape)}.")
        size = images.shape[1]
        if size % 8 or images.shape[2] != size:
            raise InputError(f"DigitsNet takes square images whose side is a multiple of 8; got {tuple(images.shape[1:3])}.")
        grey = images.float().mean(dim=-1, keepdim=True).permute(0, 3, 1, 2) / 255.0
        return F.avg_pool2d(grey, size // 8) if size > 8 else grey

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed (N, 1, 8, 8) -> (N, 128) penultimate features."""
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.conv3(x))
        return x.mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 NHWC images -> (features (N, 128), logits (N, 10))."""
        feats = self.features(self.preprocess(images))
        return feats, self.head(feats)


def config_metadata(config: DigitsNetConfig) -> dict[str, str]:
    return {k: str(v) for k, v in asdict(config).items()}


@lru_cache(maxsize=2)
def load_digits_net(path: str | None = None) -> tuple[DigitsNet, str]:
    """The bundled network (eval mode) and the sha256 of its weights file."""
    from safetensors.torch import load_file

    file = Path(path) if path else WEIGHTS_PATH
    if not file.is_file():
        raise MissingAssetError(f"{file} is missing; it ships with the project. Recreate it with "
                                f"`python -m baselines.digits.train_feature_net`.")
    model = DigitsNet()
    model.load_state_dict(load_file(str(file)))
    return model.eval().requires_grad_(False), sha256_file(file)


@torch.inference_mode()
def digits_features(model: DigitsNet, images: np.ndarray, batch_size: int = 512) -> dict[str, np.ndarray]:
    """{"pool": (N, 128), "logits": (N, 10)} float32 features of uint8 NHWC images."""
    pools, logits = [], []
    for start in range(0, len(images), batch_size):
        feats, out = model(torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])))
        pools.append(feats.numpy())
        logits.append(out.numpy())
    return {"pool": np.concatenate(pools), "logits": np.concatenate(logits)}
