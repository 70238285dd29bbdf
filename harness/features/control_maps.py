"""The control-map annotators ControlAR's evaluation runs on generated images (hustvl/ControlAR@87e32e9,
`evaluations/{canny_f1score,hed_ssim,depth_rmse}.py` and `condition/`): Canny edges, HED soft edges and DPT depth.

- **Canny**: OpenCV's `cv2.Canny(image, 100, 200)` on the uint8 RGB image (upstream's `CannyDetector` defaults).
- **HED**: lllyasviel's Apache-2.0 "ControlNetHED" network (ControlNet annotators, `condition/hed.py`), re-written
  here (five VGG-style blocks, each with a 1x1 side projection; the five side maps upsampled bilinearly to the
  input size, averaged, sigmoid, x 255). It takes the uint8 RGB image as floats 0..255 (no normalisation other
  than the learned `norm` offset). Weights: `ControlNetHED.pth` (a plain state dict, read with
  `torch.load(weights_only=True)`, never unpickled as code).
- **Depth**: DPT-Large (Intel/dpt-large) through transformers' `DPTForDepthEstimation` and `DPTImageProcessor`
  (delegated, as upstream calls them), resized to 512 x 512 by the processor (upstream `size=(512, 512)`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.errors import ArbenchError
from harness.weights import WeightSpec, register_weights, require_all

CANNY_LOW, CANNY_HIGH = 100, 200  # upstream CannyDetector.__call__ defaults, used by canny_f1score.py
HED_WEIGHTS = register_weights(WeightSpec(
    "controlnet-hed", "ControlNetHED.pth", "https://huggingface.co/lllyasviel/Annotators/resolve/main/ControlNetHED.pth",
    None, "Apache-2.0 (lllyasviel ControlNet annotators: 'an improved version and model of HED ... Apache License 2.0')",
    "HED soft-edge annotator (ControlNet's re-trained RGB HED) used by ControlAR's HED SSIM"))
DPT_LARGE_URL = "https://huggingface.co/Intel/dpt-large/resolve/main/"
DPT_LARGE_FILES = ("config.json", "preprocessor_config.json", "model.safetensors")
DPT_LARGE = tuple(register_weights(WeightSpec(
    f"dpt-large-{name.split('.')[0].replace('_', '-')}", f"dpt-large/{name}", DPT_LARGE_URL + name, None,
    "Apache-2.0 (Intel/dpt-large)", f"DPT-Large monocular depth (ControlAR's depth RMSE): {name}"))
    for name in DPT_LARGE_FILES)
DPT_SIZE = (512, 512)  # depth_rmse.py: processor(images=..., size=(512, 512))


def canny(image: np.ndarray, low: int = CANNY_LOW, high: int = CANNY_HIGH) -> np.ndarray:
    """uint8 (H, W) edge map (0 or 255) of a uint8 RGB image (H, W, 3), as upstream's `CannyDetector`.

    >>> img = np.zeros((32, 32, 3), np.uint8); img[:, 16:] = 255
    >>> edges = canny(img); edges.dtype, sorted(np.unique(edges).tolist()), bool(edges[:, 15:17].any())
    (dtype('uint8'), [0, 255], True)
    """
    import cv2  # opencv-python-headless: what upstream calls

    return cv2.Canny(np.ascontiguousarray(image, dtype=np.uint8), low, high)


class DoubleConvBlock(nn.Module):
    """`layers` 3x3 convolutions with ReLU (after an optional 2x2 max-pool) and a 1x1 side projection."""

    def __init__(self, inputs: int, outputs: int, layers: int):
        super().__init__()
        self.convs = nn.Sequential(*[nn.Conv2d(inputs if i == 0 else outputs, outputs, 3, padding=1)
                                     for i in range(layers)])
        self.projection = nn.Conv2d(outputs, 1, 1)

    def forward(self, x: torch.Tensor, down_sampling: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.max_pool2d(x, 2, 2) if down_sampling else x
        for conv in self.convs:
            h = F.relu(conv(h))
        return h, self.projection(h)


class ControlNetHED(nn.Module):
    """The HED network with upstream's parameter names (`netNetwork.` is stripped: this is that module)."""

    def __init__(self):
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.block1 = DoubleConvBlock(3, 64, 2)
        self.block2 = DoubleConvBlock(64, 128, 2)
        self.block3 = DoubleConvBlock(128, 256, 3)
        self.block4 = DoubleConvBlock(256, 512, 3)
        self.block5 = DoubleConvBlock(512, 512, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W) soft edges in 0..255 for RGB images (B, 3, H, W) given as floats 0..255 (`HEDdetector`)."""
        h = x - self.norm
        sides = []
        for i, block in enumerate((self.block1, self.block2, self.block3, self.block4, self.block5)):
            h, side = block(h, down_sampling=i > 0)
            sides.append(F.interpolate(side, size=x.shape[2:], mode="bilinear", align_corners=False).squeeze(1))
        edge = torch.sigmoid(torch.stack(sides, dim=1).mean(dim=1))
        return (edge * 255.0).clamp(0, 255)


@functools.lru_cache(maxsize=2)
def load_hed(device: str = "cpu", path: str | None = None) -> ControlNetHED:
    """The HED annotator with the released weights (checked by name and shape)."""
    resolved = HED_WEIGHTS.resolve(path, verify=False)
    try:
        state = torch.load(resolved, map_location="cpu", weights_only=True)  # plain tensors only
    except Exception as exc:  # noqa: BLE001 - any reader failure means the same thing to the user
        raise ArbenchError(f"{resolved} could not be read as the ControlNetHED annotator ({type(exc).__name__}: "
                           f"{exc}); get the file again from {HED_WEIGHTS.url}") from exc
    model = ControlNetHED()
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


class DPTDepth:
    """DPT-Large depth through transformers, as `evaluations/depth_rmse.py` calls it."""

    def __init__(self, folder: Path, device: str = "cpu"):
        from transformers import DPTForDepthEstimation, DPTImageProcessor  # delegated

        self.processor = DPTImageProcessor.from_pretrained(str(folder), local_files_only=True)
        self.model = DPTForDepthEstimation.from_pretrained(str(folder), local_files_only=True,
                                                           use_safetensors=True).to(device).eval()
        self.device = device

    @classmethod
    def from_cache(cls, device: str = "cpu", folder: str | None = None) -> "DPTDepth":
        files = require_all([functools.partial(spec.resolve, Path(folder) / spec.filename.split("/", 1)[1]
                                               if folder else None, False) for spec in DPT_LARGE],
                            "the DPT-Large depth network")
        return cls(files[0].parent, device)

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """(B, 512, 512) predicted depth for uint8 RGB images (H, W, 3)."""
        inputs = self.processor(images=list(images), return_tensors="pt", size=DPT_SIZE).to(self.device)
        return self.model(**inputs).predicted_depth.float().cpu()
