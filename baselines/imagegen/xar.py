"""xAR (Ren et al. 2025, "Beyond Next-Token: Next-X Prediction for Autoregressive Visual Generation"), the
project's own implementation of the released model (next-cell prediction with flow matching).

As released in OliverRensu/xAR (`models/xar.py`, `models/rope.py`, `models/sampler.py`, `engine_xar.py`; read at
121e9c9):

- The entity X is a cell: the 16x16 grid of MAR KL-16 latents (16 channels) is cut into 4 cells of 8x8 tokens
  (the quadrants, row-major; tokens raster order inside a cell), generated one cell after the other.
- One network (encoder and decoder stacks of adaLN blocks, like FlowAR's: RMSNorm without weight, gated GELU MLP,
  2D RoPE over the 16x16 grid with its rows reordered cell by cell, learned position embeddings) predicts the
  flow-matching velocity of a whole noisy cell; its adaLN condition is the class embedding plus a timestep
  embedding of that cell's noise level, `long(t * 1000)`. No separate flow head: the AR model itself denoises
  ("noisy context learning" in training: every cell is noisy with its own t under a block-causal mask).
- Sampling (upstream `euler_maruyama_sampler`, the one `sample_tokens` uses): per cell, an Euler-Maruyama SDE on
  t = linspace(1, 0.04, n) then a last deterministic step to 0; drift `v - t * score` with the linear path's score
  `((t - 1) v - x) / t` and diffusion `2 t`; CFG on the drift with the scale ramping over cells,
  `1 + (cfg - 1) k / 3` (so cell 0 is unguided). At each cell's first step the previous cell's final sample is fed
  again as clean context (t = 0) and its keys/values join the cache; later steps attend to the cache unmasked.

Parameter names match upstream's state dict (`encoder_blocks.{i}.attn.qkv.weight`, `time_embed.mlp.0.weight`,
`pred.weight`, ... and the stored buffers `mask`, `*.attn.rope.freqs`, `*.attn.rope.freqs_cos/sin`).

Per-request randomness: each sample's generator draws its cell's starting noise (float32, as upstream's
`torch.randn`) and every SDE step's noise (float64, as upstream's `randn_like` of the float64 state), so a sample
does not depend on its batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.imagegen.flowar import NULL_CLASS, GatedMLP, RMSNorm, TimestepEmbedder, heads, merge


@dataclass(frozen=True)
class XARConfig:
    """Upstream `xar_{base,large,huge}` with eval.py's defaults (256 px, stride 16, 4 clusters)."""

    embed_dim: int = 768
    depth: int = 8  # encoder and decoder each
    num_heads: int = 12
    mlp_ratio: float = 4.0
    token_dim: int = 16
    grid: int = 16
    cells: int = 4  # upstream hard-codes 64 tokens per cell and a 2x2 cell layout

    @property
    def seq_len(self) -> int:
        return self.grid * self.grid

    @property
    def cell_len(self) -> int:
        return self.seq_len // self.cells

    @property
    def cells_per_side(self) -> int:
        return int(round(self.cells ** 0.5))


XAR_CONFIGS = {
    "xar_base": XARConfig(768, 8, 12),
    "xar_large": XARConfig(1024, 16, 16),
    "xar_huge": XARConfig(1280, 20, 16),
}


def cell_order(config: XARConfig) -> torch.Tensor:
    """Raster index of the token at each sequence position (cell-major, raster inside a cell)."""
    side, cps = config.grid, config.cells_per_side
    inner = side // cps
    grid = torch.arange(side * side).view(cps, inner, cps, inner)
    return grid.permute(0, 2, 1, 3).reshape(-1)


def to_cells(latents: torch.Tensor, config: XARConfig) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C) in cell order (upstream `clusterify`, concatenated)."""
    return latents.flatten(2).transpose(1, 2)[:, cell_order(config)]


def from_cells(tokens: torch.Tensor, config: XARConfig) -> torch.Tensor:
    """(B, H*W, C) in cell order -> (B, C, H, W) (upstream `unclusterify`)."""
    out = torch.empty_like(tokens)
    out[:, cell_order(config)] = tokens
    return out.transpose(1, 2).reshape(tokens.shape[0], -1, config.grid, config.grid)


class CellRope(nn.Module):
    """Upstream xAR `VisionRotaryEmbeddingFast`: 2D RoPE at integer positions of the 16x16 grid (first half of
    each head rotates with the row, second with the column; interleaved pairs), rows stored in cell order."""

    def __init__(self, head_dim: int, config: XARConfig):
        super().__init__()
        half = head_dim // 2
        freqs = 1.0 / (10000 ** (torch.arange(0, half, 2)[: half // 2].float() / half))
        self.register_buffer("freqs", freqs)
        t = torch.arange(config.grid) / config.grid * config.grid
        f = torch.outer(t, freqs).repeat_interleave(2, dim=-1)
        side = config.grid
        f = torch.cat([f[:, None, :].expand(side, side, -1), f[None, :, :].expand(side, side, -1)], dim=-1)
        f = f.reshape(side * side, -1)[cell_order(config)]
        self.register_buffer("freqs_cos", f.cos())
        self.register_buffer("freqs_sin", f.sin())

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """x (B, H, N, hd) at sequence positions start..start+N."""
        end = start + x.shape[2]
        rotated = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)
        return x * self.freqs_cos[start:end] + rotated * self.freqs_sin[start:end]


class CellCache:
    """Keys/values of every layer for the clean cells fed so far (a pass with `commit` > 0 keeps its first
    `commit` tokens; upstream keeps all but the last cell)."""

    def __init__(self, n_layer: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer


class CellAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, config: XARConfig):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rope = CellRope(dim // num_heads, config)

    def forward(self, x, start, mask, cache: CellCache | None, layer: int, commit: int) -> torch.Tensor:
        q, k, v = (heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        q, k = self.rope(q, start), self.rope(k, start)
        if cache is not None:
            past = cache.keys[layer]
            if past is not None:
                k, v = torch.cat([past, k], dim=2), torch.cat([cache.values[layer], v], dim=2)
            if commit:
                kept = k.shape[2] - x.shape[1] + commit
                cache.keys[layer], cache.values[layer] = k[:, :, :kept], v[:, :, :kept]
        return self.proj(merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)))


class CellBlock(nn.Module):
    """Upstream xAR `Block`: adaLN with one condition per cell of the input (each cell's class + time)."""

    def __init__(self, dim: int, num_heads: int, config: XARConfig):
        super().__init__()
        self.dim = dim
        self.cell_len = config.cell_len
        self.norm1 = RMSNorm(dim)
        self.attn = CellAttention(dim, num_heads, config)
        self.norm2 = RMSNorm(dim)
        self.mlp = GatedMLP(dim, int(dim * config.mlp_ratio * 2 / 3.0))
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, condition, start, mask, cache, layer, commit):
        """condition (B, cells in x, D)."""
        mod = self.ada_lin(condition).view(x.shape[0], -1, 1, 6, self.dim).expand(-1, -1, self.cell_len, -1, -1)
        gamma1, gamma2, scale1, scale2, shift1, shift2 = mod.reshape(x.shape[0], -1, 6, self.dim).unbind(2)
        x = x + self.attn(self.norm1(x) * (scale1 + 1) + shift1, start, mask, cache, layer, commit) * gamma1
        return x + self.mlp(self.norm2(x) * (scale2 + 1) + shift2) * gamma2


class XAR(nn.Module):
    """The network: velocity of noisy cells given the class, each cell's noise level and earlier cells."""

    def __init__(self, config: XARConfig):
        super().__init__()
        self.config = config
        d, n = config.embed_dim, config.seq_len
        self.class_emb = nn.Embedding(NULL_CLASS + 1, d)
        self.time_embed = TimestepEmbedder(d)
        self.z_proj = nn.Linear(config.token_dim, d)
        self.z_proj_ln = RMSNorm(d, weight=True)
        self.encoder_pos_embed_learned = nn.Parameter(torch.zeros(1, n, d))
        self.encoder_blocks = nn.ModuleList(CellBlock(d, config.num_heads, config) for _ in range(config.depth))
        self.encoder_norm = RMSNorm(d, weight=True)
        self.decoder_embed = nn.Linear(d, d)
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, n, d))
        self.decoder_blocks = nn.ModuleList(CellBlock(d, config.num_heads, config) for _ in range(config.depth))
        self.decoder_norm = RMSNorm(d, weight=True)
        self.pred = nn.Linear(d, config.token_dim)
        cell_of = torch.arange(n) // config.cell_len
        allowed = cell_of[None, :] <= cell_of[:, None]
        self.register_buffer("mask", torch.zeros(1, 1, n, n).masked_fill(~allowed, float("-inf")))

    def conditions(self, labels: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """(B, k, D) adaLN conditions: class embedding + embedding of long(t * 1000) for each cell's t (B, k),
        with t in float32 as upstream feeds it."""
        steps = (times.float() * 1000).long()
        return self.class_emb(labels)[:, None] + self.time_embed(steps.flatten()).view(*steps.shape, -1)

    def velocity(self, x: torch.Tensor, condition: torch.Tensor, start: int, mask: torch.Tensor | None = None,
                 cache: CellCache | None = None, commit: int = 0) -> torch.Tensor:
        """Velocity (B, N, C) of cells x (B, N, C) at sequence positions start..start+N (cell-aligned)."""
        end = start + x.shape[1]
        depth = self.config.depth
        h = self.z_proj_ln(self.z_proj(x) + self.encoder_pos_embed_learned[:, start:end])
        for i, block in enumerate(self.encoder_blocks):
            h = block(h, condition, start, mask, cache, i, commit)
        h = self.decoder_embed(self.encoder_norm(h)) + self.decoder_pos_embed_learned[:, start:end]
        for i, block in enumerate(self.decoder_blocks):
            h = block(h, condition, start, mask, cache, depth + i, commit)
        return self.pred(self.decoder_norm(h))

    def teacher_forced(self, labels: torch.Tensor, cells: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """Velocity of every cell of noisy tokens (B, seq_len, C) (cell order) at per-cell times (B, cells), in one
        pass with the block-causal mask (upstream's training forward without label dropout and loss)."""
        return self.velocity(cells, self.conditions(labels, times), 0, self.mask)


@dataclass(frozen=True)
class XARSampler:
    """Upstream `sample_tokens(num_steps, cfg)` (README: B 40 / 2.7, L 50 / 2.3, H 50 / 2.2)."""

    num_steps: int = 40
    cfg: float = 2.7

    def __post_init__(self):
        if self.num_steps < 3:  # upstream's last step re-feeds the context when its loop ran only once
            raise ValueError(f"num_steps must be at least 3, not {self.num_steps}")
        if self.cfg < 1.0:
            raise ValueError(f"cfg must be >= 1 (1 = no guidance), not {self.cfg}")


def sde_timesteps(num_steps: int) -> torch.Tensor:
    """linspace(1, 0.04, n) then 0 (float64): n - 1 stochastic steps and a last deterministic one."""
    return torch.cat([torch.linspace(1.0, 0.04, num_steps, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])


def drift(v: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """v - 0.5 * diffusion * score for the linear path (alpha 1 - t, sigma t), written as upstream computes it."""
    alpha_ratio = (1 - t) / -1.0
    var = t ** 2 - alpha_ratio * 1.0 * t
    score = (alpha_ratio * v - x) / var
    return v - 0.5 * (2 * t) * score


@torch.no_grad()
def generate_xar(model: XAR, labels: torch.Tensor, generators: Sequence[torch.Generator],
                 sampler: XARSampler, record: list | None = None) -> torch.Tensor:
    """Latents (B, C, 16, 16) in MAR's scaled VAE space; sample b draws only from generators[b].

    Every step evaluates the conditional and unconditional rows together (upstream does so at every step since
    its `guidance_high` is 1); cell 0's scale is 1, so it takes the conditional drift. `record` collects each
    cell's final sample."""
    c = model.config
    b = labels.shape[0]
    both = torch.cat([labels, torch.full_like(labels, NULL_CLASS)])
    cache = CellCache(2 * c.depth)
    t_steps = sde_timesteps(sampler.num_steps)
    cells, prev = [], None
    for k in range(c.cells):
        cfg = (sampler.cfg - 1) * k / (c.cells - 1.0) + 1
        start = k * c.cell_len
        x = torch.stack([torch.randn(c.cell_len, c.token_dim, generator=g) for g in generators])
        x = x.to(labels.device).double()
        for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
            t32 = t_cur.float().expand(2 * b, 1)
            if i == 0 and prev is not None:  # feed the previous cell again, clean (t = 0), and cache it
                inp = torch.cat([prev, x.float()], dim=1)
                cond = model.conditions(both, torch.cat([torch.zeros_like(t32), t32], dim=1))
                rows = slice(start - c.cell_len, start + c.cell_len)
                v = model.velocity(torch.cat([inp, inp]), cond, start - c.cell_len,
                                   model.mask[:, :, rows, :start + c.cell_len], cache, commit=c.cell_len)
                v = v[:, -c.cell_len:]
            elif i == 0:
                v = model.velocity(torch.cat([x, x]).float(), model.conditions(both, t32), start,
                                   model.mask[:, :, :c.cell_len, :c.cell_len], cache, commit=0)
            else:
                v = model.velocity(torch.cat([x, x]).float(), model.conditions(both, t32), start, None, cache)
            d = drift(v.double(), torch.cat([x, x]), t_cur)
            d_cond, d_uncond = d.chunk(2)
            d = d_uncond + cfg * (d_cond - d_uncond) if cfg > 1.0 else d_cond
            dt = t_next - t_cur
            if i < len(t_steps) - 2:
                eps = torch.stack([torch.randn(c.cell_len, c.token_dim, generator=g, dtype=torch.float64)
                                   for g in generators]).to(x.device)
                x = x + d * dt + torch.sqrt(2 * t_cur) * (eps * torch.sqrt(torch.abs(dt)))
            else:
                x = x + dt * d
        prev = x.float()
        cells.append(prev)
        if record is not None:
            record.append(prev)
    return from_cells(torch.cat(cells, dim=1), c)
