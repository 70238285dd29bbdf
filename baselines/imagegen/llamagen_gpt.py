"""LlamaGen's class-conditional GPT (Sun et al. 2024), the project's own implementation.

Architecture as released in FoundationVision/LlamaGen `autoregressive/models/gpt.py` (MIT): a Llama
decoder (RMSNorm, SwiGLU, fused `wqkv`, no biases) over VQ token ids, prefixed by `cls_token_num`
class-embedding tokens; 2D rotary embeddings over the token grid, and the class prefix rotated by a
table of zeros (so its queries and keys are zero, exactly as upstream). The null class (index
`num_classes`) is the unconditional input for classifier-free guidance.

Parameter names match the released checkpoints (`tok_embeddings.weight`,
`cls_embedding.embedding_table.weight`, `layers.{i}.attention.wqkv.weight`,
`layers.{i}.feed_forward.w1.weight`, `norm.weight`, `output.weight`, ...), so `load_state_dict`
takes them as they are.

`forward` works on embeddings with explicit rotary indices, a KV cache and an optional boolean mask,
so raster decoding (`generate_raster`) and region-parallel decoding (`baselines.imagegen.par`) drive
the same network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.imagegen.sampling import SamplerConfig, guided_logits, guided_step, sample_tokens


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a LlamaGen GPT; defaults are upstream's `ModelArgs` for class-conditional models."""

    dim: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int | None = None
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    num_classes: int = 1000
    class_dropout_prob: float = 0.1
    vocab_size: int = 16384
    cls_token_num: int = 1
    block_size: int = 256  # image tokens: 256 = 16x16 (256 px), 576 = 24x24 (384 px)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def grid_size(self) -> int:
        side = int(round(self.block_size ** 0.5))
        if side * side != self.block_size:
            raise ValueError(f"block_size {self.block_size} is not a square number of tokens")
        return side

    @property
    def ffn_hidden(self) -> int:
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return -(-hidden // self.multiple_of) * self.multiple_of


#: Released class-conditional sizes (upstream `GPT_models`), at 16x16 tokens; 384 px models use block_size=576.
GPT_CONFIGS = {
    "GPT-B": GPTConfig(dim=768, n_layer=12, n_head=12),
    "GPT-L": GPTConfig(dim=1024, n_layer=24, n_head=16),
    "GPT-XL": GPTConfig(dim=1280, n_layer=36, n_head=20),
    "GPT-XXL": GPTConfig(dim=1536, n_layer=48, n_head=24),
    "GPT-3B": GPTConfig(dim=3200, n_layer=24, n_head=32),
}


def rope_table_2d(config: GPTConfig) -> torch.Tensor:
    """(cls_token_num + grid**2, head_dim/2, 2) cos/sin table: first half of the pairs rotate with the
    row, second half with the column; the class prefix rows are zeros (upstream's convention)."""
    half = config.head_dim // 2
    inv_freq = 1.0 / (config.rope_base ** (torch.arange(0, half, 2)[: half // 2].float() / half))
    angles = torch.outer(torch.arange(config.grid_size).float(), inv_freq)
    side = config.grid_size
    grid = torch.cat([angles[:, None, :].expand(-1, side, -1), angles[None, :, :].expand(side, -1, -1)], dim=-1)
    table = torch.stack([grid.cos(), grid.sin()], dim=-1).flatten(0, 1)
    return torch.cat([torch.zeros(config.cls_token_num, config.head_dim // 2, 2), table])


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x (B, S, H, hd) by table (S, hd/2, 2)."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    cos, sin = table[None, :, None, :, 0], table[None, :, None, :, 1]
    out = torch.stack([pairs[..., 0] * cos - pairs[..., 1] * sin, pairs[..., 1] * cos + pairs[..., 0] * sin], -1)
    return out.flatten(3).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class FeedForward(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.w1 = nn.Linear(config.dim, config.ffn_hidden, bias=False)
        self.w3 = nn.Linear(config.dim, config.ffn_hidden, bias=False)
        self.w2 = nn.Linear(config.ffn_hidden, config.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class KVCache:
    """Keys and values of every layer for the tokens fed so far (grown by concatenation)."""

    def __init__(self, n_layer: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer

    @property
    def length(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class Attention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        total = (config.n_head + 2 * config.kv_heads) * config.head_dim
        self.wqkv = nn.Linear(config.dim, total, bias=False)
        self.wo = nn.Linear(config.dim, config.dim, bias=False)

    def forward(self, x, rope, mask, cache: KVCache | None, layer: int) -> torch.Tensor:
        c = self.config
        b, s, _ = x.shape
        kv = c.kv_heads * c.head_dim
        q, k, v = self.wqkv(x).split([c.dim, kv, kv], dim=-1)
        q = apply_rope(q.view(b, s, c.n_head, c.head_dim), rope).transpose(1, 2)
        k = apply_rope(k.view(b, s, c.kv_heads, c.head_dim), rope).transpose(1, 2)
        v = v.view(b, s, c.kv_heads, c.head_dim).transpose(1, 2)
        if cache is not None:
            k, v = cache.extend(layer, k, v)
        groups = c.n_head // c.kv_heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.wo(out.transpose(1, 2).reshape(b, s, c.dim))


class TransformerBlock(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.attention = Attention(config)
        self.feed_forward = FeedForward(config)
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)

    def forward(self, x, rope, mask, cache, layer):
        h = x + self.attention(self.attention_norm(x), rope, mask, cache, layer)
        return h + self.feed_forward(self.ffn_norm(h))


class LabelEmbedder(nn.Module):
    """Class embeddings; row `num_classes` is the null class used for classifier-free guidance."""

    def __init__(self, num_classes: int, dim: int, dropout_prob: float):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), dim)


class LlamaGenGPT(nn.Module):
    """The network; sampling lives in `generate_raster` and `baselines.imagegen.par`."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.cls_embedding = LabelEmbedder(config.num_classes, config.dim, config.class_dropout_prob)
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.register_buffer("rope", rope_table_2d(config), persistent=False)

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    def embed_class(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, cls_token_num, D): the class embedding as the prefix (upstream keeps one token for c2i)."""
        return self.cls_embedding.embedding_table(labels).unsqueeze(1)[:, : self.config.cls_token_num]

    def forward(self, h: torch.Tensor, rope_index: torch.Tensor, cache: KVCache | None = None,
                mask: torch.Tensor | None = None, additions: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits (B, S, V) for input embeddings h (B, S, D) at rotary rows `rope_index` (S,).

        `mask` (S, cached + S), True = may attend; None means causal over cache + new tokens.
        `additions` {layer i: (B, S, D)} are added to the hidden states entering layer i (ControlAR's
        conditional decoding, `baselines.imagegen.controlar`).
        """
        past = cache.length if cache is not None else 0
        s = h.shape[1]
        if mask is None:
            mask = torch.ones(s, past + s, dtype=torch.bool, device=h.device).tril(diagonal=past)
        rope = self.rope[rope_index]
        for i, layer in enumerate(self.layers):
            if additions is not None and i in additions:
                h = h + additions[i]
            h = layer(h, rope, mask, cache, i)
        return self.output(self.norm(h)).float()

    def training_logits(self, labels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced raster logits (B, block_size, V): position t predicts token t."""
        c = self.config
        h = torch.cat([self.embed_class(labels), self.tok_embeddings(tokens[:, :-1])], dim=1)
        logits = self.forward(h, torch.arange(h.shape[1], device=h.device))
        return logits[:, c.cls_token_num - 1:]


@torch.no_grad()
def generate_raster(model: LlamaGenGPT, labels: torch.Tensor, generators: Sequence[torch.Generator],
                    sampler: SamplerConfig, forced: torch.Tensor | None = None,
                    record: list | None = None) -> torch.Tensor:
    """Raster-order token ids (B, block_size), one sampling step per token, with a KV cache.

    `forced` (B, block_size) feeds given tokens instead of sampled ones and `record` collects each
    step's guided logits (to check cached decoding against `training_logits`).

    As upstream: with cfg_scale > 1 the batch is doubled with the null class, guided logits are
    uncond + scale * (cond - uncond) (only for the first `cfg_interval` + 2 tokens when it is >= 0,
    as upstream's prefill plus `decode_n_tokens`: see `guided_step`),
    and the chosen token is fed to both halves.
    """
    c = model.config
    use_cfg = sampler.cfg_scale > 1.0
    cond = torch.cat([labels, torch.full_like(labels, model.null_class)]) if use_cfg else labels
    cache = KVCache(c.n_layer)
    h = model.embed_class(cond)
    position = torch.arange(c.cls_token_num, device=labels.device)
    tokens = []
    for step in range(c.block_size):
        logits = model(h, position, cache)[:, -1:]
        scale = sampler.cfg_scale if guided_step(sampler, step) else 1.0
        logits = guided_logits(logits, labels.shape[0], scale, use_cfg)
        if record is not None:
            record.append(logits)
        nxt = forced[:, step:step + 1] if forced is not None else sample_tokens(logits, generators, sampler)
        tokens.append(nxt)
        h = model.tok_embeddings(torch.cat([nxt, nxt]) if use_cfg else nxt)
        position = torch.tensor([c.cls_token_num + step], device=labels.device)
    return torch.cat(tokens, dim=1)
