"""Transformer layers shared by MAR (`mar.py`) and RAR (`rar.py`): timm's ViT attention and `Mlp`, and DiT's
adaLN `modulate`.

Both upstream models build on timm's `Attention` (fused `qkv` with bias, `proj`) and `Mlp` (`fc1`, exact GELU,
`fc2`); RAR adds LayerNorm on per-head queries and keys (timm's `qk_norm=True`: `q_norm`, `k_norm`) and a KV
cache for raster decoding. The parameter names are timm's, so both models' released state dicts load by name.
The blocks themselves differ (MAR's is a plain pre-norm ViT block, RAR's is adaLN-modulated) and stay with
their model.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F


class KVCacheLike(Protocol):
    """What `Attention` needs from a KV cache (`baselines.imagegen.llamagen_gpt.KVCache` is one)."""

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """DiT's adaLN modulation: x * (1 + scale) + shift."""
    return x * (1 + scale) + shift


class Attention(nn.Module):
    """timm's multi-head self-attention: fused `qkv` (with bias) and `proj`; with `qk_norm`, LayerNorm
    (`q_norm`, `k_norm`, eps `norm_eps`) on per-head queries and keys. `forward` takes an optional attention
    mask (True = attend) and an optional KV cache that the keys and values of this call extend."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, norm_eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        if qk_norm:
            self.q_norm = nn.LayerNorm(dim // num_heads, eps=norm_eps)
            self.k_norm = nn.LayerNorm(dim // num_heads, eps=norm_eps)
        self.qk_norm = qk_norm
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, cache: KVCacheLike | None = None,
                layer: int = 0) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if cache is not None:
            k, v = cache.extend(layer, k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """timm's `Mlp`: fc1, exact GELU, fc2 (dropout inactive at inference)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))
