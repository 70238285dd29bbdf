"""The bundled video feature network of the offline FVD task (a small 3D CNN, our stand-in for I3D).

`DigitMotionNet` maps a moving-digit clip to a 64-d embedding, trained (by `train_video_models.py`)
to predict from it the digit class, the velocity, and whether the frames were shuffled, so that its
Fréchet distance responds to appearance *and* motion. It plays I3D's role on data the project ships;
its numbers are not FVD on Kinetics-I3D features and are labelled `fvd_digits`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from harness.errors import MissingAssetError
from harness.provenance import sha256_file

WEIGHTS_PATH = Path(__file__).resolve().parent / "digit_motion_net.safetensors"


@dataclass(frozen=True)
class DigitMotionNetConfig:
    canvas: int = 32
    widths: tuple[int, ...] = (16, 32, 32)
    frame_dim: int = 64
    embed_dim: int = 64
    num_classes: int = 10


class DigitMotionNet(nn.Module):
    """Factorised video CNN: a 2D CNN per frame (flattened, so positions survive, and max-pooled), a temporal
    convolution across frames, then the mean over time -> `embed_dim` features, plus three heads.

    Factorised rather than 3D convolutions because CPU Conv3d training is slow here and this is as
    expressive for one rigid sprite.
    """

    def __init__(self, config: DigitMotionNetConfig = DigitMotionNetConfig()):
        super().__init__()
        self.config = config
        layers, channels = [], 1
        for width in config.widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
        self.frame_cnn = nn.Sequential(*layers)
        side = config.canvas // 2 ** len(config.widths)
        self.frame_proj = nn.Linear(channels * side * side, config.frame_dim)
        self.temporal = nn.Conv1d(config.frame_dim + channels, config.embed_dim, kernel_size=3, padding=1)
        self.embed = nn.Linear(config.embed_dim, config.embed_dim)
        self.class_head = nn.Linear(config.embed_dim, config.num_classes)
        self.velocity_head = nn.Linear(config.embed_dim, 2)
        self.shuffled_head = nn.Linear(config.embed_dim, 1)

    def features(self, clips: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(clips)).to(self.embed.weight.device).float()
        n, t = x.shape[:2]
        frames = (x.mean(dim=-1) / 127.5 - 1.0).reshape(n * t, 1, *x.shape[2:4])  # grayscale in [-1, 1]
        maps = self.frame_cnn(frames)
        # flattened maps keep where the digit is (motion); the spatial max is what it looks like anywhere
        per_frame = torch.cat([F.relu(self.frame_proj(maps.flatten(1))), maps.amax(dim=(2, 3))], dim=1)
        per_frame = per_frame.reshape(n, t, -1)
        temporal = F.relu(self.temporal(per_frame.transpose(1, 2)))  # [N, embed, T]
        return self.embed(temporal.mean(dim=2))

    def forward(self, clips: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        feats = self.features(clips)
        hidden = F.relu(feats)
        return {"features": feats, "class_logits": self.class_head(hidden),
                "velocity": self.velocity_head(hidden), "shuffled_logit": self.shuffled_head(hidden).squeeze(-1)}


@lru_cache(maxsize=2)
def load_digit_motion_net(path: str = str(WEIGHTS_PATH)) -> DigitMotionNet:
    """The bundled trained network (eval mode, CPU)."""
    if not Path(path).is_file():
        raise MissingAssetError(f"the bundled video feature network is missing at {path}; "
                                f"recreate it with `python -m baselines.video.train_video_models`")
    model = DigitMotionNet()
    model.load_state_dict(load_file(path))
    return model.eval()


@lru_cache(maxsize=2)
def weights_sha256(path: str = str(WEIGHTS_PATH)) -> str:
    return sha256_file(Path(path))
