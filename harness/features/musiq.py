"""MUSIQ (Ke et al., ICCV 2021) as VBench's imaging quality runs it: pyiqa's `MUSIQ` with the SPAQ checkpoint.

Written here rather than imported: pyiqa (0.1.16) would pull about 80 packages into the project. The network and
its input pipeline follow pyiqa's `archs/musiq_arch.py` and `data/multiscale_trans_util.py` (parameter names are
pyiqa's, so the released checkpoint loads by name; `tests/golden/make_vbench.py` checks the scores against pyiqa's
code on seeded weights):

- input in [0, 1] -> ``2x - 1``; patches of 32 x 32 from the image resized (bicubic, aspect kept, longer side 224
  and 384; each scale padded or cut to ``ceil(L / 32)^2`` patches) and from the original resolution (all
  patches), each patch tagged with a hashed 10 x 10 spatial position, its scale id and a mask;
- per patch a weight-standardised ResNet root (7 x 7 stride 2, GroupNorm, max-pool, one bottleneck; TF "same"
  padding) -> 8 x 8 x 256 tokens flattened in TF (HWC) order -> a 384-wide embedding;
- a 14-layer pre-norm transformer (6 heads, masked attention with -1e3 fill), CLS token -> linear head (the SPAQ
  model predicts the score directly: one output).

Licences: MUSIQ is google-research/google-research `musiq` (Apache-2.0, JAX); pyiqa's PyTorch version, whose
structure and parameter names this follows, and its converted checkpoints are under PolyForm Noncommercial 1.0.0
(pyiqa 0.1.16 `LICENSE`). VBench's imaging quality depends on that checkpoint either way.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.weights import WeightSpec, register_weights

MUSIQ_SPAQ = register_weights(WeightSpec(
    name="musiq-spaq",
    filename="musiq_spaq_ckpt-358bb6af.pth",
    url="https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/musiq_spaq_ckpt-358bb6af.pth",
    sha256=None,  # pyiqa names the file by a hash prefix (358bb6af) but publishes no full sha256
    license="PolyForm-Noncommercial-1.0.0 (pyiqa's conversion of google-research musiq, Apache-2.0)",
    description="MUSIQ trained on SPAQ (pyiqa's PyTorch conversion); VBench imaging quality",
))


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow 'SAME' zero padding (pyiqa's `exact_padding_2d(mode='same')`)."""
    h, w = x.shape[-2:]
    pad_h = (math.ceil(h / stride) - 1) * stride + kernel - h
    pad_w = (math.ceil(w / stride) - 1) * stride + kernel - w
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


class StdConv(nn.Conv2d):
    """Weight-standardised convolution with 'SAME' padding."""

    def forward(self, x):
        x = same_pad(x, self.kernel_size[0], self.stride[0])
        w = self.weight - self.weight.mean((1, 2, 3), keepdim=True)
        w = w / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride)


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, outplanes: int):
        super().__init__()
        self.conv1, self.gn1 = StdConv(inplanes, inplanes, 1, 1, bias=False), nn.GroupNorm(32, inplanes, eps=1e-4)
        self.conv2, self.gn2 = StdConv(inplanes, inplanes, 3, 1, bias=False), nn.GroupNorm(32, inplanes, eps=1e-4)
        self.conv3, self.gn3 = StdConv(inplanes, outplanes, 1, 1, bias=False), nn.GroupNorm(32, outplanes, eps=1e-4)
        self.conv_proj = StdConv(inplanes, outplanes, 1, 1, bias=False)
        self.gn_proj = nn.GroupNorm(32, outplanes, eps=1e-4)

    def forward(self, x):
        identity = self.gn_proj(self.conv_proj(x))
        x = F.relu(self.gn1(self.conv1(x)))
        x = F.relu(self.gn2(self.conv2(x)))
        return F.relu(self.gn3(self.conv3(x)) + identity)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x, mask):
        b, n, c = x.shape
        q, k, v = (f(x).reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
                   for f in (self.query, self.key, self.value))
        attn = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5
        attn = attn.masked_fill((mask[:, None, :, None] * mask[:, None, None, :]) == 0, -1e3)
        return self.out((attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, mlp_dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attention, self.mlp = Attention(dim, heads), Mlp(dim, mlp_dim)

    def forward(self, x, mask):
        x = x + self.attention(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class _PositionEmbs(nn.Module):
    def __init__(self, grid: int, dim: int):
        super().__init__()
        self.position_emb = nn.Parameter(torch.zeros(1, grid * grid, dim))


class _ScaleEmbs(nn.Module):
    def __init__(self, scales: int, dim: int):
        super().__init__()
        self.scale_emb = nn.Parameter(torch.zeros(scales, dim))


class Encoder(nn.Module):
    def __init__(self, dim: int, mlp_dim: int, heads: int, layers: int, scales: int, grid: int):
        super().__init__()
        self.posembed_input, self.scaleembed_input = _PositionEmbs(grid, dim), _ScaleEmbs(scales, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder_norm = nn.LayerNorm(dim, eps=1e-6)
        self.transformer = nn.ModuleDict({f"encoderblock_{i}": Block(dim, mlp_dim, heads) for i in range(layers)})

    def forward(self, x, spatial, scale, mask):
        x = x + self.posembed_input.position_emb[0][spatial.long()] + self.scaleembed_input.scale_emb[scale.long()]
        x = torch.cat([self.cls.repeat(len(x), 1, 1), x], dim=1)
        mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        for block in self.transformer.values():
            x = block(x, mask)
        return self.encoder_norm(x)


def hashed_positions(grid: int, count_h: int, count_w: int) -> torch.Tensor:
    """pyiqa's `get_hashed_spatial_pos_emb_index`: an h x w patch grid hashed onto grid x grid (nearest)."""
    g = torch.arange(grid).float().reshape(1, 1, grid)
    w = F.interpolate(g, count_w, mode="nearest").repeat(1, count_h, 1)
    h = F.interpolate(g, count_h, mode="nearest").transpose(1, 2).repeat(1, 1, count_w)
    return (h * grid + w).reshape(1, -1)


def _patches(image: torch.Tensor, patch: int, grid: int, scale_id: int, max_len: int) -> torch.Tensor:
    n, _, h, w = image.shape
    rows, cols = math.ceil(h / patch), math.ceil(w / patch)
    p = F.unfold(same_pad(image, patch, patch), patch, stride=patch)
    spatial = hashed_positions(grid, rows, cols).unsqueeze(1).repeat(n, 1, 1).to(p)
    out = torch.cat([p, spatial, torch.full_like(spatial, scale_id), torch.ones_like(spatial)], dim=1)
    if max_len >= 0:
        out = torch.cat([out, torch.zeros(n, out.shape[1], max_len, dtype=out.dtype, device=out.device)],
                        dim=-1)[:, :, :max_len]
    return out


def multiscale_patches(image: torch.Tensor, patch: int = 32, grid: int = 10,
                       longer_sides: tuple[int, ...] = (224, 384), original_max_len: int = -1) -> torch.Tensor:
    """pyiqa's `get_multiscale_patches`: ``[n, tokens, 3 * patch^2 + 3]`` (pixels, position, scale, mask)."""
    _, _, h, w = image.shape
    outputs = []
    for scale_id, side in enumerate(sorted(longer_sides)):
        ratio = side / max(h, w)
        resized = F.interpolate(image, (round(h * ratio), round(w * ratio)), mode="bicubic", align_corners=False)
        outputs.append(_patches(resized, patch, grid, scale_id, int(np.ceil(side / patch) ** 2)))
    outputs.append(_patches(image, patch, grid, len(longer_sides), original_max_len))
    return torch.cat(outputs, dim=-1).transpose(1, 2)


class MUSIQ(nn.Module):
    """pyiqa's `MUSIQ(pretrained_model_path=...)` as VBench builds it (one output, all original-resolution
    patches); `forward` takes images in [0, 1] and returns the score per image."""

    def __init__(self, hidden: int = 384, mlp_dim: int = 1152, heads: int = 6, layers: int = 14, patch: int = 32,
                 grid: int = 10, longer_sides: tuple[int, ...] = (224, 384)):
        super().__init__()
        self.patch, self.grid, self.longer_sides = patch, grid, longer_sides
        token_dim = 64
        self.conv_root = StdConv(3, token_dim, 7, 2, bias=False)
        self.gn_root = nn.GroupNorm(32, token_dim, eps=1e-6)
        self.block1 = Bottleneck(token_dim, token_dim * 4)
        self.embedding = nn.Linear(token_dim * 4 * (patch // 4) ** 2, hidden)
        self.transformer_encoder = Encoder(hidden, mlp_dim, heads, layers, len(longer_sides) + 1, grid)
        self.head = nn.Linear(hidden, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = multiscale_patches((images - 0.5) * 2, self.patch, self.grid, self.longer_sides)
        b, seq_len, _ = x.shape
        spatial, scale, mask = x[:, :, -3], x[:, :, -2], x[:, :, -1].bool()
        x = x[:, :, :-3].reshape(-1, 3, self.patch, self.patch)
        x = F.relu(self.gn_root(self.conv_root(x)))
        x = F.max_pool2d(same_pad(x, 3, 2), 3, 2)
        x = self.block1(x).permute(0, 2, 3, 1).reshape(b, seq_len, -1)  # TF channel order
        x = self.transformer_encoder(self.embedding(x), spatial, scale, mask)
        return self.head(x[:, 0]).reshape(b)


def load_musiq(path: str | None = None, device: str = "cpu") -> MUSIQ:
    """MUSIQ with pyiqa's SPAQ checkpoint (a plain state dict, read with `weights_only=True`)."""
    state = torch.load(MUSIQ_SPAQ.resolve(path), map_location="cpu", weights_only=True)
    state = state.get("params", state)
    model = MUSIQ()
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


def vbench_transform(frames: torch.Tensor) -> torch.Tensor:
    """VBench's imaging-quality `transform(images, 'longer')`: float ``[T, 3, H, W]`` 0..255, longer side to 512
    when larger (``int(scale * side)``, bilinear, no antialias), then /255."""
    from torchvision.transforms import functional as TF

    _, _, h, w = frames.shape
    if max(h, w) > 512:
        scale = 512.0 / max(h, w)
        frames = TF.resize(frames, [int(scale * h), int(scale * w)], antialias=False)
    return frames / 255.0


@torch.no_grad()
def imaging_quality(model: nn.Module, frames: np.ndarray, device: str = "cpu") -> float:
    """VBench's per-video imaging quality: the mean MUSIQ score of every frame (fed one at a time), not yet /100."""
    from harness.features.vbench_nets import video_tensor

    x = vbench_transform(video_tensor(frames))
    return sum(float(model(x[i:i + 1].to(device))) for i in range(len(x))) / len(x)
