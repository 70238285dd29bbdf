"""LlamaGen's VQ image tokenizer, decoding half (downsample 16), the project's own implementation.

As released in FoundationVision/LlamaGen `tokenizer/tokenizer_image/vq_model.py` (MIT, checkpoint
`vq_ds16_c2i.pt`): codes index an l2-normalised codebook (16384 x 8), `post_quant_conv` lifts them to
256 channels and a taming-style decoder (GroupNorm(32), swish, ResNet blocks, attention at the lowest
resolution, nearest x2 upsampling) maps 16x16 codes to 256x256 RGB in [-1, 1].

Parameter names match the checkpoint's `model` state dict (`decoder.conv_blocks.{i}.res.{j}.conv1.weight`,
`decoder.mid.{k}...`, `quantize.embedding.weight`, `post_quant_conv.weight`, ...). Only the decoder is
built: the checkpoint's `encoder.*`, `quant_conv.*` and `quantize.codebook_used` entries are expected
and skipped by `load_decoder_state` (`ENCODER_PREFIXES`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

#: Checkpoint entries of the encoding half, present in the released file and unused for generation.
ENCODER_PREFIXES = ("encoder.", "quant_conv.", "quantize.codebook_used")


@dataclass(frozen=True)
class VQConfig:
    """Upstream `ModelArgs` for VQ-16."""

    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    codebook_l2_norm: bool = True
    z_channels: int = 256
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = group_norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = group_norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(swish(self.norm2(self.conv1(swish(self.norm1(x))))))
        return (self.nin_shortcut(x) if self.nin_shortcut is not None else x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with separate 1x1 q/k/v convolutions."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        h = self.norm(x)
        q, k, v = (m(h).reshape(b, c, hgt * wid).transpose(1, 2) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, hgt, wid))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    def __init__(self, config: VQConfig):
        super().__init__()
        mult = config.ch_mult
        block_in = config.ch * mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, block_in, 3, padding=1)
        self.mid = nn.ModuleList([ResnetBlock(block_in, block_in), AttnBlock(block_in), ResnetBlock(block_in, block_in)])
        self.conv_blocks = nn.ModuleList()
        for level in reversed(range(len(mult))):
            block = nn.Module()
            block_out = config.ch * mult[level]
            res, attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(config.num_res_blocks + 1):
                res.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if level == len(mult) - 1:
                    attn.append(AttnBlock(block_in))
            block.res, block.attn = res, attn
            if level != 0:
                block.upsample = Upsample(block_in)
            self.conv_blocks.append(block)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for layer in self.mid:
            h = layer(h)
        for block in self.conv_blocks:
            for i, res in enumerate(block.res):
                h = res(h)
                if len(block.attn):
                    h = block.attn[i](h)
            if hasattr(block, "upsample"):
                h = block.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class Codebook(nn.Module):
    def __init__(self, config: VQConfig):
        super().__init__()
        self.l2_norm = config.codebook_l2_norm
        self.embedding = nn.Embedding(config.codebook_size, config.codebook_embed_dim)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) codes -> (B, C, h, w) code vectors."""
        table = F.normalize(self.embedding.weight, p=2, dim=-1) if self.l2_norm else self.embedding.weight
        return table[codes].permute(0, 3, 1, 2).contiguous()


class VQDecoder(nn.Module):
    """Codes -> images; the decoding half of LlamaGen's `VQModel`."""

    def __init__(self, config: VQConfig = VQConfig()):
        super().__init__()
        self.config = config
        self.quantize = Codebook(config)
        self.post_quant_conv = nn.Conv2d(config.codebook_embed_dim, config.z_channels, 1)
        self.decoder = Decoder(config)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) codes -> (B, 3, 16h, 16w) images in [-1, 1] (not clamped, as upstream)."""
        return self.decoder(self.post_quant_conv(self.quantize.lookup(codes)))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW -> uint8 NHWC, with LlamaGen's sample script's mapping clamp(127.5 x + 128)."""
    return torch.clamp(127.5 * images + 128.0, 0, 255).permute(0, 2, 3, 1).to("cpu", torch.uint8).numpy()
