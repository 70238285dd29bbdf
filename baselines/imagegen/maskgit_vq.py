"""The MaskGIT VQGAN image tokenizer, decoding half, the project's own implementation.

RAR (and TiTok's generators) decode their tokens with MaskGIT's VQGAN as released by fun-research/TiTok
(`maskgit-vqgan-imagenet-f16-256.bin`), defined in bytedance/1d-tokenizer `modeling/titok.py`
(`PretrainedTokenizer`) and `modeling/modules/maskgit_vqgan.py` (Apache-2.0; a PyTorch port of
google-research/maskgit's JAX VQGAN): a 1024 x 256 codebook without normalisation or post-quant
convolution, and a decoder of GroupNorm(32) + swish ResNet blocks (bias-free 3x3 convolutions), no
attention, nearest x2 upsampling followed by a 3x3 convolution, 16x16 codes -> 256x256 RGB. The output
is clamped to [0, 1] as upstream's `decode`.

Parameter names match the released file (`quantize.embedding.weight`, `decoder.conv_in.weight`,
`decoder.mid.{i}.conv1.weight`, `decoder.up.{level}.block.{j}.norm1.weight`,
`decoder.up.{level}.upsample_conv.weight`, `decoder.norm_out.weight`, `decoder.conv_out.weight`);
the file's `encoder.*` entries are expected and skipped (`ENCODER_PREFIXES`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

#: Checkpoint entries of the encoding half, present in the released file and unused for generation.
ENCODER_PREFIXES = ("encoder.",)


@dataclass(frozen=True)
class MaskGITVQConfig:
    """Upstream `PretrainedTokenizer`'s fixed configuration."""

    codebook_size: int = 1024
    z_channels: int = 256  # also the code dimension: codes feed the decoder directly
    hidden_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    out_channels: int = 3


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm-swish-conv twice. When the width changes, MaskGIT's shortcut is a 1x1 convolution of the
    block's *output* (not of its input): `h + shortcut(h)`, as in the JAX original and the released port."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = group_norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm2 = group_norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.nin_shortcut = nn.Conv2d(cout, cout, 1, bias=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.nin_shortcut(h) if self.nin_shortcut is not None else x)


class UpsamplingBlock(nn.Module):
    def __init__(self, config: MaskGITVQConfig, level: int):
        super().__init__()
        mult, ch = config.channel_mult, config.hidden_channels
        block_in = ch * (mult[-1] if level == len(mult) - 1 else mult[level + 1])
        block_out = ch * mult[level]
        self.block = nn.ModuleList(ResnetBlock(block_in if j == 0 else block_out, block_out)
                                   for j in range(config.num_res_blocks))
        self.upsample_conv = nn.Conv2d(block_out, block_out, 3, padding=1) if level != 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for res in self.block:
            x = res(x)
        if self.upsample_conv is not None:
            x = self.upsample_conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class Decoder(nn.Module):
    """`up[level]` is stored from the finest level (0) to the coarsest and run coarsest first, as upstream."""

    def __init__(self, config: MaskGITVQConfig):
        super().__init__()
        block_in = config.hidden_channels * config.channel_mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, block_in, 3, padding=1)
        self.mid = nn.ModuleList(ResnetBlock(block_in, block_in) for _ in range(config.num_res_blocks))
        self.up = nn.ModuleList(UpsamplingBlock(config, level) for level in range(len(config.channel_mult)))
        block_out = config.hidden_channels * config.channel_mult[0]
        self.norm_out = group_norm(block_out)
        self.conv_out = nn.Conv2d(block_out, config.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for block in reversed(self.up):
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Codebook(nn.Module):
    def __init__(self, config: MaskGITVQConfig):
        super().__init__()
        self.embedding = nn.Embedding(config.codebook_size, config.z_channels)


class MaskGITVQDecoder(nn.Module):
    """Codes -> images in [0, 1]; the decoding half of upstream's `PretrainedTokenizer`."""

    def __init__(self, config: MaskGITVQConfig = MaskGITVQConfig()):
        super().__init__()
        self.config = config
        self.quantize = Codebook(config)
        self.decoder = Decoder(config)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) codes, or (B, h*w) in raster order for a square grid -> (B, 3, 16h, 16w) in [0, 1]."""
        if codes.dim() == 2:
            side = int(round(codes.shape[1] ** 0.5))
            if side * side != codes.shape[1]:
                raise ValueError(f"{codes.shape[1]} codes do not form a square grid")
            codes = codes.view(codes.shape[0], side, side)
        z = self.quantize.embedding(codes).permute(0, 3, 1, 2).contiguous()
        return self.decoder(z).clamp(0.0, 1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[0, 1] NCHW -> uint8 NHWC by truncation, upstream's `(clamp(x, 0, 1) * 255).to(uint8)`."""
    return (images.clamp(0.0, 1.0) * 255.0).permute(0, 2, 3, 1).to("cpu", torch.uint8).numpy()
