"""The FID Inception network (TF inception-2015-12-05) as ADM's evaluator uses it, in PyTorch.

The network and its converted weights are torch-fidelity's (`weights-inception-2015-12-05-6726825d.pth`,
Apache-2.0); its blocks and its TF1-exact bilinear resize are reused from `torch_fidelity`. Written here
is only what torch-fidelity does not do: one forward pass that returns all three ADM feature sets,

- ``pool``    pool_3, 2048 dims (FID, Precision/Recall),
- ``spatial`` mixed_6/conv = ``Mixed_6d.branch1x1`` (after BN+ReLU), first 7 channels flattened in HWC
  order, 17*17*7 = 2023 dims (sFID; NCHW order or Mixed_6e would give different numbers),
- ``logits``  pool_3 @ W^T without the bias, 1008 classes (Inception Score),

and weights loading with `torch.load(weights_only=True)` after a sha256 check (torch-fidelity's own loader
unpickles with `weights_only=False`).

The clean-FID column uses clean-fid's "clean" mode: PIL bicubic resize in float (`cleanfid.resize`) and
the NVIDIA TorchScript Inception (`inception-2015-12-05.pt`) through `cleanfid.inception_torchscript`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn
from torch_fidelity.feature_extractor_inceptionv3 import (BasicConv2d, InceptionA, InceptionB, InceptionC,
                                                          InceptionD, InceptionE_1, InceptionE_2)
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from harness.errors import ArbenchError, InputError
from harness.weights import WeightSpec, register_weights

FID_INCEPTION = register_weights(WeightSpec(
    name="fid-inception-v3",
    filename="weights-inception-2015-12-05-6726825d.pth",
    url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    license="Apache-2.0 (TF inception-2015-12-05, converted by torch-fidelity)",
    description="FID Inception-v3 (the graph ADM's evaluator runs), PyTorch weights from torch-fidelity",
))

CLEANFID_INCEPTION = register_weights(WeightSpec(
    name="cleanfid-inception-v3",
    filename="inception-2015-12-05.pt",
    url="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
    sha256="f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4",
    license="NVIDIA Source Code License (StyleGAN2-ADA metrics model; non-commercial)",
    description="TorchScript Inception used by clean-fid's 'clean' mode (clean-FID column)",
))


@dataclass(frozen=True)
class InceptionConfig:
    """The ADM feature protocol; every field changes the numbers and goes into signatures."""

    input_size: int = 299
    resize: str = "tf1-bilinear"
    pool_dims: int = 2048
    spatial_channels: int = 7  # ADM keeps mixed_6/conv[..., :7]
    spatial_layer: str = "Mixed_6d.branch1x1"
    num_classes: int = 1008

    @property
    def spatial_dims(self) -> int:
        return 17 * 17 * self.spatial_channels


@dataclass
class InceptionFeatures:
    """Per-image ADM features (float32): pool (N, 2048), spatial (N, 2023), logits (N, 1008)."""

    pool: torch.Tensor
    spatial: torch.Tensor
    logits: torch.Tensor


class FIDInceptionV3(nn.Module):
    """torch-fidelity's FID Inception-v3 (same module names, so the official state dict loads strictly)."""

    def __init__(self, config: InceptionConfig = InceptionConfig()):
        super().__init__()
        self.config = config
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.MaxPool_1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.MaxPool_2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE_1(1280)
        self.Mixed_7c = InceptionE_2(2048)
        self.AvgPool = nn.AdaptiveAvgPool2d(output_size=(1, 1))
        self.fc = nn.Linear(2048, config.num_classes)
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor) -> InceptionFeatures:
        """`images`: uint8 (N, 3, H, W), any H and W; resized to 299 exactly as the TF graph does."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"the Inception network takes uint8 (N, 3, H, W) images; got {images.dtype} "
                             f"{tuple(images.shape)}.")
        size = self.config.input_size
        x = interpolate_bilinear_2d_like_tensorflow1x(images.float(), size=(size, size), align_corners=False)
        x = (x - 128) / 128
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                     "Mixed_6c"):
            x = getattr(self, name)(x)
        # mixed_6/conv is the 1x1 branch of Mixed_6d; recomputing it (0.1% of the FLOPs) keeps the
        # blocks torch-fidelity's own.
        spatial = self.Mixed_6d.branch1x1(x)[:, :self.config.spatial_channels]
        spatial = spatial.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        for name in ("Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool"):
            x = getattr(self, name)(x)
        pool = torch.flatten(x, 1)
        logits = pool @ self.fc.weight.T
        return InceptionFeatures(pool.float(), spatial.float(), logits.float())


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from `.safetensors` or a tensors-only `.pth` (never unpickles objects)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ArbenchError(f"{path} is not a readable tensors-only checkpoint ({exc}); fetch it again.") from exc


def load_fid_inception(path: str | Path | None = None, device: str = "cpu",
                       config: InceptionConfig = InceptionConfig()) -> tuple[FIDInceptionV3, str]:
    """The FID Inception with torch-fidelity's weights, and the sha256 of the file it loaded.

    `path` defaults to the weights cache; an explicit path is used as given (its own sha256 is returned
    for the signature, so a non-official file cannot pass as the official one).
    """
    spec = FID_INCEPTION if path is None else replace(FID_INCEPTION, sha256=None)
    resolved = spec.resolve(path)
    digest = spec.verify(resolved)
    model = FIDInceptionV3(config)
    state = load_state_dict_file(resolved)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ArbenchError(f"{resolved} is not the FID Inception checkpoint: missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}. Fetch {FID_INCEPTION.url}.")
    return model.to(device), digest


def load_cleanfid_inception(path: str | Path | None = None, device: str = "cpu") -> tuple[nn.Module, str]:
    """clean-fid's TorchScript Inception (features of 299x299 float images in [0, 255]) and its sha256."""
    from cleanfid.inception_torchscript import InceptionV3W

    spec = CLEANFID_INCEPTION if path is None else replace(CLEANFID_INCEPTION, sha256=None)
    resolved = spec.resolve(path)
    digest = spec.verify(resolved)
    if resolved.name != CLEANFID_INCEPTION.filename:
        raise ArbenchError(f"clean-fid loads its network by the file name {CLEANFID_INCEPTION.filename}; "
                           f"rename {resolved} to it.")
    model = InceptionV3W(str(resolved.parent), download=False, resize_inside=False)
    return model.to(device).eval(), digest


def clean_resize(images_nhwc: np.ndarray) -> torch.Tensor:
    """clean-fid's 'clean' preprocessing: per-channel PIL bicubic to 299 in float32, no re-quantisation."""
    from cleanfid.resize import build_resizer

    resize = build_resizer("clean")
    return torch.from_numpy(np.stack([resize(img) for img in images_nhwc])).permute(0, 3, 1, 2).contiguous()


def iter_batches(images: Iterable[np.ndarray] | np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Fixed-size batches of uint8 NHWC images from an array or an iterator of chunks."""
    if isinstance(images, np.ndarray):
        for start in range(0, len(images), batch_size):
            yield images[start:start + batch_size]
        return
    pending: list[np.ndarray] = []
    count = 0
    for chunk in images:
        pending.append(chunk)
        count += len(chunk)
        while count >= batch_size:
            joined = np.concatenate(pending)
            yield joined[:batch_size]
            pending, count = [joined[batch_size:]], count - batch_size
    if count:
        yield np.concatenate(pending)


def to_nchw_tensor(batch_nhwc: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """uint8 NHWC NumPy -> uint8 NCHW tensor on `device` (the network resizes and normalises)."""
    return torch.from_numpy(np.ascontiguousarray(batch_nhwc)).to(device).permute(0, 3, 1, 2)


@torch.inference_mode()
def extract_inception_features(model: FIDInceptionV3, images: Iterable[np.ndarray] | np.ndarray,
                               batch_size: int = 64, device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """ADM features of uint8 NHWC images as float32 arrays {"pool", "spatial", "logits"}.

    The next batch is read on a background thread while the network runs, so it never waits for I/O.
    """
    outputs: dict[str, list[np.ndarray]] = {"pool": [], "spatial": [], "logits": []}
    batches = iter_batches(images, batch_size)
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(next, batches, None)
        while (batch := pending.result()) is not None:
            pending = reader.submit(next, batches, None)
            feats = model(to_nchw_tensor(batch, device))
            for key, parts in outputs.items():
                parts.append(getattr(feats, key).cpu().numpy())
    if not outputs["pool"]:
        raise InputError("no images to compute features of.")
    return {key: np.concatenate(parts) for key, parts in outputs.items()}


@torch.inference_mode()
def extract_cleanfid_features(model: nn.Module, images: Iterable[np.ndarray] | np.ndarray, batch_size: int = 64,
                              device: str | torch.device = "cpu") -> np.ndarray:
    """clean-fid 'clean'-mode pool features (N, 2048) of uint8 NHWC images."""
    parts = [model(clean_resize(batch).to(device)).float().cpu().numpy() for batch in iter_batches(images, batch_size)]
    return np.concatenate(parts)


__all__ = ["FID_INCEPTION", "CLEANFID_INCEPTION", "InceptionConfig", "InceptionFeatures", "FIDInceptionV3",
           "load_fid_inception", "load_cleanfid_inception", "load_state_dict_file", "clean_resize",
           "extract_inception_features", "extract_cleanfid_features", "iter_batches"]
