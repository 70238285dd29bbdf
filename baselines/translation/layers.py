"""Transformer building blocks shared by the AR and NAT translators.

Parameter names follow fairseq's `transformer` / `nonautoregressive_transformer`
(`encoder.layers.0.self_attn.q_proj.weight`, `decoder.layers.0.encoder_attn.k_proj.bias`,
`decoder.embed_length.weight`, ...), pre-norm (`normalize_before=True`), sinusoidal positions in
fairseq's layout (sines then cosines, positions counted from padding_idx + 1), and a joint vocabulary
whose embedding is shared by encoder, decoder and output projection (`share_all_embeddings`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TransformerConfig:
    """Sizes of an encoder-decoder (defaults: the bundled nat-mini models)."""

    vocab_size: int = 0
    embed_dim: int = 128
    ffn_dim: int = 256
    heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    dropout: float = 0.1
    max_positions: int = 128
    padding_idx: int = 1


def sinusoidal_positions(length: int, dim: int, padding_idx: int, device=None) -> torch.Tensor:
    """fairseq's SinusoidalPositionalEmbedding table for positions padding_idx+1 .. padding_idx+length."""
    half = dim // 2
    scale = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=device) * -scale)
    positions = torch.arange(padding_idx + 1, padding_idx + 1 + length, dtype=torch.float32, device=device)
    angles = positions[:, None] * freqs[None, :]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(table, (0, dim % 2))


class MultiheadAttention(nn.Module):
    """Scaled dot-product attention with fairseq's projection names and an optional key/value cache."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor | None, key_padding_mask: torch.Tensor | None = None,
                causal: bool = False, cache: dict | None = None, static_kv: bool = False) -> torch.Tensor:
        """`cache` (incremental decoding): for self-attention the new keys/values are appended;
        with `static_kv` (encoder attention) they are computed once and reused."""
        q = self._split(self.q_proj(query))
        if cache is not None and static_kv and "k" in cache:
            k, v = cache["k"], cache["v"]
        else:
            k, v = self._split(self.k_proj(key)), self._split(self.v_proj(key))
            if cache is not None:
                if not static_kv and "k" in cache:
                    k = torch.cat([cache["k"], k], dim=2)
                    v = torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
        mask = None
        if key_padding_mask is not None:
            mask = ~key_padding_mask[:, None, None, :]
        if causal and query.shape[1] > 1:
            causal_mask = torch.ones(query.shape[1], k.shape[2], dtype=torch.bool, device=q.device).tril(
                k.shape[2] - query.shape[1])
            mask = causal_mask if mask is None else mask & causal_mask
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        b, h, t, dh = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, h * dh))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.self_attn = MultiheadAttention(cfg.embed_dim, cfg.heads, cfg.dropout)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.embed_dim)
        self.final_layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        h = self.self_attn_layer_norm(x)
        x = x + self.dropout(self.self_attn(h, h, padding_mask))
        h = self.final_layer_norm(x)
        return x + self.dropout(self.fc2(self.dropout(F.relu(self.fc1(h)))))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.self_attn = MultiheadAttention(cfg.embed_dim, cfg.heads, cfg.dropout)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.encoder_attn = MultiheadAttention(cfg.embed_dim, cfg.heads, cfg.dropout)
        self.encoder_attn_layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.embed_dim)
        self.final_layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, self_padding_mask: torch.Tensor | None, memory: torch.Tensor,
                memory_padding_mask: torch.Tensor, causal: bool, cache: dict | None = None) -> torch.Tensor:
        h = self.self_attn_layer_norm(x)
        x = x + self.dropout(self.self_attn(h, h, self_padding_mask, causal=causal,
                                            cache=None if cache is None else cache.setdefault("self", {})))
        h = self.encoder_attn_layer_norm(x)
        x = x + self.dropout(self.encoder_attn(h, memory, memory_padding_mask,
                                               cache=None if cache is None else cache.setdefault("cross", {}),
                                               static_kv=True))
        h = self.final_layer_norm(x)
        return x + self.dropout(self.fc2(self.dropout(F.relu(self.fc1(h)))))


def embed(embed_tokens: nn.Embedding, padding_idx: int, tokens: torch.Tensor | None = None, offset: int = 0,
          vectors: torch.Tensor | None = None) -> torch.Tensor:
    """Token embedding scaled by sqrt(dim) (fairseq's `embed_scale`) plus sinusoidal positions.

    With `vectors` (the NAT decoder's copy of the source embeddings) only the positions are added.
    """
    dim = embed_tokens.embedding_dim
    x = math.sqrt(dim) * embed_tokens(tokens) if vectors is None else vectors
    table = sinusoidal_positions(offset + x.shape[1], dim, padding_idx, x.device)[offset:]
    return x + table[None]


class Encoder(nn.Module):
    def __init__(self, embed_tokens: nn.Embedding, cfg: TransformerConfig):
        super().__init__()
        self.embed_tokens = embed_tokens
        self.padding_idx = cfg.padding_idx
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)

    def forward(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(encoder states (B, S, D), padding mask (B, S), True at padding)."""
        padding = src.eq(self.padding_idx)
        x = self.dropout(embed(self.embed_tokens, self.padding_idx, src))
        for layer in self.layers:
            x = layer(x, padding)
        return self.layer_norm(x), padding


class Decoder(nn.Module):
    """A stack of decoder layers; causal for the AR model, bidirectional for the NAT models."""

    def __init__(self, embed_tokens: nn.Embedding, cfg: TransformerConfig, causal: bool):
        super().__init__()
        self.causal = causal
        self.embed_tokens = embed_tokens
        self.padding_idx = cfg.padding_idx
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)

    def embed(self, tokens: torch.Tensor | None = None, offset: int = 0,
              vectors: torch.Tensor | None = None) -> torch.Tensor:
        return self.dropout(embed(self.embed_tokens, self.padding_idx, tokens, offset, vectors))

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None, memory: torch.Tensor,
                memory_padding: torch.Tensor, cache: list | None = None) -> torch.Tensor:
        """Logits (B, T, V) for embedded inputs `x` (see `embed`); the projection is the tied embedding."""
        for i, layer in enumerate(self.layers):
            x = layer(x, padding, memory, memory_padding, self.causal, None if cache is None else cache[i])
        return F.linear(self.layer_norm(x), self.embed_tokens.weight)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
