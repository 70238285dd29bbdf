"""RQ-Transformer (Lee et al. 2022): a spatial transformer over the 8 x 8 positions and a depth transformer over
the 4 residual codes of each position, the project's own implementation.

As released in kakaobrain/rq-vae-transformer (`rqvae/models/rqtransformer/{transformers,attentions,configs}.py`,
Apache-2.0) with the flags every released ImageNet config sets (`configs/imagenet256/stage2/*.yaml`):
`input_emb_vqvae`, `head_emb_vqvae`, `cumsum_depth_ctx`, `shared_tok_emb`, `shared_cls_emb`, one class token.

- Spatial ("body") input at position t: the class embedding + `pos_emb_cond` at t = 0, else
  sum_d input_mlp(e(code[t-1, d])) + pos_emb_hw[t-1], where e is the RQ-VAE's codebook (the Linear's bias is
  added once per depth, as upstream applies `input_mlp` before summing over depth).
- Depth ("head") input at depth d of position t: the body output at t for d = 0, else
  head_mlp(e(code[t, 0]) + ... + e(code[t, d-1])) (cumulative sum of the code vectors, the partial
  reconstruction of the feature), plus `pos_emb_d[d]`.
- Both stacks are pre-LayerNorm GPT blocks (separate `key`/`query`/`value` Linears, 4x GELU MLP, causal);
  one LayerNorm + Linear head shared by the depths gives the logits over 16384 codes.

Parameter names and shapes are upstream's (`body_transformer.blocks.{i}.attn.query.weight`, `head_mlp.weight`,
`classifier.linear.weight`, ...). `teacher_forced_logits` is upstream's `forward`; `generate_rq` is its cached
`sample` (positions in raster order, the 4 depths of each position one after the other, one network step per
code: 256 steps for 8 x 8 x 4), drawing every sample's codes from its own generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.imagegen.sampling import draw

#: The `arch` flags of the released ImageNet configs, the only code path implemented here.
RELEASED_FLAGS = {"input_emb_vqvae": True, "head_emb_vqvae": True, "cumsum_depth_ctx": True,
                  "shared_tok_emb": True, "shared_cls_emb": True, "scaled_head_emb_vqvae": False,
                  "use_padding_emb": False, "block_size_cond": 1}
#: Upstream `AttentionBlockConfig` defaults the released configs keep.
BLOCK_DEFAULTS = {"mlp_bias": True, "attn_bias": True, "gelu": "v1"}


@dataclass(frozen=True)
class RQTransformerConfig:
    """Upstream `RQTransformerConfig` for the released class-conditional ImageNet models."""

    embed_dim: int = 1536
    body_layers: int = 12
    head_layers: int = 4
    n_head: int = 24
    block_size: tuple[int, int, int] = (8, 8, 4)
    vocab_size: int = 16384
    vocab_size_cond: int = 1000
    input_embed_dim: int = 256

    def __post_init__(self):
        if self.embed_dim % self.n_head:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by n_head {self.n_head}")

    @classmethod
    def from_arch(cls, arch: Mapping[str, Any]) -> "RQTransformerConfig":
        """The config of a released stage-2 `config.yaml`'s `arch` section (read with a safe YAML loader);
        refuses flags that select a code path not implemented here."""
        if arch.get("type") != "rq-transformer":
            raise ValueError(f"arch.type is {arch.get('type')!r}, not 'rq-transformer'")
        wrong = [f"{k}={arch.get(k, '(default)')!r} (need {v!r})" for k, v in RELEASED_FLAGS.items()
                 if arch.get(k, False if isinstance(v, bool) else 0) != v]
        for stack in ("body", "head"):
            block = (arch.get(stack) or {}).get("block") or {}
            wrong += [f"{stack}.block.{k}={block[k]!r} (need {v!r})" for k, v in BLOCK_DEFAULTS.items()
                      if k in block and block[k] != v]
            if (arch.get(stack) or {}).get("block", {}).get("n_head") != arch["body"]["block"]["n_head"]:
                wrong.append(f"{stack}.block.n_head differs from body.block.n_head")
        if wrong:
            raise ValueError("not the released RQ-Transformer architecture: " + "; ".join(wrong))
        vocab = arch.get("vocab_size", 16384)
        if isinstance(vocab, (list, tuple)):
            if len(set(vocab)) != 1:
                raise ValueError(f"per-depth vocabularies {vocab} are not the released (shared) layout")
            vocab = vocab[0]
        return cls(embed_dim=int(arch["embed_dim"]), body_layers=int(arch["body"]["n_layer"]),
                   head_layers=int(arch["head"]["n_layer"]), n_head=int(arch["body"]["block"]["n_head"]),
                   block_size=tuple(int(v) for v in arch["block_size"]), vocab_size=int(vocab),
                   vocab_size_cond=int(arch["vocab_size_cond"]), input_embed_dim=int(arch["input_embed_dim"]))


# -- blocks -----------------------------------------------------------------------------------------
class SelfAttention(nn.Module):
    """Causal multi-head attention (upstream `MultiSelfAttention`), with an optional key/value cache."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.key, self.query, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.heads = heads

    def forward(self, x: torch.Tensor, cache: list | None = None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (m(x).view(b, t, self.heads, c // self.heads).transpose(1, 2)
                   for m in (self.query, self.key, self.value))
        if cache is not None:
            if cache:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        past = k.shape[2] - t
        mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(diagonal=past)
        att = q @ (k.transpose(-2, -1) * (1.0 / math.sqrt(k.shape[-1])))  # scaled before the product, as upstream
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    """Upstream `AttentionBlock`: x + attn(ln1(x)), then x + mlp(ln2(x)); mlp = Linear, GELU, Linear (`mlp.0`,
    `mlp.2`; dropout off)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, cache: list | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


class Stack(nn.Module):
    def __init__(self, layers: int, dim: int, heads: int):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, caches: list[list] | None = None) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x, caches[i] if caches is not None else None)
        return x

    def new_cache(self) -> list[list]:
        return [[] for _ in self.blocks]


class Classifier(nn.Module):
    """`classifier.layer_norm` + `classifier.linear` (shared over depths; upstream's `logit_mask` is the
    identity when every depth has the same vocabulary)."""

    def __init__(self, dim: int, vocab: int):
        super().__init__()
        self.layer_norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, vocab)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(self.layer_norm(h))


# -- network ----------------------------------------------------------------------------------------
class RQTransformer(nn.Module):
    """Code vectors come from the RQ-VAE's codebook: every method takes `embed`, a function codes (..., D) ->
    vectors (..., D, input_embed_dim) (`RQVAEDecoder.code_embeddings`)."""

    def __init__(self, config: RQTransformerConfig):
        super().__init__()
        self.config = c = config
        h, w, d = c.block_size
        self.cond_emb = nn.Embedding(max(c.vocab_size_cond, 1), c.embed_dim)
        self.input_mlp = nn.Linear(c.input_embed_dim, c.embed_dim)
        self.head_mlp = nn.Linear(c.input_embed_dim, c.embed_dim)
        self.pos_emb_cond = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.pos_emb_hw = nn.Parameter(torch.zeros(1, h * w, c.embed_dim))
        self.pos_emb_d = nn.Parameter(torch.zeros(1, d, c.embed_dim))
        self.body_transformer = Stack(c.body_layers, c.embed_dim, c.n_head)
        self.head_transformer = Stack(c.head_layers, c.embed_dim, c.n_head)
        self.classifier = Classifier(c.embed_dim, c.vocab_size)

    def class_token(self, labels: torch.Tensor) -> torch.Tensor:
        return self.cond_emb(labels.view(-1, 1)) + self.pos_emb_cond

    def body_inputs(self, vectors: torch.Tensor, first: int) -> torch.Tensor:
        """Code vectors (B, T, D, E) of positions first..first+T-1 -> body inputs (B, T, C)."""
        return self.input_mlp(vectors).sum(dim=-2) + self.pos_emb_hw[:, first:first + vectors.shape[1]]

    def depth_inputs(self, spatial: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Body outputs (N, C) and code vectors (N, D, E) -> depth inputs (N, D, C) (teacher forcing)."""
        partial = self.head_mlp(torch.cumsum(vectors, dim=-2))[:, :-1]
        return torch.cat([spatial.unsqueeze(1), partial], dim=1) + self.pos_emb_d

    def teacher_forced_logits(self, codes: torch.Tensor, labels: torch.Tensor,
                              embed: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Logits (B, H, W, D, V) of every code given all earlier ones (upstream `forward`)."""
        b, hh, ww, d = codes.shape
        vectors = embed(codes.reshape(b, hh * ww, d))
        body = torch.cat([self.class_token(labels), self.body_inputs(vectors, 0)[:, :-1]], dim=1)
        spatial = self.body_transformer(body)
        depth = self.depth_inputs(spatial.reshape(b * hh * ww, -1), vectors.reshape(b * hh * ww, d, -1))
        return self.classifier(self.head_transformer(depth)).reshape(b, hh, ww, d, -1)


# -- sampling ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RQSampler:
    """`main_sampling_fid.py` settings: temperature, top-k, top-p (one value for every depth)."""

    temperature: float = 1.0
    top_k: int = 256
    top_p: float = 0.95

    def __post_init__(self):
        if self.temperature <= 0 or self.top_k < 1 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature > 0, top_k >= 1 and 0 < top_p <= 1; got {self}")


def code_probabilities(logits: torch.Tensor, sampler: RQSampler) -> torch.Tensor:
    """Upstream `sample_from_logits` up to the draw: float32 logits / temperature, top-k (ties with the k-th
    kept), softmax, then top-p over probabilities (drop once the cumulative sum reaches p, `>=`, keeping the
    first), renormalised."""
    logits = logits.float() / sampler.temperature
    k = min(sampler.top_k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    probs = logits.masked_fill(logits < kth, float("-inf")).softmax(dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    remove = torch.cumsum(sorted_probs, dim=-1) >= min(sampler.top_p, 1.0)
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    probs = probs.masked_fill(remove.scatter(-1, order, remove), 0.0)
    return probs / probs.sum(dim=-1, keepdim=True)


@torch.no_grad()
def generate_rq(model: RQTransformer, labels: torch.Tensor, generators: Sequence[torch.Generator],
                sampler: RQSampler, embed: Callable[[torch.Tensor], torch.Tensor],
                record: list | None = None) -> torch.Tensor:
    """Codes (B, H, W, D): each position's body step, then its D depth steps, with key/value caches (upstream
    `sample(..., cached=True)`); sample b draws one uniform per code from `generators[b]`. `record` receives
    the (B, V) logits of every step."""
    h, w, d = model.config.block_size
    batch = labels.shape[0]
    codes = torch.zeros(batch, h * w, d, dtype=torch.long, device=labels.device)
    body_cache = model.body_transformer.new_cache()
    x = model.class_token(labels)
    for t in range(h * w):
        spatial = model.body_transformer(x, body_cache)[:, -1]
        head_cache = model.head_transformer.new_cache()
        inp, partial = spatial + model.pos_emb_d[:, 0], None
        for depth in range(d):
            logits = model.classifier(model.head_transformer(inp.unsqueeze(1), head_cache))[:, -1]
            if record is not None:
                record.append(logits.float())
            codes[:, t, depth] = draw(code_probabilities(logits, sampler).unsqueeze(1), generators)[:, 0]
            if depth + 1 < d:
                vector = embed(codes[:, t, depth])
                partial = vector if partial is None else partial + vector
                inp = model.head_mlp(partial) + model.pos_emb_d[:, depth + 1]
        x = model.body_inputs(embed(codes[:, t:t + 1]), t)
    return codes.view(batch, h, w, d)
