"""The Kinetics-400 I3D that defines FVD, in two pinned forms, and its feature protocol.

FVD (Unterthiner et al. 2018) embeds a clip with DeepMind's RGB Inception-v1 I3D from TF-Hub
(`deepmind/i3d-kinetics-400/1`) and takes the 400 pre-softmax logits averaged over time. Two PyTorch
copies of exactly those TF-Hub weights circulate, and both are supported here:

* `i3d-kinetics400-tats`: `i3d_pretrained_400.pt`, the TF-Hub variables converted to a plain state
  dict by TATS/VideoGPT (`convert_tf_pretrained.py`), loaded into `InceptionI3d` below, the
  project's own implementation with the same parameter names (`Conv3d_1a_7x7.conv3d.weight`,
  `Mixed_4b.b1b.bn.running_var`, `logits.conv3d.bias`, ...).
* `i3d-kinetics400-torchscript`: StyleGAN-V's TorchScript port `i3d_torchscript.pt`, called as
  `model(x, rescale=False, resize=False, return_features=True)` on inputs we already resized.

Neither file publishes a sha256; both are pinned by the git blob id that every repository vendoring
them shares (sha1 of `"blob <size>\\0" + bytes`, what `git hash-object FILE` prints).
`check_backends_agree` runs both on the same clips.

Feature protocol (the TF reference `preprocess` + `create_id3_embedding`): uint8 frames
`[N, T, H, W, 3]` -> every frame resized to 224x224 (bilinear, no crop, no antialias; PyTorch half-pixel
sampling by default, TF1's legacy sampling on request) -> `x/127.5 - 1` -> I3D -> `[N, 400]` float32.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ArbenchError
from harness.weights import WeightSpec, register_weights

FEATURE_DIM = 400
INPUT_SIZE = 224
#: I3D's temporal stride is 8 before a 2-frame average pool, so 9 frames is the hard minimum; FVD
#: tools require 10 and the standard is 16.
MIN_FRAMES = 10


@dataclass(frozen=True)
class GitBlobPinnedSpec(WeightSpec):
    """A weights spec pinned by the git blob id the file has in the repositories that vendor it,
    because its publishers give no sha256. The sha256 is recorded in the signature once computed."""

    git_blob_sha1: str = ""

    def verify(self, path: Path) -> str:
        digest = super().verify(path)
        blob = git_blob_sha1(path)
        if blob != self.git_blob_sha1:
            raise ArbenchError(
                f"{self.name}: {path} has git blob id {blob}, expected {self.git_blob_sha1} (the file every FVD "
                f"repository vendors). It is corrupt, an HTML error page, or another release; delete it and "
                f"fetch it again from {self.url}."
            )
        return digest


def git_blob_sha1(path: Path, chunk: int = 1 << 20) -> str:
    """`git hash-object PATH`: sha1 over a `blob <size>\\0` header and the bytes."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


TATS_WEIGHTS = register_weights(GitBlobPinnedSpec(
    name="i3d-kinetics400-tats",
    filename="i3d_pretrained_400.pt",
    url="https://github.com/songweige/TATS/raw/main/tats/fvd/i3d_pretrained_400.pt",
    sha256=None,
    license="MIT (TATS/VideoGPT); weights converted from TF-Hub deepmind/i3d-kinetics-400/1",
    description="TF-Hub Kinetics-400 I3D as a PyTorch state dict (TATS/VideoGPT conversion), for FVD",
    git_blob_sha1="a867b87ac3a9097d200598b1d48a1b890d8ec744",
))

TORCHSCRIPT_WEIGHTS = register_weights(GitBlobPinnedSpec(
    name="i3d-kinetics400-torchscript",
    filename="i3d_torchscript.pt",
    url="https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
    sha256=None,
    license="unstated (StyleGAN-V port of TF-Hub deepmind/i3d-kinetics-400/1)",
    description="StyleGAN-V TorchScript port of the TF-Hub Kinetics-400 I3D, for FVD",
    git_blob_sha1="93daef59c7ae0e9e8f76225521407e60cbafa6aa",
))


# -- architecture -------------------------------------------------------------------------------


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding for one axis: (before, after), the extra pixel going after."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    t, h, w = x.shape[-3:]
    (t0, t1), (h0, h1), (w0, w1) = (same_padding(s, k, st) for s, k, st in zip((t, h, w), kernel, stride))
    return F.pad(x, (w0, w1, h0, h1, t0, t1))


class Unit3D(nn.Module):
    """Conv3d ('SAME' padding) + BatchNorm (TF-Hub has no BN scale: the converted `bn.weight` is ones) + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int] = (1, 1, 1),
                 stride: Sequence[int] = (1, 1, 1), bn_eps: float = 1e-3, logits: bool = False):
        super().__init__()
        self.kernel, self.stride, self.is_logits = tuple(kernel), tuple(stride), logits
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, padding=0, bias=logits)
        if not logits:
            self.bn = nn.BatchNorm3d(out_channels, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(pad_same(x, self.kernel, self.stride))
        return x if self.is_logits else F.relu(self.bn(x))


class MaxPool3dSame(nn.Module):
    """Max pooling with TF 'SAME' padding. Inputs follow a ReLU (>= 0), so zero padding equals TF's -inf."""

    def __init__(self, kernel: Sequence[int], stride: Sequence[int]):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; maxpool -> 1x1 (names b0, b1a/b1b, b2a/b2b, b3b)."""

    def __init__(self, in_channels: int, widths: Sequence[int], bn_eps: float):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3b = widths
        self.b0 = Unit3D(in_channels, w0, bn_eps=bn_eps)
        self.b1a = Unit3D(in_channels, w1a, bn_eps=bn_eps)
        self.b1b = Unit3D(w1a, w1b, (3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit3D(in_channels, w2a, bn_eps=bn_eps)
        self.b2b = Unit3D(w2a, w2b, (3, 3, 3), bn_eps=bn_eps)
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, w3b, bn_eps=bn_eps)
        self.out_channels = w0 + w1b + w2b + w3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


#: Inception-v1 widths per mixed block: (b0, b1a, b1b, b2a, b2b, b3b), from Carreira & Zisserman 2017.
MIXED_WIDTHS: dict[str, tuple[int, ...]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


@dataclass(frozen=True)
class I3DConfig:
    """The released FVD network: Kinetics-400 classes, RGB input, TF BatchNorm epsilon.

    `bn_eps` is Sonnet's default 1e-3, which the TF-Hub graph uses; the TATS/VideoGPT PyTorch code
    builds its BatchNorms with 1e-5, a small deviation from the network that defines FVD.
    """

    num_classes: int = FEATURE_DIM
    in_channels: int = 3
    bn_eps: float = 1e-3
    mixed_widths: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: dict(MIXED_WIDTHS))


class InceptionI3d(nn.Module):
    """RGB Inception-v1 I3D (Carreira & Zisserman 2017) whose `forward` returns time-averaged logits.

    Input: float `[B, 3, T, 224, 224]` in [-1, 1], T >= 9. Output: `[B, num_classes]` pre-softmax logits.
    """

    def __init__(self, config: I3DConfig = I3DConfig()):
        super().__init__()
        self.config = config
        eps = config.bn_eps
        self.Conv3d_1a_7x7 = Unit3D(config.in_channels, 64, (7, 7, 7), (2, 2, 2), bn_eps=eps)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, bn_eps=eps)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), bn_eps=eps)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        channels = 192
        pools_before = {"Mixed_4b": ((3, 3, 3), (2, 2, 2)), "Mixed_5b": ((2, 2, 2), (2, 2, 2))}
        pool_names = {"Mixed_4b": "MaxPool3d_4a_3x3", "Mixed_5b": "MaxPool3d_5a_2x2"}
        self.blocks: list[str] = []
        for name, widths in config.mixed_widths.items():
            if name in pools_before:
                setattr(self, pool_names[name], MaxPool3dSame(*pools_before[name]))
                self.blocks.append(pool_names[name])
            block = InceptionModule(channels, widths, eps)
            setattr(self, name, block)
            self.blocks.append(name)
            channels = block.out_channels
        self.logits = Unit3D(channels, config.num_classes, logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] < 9:
            raise ArbenchError(f"I3D needs at least 9 frames per clip, got {x.shape[2]}")
        x = self.Conv3d_1a_7x7(x)
        x = self.MaxPool3d_2a_3x3(x)
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
        x = self.MaxPool3d_3a_3x3(x)
        for name in self.blocks:
            x = getattr(self, name)(x)
        # TF: VALID avg_pool3d [2, 7, 7] stride 1, (dropout: identity at eval), 1x1 logits, spatial squeeze,
        # then the mean over the remaining time steps.
        x = F.avg_pool3d(x, kernel_size=(2, 7, 7), stride=1)
        return self.logits(x).mean(dim=(3, 4)).mean(dim=2)


# -- loading ------------------------------------------------------------------------------------


def expected_state_shapes(config: I3DConfig = I3DConfig()) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the released `i3d_pretrained_400.pt` (no `num_batches_tracked`)."""
    with torch.device("meta"):
        model = InceptionI3d(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def load_state_dict_strict(model: InceptionI3d, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load the converted TF-Hub state dict, naming every missing, unexpected or misshaped tensor."""
    expected = expected_state_shapes(model.config)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(k for k in set(state) - set(expected) if not k.endswith("num_batches_tracked"))
    misshaped = sorted(f"{k}: {tuple(state[k].shape)} != {expected[k]}" for k in set(expected) & set(state)
                       if tuple(state[k].shape) != expected[k])
    if missing or unexpected or misshaped:
        raise ArbenchError(
            f"{source} is not the Kinetics-400 I3D FVD checkpoint: {len(missing)} missing tensors "
            f"{missing[:4]}, {len(unexpected)} unexpected {unexpected[:4]}, misshaped {misshaped[:4]}. "
            f"Use i3d_pretrained_400.pt from {TATS_WEIGHTS.url}."
        )
    full = dict(state)
    for key, buffer in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in full:
            full[key] = buffer
    model.load_state_dict(full, strict=True)


def load_tats_i3d(path: str | Path | None = None, device: str | torch.device = "cpu",
                  verify: bool = True) -> InceptionI3d:
    """The project's I3D with the pinned `i3d_pretrained_400.pt` (plain tensors only: weights_only=True).

    `verify=False` skips the pinned-hash check (for converting or testing other state dicts of the same
    architecture; such numbers are not FVD)."""
    resolved = TATS_WEIGHTS.resolve(path, verify=verify)
    state = torch.load(resolved, map_location="cpu", weights_only=True)
    model = InceptionI3d()
    load_state_dict_strict(model, state, str(resolved))
    return model.eval().to(device)


class TorchScriptI3D(nn.Module):
    """StyleGAN-V's TorchScript I3D behind the same interface as `InceptionI3d` ([-1, 1] 224x224 in, logits out).

    TorchScript archives hold code, not arbitrary pickles; we still only load the file whose git blob id
    matches the pinned release.
    """

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        self.module = torch.jit.load(str(TORCHSCRIPT_WEIGHTS.resolve(path)), map_location=device).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x, rescale=False, resize=False, return_features=True)


# -- the feature protocol -----------------------------------------------------------------------


#: "torch-halfpixel": PyTorch bilinear with half-pixel centres (TATS/VideoGPT `preprocess`, the default);
#: "tf1-legacy": TF1 `tf.image.resize_bilinear` as in the original FVD code (source = output * in / out).
RESIZE_MODES = ("torch-halfpixel", "tf1-legacy")
#: How each mode is named in signatures. "tf1-legacy-f32" (issue 16): source positions in float32 as TF's
#: kernel computes them; the earlier float64 positions differed by up to 0.009 grey levels and were "tf1-legacy".
RESIZE_IDS = {"torch-halfpixel": "torch-halfpixel", "tf1-legacy": "tf1-legacy-f32"}


def tf1_resize_bilinear(frames: torch.Tensor, size: int) -> torch.Tensor:
    """TF1 `resize_bilinear(align_corners=False)` of float32 `[N, C, H, W]`: output pixel j samples source
    position float32(j) * float32(in / out) (no half-pixel shift), clamped at the last pixel, interpolated along
    x then y as TF's `compute_lerp`. PyTorch has no such mode; torch_fidelity's transcription of TF's kernel
    (its "slow" method, bit-exact on CPU, also behind the ADM Inception's resize) is used rather than a copy.

    >>> frames = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 2, 4)
    >>> tf1_resize_bilinear(frames, 3)[0, 0, 0].tolist()  # positions 0, 4/3, 8/3; last tap clamped
    [0.0, 1.3333333730697632, 2.6666667461395264]
    """
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    if frames.dtype != torch.float32:
        raise ArbenchError(f"tf1_resize_bilinear works in float32 as TF does, got {frames.dtype}")
    return interpolate_bilinear_2d_like_tensorflow1x(frames, size=(size, size), align_corners=False, method="slow")


def preprocess_for_i3d(clips: torch.Tensor | np.ndarray, size: int = INPUT_SIZE,
                       resize: str = "torch-halfpixel") -> torch.Tensor:
    """uint8 `[N, T, H, W, 3]` -> float `[N, 3, T, size, size]` in [-1, 1]: every frame resized bilinearly
    (no antialias, no crop; `resize` picks the sampling convention, see `RESIZE_MODES`), then `x/127.5 - 1`."""
    clips = torch.as_tensor(clips)
    if clips.dtype != torch.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
        raise ArbenchError(f"I3D input must be uint8 [N, T, H, W, 3], got {clips.dtype} {tuple(clips.shape)}")
    if resize not in RESIZE_MODES:
        raise ArbenchError(f"unknown resize {resize!r}: use one of {', '.join(RESIZE_MODES)}")
    n, t, h, w, _ = clips.shape
    frames = clips.reshape(n * t, h, w, 3).permute(0, 3, 1, 2).float()
    if (h, w) != (size, size):
        frames = (tf1_resize_bilinear(frames, size) if resize == "tf1-legacy" else
                  F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False, antialias=False))
    frames = frames / 127.5 - 1.0
    return frames.reshape(n, t, 3, size, size).transpose(1, 2).contiguous()


class I3DFeatures(nn.Module):
    """uint8 clips -> 400-d FVD features, batch by batch (the feature network of every FVD protocol)."""

    feature_dim = FEATURE_DIM

    def __init__(self, network: nn.Module, batch_size: int = 8, resize: str = "torch-halfpixel"):
        super().__init__()
        self.network = network.eval()
        self.batch_size = batch_size
        self.resize = resize

    @torch.no_grad()
    def forward(self, clips: torch.Tensor | np.ndarray) -> torch.Tensor:
        device = next(self.network.parameters(), torch.empty(0)).device
        out = []
        for start in range(0, len(clips), self.batch_size):
            batch = preprocess_for_i3d(clips[start:start + self.batch_size], resize=self.resize).to(device)
            out.append(self.network(batch).float().cpu())
        return torch.cat(out) if out else torch.empty(0, FEATURE_DIM)


def load_i3d_features(backend: str = "tats", device: str | torch.device = "cpu", path: str | Path | None = None,
                      batch_size: int = 8, resize: str = "torch-halfpixel") -> I3DFeatures:
    """The FVD feature extractor for `backend` "tats" (project I3D + i3d_pretrained_400.pt) or "torchscript"."""
    if backend == "tats":
        return I3DFeatures(load_tats_i3d(path, device), batch_size, resize)
    if backend == "torchscript":
        return I3DFeatures(TorchScriptI3D(path, device), batch_size, resize)
    raise ArbenchError(f"unknown I3D backend {backend!r}: use 'tats' or 'torchscript'")


def weights_spec(backend: str) -> GitBlobPinnedSpec:
    """The pinned weights file of an I3D backend ("tats" or "torchscript")."""
    specs = {"tats": TATS_WEIGHTS, "torchscript": TORCHSCRIPT_WEIGHTS}
    if backend not in specs:
        raise ArbenchError(f"unknown I3D backend {backend!r}: use 'tats' or 'torchscript'")
    return specs[backend]


def check_backends_agree(clips: np.ndarray, tolerance: float = 1e-2, device: str = "cpu") -> dict[str, float]:
    """Run both pinned backends on the same clips; raise unless their logits agree.

    Returns the largest absolute difference and the relative L2 difference of the logits. Both files
    hold the same TF-Hub weights, so they should agree to float rounding (up to BN epsilon handling).
    """
    ours = load_i3d_features("tats", device)(clips)
    theirs = load_i3d_features("torchscript", device)(clips)
    report = {
        "max_abs_diff": float((ours - theirs).abs().max()),
        "relative_l2": float((ours - theirs).norm() / theirs.norm().clamp_min(1e-12)),
    }
    if report["relative_l2"] > tolerance:
        raise ArbenchError(f"the two I3D backends disagree: {report}; check both files with `arbench weights verify`")
    return report
