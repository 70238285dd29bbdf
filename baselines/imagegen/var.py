"""VAR next-scale prediction (Tian et al. 2024) and its multi-scale VQ decoder, the project's own implementation.

Architecture as released in FoundationVision/VAR (`models/var.py`, `basic_var.py`, `vqvae.py`,
`quant.py`, `basic_vae.py`; MIT). A GPT-2-style transformer with adaptive LayerNorm conditioned on
the class embedding predicts, scale by scale (1x1, 2x2, ... 16x16), every token of the next token map
at once. The VQVAE turns the chosen codes into the feature map f_hat: each scale's code map is
upsampled (bicubic) to 16x16, refined by a shared residual convolution phi (4 shared convs picked by
scale position), and summed; the next scale's input is f_hat area-downsampled to that scale. The
decoder maps f_hat (32 channels, 16x16) to a 256x256 image.

Guidance ramps linearly over scales: t = cfg * si / (K - 1), logits = (1 + t) cond - t uncond.

Parameter names match the released files (`var_d16.pth`: `blocks.{i}.attn.mat_qkv.weight`,
`blocks.{i}.ada_lin.1.weight`, `pos_1LC`, `lvl_1L`, ...; `vae_ch160v4096z32.pth`:
`decoder.up.{i}.block.{j}.conv1.weight`, `quantize.quant_resi.qresi_ls.{k}.weight`, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.imagegen.sampling import draw, filter_logits

#: Checkpoint entries of the VQVAE's encoding half, present in the released file and unused here.
VAE_ENCODER_PREFIXES = ("encoder.", "quant_conv.", "quantize.ema_vocab_hit_SV")
PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


@dataclass(frozen=True)
class VQVAEConfig:
    """`vae_ch160v4096z32`: upstream VQVAE(vocab_size=4096, z_channels=32, ch=160, share_quant_resi=4)."""

    vocab_size: int = 4096
    z_channels: int = 32
    ch: int = 160
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    quant_resi: float = 0.5
    share_quant_resi: int = 4
    patch_nums: tuple[int, ...] = PATCH_NUMS


@dataclass(frozen=True)
class VARConfig:
    """Upstream `build_vae_var(depth=d)`: width 64 d, d heads, attention l2-norm, no shared AdaLN."""

    depth: int = 16
    num_classes: int = 1000
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    attn_l2_norm: bool = True
    patch_nums: tuple[int, ...] = PATCH_NUMS
    vocab_size: int = 4096
    z_channels: int = 32
    width_per_depth: int = 64

    @property
    def dim(self) -> int:
        return self.depth * self.width_per_depth

    @property
    def heads(self) -> int:
        return self.depth

    @property
    def length(self) -> int:
        return sum(p * p for p in self.patch_nums)


def scale_schedule(patch_nums: Sequence[int]) -> list[tuple[int, int]]:
    """(begin, end) of each scale's tokens in the flattened pyramid."""
    spans, cur = [], 0
    for pn in patch_nums:
        spans.append((cur, cur + pn * pn))
        cur += pn * pn
    return spans


def cfg_ramp(cfg: float, num_scales: int) -> list[float]:
    """VAR's guidance weight t per scale (linear from 0 to cfg)."""
    return [cfg * si / (num_scales - 1) for si in range(num_scales)]


# -- VQVAE decoding half ----------------------------------------------------------------------------
def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _group_norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _group_norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial attention with one fused 1x1 qkv convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(2, 3).unbind(1)
        out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Upsample2x(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Decoder(nn.Module):
    def __init__(self, config: VQVAEConfig):
        super().__init__()
        mult, levels = config.ch_mult, len(config.ch_mult)
        block_in = config.ch * mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        ups = []
        for level in reversed(range(levels)):
            up = nn.Module()
            block_out = config.ch * mult[level]
            up.block, up.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(config.num_res_blocks + 1):
                up.block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if level == levels - 1:
                    up.attn.append(AttnBlock(block_in))
            if level != 0:
                up.upsample = Upsample2x(block_in)
            ups.insert(0, up)  # up[0] is the full-resolution level, as upstream
        self.up = nn.ModuleList(ups)
        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for level in reversed(range(len(self.up))):
            up = self.up[level]
            for i, block in enumerate(up.block):
                h = block(h)
                if len(up.attn):
                    h = up.attn[i](h)
            if level != 0:
                h = up.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Phi(nn.Conv2d):
    """phi(h) = (1 - r) h + r conv(h): the residual refinement of an upsampled code map."""

    def __init__(self, channels: int, ratio: float):
        super().__init__(channels, channels, 3, padding=1)
        self.ratio = ratio

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * (1 - self.ratio) + super().forward(h) * self.ratio


class PhiPartiallyShared(nn.Module):
    """K convs shared across scales; scale position s in [0, 1] uses the conv with the nearest tick."""

    def __init__(self, convs: nn.ModuleList):
        super().__init__()
        self.qresi_ls = convs
        k = len(convs)
        self.ticks = np.linspace(1 / 3 / k, 1 - 1 / 3 / k, k) if k == 4 else np.linspace(1 / 2 / k, 1 - 1 / 2 / k, k)

    def __getitem__(self, position: float) -> Phi:
        return self.qresi_ls[int(np.argmin(np.abs(self.ticks - position)))]


class MultiScaleQuantizer(nn.Module):
    def __init__(self, config: VQVAEConfig):
        super().__init__()
        self.patch_nums = config.patch_nums
        self.embedding = nn.Embedding(config.vocab_size, config.z_channels)
        self.quant_resi = PhiPartiallyShared(
            nn.ModuleList(Phi(config.z_channels, config.quant_resi) for _ in range(config.share_quant_resi)))

    def add_scale(self, si: int, f_hat: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Add scale si's codes (B, pn*pn) to f_hat; returns f_hat and the next scale's input map (B, C, pn', pn')."""
        last = len(self.patch_nums) - 1
        pn, full = self.patch_nums[si], self.patch_nums[-1]
        h = self.embedding(codes).transpose(1, 2).reshape(codes.shape[0], -1, pn, pn)
        if si != last:
            h = F.interpolate(h, size=(full, full), mode="bicubic")
        f_hat = f_hat + self.quant_resi[si / last](h)
        if si == last:
            return f_hat, None
        nxt = self.patch_nums[si + 1]
        return f_hat, F.interpolate(f_hat, size=(nxt, nxt), mode="area")


class VQVAEDecoder(nn.Module):
    """The decoding half of VAR's VQVAE: multi-scale codes -> f_hat -> image in [-1, 1]."""

    branches = 1  # one codebook; ImageFolder's tokenizer has several (`generate_var` splits the logits by branch)

    def __init__(self, config: VQVAEConfig = VQVAEConfig()):
        super().__init__()
        self.config = config
        self.quantize = MultiScaleQuantizer(config)
        self.post_quant_conv = nn.Conv2d(config.z_channels, config.z_channels, 3, padding=1)
        self.decoder = Decoder(config)

    def add_scale(self, si: int, f_hat: torch.Tensor, codes: list[torch.Tensor]):
        return self.quantize.add_scale(si, f_hat, codes[0])

    def fhat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(f_hat)).clamp(-1, 1)


# -- VAR transformer --------------------------------------------------------------------------------
class SelfAttention(nn.Module):
    def __init__(self, config: VARConfig):
        super().__init__()
        c = config.dim
        self.heads, self.head_dim = config.heads, c // config.heads
        self.attn_l2_norm = config.attn_l2_norm
        self.mat_qkv = nn.Linear(c, 3 * c, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(c)), nn.Parameter(torch.zeros(c))
        self.register_buffer("zero_k_bias", torch.zeros(c))
        if self.attn_l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, self.heads, 1, 1), 4.0).log())
            self.max_scale_mul = math.log(100)
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.proj = nn.Linear(c, c)

    def forward(self, x: torch.Tensor, cache: list | None, mask: torch.Tensor | None) -> torch.Tensor:
        b, length, c = x.shape
        bias = torch.cat([self.q_bias, self.zero_k_bias, self.v_bias])
        q, k, v = F.linear(x, self.mat_qkv.weight, bias).view(b, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.attn_l2_norm:
            q = F.normalize(q, dim=-1) * self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
            k = F.normalize(k, dim=-1)
        if cache is not None:
            if cache:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, length, c))


class FFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class AdaLNSelfAttn(nn.Module):
    def __init__(self, config: VARConfig):
        super().__init__()
        c = config.dim
        self.attn = SelfAttention(config)
        self.ffn = FFN(c, round(c * config.mlp_ratio))
        self.ln_wo_grad = nn.LayerNorm(c, eps=config.norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))

    def forward(self, x, cond, cache, mask):
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.ada_lin(cond).view(-1, 1, 6, x.shape[-1]).unbind(2)
        x = x + self.attn(self.ln_wo_grad(x) * (scale1 + 1) + shift1, cache, mask) * gamma1
        return x + self.ffn(self.ln_wo_grad(x) * (scale2 + 1) + shift2) * gamma2


class AdaLNBeforeHead(nn.Module):
    def __init__(self, config: VARConfig):
        super().__init__()
        self.ln_wo_grad = nn.LayerNorm(config.dim, eps=config.norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(config.dim, 2 * config.dim))

    def forward(self, x, cond):
        scale, shift = self.ada_lin(cond).view(-1, 1, 2, x.shape[-1]).unbind(2)
        return self.ln_wo_grad(x) * (scale + 1) + shift


class VAR(nn.Module):
    def __init__(self, config: VARConfig):
        super().__init__()
        self.config = config
        c, length = config.dim, config.length
        self.word_embed = nn.Linear(config.z_channels, c)
        self.class_emb = nn.Embedding(config.num_classes + 1, c)
        self.pos_start = nn.Parameter(torch.zeros(1, config.patch_nums[0] ** 2, c))
        self.pos_1LC = nn.Parameter(torch.zeros(1, length, c))
        self.lvl_embed = nn.Embedding(len(config.patch_nums), c)
        self.blocks = nn.ModuleList(AdaLNSelfAttn(config) for _ in range(config.depth))
        self.head_nm = AdaLNBeforeHead(config)
        self.head = nn.Linear(c, config.vocab_size)
        level = torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(config.patch_nums)]).view(1, length, 1)
        self.register_buffer("lvl_1L", level.transpose(1, 2)[:, 0].contiguous())
        mask = torch.where(level >= level.transpose(1, 2), 0.0, -torch.inf).reshape(1, 1, length, length)
        self.register_buffer("attn_bias_for_masking", mask.contiguous())

    def level_positions(self) -> torch.Tensor:
        return self.lvl_embed(self.lvl_1L) + self.pos_1LC

    def logits(self, x: torch.Tensor, cond: torch.Tensor, caches: list | None, mask=None) -> torch.Tensor:
        for block, cache in zip(self.blocks, caches or [None] * len(self.blocks)):
            x = block(x, cond, cache, mask)
        return self.head(self.head_nm(x.float(), cond).float()).float()


@dataclass(frozen=True)
class VARSampler:
    """VAR's README/FID setting: cfg 1.5 (linear ramp over scales), top-k 900, top-p 0.96."""

    cfg: float = 1.5
    top_k: int = 900
    top_p: float = 0.96


@torch.no_grad()
def generate_var(model: VAR, vae: nn.Module, labels: torch.Tensor, generators: Sequence[torch.Generator],
                 sampler: VARSampler, record: list | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Images (B, 3, H, W) in [-1, 1] and the code maps of every scale, one forward pass per scale.

    Each scale's tokens attend to every earlier scale (KV cache) and to each other, as upstream's
    inference with `attn_bias=None`. `record` collects each scale's guided logits. A tokenizer with several
    branches (`vae.branches`, ImageFolder's product quantisation) gets one draw per branch from its slice of the
    logits (in branch order), and its codes per scale as a list.
    """
    c = model.config
    batch = labels.shape[0]
    cond = model.class_emb(torch.cat([labels, torch.full_like(labels, c.num_classes)]))
    lvl_pos = model.level_positions()
    first = c.patch_nums[0] ** 2
    x = cond.unsqueeze(1).expand(-1, first, -1) + model.pos_start.expand(2 * batch, -1, -1) + lvl_pos[:, :first]
    caches = [[] for _ in model.blocks]
    f_hat = cond.new_zeros(batch, c.z_channels, c.patch_nums[-1], c.patch_nums[-1])
    spans = scale_schedule(c.patch_nums)
    codes = []
    for si, t in enumerate(cfg_ramp(sampler.cfg, len(c.patch_nums))):
        logits = model.logits(x, cond, caches)
        guided = (1 + t) * logits[:batch] - t * logits[batch:]
        if record is not None:
            record.append(guided)
        idx = [draw(filter_logits(part, sampler.top_k, sampler.top_p).softmax(-1), generators)
               for part in guided.chunk(vae.branches, dim=-1)]
        codes.append(idx[0] if vae.branches == 1 else idx)
        f_hat, nxt = vae.add_scale(si, f_hat, idx)
        if nxt is not None:
            begin, end = spans[si + 1]
            x = model.word_embed(nxt.flatten(2).transpose(1, 2)) + lvl_pos[:, begin:end]
            x = torch.cat([x, x])
    return vae.fhat_to_img(f_hat), codes
