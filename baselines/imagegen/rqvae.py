"""RQ-VAE (Lee et al. 2022), decoding half: residual-quantised codes (8 x 8 x 4) -> 256 x 256 RGB.

As released in kakaobrain/rq-vae-transformer (`rqvae/models/rqvae/{rqvae,quantizations,modules,layers}.py`,
Apache-2.0; the ImageNet stage-1 config `configs/imagenet256/stage1/in256-rqvae-8x8x4.yaml`): one codebook of
16384 x 256 shared by the four depths (`shared_codebook: true`; a `VQEmbedding` with one extra padding row), an
image's code stack at each of the 8 x 8 positions is embedded as the *sum* of its four code vectors
(`RQBottleneck.embed_code`), `post_quant_conv` maps 256 -> 256 channels and a taming-style decoder (ch 128,
ch_mult (1, 1, 2, 2, 4, 4), 2 + 1 ResNet blocks per level, attention at resolution 8) upsamples x32.

Parameter names follow the checkpoint's `state_dict`: `quantizer.codebooks.{0..3}.weight` (four names for the
one shared module, as `nn.ModuleList([codebook0] * 4)` saves them), `post_quant_conv.*`, `decoder.*`. The
encoding half (`encoder.*`, `quant_conv.*`) and the codebooks' EMA training buffers are skipped by prefix
(`UNUSED_PREFIXES`). The RQ-Transformer reads the same codebook for its input embeddings (`code_embeddings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn as nn

from baselines.imagegen.vq_decoder import AttnBlock, ResnetBlock, Upsample, group_norm, swish


@dataclass(frozen=True)
class RQVAEConfig:
    """`arch.hparams` + `arch.ddconfig` of the released ImageNet RQ-VAE (`in256-rqvae-8x8x4.yaml`)."""

    n_embed: int = 16384
    embed_dim: int = 256
    code_shape: tuple[int, int, int] = (8, 8, 4)
    latent_shape: tuple[int, int, int] = (8, 8, 256)
    shared_codebook: bool = True
    z_channels: int = 256
    resolution: int = 256
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (8,)

    def __post_init__(self):
        if not self.shared_codebook:
            raise ValueError("only the released shared-codebook RQ-VAE is implemented (shared_codebook: true)")
        if tuple(self.latent_shape[:2]) != tuple(self.code_shape[:2]):
            raise ValueError("the released RQ-VAE quantises every latent position (latent_shape[:2] == code_shape[:2])")

    @classmethod
    def from_arch(cls, arch: Mapping[str, Any]) -> "RQVAEConfig":
        """The config of a released stage-1 `config.yaml`'s `arch` section (read with a safe YAML loader)."""
        if arch.get("type") != "rq-vae" or (arch.get("hparams") or {}).get("bottleneck_type", "rq") != "rq":
            raise ValueError(f"arch.type is {arch.get('type')!r}, not an 'rq-vae' with bottleneck_type 'rq'")
        hp, dd = arch["hparams"], arch["ddconfig"]
        if dd.get("double_z", False) or int(dd.get("in_channels", 3)) != 3:
            raise ValueError("ddconfig.double_z / in_channels differ from the released RQ-VAE")
        return cls(n_embed=int(hp["n_embed"]), embed_dim=int(hp["embed_dim"]),
                   code_shape=tuple(int(v) for v in hp["code_shape"]),
                   latent_shape=tuple(int(v) for v in hp["latent_shape"]),
                   shared_codebook=bool(hp.get("shared_codebook", False)), z_channels=int(dd["z_channels"]),
                   resolution=int(dd["resolution"]), out_ch=int(dd["out_ch"]), ch=int(dd["ch"]),
                   ch_mult=tuple(int(v) for v in dd["ch_mult"]), num_res_blocks=int(dd["num_res_blocks"]),
                   attn_resolutions=tuple(int(v) for v in dd["attn_resolutions"]))


def unused_prefixes(config: RQVAEConfig) -> tuple[str, ...]:
    """Checkpoint entries the decoding half does not read: the encoder and the codebook EMA statistics."""
    ema = tuple(f"quantizer.codebooks.{d}.{buffer}" for d in range(config.code_shape[2])
                for buffer in ("cluster_size_ema", "embed_ema"))
    return ("encoder.", "quant_conv.") + ema


class Codebook(nn.Embedding):
    """Upstream `VQEmbedding` at inference: n_embed codes plus one padding row (index n_embed)."""

    def __init__(self, n_embed: int, dim: int):
        super().__init__(n_embed + 1, dim, padding_idx=n_embed)


class Quantizer(nn.Module):
    """The embedding side of upstream `RQBottleneck` (shared codebook)."""

    def __init__(self, config: RQVAEConfig):
        super().__init__()
        shared = Codebook(config.n_embed, config.embed_dim)
        self.codebooks = nn.ModuleList([shared] * config.code_shape[2])

    def embed_with_depth(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (..., D) -> code vectors (..., D, embed_dim) (upstream `embed_code_with_depth`)."""
        return self.codebooks[0](codes)


class RQDecoder(nn.Module):
    """The taming decoder of `rqvae/models/rqvae/modules.py` (no timestep embedding; `up[0]` runs last)."""

    def __init__(self, config: RQVAEConfig):
        super().__init__()
        mult, levels = config.ch_mult, len(config.ch_mult)
        block_in = config.ch * mult[-1]
        res = config.resolution // 2 ** (levels - 1)
        self.conv_in = nn.Conv2d(config.z_channels, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        ups = []
        for level in reversed(range(levels)):
            up = nn.Module()
            up.block, up.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(config.num_res_blocks + 1):
                up.block.append(ResnetBlock(block_in, config.ch * mult[level]))
                block_in = config.ch * mult[level]
                if res in config.attn_resolutions:
                    up.attn.append(AttnBlock(block_in))
            if level != 0:
                up.upsample = Upsample(block_in)
                res *= 2
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, config.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for up in reversed(self.up):
            for i, block in enumerate(up.block):
                h = block(h)
                if len(up.attn):
                    h = up.attn[i](h)
            if hasattr(up, "upsample"):
                h = up.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class RQVAEDecoder(nn.Module):
    """Codes (B, 8, 8, 4) -> images (B, 3, 256, 256) in [-1, 1] (not clamped), upstream `decode_code`."""

    def __init__(self, config: RQVAEConfig = RQVAEConfig()):
        super().__init__()
        self.config = config
        self.quantizer = Quantizer(config)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)
        self.decoder = RQDecoder(config)

    def code_embeddings(self, codes: torch.Tensor) -> torch.Tensor:
        return self.quantizer.embed_with_depth(codes)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if tuple(codes.shape[1:]) != tuple(self.config.code_shape):
            raise ValueError(f"codes of shape {tuple(codes.shape)}, expected (B, {', '.join(map(str, self.config.code_shape))})")
        z = self.code_embeddings(codes).sum(dim=-2)  # (B, h, w, embed_dim): the code stack's sum
        return self.decoder(self.post_quant_conv(z.permute(0, 3, 1, 2).contiguous()))
