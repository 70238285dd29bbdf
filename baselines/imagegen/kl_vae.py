"""MAR's KL-16 VAE, decoding half: LDM's `AutoencoderKL` (embed_dim 16, ch 128, ch_mult (1, 1, 2, 2, 4)).

As released with LTH14/mar (`models/vae.py`, adopted from CompVis/latent-diffusion; checkpoint `kl16.ckpt`,
a dict whose "model" entry is the state dict). MAR samples latents in the VAE's space scaled by 0.2325 and
decodes `latents / 0.2325`; `post_quant_conv` and an LDM decoder (no attention in the upsampling path, one
attention block in the middle) map 16x16x16 latents to 256x256 RGB in [-1, 1].

Parameter names match the checkpoint (`decoder.up.{level}.block.{i}.conv1.weight`, `decoder.mid.attn_1.q.weight`,
`post_quant_conv.weight`, ...). The checkpoint's encoding half (`encoder.*`, `quant_conv.*`) and any
training-loss entries (`loss.*`) are skipped by prefix (`ENCODER_PREFIXES`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from baselines.imagegen.vq_decoder import AttnBlock, ResnetBlock, Upsample, group_norm, swish

#: Checkpoint entries unused for generation: the encoder and LDM's training loss (LPIPS + discriminator).
ENCODER_PREFIXES = ("encoder.", "quant_conv.", "loss.")
#: MAR's latent scale (`engine_mar.py`: `vae.decode(sampled_tokens / 0.2325)`).
MAR_LATENT_SCALE = 0.2325


@dataclass(frozen=True)
class KLVAEConfig:
    """`AutoencoderKL(embed_dim=16, ch_mult=(1, 1, 2, 2, 4))` with the LDM defaults MAR keeps."""

    embed_dim: int = 16
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    out_channels: int = 3

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


class LDMDecoder(nn.Module):
    """LDM's `Decoder` without timestep embedding; `up[0]` is the full-resolution level, run last."""

    def __init__(self, config: KLVAEConfig):
        super().__init__()
        mult = config.ch_mult
        block_in = config.ch * mult[-1]
        self.conv_in = nn.Conv2d(config.embed_dim, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        levels = []
        for level in reversed(range(len(mult))):
            up = nn.Module()
            block_out = config.ch * mult[level]
            up.block = nn.ModuleList()
            for _ in range(config.num_res_blocks + 1):
                up.block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            if level != 0:
                up.upsample = Upsample(block_in)
            levels.insert(0, up)
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, config.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for up in reversed(self.up):
            for block in up.block:
                h = block(h)
            if hasattr(up, "upsample"):
                h = up.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class KLVAEDecoder(nn.Module):
    """Scaled MAR latents (B, 16, h, w) -> images (B, 3, 16h, 16w) in [-1, 1] (not clamped)."""

    def __init__(self, config: KLVAEConfig = KLVAEConfig(), latent_scale: float = MAR_LATENT_SCALE):
        super().__init__()
        self.config = config
        self.latent_scale = latent_scale
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.embed_dim, 1)
        self.decoder = LDMDecoder(config)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(latents / self.latent_scale))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW -> uint8 NHWC as MAR's evaluation writes PNGs: round(clip((x + 1) / 2 * 255, 0, 255)),
    computed in the decoder's output precision (float16 under upstream's autocast, which it maps in float16)."""
    pixels = ((images + 1) / 2 * 255).clamp(0, 255).round()
    return pixels.permute(0, 2, 3, 1).to("cpu", torch.uint8).numpy()
