"""FlowAR (Ren et al. 2024, "Scale-wise Autoregressive Image Generation Meets Flow Matching"), the project's own
implementation.

As released in OliverRensu/FlowAR (`models/flowar.py`, `models/flowmodel.py`, `models/rope.py`,
`models/sampler.py`; read at 21835c0, through the fork wangqiang9/FlowAR that carries upstream's history):

- Scales 1, 2, 4, 8, 16 of MAR's KL-16 latents (16 channels), 341 tokens. Scale k's input is the previous
  scale's sample, upsampled bicubically to 16x16 and area-downsampled to the next scale, through `z_proj`
  (scale 1's input is the class embedding).
- An encoder and a decoder stack of adaLN blocks (RMSNorm without weight, conditioned on the class embedding:
  `ada_lin = SiLU, Linear(D, 6D)`), attention with 2D RoPE over each scale's grid (positions i / s * 16) and a
  block-causal mask over scales (a KV cache when sampling); the MLP is timm's `SwiGLU` built with GELU, i.e.
  `fc2(gelu(fc1_g x) * fc1_x x)`, hidden int(D * 4 * 2 / 3). Learned position embeddings for encoder, decoder
  and the flow head's condition.
- The flow head (`flownet`, upstream `SimpleTransformerAdaLN`): a small transformer over the tokens of one
  scale, width `diffloss_w`, 64-channel heads, `diffloss_d` blocks; S uses `Block_v1` (adaLN from t + c),
  L and H `Block_v2` (adaLN + cross-attention to the AR condition). Time enters as `long(t * 1000)`.
- Sampling: per scale, Euler steps of the velocity from t = 1 (noise) to 0 on upstream's schedule
  (`flow_timesteps`), CFG `u + w (c - u)` with w ramping linearly over scales, `w = 1 + (cfg - 1) k / (K - 1)`,
  applied only while t <= `guidance` (upstream's `guidance_high`).

Parameter names match upstream's state dict (`encoder_blocks.{i}.attn.qkv.weight`, `encoder_blocks.{i}.mlp.fc1_g.
weight`, `flownet.res_blocks.{i}.crossattn.kv.weight`, ... and the buffers `mask` and `*.rope.freqs`).

Per-request randomness: the noise of every scale is drawn from each sample's own generator; the guided branch
evaluates the conditional and unconditional velocity at the conditional sample (upstream discards the second
noise half whenever guidance is on, and never lets it reach the conditional half), so a sample does not depend
on its batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.imagegen.llamagen_gpt import KVCache

#: Upstream builds `nn.Embedding(1000 + 1, D)` and uses row 1000 as the null class whatever `class_num` is.
NULL_CLASS = 1000


@dataclass(frozen=True)
class FlowARConfig:
    """Upstream `flowar_{small,large,huge}` (encoder and decoder share width, depth and heads)."""

    embed_dim: int = 768
    depth: int = 6
    num_heads: int = 12
    mlp_ratio: float = 4.0
    head_width: int = 1024  # --diffloss_w
    head_depth: int = 2  # --diffloss_d
    cross: bool = False  # Block_v2 (cross-attention) flow-head blocks
    scales: tuple[int, ...] = (1, 2, 4, 8, 16)
    token_dim: int = 16  # MAR KL-16 latent channels (patch size 1)

    @property
    def seq_len(self) -> int:
        return sum(s * s for s in self.scales)

    @property
    def offsets(self) -> list[int]:
        return [0] + list(torch.tensor([s * s for s in self.scales]).cumsum(0).tolist())


FLOWAR_CONFIGS = {
    "flowar_small": FlowARConfig(768, 6, 12, head_width=1024, head_depth=2, cross=False),
    "flowar_large": FlowARConfig(1024, 8, 16, head_width=1024, head_depth=12, cross=True),
    "flowar_huge": FlowARConfig(1536, 15, 16, head_width=1536, head_depth=12, cross=True),
}


class RMSNorm(nn.Module):
    """x / rms(x) (eps 1e-6) in float32, times a weight only where upstream has one."""

    def __init__(self, dim: int, weight: bool = False, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if weight else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
        return out if self.weight is None else out * self.weight


class GridRope(nn.Module):
    """Upstream `VisionRotaryEmbeddingFast(dim=head_dim / 2, pt_seq_len=16)`: the first half of each head rotates
    with the row, the second with the column, at positions i / s * 16 of an s x s grid; interleaved pairs."""

    def __init__(self, head_dim: int):
        super().__init__()
        half = head_dim // 2
        self.register_buffer("freqs", 1.0 / (10000 ** (torch.arange(0, half, 2)[: half // 2].float() / half)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, H, s*s, head_dim) in raster order."""
        side = int(math.isqrt(x.shape[2]))
        t = torch.arange(side, device=x.device) / side * 16
        f = torch.outer(t, self.freqs).repeat_interleave(2, dim=-1)
        f = torch.cat([f[:, None, :].expand(side, side, -1), f[None, :, :].expand(side, side, -1)], dim=-1)
        f = f.reshape(side * side, -1)
        rotated = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)
        return x * f.cos() + rotated * f.sin()


class GatedMLP(nn.Module):
    """timm `SwiGLU(act_layer=nn.GELU)` as upstream builds it: fc2(gelu(fc1_g x) * fc1_x x)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1_g = nn.Linear(dim, hidden)
        self.fc1_x = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1_g(x)) * self.fc1_x(x))


def heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, N, n * hd) -> (B, n, N, hd)."""
    return x.view(x.shape[0], x.shape[1], n, -1).transpose(1, 2)


def merge(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).flatten(2)


class ScaleAttention(nn.Module):
    """Self-attention of the AR stacks: RoPE per scale grid; block-causal mask (teacher forcing) or KV cache."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rope = GridRope(dim // num_heads)

    def forward(self, x, segments: Sequence[int], mask, cache: KVCache | None, layer: int) -> torch.Tensor:
        q, k, v = (heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        q = torch.cat([self.rope(p) for p in q.split(list(segments), dim=2)], dim=2)
        k = torch.cat([self.rope(p) for p in k.split(list(segments), dim=2)], dim=2)
        if cache is not None:
            k, v = cache.extend(layer, k, v)
        return self.proj(merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)))


class ARBlock(nn.Module):
    """Upstream `Block` of the AR encoder/decoder: adaLN (6 chunks) around attention and the gated MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.dim = dim
        self.norm1 = RMSNorm(dim)
        self.attn = ScaleAttention(dim, num_heads)
        self.norm2 = RMSNorm(dim)
        self.mlp = GatedMLP(dim, int(dim * mlp_ratio * 2 / 3.0))
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, condition, segments, mask, cache, layer):
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.ada_lin(condition).view(-1, 1, 6, self.dim).unbind(2)
        x = x + self.attn(self.norm1(x) * (scale1 + 1) + shift1, segments, mask, cache, layer) * gamma1
        return x + self.mlp(self.norm2(x) * (scale2 + 1) + shift2) * gamma2


# -- the flow head -----------------------------------------------------------------------------------
class HeadAttention(nn.Module):
    """The flow head's self-attention (no qkv bias) over the tokens of one scale, with grid RoPE."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_heads = dim // 64
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.rope = GridRope(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.proj(merge(F.scaled_dot_product_attention(self.rope(q), self.rope(k), v)))


class HeadCrossAttention(nn.Module):
    """Block_v2's cross-attention: queries from the head's tokens, keys/values from the AR condition tokens."""

    def __init__(self, dim: int, cond_dim: int):
        super().__init__()
        self.num_heads = dim // 64
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(cond_dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.rope = GridRope(64)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        q = heads(self.q(x), self.num_heads)
        k, v = (heads(t, self.num_heads) for t in self.kv(cond).chunk(2, dim=-1))
        return self.proj(merge(F.scaled_dot_product_attention(self.rope(q), self.rope(k), v)))


class HeadBlockV1(nn.Module):
    """Upstream `Block_v1` (FlowAR-S): one adaLN from SiLU(t + c), per token."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.norm1 = RMSNorm(dim)
        self.attn = HeadAttention(dim)
        self.norm2 = RMSNorm(dim)
        self.mlp = GatedMLP(dim, int(dim * 4 * 2 / 3.0))
        self.ada_lin = nn.Linear(dim, 6 * dim)

    def forward(self, x, t, c, cond):
        b, n, _ = cond.shape
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.ada_lin(F.silu(t + c)).view(b, n, 6, self.dim).unbind(2)
        x = x + self.attn(self.norm1(x) * (scale1 + 1) + shift1) * gamma1
        return x + self.mlp(self.norm2(x) * (scale2 + 1) + shift2) * gamma2


class HeadBlockV2(nn.Module):
    """Upstream `Block_v2` (FlowAR-L/H): adaLN(t) around self-attention, cross-attention to the condition,
    adaLN(t + c) around the MLP."""

    def __init__(self, dim: int, cond_dim: int):
        super().__init__()
        self.dim = dim
        self.norm1 = RMSNorm(dim)
        self.attn = HeadAttention(dim)
        self.crossattn = HeadCrossAttention(dim, cond_dim)
        self.norm2_1 = RMSNorm(dim, weight=True)
        self.norm2_2 = RMSNorm(cond_dim, weight=True)
        self.norm3 = RMSNorm(dim)
        self.mlp = GatedMLP(dim, int(dim * 4 * 2 / 3.0))
        self.ada_lin_attn = nn.Linear(dim, 3 * dim)
        self.ada_lin_mlp = nn.Linear(dim, 3 * dim)

    def forward(self, x, t, c, cond):
        b, n, _ = cond.shape
        gamma1, scale1, shift1 = self.ada_lin_attn(F.silu(t)).view(b, 1, 3, self.dim).unbind(2)
        gamma2, scale2, shift2 = self.ada_lin_mlp(F.silu(c + t)).view(b, n, 3, self.dim).unbind(2)
        x = x + self.attn(self.norm1(x) * (scale1 + 1) + shift1) * gamma1
        x = x + self.crossattn(self.norm2_1(x), self.norm2_2(cond))
        return x + self.mlp(self.norm3(x) * (scale2 + 1) + shift2) * gamma2


class TimestepEmbedder(nn.Module):
    """DiT's sinusoidal embedding (256 frequencies, [cos, sin]) and a two-layer MLP."""

    def __init__(self, dim: int, frequencies: int = 256):
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(nn.Linear(frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequencies // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out: int):
        super().__init__()
        self.norm_final = RMSNorm(dim)
        self.linear = nn.Linear(dim, out)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(self.norm_final(x) * (1 + scale) + shift)


class FlowHead(nn.Module):
    """Velocity v(x_t, t | z) for the tokens of one scale (upstream `SimpleTransformerAdaLN`)."""

    def __init__(self, config: FlowARConfig):
        super().__init__()
        w, d = config.head_width, config.embed_dim
        self.time_embed = TimestepEmbedder(w)
        self.cond_embed = nn.Linear(d, w)
        self.input_proj = nn.Linear(config.token_dim, w)
        blocks = (HeadBlockV2(w, d) if config.cross else HeadBlockV1(w) for _ in range(config.head_depth))
        self.res_blocks = nn.ModuleList(blocks)
        self.final_layer = FinalLayer(w, config.token_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, N, C), t (B,) in [0, 1] (float32, truncated to an integer step t * 1000 as upstream), cond (B, N, D)."""
        x = self.input_proj(x)
        t = self.time_embed((t * 1000).long()).unsqueeze(1)
        c = self.cond_embed(cond)
        for block in self.res_blocks:
            x = block(x, t, c, cond)
        return self.final_layer(x, c + t)


def flow_timesteps(num_steps: int) -> torch.Tensor:
    """Upstream `euler_sampler`'s time grid (float64): 50 steps = linspace(1, 0, 51); otherwise
    linspace(1, 0.3, n // 2) then linspace(0.25, 0, n // 2 + 1), i.e. 2 (n // 2) steps (25 -> 24 steps)."""
    if num_steps == 50:
        return torch.linspace(1, 0, num_steps + 1, dtype=torch.float64)
    return torch.cat([torch.linspace(1, 0.3, num_steps // 2, dtype=torch.float64),
                      torch.linspace(0.25, 0, num_steps // 2 + 1, dtype=torch.float64)])


@torch.no_grad()
def euler_sample(head: nn.Module, noise: torch.Tensor, cond: torch.Tensor, num_steps: int, cfg: float,
                 guidance_high: float, guidance_low: float = 0.0) -> torch.Tensor:
    """Integrate the velocity from noise (B, N, C) at t = 1 to t = 0 on `flow_timesteps`, in float64 as upstream.

    `cond` is (B, N, D), or (2B, N, D) = [conditional; unconditional] when cfg > 1: then, for t in
    [guidance_low, guidance_high], v = u + cfg (c - u) with both evaluated at the conditional sample; outside it
    the conditional velocity alone. Returns float32 (B, N, C).
    """
    batch = noise.shape[0]
    x = noise.double()
    steps = flow_timesteps(num_steps)
    for t_cur, t_next in zip(steps[:-1], steps[1:]):
        guide = cfg > 1.0 and guidance_low <= t_cur <= guidance_high
        inp, z = (torch.cat([x, x]), cond) if guide else (x, cond[:batch])
        time = torch.full((inp.shape[0],), float(t_cur), dtype=torch.float64, device=x.device)
        v = head(inp.float(), time.float(), z.float()).double()
        if guide:
            c, u = v.chunk(2)
            v = u + cfg * (c - u)
        x = x + (t_next - t_cur) * v
    return x.float()


class FlowAR(nn.Module):
    """The network; `generate_flowar` samples it, `teacher_forced` runs every scale in one masked pass."""

    def __init__(self, config: FlowARConfig):
        super().__init__()
        self.config = config
        d, n = config.embed_dim, config.seq_len
        self.class_emb = nn.Embedding(NULL_CLASS + 1, d)
        self.z_proj = nn.Linear(config.token_dim, d)
        self.z_proj_ln = RMSNorm(d, weight=True)
        self.encoder_pos_embed_learned = nn.Parameter(torch.zeros(1, n, d))
        self.encoder_blocks = nn.ModuleList(ARBlock(d, config.num_heads, config.mlp_ratio)
                                            for _ in range(config.depth))
        self.encoder_norm = RMSNorm(d, weight=True)
        self.decoder_embed = nn.Linear(d, d)
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, n, d))
        self.decoder_blocks = nn.ModuleList(ARBlock(d, config.num_heads, config.mlp_ratio)
                                            for _ in range(config.depth))
        self.decoder_norm = RMSNorm(d, weight=True)
        self.diffusion_pos_embed_learned = nn.Parameter(torch.zeros(1, n, d))
        self.flownet = FlowHead(config)
        # upstream stores its additive block-causal mask (0 / -inf) as a persistent buffer
        scale_of = torch.tensor([k for k, s in enumerate(config.scales) for _ in range(s * s)])
        allowed = scale_of[None, :] <= scale_of[:, None]
        self.register_buffer("mask", torch.zeros(1, 1, n, n).masked_fill(~allowed, float("-inf")))

    def _stack(self, blocks, x, condition, segments, mask, cache, offset):
        for i, block in enumerate(blocks):
            x = block(x, condition, segments, mask, cache, offset + i)
        return x

    def condition(self, x: torch.Tensor, class_embedding: torch.Tensor, start: int, end: int,
                  segments: Sequence[int], mask: torch.Tensor | None = None,
                  cache: KVCache | None = None) -> torch.Tensor:
        """Encoder then decoder over input embeddings x (B, end - start, D) at sequence positions start..end;
        returns the flow head's condition z (B, end - start, D)."""
        depth = self.config.depth
        x = self.z_proj_ln(x + self.encoder_pos_embed_learned[:, start:end])
        x = self.encoder_norm(self._stack(self.encoder_blocks, x, class_embedding, segments, mask, cache, 0))
        x = self.decoder_embed(x) + self.decoder_pos_embed_learned[:, start:end]
        x = self.decoder_norm(self._stack(self.decoder_blocks, x, class_embedding, segments, mask, cache, depth))
        return x + self.diffusion_pos_embed_learned[:, start:end]

    def next_input(self, sample: torch.Tensor, step: int) -> torch.Tensor:
        """Scale `step`'s sample (B, s*s, C) -> the next scale's input tokens: bicubic up to the last scale's
        grid (upstream: 16 x 16), area down to the next scale."""
        scales = self.config.scales
        b, _, c = sample.shape
        grid = sample.transpose(1, 2).reshape(b, c, scales[step], scales[step])
        grid = F.interpolate(F.interpolate(grid, (scales[-1],) * 2, mode="bicubic"), (scales[step + 1],) * 2,
                             mode="area")
        return grid.reshape(b, c, -1).transpose(1, 2)

    def teacher_forced(self, labels: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Condition z (B, seq_len, D) for every scale of ground-truth latents (B, C, S, S), in one pass with
        the block-causal mask (upstream's training forward without label dropout and flow loss)."""
        scales = self.config.scales
        cls = self.class_emb(labels)
        inputs = [F.interpolate(F.interpolate(F.interpolate(latents, (s,) * 2, mode="area"), latents.shape[-2:],
                                              mode="bicubic"), (nxt,) * 2, mode="area")
                  for s, nxt in zip(scales[:-1], scales[1:])]
        tokens = torch.cat([i.flatten(2).transpose(1, 2) for i in inputs], dim=1)
        x = torch.cat([cls.unsqueeze(1), self.z_proj(tokens)], dim=1)
        return self.condition(x, cls, 0, self.config.seq_len, [s * s for s in scales], self.mask)


@dataclass(frozen=True)
class FlowARSampler:
    """Upstream `sample_tokens(num_steps, guidance, cfg)` (README: S 25/0.9/4.3, L 25/0.9/2.4, H 50/0.7/2.4)."""

    num_steps: int = 25
    cfg: float = 4.3
    guidance: float = 0.9  # guidance_high: CFG only while t <= guidance

    def __post_init__(self):
        if self.num_steps < 2:
            raise ValueError(f"num_steps must be at least 2, not {self.num_steps}")
        if self.cfg < 1.0:
            raise ValueError(f"cfg must be >= 1 (1 = no guidance), not {self.cfg}")
        if not 0.0 <= self.guidance <= 1.0:
            raise ValueError(f"guidance (the highest t that is guided) must be in [0, 1], not {self.guidance}")


@torch.no_grad()
def generate_flowar(model: FlowAR, labels: torch.Tensor, generators: Sequence[torch.Generator],
                    sampler: FlowARSampler, record: list | None = None) -> torch.Tensor:
    """Latents (B, C, S, S) in MAR's scaled VAE space; sample b draws its noise only from generators[b].

    `record` collects (condition z, sample) per scale for tests."""
    c = model.config
    use_cfg = sampler.cfg != 1.0
    cls = model.class_emb(labels)
    if use_cfg:
        cls = torch.cat([cls, model.class_emb(torch.full_like(labels, NULL_CLASS))])
    x = cls.unsqueeze(1)
    cache = KVCache(2 * c.depth)
    offsets = c.offsets
    for step, side in enumerate(c.scales):
        z = model.condition(x, cls, offsets[step], offsets[step + 1], [side * side], None, cache)
        scaled_cfg = (sampler.cfg - 1) * step / (len(c.scales) - 1) + 1
        noise = torch.stack([torch.randn(side * side, c.token_dim, generator=g) for g in generators]).to(z.device)
        sample = euler_sample(model.flownet, noise, z, sampler.num_steps, scaled_cfg, sampler.guidance)
        if record is not None:
            record.append((z, sample))
        if step == len(c.scales) - 1:
            break
        nxt = model.next_input(sample, step)
        x = model.z_proj(torch.cat([nxt, nxt]) if use_cfg else nxt)
    side = c.scales[-1]
    return sample.transpose(1, 2).reshape(sample.shape[0], c.token_dim, side, side)
