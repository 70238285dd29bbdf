"""The decoder of NOVA's text-to-video VAE: upstream's `AutoencoderKLOpenSora` (baaivision/NOVA @ 2cd254a,
`diffnext/models/autoencoders/autoencoder_kl_opensora.py`, Apache-2.0), Open-Sora-Plan's causal 3D VAE, with the
released parameter names (`decoder.*`, `post_quant_conv.*`; the encoder's entries are not read).

Written here because no maintained library has it (diffusers' AutoencoderKL is 2D; its video VAEs have other
layers and names). Only decoding is built (text-to-video needs no encoder). What upstream does, kept as is:
- 3D convolutions are causal in time: the input is padded at the front with copies of the first frame
  (ReplicationPad3d, k - 1 frames), zero-padded in space;
- a block type without "Block2D" in its name is 3D; a 3D upsampler (kernel 3 in time) doubles every frame but
  the first (trilinear, scale (1, 2, 2) for the first frame and (2, 2, 2) for the rest), a (1, 3, 3) or 2D one
  doubles space only (nearest); the decoder's conv_in / conv_out / post_quant_conv take the last block's type;
- mid-block attention is single-head over the positions of each frame separately;
- decoding is tiled in time (`TilingMixin`): windows of 5 latent frames overlapping by 1, each decoded alone,
  the first output frame of every window after the first dropped (9 latents -> 17 + 16 = 33 frames).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Mapping

import numpy as np

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.errors import ArbenchError


class Conv3d(nn.Conv3d):
    """Causal in time: front-padded with copies of the first frame, no temporal zero padding."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.padding = (0,) + tuple(self.padding[1:])
        self.front = self.kernel_size[0] - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.front:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.front, -1, -1), x], dim=2)
        return super().forward(x)


class Attention(nn.Module):
    """Single-head self-attention over each frame's positions (upstream's frame windows)."""

    def __init__(self, dim: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(32, dim, eps=1e-6)
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        h = self.group_norm(x)
        h = h.flatten(2).transpose(1, 2) if x.dim() == 4 else h.permute(0, 2, 3, 4, 1).flatten(0, 1).flatten(1, 2)
        o = F.scaled_dot_product_attention(*(f(h).unsqueeze(1) for f in (self.to_q, self.to_k, self.to_v)))
        o = self.to_out[0](o.squeeze(1))  # (windows, positions, C)
        if x.dim() == 4:
            return o.transpose(1, 2).reshape(shape)
        b, c, t, hh, ww = shape
        return o.view(b, t, hh, ww, c).permute(0, 4, 1, 2, 3)


class Upsample(nn.Module):
    """Upstream's `Resize` in its upsampling role (module name `upsamplers.0`, conv `conv`)."""

    def __init__(self, dim: int, conv):
        super().__init__()
        self.conv = conv(dim, dim, stride=1, padding=1)
        self.temporal = isinstance(self.conv, Conv3d) and self.conv.kernel_size[0] != 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.temporal:
            first = F.interpolate(x[:, :, :1], None, (1, 2, 2), "trilinear")
            x = first if x.shape[2] == 1 else torch.cat(
                [first, F.interpolate(x[:, :, 1:], None, (2, 2, 2), "trilinear")], dim=2)
        else:
            x = x.repeat_interleave(2, -2).repeat_interleave(2, -1)
        return self.conv(x)


class ResBlock(nn.Module):
    def __init__(self, dim: int, out_dim: int, conv):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(32, dim, eps=1e-6), conv(dim, out_dim, 3, 1, 1)
        self.norm2, self.conv2 = nn.GroupNorm(32, out_dim, eps=1e-6), conv(out_dim, out_dim, 3, 1, 1)
        self.conv_shortcut = conv(dim, out_dim, 1) if out_dim != dim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        x = self.conv1(F.silu(self.norm1(x)))
        return self.conv2(F.silu(self.norm2(x))) + shortcut


class UpBlock(nn.Module):
    def __init__(self, dim: int, out_dim: int, conv, depth: int, upsample=None):
        super().__init__()
        self.resnets = nn.ModuleList(ResBlock(dim if i == 0 else out_dim, out_dim, conv) for i in range(depth))
        self.upsamplers = nn.ModuleList([Upsample(out_dim, upsample)]) if upsample else nn.ModuleList()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for r in self.resnets:
            x = r(x)
        return self.upsamplers[0](x) if len(self.upsamplers) else x


class MidBlock(nn.Module):
    def __init__(self, dim: int, conv):
        super().__init__()
        self.resnets = nn.ModuleList([ResBlock(dim, dim, conv), ResBlock(dim, dim, conv)])
        self.attentions = nn.ModuleList([Attention(dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        return self.resnets[1](self.attentions[0](x) + x)


class Decoder(nn.Module):
    def __init__(self, latent_dim: int, out_dim: int, block_types, block_dims, depth: int):
        super().__init__()
        dims = list(reversed(block_dims))
        self.up_blocks = nn.ModuleList()
        conv = nn.Conv2d
        for i, (kind, dim) in enumerate(zip(block_types, dims)):
            conv, up = (nn.Conv2d if "Block2D" in kind else Conv3d), None
            if i < len(dims) - 1:
                up = partial(conv, kernel_size=3 if i < len(dims) - 2 or conv is nn.Conv2d else (1, 3, 3))
            self.up_blocks.append(UpBlock(dims[max(i - 1, 0)], dim, conv, depth + 1, up))
        self.conv_in = conv(latent_dim, dims[0], 3, 1, 1)  # the last block's type, as upstream
        self.mid_block = MidBlock(dims[0], conv)
        self.conv_norm_out = nn.GroupNorm(32, dims[-1], eps=1e-6)
        self.conv_out = conv(dims[-1], out_dim, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(x))
        for blk in self.up_blocks:
            x = blk(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class OpenSoraVAEDecoder(nn.Module):
    """`AutoencoderKLOpenSora.decode` (+ `unscale_`) from the released `vae/config.json`."""

    LATENT_MIN_T, LATENT_OVERLAP_T, SAMPLE_OVERLAP_T = 5, 1, 1  # upstream's TilingMixin arguments for this class

    def __init__(self, config: Mapping[str, Any]):
        super().__init__()
        if config.get("use_quant_conv") is False or config.get("use_post_quant_conv") is False:
            raise ArbenchError("vae/config.json: use_post_quant_conv false is not the released NOVA video VAE")
        self.scaling_factor = float(config.get("scaling_factor", 0.18215))
        self.shift_factor = config.get("shift_factor")
        self.decoder = Decoder(int(config.get("latent_channels", 16)), int(config.get("out_channels", 3)),
                               tuple(config.get("up_block_types", ("UpDecoderBlock2D",) * 4)),
                               tuple(config.get("block_out_channels", (128, 256, 512, 512))),
                               int(config.get("layers_per_block", 2)))
        latent = int(config.get("latent_channels", 16))
        self.post_quant_conv = type(self.decoder.conv_in)(latent, latent, 1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, C, T, h, w) -> pixels in [-1, 1] (B, 3, 1 + 4 (T - 1), 8h, 8w) for the released VAE."""
        z = z / self.scaling_factor
        z = z + self.shift_factor if self.shift_factor else z
        z = self.post_quant_conv(z)
        t, n = z.shape[2], self.LATENT_MIN_T
        if t <= n:
            return self.decoder(z)
        starts = [s for s in range(0, t, n - self.LATENT_OVERLAP_T) if s + n <= t]
        tiles = [self.decoder(z[:, :, s: s + n]) for s in starts]
        return torch.cat([x[:, :, self.SAMPLE_OVERLAP_T:] if i else x for i, x in enumerate(tiles)], dim=2)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(B, 3, T, H, W) in [-1, 1] -> uint8 (B, T, H, W, 3): upstream's `pt_to_numpy` (x * 127.5 + 127.5, clamped,
    truncated)."""
    return video.permute(0, 2, 3, 4, 1).mul(127.5).add(127.5).clamp(0, 255).byte().cpu().numpy()
