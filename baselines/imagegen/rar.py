"""RAR, Randomized AutoRegressive visual generation (Yu et al. 2024), the project's own implementation.

Architecture as released in bytedance/1d-tokenizer `modeling/rar.py` (Apache-2.0), read and rewritten:
a pre-norm ViT-style decoder (LayerNorm eps 1e-6, fused `qkv` with bias, LayerNorm on per-head
queries and keys, GELU MLP) whose blocks are modulated by adaLN from the class embedding. One embedding
table holds the 1024 MaskGIT-VQ codes, a mask id, the 1000 classes and the null class (CFG). The input
sequence is [cls_token, class, t_0, ..., t_{n-1}]:

- every position adds its learned `pos_embed` row;
- the target-aware positional embedding tells position p where the token it predicts lives: the class
  position and image positions add `target_aware_pos_embed[p + 1]`, the cls position and the last
  position add nothing (training shuffles the order, so this is what lets the model know which token
  comes next; at inference the order is raster and the rows are fixed);
- the adaLN condition of position p is the class embedding plus `timesteps_embeddings[p]`;
- a final adaLN layer (`adaln_before_head`, no affine LayerNorm, scale before shift) and `lm_head`.

Training permutes the order with a probability annealed to 0; inference is raster order with a KV
cache, 256 steps for 16x16 tokens. Guidance ramps with a power-cosine schedule (RAR's `generate`):
s(step) = 1 + (g - 1) (1 - cos(pi (step / n)^pow)) / 2, and logits = u + s (c - u); the temperature
(upstream's `randomize_temperature`) divides the guided logits; upstream has no top-k or top-p.

Parameter names match the released `rar_{b,l,xl,xxl}.bin` state dicts (`cls_token`, `embeddings.weight`,
`pos_embed`, `target_aware_pos_embed`, `timesteps_embeddings`, `blocks.{i}.attn.qkv.weight`,
`blocks.{i}.attn.q_norm.weight`, `blocks.{i}.mlp.fc1.weight`, `blocks.{i}.adaLN_modulation.1.weight`,
`adaln_before_head.adaLN_modulation.1.weight`, `lm_head.weight`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from baselines.imagegen.llamagen_gpt import KVCache
from baselines.imagegen.sampling import draw
from baselines.imagegen.vit_layers import Attention, Mlp, modulate


@dataclass(frozen=True)
class RARConfig:
    """Shape of a RAR generator; defaults are upstream's `rar.yaml` (RAR-B) with the MaskGIT-VQ tokenizer."""

    dim: int = 768
    depth: int = 24
    heads: int = 16
    intermediate_size: int = 3072
    image_seq_len: int = 256
    codebook_size: int = 1024
    num_classes: int = 1000
    norm_eps: float = 1e-6
    # Upstream allocates spare rows beyond the sequence (pos tables: +1024, timestep table: +100).
    pos_table_extra: int = 1024
    timestep_table_extra: int = 100

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def vocab_rows(self) -> int:
        """Codes, the mask id, the classes and the null class share one embedding table."""
        return self.codebook_size + 1 + self.num_classes + 1

    @property
    def null_class(self) -> int:
        """The class id that maps to the null-condition row (upstream's `none_condition_id` minus the offset)."""
        return self.num_classes


#: Released sizes (README_RAR.md: hidden 768/1024/1280/1408, layers 24/24/32/40, 16 heads,
#: intermediate 3072/4096/5120/6144); 261M / 461M / 955M / 1.5B parameters.
RAR_CONFIGS = {
    "RAR-B": RARConfig(dim=768, depth=24, intermediate_size=3072),
    "RAR-L": RARConfig(dim=1024, depth=24, intermediate_size=4096),
    "RAR-XL": RARConfig(dim=1280, depth=32, intermediate_size=5120),
    "RAR-XXL": RARConfig(dim=1408, depth=40, intermediate_size=6144),
}


class Block(nn.Module):
    """Pre-norm block with adaLN-zero modulation (shift, scale, gate for attention and MLP)."""

    def __init__(self, config: RARConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.attn = Attention(config.dim, config.heads, qk_norm=True, norm_eps=config.norm_eps)
        self.norm2 = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.mlp = Mlp(config.dim, config.intermediate_size)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(config.dim, 6 * config.dim))

    def forward(self, x, cond, mask, cache, layer):
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(cond).chunk(6, dim=-1)
        x = x + gate_a * self.attn(modulate(self.norm1(x), shift_a, scale_a), mask, cache, layer)
        return x + gate_m * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class FinalLayer(nn.Module):
    """adaLN before the head; upstream chunks the modulation as (scale, shift), the reverse of the blocks."""

    def __init__(self, config: RARConfig):
        super().__init__()
        self.norm_final = nn.LayerNorm(config.dim, eps=config.norm_eps, elementwise_affine=False)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(config.dim, 2 * config.dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.adaLN_modulation(cond).chunk(2, dim=-1)
        return modulate(self.norm_final(x), shift, scale)


class RAR(nn.Module):
    """The network in raster order; sampling lives in `generate_rar`."""

    #: Positions before the first image token: the cls token and the class token.
    prefix = 2

    def __init__(self, config: RARConfig):
        super().__init__()
        self.config = config
        d, n = config.dim, config.image_seq_len
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.embeddings = nn.Embedding(config.vocab_rows, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, n + config.pos_table_extra, d))
        self.target_aware_pos_embed = nn.Parameter(torch.zeros(1, n + config.pos_table_extra, d))
        self.timesteps_embeddings = nn.Parameter(torch.zeros(1, n + config.timestep_table_extra, d))
        self.adaln_before_head = FinalLayer(config)
        self.lm_head = nn.Linear(d, config.codebook_size)

    def condition_embedding(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, D) embedding of class ids 0..num_classes (num_classes = the null class)."""
        return self.embeddings(labels + self.config.codebook_size + 1)

    def position_terms(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Additive input embedding (S, D) and adaLN step embedding (S, D) of sequence positions.

        Input: `pos_embed[p]`, plus `target_aware_pos_embed[p + 1]` for 1 <= p <= n (the position of
        the token that p predicts, raster order); the cls position and the last one get no target term.
        """
        n = self.config.image_seq_len
        has_target = (positions >= 1) & (positions <= n)
        target = self.target_aware_pos_embed[0, (positions + 1).clamp(max=n + 1)] * has_target[:, None]
        return self.pos_embed[0, positions] + target, self.timesteps_embeddings[0, positions]

    def forward(self, labels: torch.Tensor, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, S, V) of the positions not yet in `cache` for the sequence [cls, class, tokens].

        `labels` (B,) class ids (num_classes = null), `tokens` (B, t) the image tokens so far. Without a
        cache every position is computed (S = t + 2; position p >= 1 predicts image token p - 1); with one,
        only the positions after the cached ones.
        """
        past = cache.length if cache is not None else 0
        total = tokens.shape[1] + self.prefix
        positions = torch.arange(past, total, device=tokens.device)
        class_emb = self.condition_embedding(labels)
        parts = []
        if past == 0:
            parts += [self.cls_token.expand(labels.shape[0], -1, -1), class_emb[:, None]]
        parts.append(self.embeddings(tokens[:, max(past - self.prefix, 0):]))
        x = torch.cat(parts, dim=1)
        additive, steps = self.position_terms(positions)
        x = x + additive
        cond = class_emb[:, None] + steps
        s = x.shape[1]
        mask = torch.ones(s, past + s, dtype=torch.bool, device=x.device).tril(diagonal=past)
        for i, block in enumerate(self.blocks):
            x = block(x, cond, mask, cache, i)
        return self.lm_head(self.adaln_before_head(x, cond)).float()

    def teacher_forced_logits(self, labels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Raster logits (B, n, V) in one pass: row j predicts image token j (upstream's training forward
        with the order fixed to raster)."""
        return self.forward(labels, tokens[:, :-1])[:, 1:]


@dataclass(frozen=True)
class RARSampler:
    """RAR's sampler: power-cosine guidance ramp and a softmax temperature (upstream defaults: RAR-B)."""

    guidance_scale: float = 16.0  # 0 turns guidance off (no unconditional pass), as upstream
    guidance_scale_pow: float = 2.75  # 0 gives a constant scale g on every step
    randomize_temperature: float = 1.0


def guidance_at(step: int, steps: int, scale: float, power: float) -> float:
    """RAR's guidance scale at `step` of `steps`: 1 + (g - 1) (1 - cos(pi (step/steps)^pow)) / 2.

    Computed in float32 as upstream does (a float32 tensor of the power raised and passed to cos).
    """
    ramp = (step / steps) ** torch.tensor([power], dtype=torch.float32)
    return float((scale - 1) * ((1 - torch.cos(ramp * torch.pi)) / 2) + 1)


@torch.no_grad()
def generate_rar(model: RAR, labels: torch.Tensor, generators: Sequence[torch.Generator], sampler: RARSampler,
                 forced: torch.Tensor | None = None, record: list | None = None) -> torch.Tensor:
    """Raster-order token ids (B, n), one step per token, with a KV cache.

    With guidance on, the batch is doubled with the null class and the chosen token is fed to both
    halves. Each sample draws from its own generator. `forced` (B, n) feeds given tokens instead of
    sampled ones and `record` collects each step's guided logits (to check the cache against
    `teacher_forced_logits`).
    """
    c = model.config
    batch = labels.shape[0]
    guided = sampler.guidance_scale != 0
    cond = torch.cat([labels, torch.full_like(labels, c.null_class)]) if guided else labels
    cache = KVCache(c.depth)
    fed = torch.zeros(cond.shape[0], 0, dtype=torch.long, device=labels.device)
    tokens = []
    for step in range(c.image_seq_len):
        logits = model(cond, fed, cache)[:, -1:]
        if guided:
            scale = guidance_at(step, c.image_seq_len, sampler.guidance_scale, sampler.guidance_scale_pow)
            logits = logits[batch:] + (logits[:batch] - logits[batch:]) * scale
        if record is not None:
            record.append(logits)
        if forced is not None:
            nxt = forced[:, step:step + 1]
        else:
            nxt = draw((logits / sampler.randomize_temperature).softmax(dim=-1), generators)
        tokens.append(nxt)
        fed = torch.cat([fed, torch.cat([nxt, nxt]) if guided else nxt], dim=1)
    return torch.cat(tokens, dim=1)
