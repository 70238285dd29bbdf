"""Controllability metrics of ControlAR (hustvl/ControlAR@87e32e9, `evaluations/`), as upstream computes them:
the control map is re-extracted from each generated image and compared with the control the image was made from;
each metric is the mean over images of a per-image score.

- `edge_f1` (canny_f1score.py): binary F1 of the generated image's Canny edges against the canny control, pixels
  equal to 255 positive (torchmetrics' `BinaryF1Score` per image, 0 where there is no positive at all);
- `ms_ssim` (hed_ssim.py): multi-scale SSIM (torchmetrics, data_range 1, Gaussian 11 x 11, sigma 1.5, the five
  standard scale weights) of HED(generated) / 255 against the HED control / 255, both clipped to [0, 1];
- `depth_rmse` (depth_rmse.py): RMSE between DPT's predicted depth rescaled to `pred * 255 / max(pred)` and the
  depth control (its first channel, 0..255).

Upstream averages per batch of 16 and then over batches (hed_ssim.py) or over images (the others); here every
metric is a mean over images, independent of batch and world size (they differ only through a last partial batch
of hed_ssim.py).

`ClipScore` accumulates the CLIP score of `harness.features.clip_score` the same way (mean over images); the
tasks' clean-FID is `harness.metrics.frechet.FrechetDistance` on clean-fid's Inception features.
"""

from __future__ import annotations

import numpy as np
import torch

from harness.metrics.base import Accumulator


def edge_f1(pred: np.ndarray, target: np.ndarray) -> float:
    """Binary F1 of two edge maps (pixels equal to 255 are edges), 0 when neither has an edge.

    >>> a = np.array([[255, 0], [255, 0]], np.uint8); b = np.array([[255, 255], [0, 0]], np.uint8)
    >>> edge_f1(a, b)
    0.5
    >>> edge_f1(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8))
    0.0
    """
    if pred.shape != target.shape:
        raise ValueError(f"edge maps of shapes {pred.shape} and {target.shape}")
    p, t = pred == 255, target == 255
    tp = int(np.count_nonzero(p & t))
    denominator = 2 * tp + int(np.count_nonzero(p & ~t)) + int(np.count_nonzero(~p & t))
    return 2 * tp / denominator if denominator else 0.0


def ms_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image MS-SSIM (N,) of soft maps (N, H, W) in 0..255 (divided by 255 and clipped, as hed_ssim.py).

    >>> x = torch.rand(1, 192, 192) * 255
    >>> round(float(ms_ssim(x, x)[0]), 4)
    1.0
    """
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    p = (pred.float() / 255.0).clip(0, 1).unsqueeze(1)
    t = (target.float() / 255.0).clip(0, 1).unsqueeze(1)
    return multiscale_structural_similarity_index_measure(p, t, data_range=1.0, reduction="none")


def depth_rmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image RMSE (N,) of predicted depth (N, H, W) rescaled to 255 at its maximum against targets 0..255.

    >>> pred = torch.tensor([[[1.0, 2.0], [2.0, 2.0]]]); target = torch.tensor([[[127.5, 255.0], [255.0, 255.0]]])
    >>> float(depth_rmse(pred, target)[0])
    0.0
    """
    if pred.shape != target.shape:
        raise ValueError(f"depth maps of shapes {tuple(pred.shape)} and {tuple(target.shape)}")
    scaled = pred.float() * 255 / pred.float().flatten(1).amax(dim=1)[:, None, None]
    return ((scaled - target.float()) ** 2).flatten(1).mean(dim=1).sqrt()


class PerImageMean(Accumulator):
    """Mean over images of a per-image score (sum and count reduced across ranks).

    Example:
        >>> m = EdgeF1()
        >>> m.update(torch.tensor([0.5, 1.0])); m.update(torch.tensor([0.0]))
        >>> m.values()[0].value
        0.5
    """

    def __init__(self):
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor) -> None:
        scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
        self.total += scores.sum()
        self.count += scores.numel()

    def compute(self) -> torch.Tensor:
        if int(self.count) == 0:
            raise ValueError(f"{self.metric_name}: no images were scored")
        return self.total / self.count


class EdgeF1(PerImageMean):
    metric_name, unit, higher_is_better, version = "canny_f1", "F1", True, "1"
    description = "F1 of Canny(100, 200) edges of each generated image vs its canny control, mean over images"


class HedSSIM(PerImageMean):
    metric_name, unit, higher_is_better, version = "hed_ssim", "MS-SSIM", True, "1"
    description = "MS-SSIM of ControlNet-HED soft edges of each generated image vs its HED control, mean over images"


class DepthRMSE(PerImageMean):
    metric_name, unit, higher_is_better, version = "depth_rmse", "RMSE (0..255)", False, "1"
    description = "RMSE of DPT-Large depth (x 255 / max) of each generated image vs its depth control, mean over images"


class ClipScore(PerImageMean):
    """CLIP score as ControlAR's `evaluations/t2i/evaluation.py` reports it: the mean cosine similarity (unscaled,
    -1..1) of CLIP ViT-B/32 image and caption embeddings (`harness.features.clip_score`).

    Example:
        >>> m = ClipScore(); m.update(torch.tensor([0.25, 0.35])); round(m.values()[0].value, 6)
        0.3
    """

    metric_name, unit, higher_is_better, version = "clip_score", "cosine", True, "1"
    description = ("CLIP ViT-B/32 cosine of each generated image with its caption ('A photo depicts ' prefix, "
                   "ControlAR/GigaGAN evaluation.py), mean over images")
