"""The bundled detector and colour classifier of `shapes-t2i` (the offline toy; NOT GenEval's Mask2Former or CLIP).

ShapesNet is a small fully-convolutional network trained by `baselines/imagegen/train_shapes_detector.py` on
rendered scenes (`harness.datasets.shapes`), weights in `shapes_detector.safetensors` next to this file. Per pixel
it predicts a shape class (background, circle, square, triangle) and a colour (background, red, green, blue,
yellow). Instances are the 4-connected components of the pixels predicted as one class, so it returns what GenEval's
rule engine consumes from Mask2Former: per class name, `Detection`s with a box, a score and a binary mask.

- score: the component's mean probability of its class, times min(1, area / MIN_AREA), so specks score low as a
  detector's weak proposals would (MIN_AREA is half the smallest stamp the renderer draws);
- colour (GenEval's CLIP zero-shot on masked crops, substituted): the argmax of the colour head's probabilities
  averaged over the instance mask, named with GenEval's colour names.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from torch import nn

from harness.datasets.shapes import COLOR_NAMES, SCALE, SHAPES, shape_mask
from harness.errors import InputError, MissingAssetError
from harness.metrics.geneval import Detection
from harness.provenance import sha256_file

WEIGHTS_PATH = Path(__file__).resolve().parent / "shapes_detector.safetensors"
#: half the area, in image pixels, of the smallest stamp the renderer draws (a 5-cell circle)
MIN_AREA = 0.5 * float(shape_mask("circle", 5).sum()) * SCALE ** 2
DETECTOR_ID = "shapes-fcn-components-v1"
COLOR_MODEL_ID = "shapes-fcn-colour-head-v1"


class ShapesNet(nn.Module):
    """2x2 average pooling, dilated 3x3 convolutions (receptive field 25 cells of 2x2 px, more than the 16-cell
    canvas), two 1x1 heads, logits upsampled back to the input's pixels (bilinear)."""

    def __init__(self, width: int = 32):
        super().__init__()
        dilations = (1, 1, 2, 4, 4)
        layers, channels = [], 3
        for d in dilations:
            layers += [nn.Conv2d(channels, width, 3, padding=d, dilation=d), nn.ReLU()]
            channels = width
        self.body = nn.Sequential(*layers)
        self.shape_head = nn.Conv2d(width, 1 + len(SHAPES), 1)
        self.color_head = nn.Conv2d(width, 1 + len(COLOR_NAMES), 1)

    @staticmethod
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float (N, 3, H, W) in -1..1."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise InputError(f"ShapesNet takes uint8 (N, H, W, 3) images; got {images.dtype} {tuple(images.shape)}")
        return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed images -> (shape logits (N, 4, H, W), colour logits (N, 5, H, W))."""
        h = self.body(F.avg_pool2d(x, SCALE, ceil_mode=True))
        size = x.shape[-2:]
        return (F.interpolate(self.shape_head(h), size, mode="bilinear", align_corners=False),
                F.interpolate(self.color_head(h), size, mode="bilinear", align_corners=False))


@lru_cache(maxsize=2)
def load_shapes_net(path: str | None = None) -> tuple[ShapesNet, str]:
    """The bundled network (eval mode) and the sha256 of its weights file."""
    from safetensors.torch import load_file

    file = Path(path) if path else WEIGHTS_PATH
    if not file.is_file():
        raise MissingAssetError(f"{file} is missing; it ships with the project. Recreate it with "
                                "`python -m baselines.imagegen.train_shapes_detector`.")
    model = ShapesNet()
    model.load_state_dict(load_file(str(file)))
    return model.eval().requires_grad_(False), sha256_file(file)


class ShapesDetector:
    """`detect(image)` -> {class name: [Detection]} and `classify(image, detections, name)` -> colour names."""

    def __init__(self, model: ShapesNet):
        self.model = model
        self._cache: tuple[Image.Image, np.ndarray, np.ndarray] | None = None  # holds the image: no id reuse

    @classmethod
    def from_pretrained(cls, path: str | None = None) -> "ShapesDetector":
        return cls(load_shapes_net(path)[0])

    @torch.inference_mode()
    def probabilities(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
        """(shape probabilities (4, H, W), colour probabilities (5, H, W)) of one RGB image (cached per image)."""
        if self._cache is not None and self._cache[0] is image:
            return self._cache[1], self._cache[2]
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy())[None]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a 38k-parameter network on one image: more threads cost far more than they save
        try:
            shape_logits, color_logits = self.model(self.model.preprocess(pixels))
            out = F.softmax(shape_logits[0], 0).numpy(), F.softmax(color_logits[0], 0).numpy()
        finally:
            torch.set_num_threads(threads)
        self._cache = (image, *out)
        return out

    def detect(self, image: Image.Image) -> dict[str, list[Detection]]:
        shape_p, _ = self.probabilities(image)
        label = shape_p.argmax(0)
        out: dict[str, list[Detection]] = {}
        for k, name in enumerate(SHAPES, start=1):
            components, n = ndimage.label(label == k)
            dets = []
            for i in range(1, n + 1):
                mask = components == i
                rows, cols = np.nonzero(mask)
                area = float(mask.sum())
                score = float(shape_p[k][mask].mean()) * min(1.0, area / MIN_AREA)
                box = (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))
                dets.append(Detection(box, score, mask))
            out[name] = dets
        return out

    def detect_batch(self, images: Sequence[Image.Image]) -> list[dict[str, list[Detection]]]:
        """`detect` for each image in turn: the network is tiny, so batching would save nothing (and the colour
        check reads the cached probabilities of the last detected image)."""
        return [self.detect(image) for image in images]

    def classify(self, image: Image.Image, detections: Sequence[Detection], name: str) -> list[str]:
        """One of `COLOR_NAMES` per detection: the colour head's mean probabilities over its mask (`name` unused;
        GenEval's CLIP prompt names the object, this head does not need it)."""
        _, color_p = self.probabilities(image)
        colors = []
        for det in detections:
            mask = det.mask if det.mask is not None else _box_mask(det.box, color_p.shape[1:])
            colors.append(COLOR_NAMES[int(color_p[1:, mask].mean(axis=1).argmax())])
        return colors


def _box_mask(box: Sequence[float], shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    mask[y1:y2, x1:x2] = True
    return mask
