"""The project's own small GPT: byte-level, pre-LayerNorm, rotary positions, tied embeddings, a
preallocated KV cache, intermediate-layer exits and optional blockwise proposal heads.

Parameter names (`tok_emb.weight`, `blocks.{i}.attn.qkv.weight`, `heads.{j}.proj.weight`, ...) are the
ones the bundled safetensors files use; `GPT.from_file` loads them with strict name and shape checks.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from harness.protocols.decoding.interface import ARModel, FFNGate, ModelOutput
from harness.errors import ArbenchError
from harness.provenance import sha256_file

BYTE_VOCAB = 256
EOS_ID = 256  # byte-level vocabulary: 256 bytes plus one end-of-sequence token


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a GPT. Defaults are the bundled target model's."""

    vocab_size: int = BYTE_VOCAB + 1
    d_model: int = 128
    n_layers: int = 8
    n_heads: int = 4
    mlp_ratio: int = 4
    rope_base: float = 10000.0
    #: Layers after which the shared norm + LM head may read out early (trained with auxiliary losses).
    exit_layers: tuple[int, ...] = (2, 4, 6)
    #: Blockwise parallel decoding proposal heads (Stern et al. 2018); 0 = none.
    num_draft_heads: int = 0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def rope_tables(head_dim: int, positions: torch.Tensor, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim))
    angles = positions.float()[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of (B, H, t, hd) by the position angles (t, hd/2)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class GPTCache:
    """Preallocated keys/values per layer; `lengths[l]` = positions layer l holds (a prefix, always)."""

    def __init__(self, config: GPTConfig, batch: int, max_len: int, dtype: torch.dtype, device: torch.device):
        shape = (batch, config.n_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        self.lengths = [0] * config.n_layers
        self.max_len = max_len


class Attention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: tuple[torch.Tensor, torch.Tensor, int] | None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is None:  # training: the whole sequence at once
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            keys, values, start, *tree = cache
            keys[:, :, start:start + t] = k
            values[:, :, start:start + t] = v
            k, v = keys[:, :, :start + t], values[:, :, :start + t]
            mask = None
            if tree:  # (t, start + t): an explicit mask over cached and new positions (tree branches)
                mask = tree[0]
            elif t > 1:  # new position i sees cached positions and new positions <= i
                mask = torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(diagonal=start)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = Attention(config)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(nn.Linear(config.d_model, config.mlp_ratio * config.d_model), nn.GELU(),
                                 nn.Linear(config.mlp_ratio * config.d_model, config.d_model))

    def forward(self, x, cos, sin, cache=None):
        x = x + self.attn(self.ln1(x), cos, sin, cache)
        return x + self.mlp(self.ln2(x))

    def forward_gated(self, x, cos, sin, cache, layer: int, gate: FFNGate):
        """`forward` with the FFN block skipped for the rows the gate names."""
        x = x + self.attn(self.ln1(x), cos, sin, cache)
        skip = gate.skip(layer)
        if skip is not None and bool(skip.all()):
            out = x  # no row runs the FFN: nothing to compute
        else:
            out = x + self.mlp(self.ln2(x))
            if skip is not None and bool(skip.any()):
                out = torch.where(skip.to(x.device)[:, None, None], x, out)
        gate.observe(layer, x, out)
        return out


class ProposalHead(nn.Module):
    """One blockwise proposal head: a residual SiLU layer on the final normed state, read out by the LM head."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.proj = nn.Linear(config.d_model, config.d_model)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + F.silu(self.proj(z))


class GPT(nn.Module):
    """The network. `forward_train` is for training; `ARModel` access goes through `GPTModel`."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.heads = nn.ModuleList(ProposalHead(config) for _ in range(config.num_draft_heads))
        nn.init.normal_(self.tok_emb.weight, std=0.02)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h) @ self.tok_emb.weight.T  # tied LM head, shared by every exit

    def forward_train(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """Hidden states after every layer (B, T, D) for a full sequence, no cache."""
        cos, sin = rope_tables(self.config.head_dim, torch.arange(ids.shape[1], device=ids.device),
                               self.config.rope_base)
        x, states = self.tok_emb(ids), []
        for block in self.blocks:
            x = block(x, cos, sin)
            states.append(x)
        return states

    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        z = self.norm(hidden)
        return torch.stack([head(z) @ self.tok_emb.weight.T for head in self.heads], dim=2)

    @classmethod
    def from_file(cls, path: str | Path) -> "GPT":
        """Load a bundled checkpoint: `<path>` (safetensors) with its config in the metadata."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
        except SafetensorError as exc:
            raise ArbenchError(f"{path} is not a readable safetensors file ({exc}); give a GPT checkpoint saved "
                               f"with GPT.save(), or a Hugging Face model folder.") from exc
        if "config" not in meta:
            raise ArbenchError(f"{path} has no GPT config in its safetensors metadata; save it with GPT.save().")
        raw = json.loads(meta["config"])
        raw["exit_layers"] = tuple(raw.get("exit_layers", ()))
        model = cls(GPTConfig(**raw))
        state = {k: v.float() for k, v in load_file(str(path)).items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ArbenchError(f"{path} does not match GPT{raw}: missing {missing}, unexpected {unexpected}.")
        return model.eval()

    def save(self, path: str | Path, dtype: torch.dtype = torch.float16) -> None:
        state = {k: v.detach().to(dtype).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path), metadata={"config": json.dumps(asdict(self.config))})


class GPTModel(ARModel):
    """`ARModel` adapter for `GPT` (byte-level, EOS = 256)."""

    def __init__(self, net: GPT, name: str = "gpt", sha256: str | None = None, device: str = "cpu"):
        self.net = net.to(device).eval()
        self.name, self._sha256, self.device = name, sha256, torch.device(device)
        c = net.config
        self.vocab_size, self.eos_id, self.num_layers = c.vocab_size, EOS_ID, c.n_layers
        self.num_draft_heads, self.exit_layers = c.num_draft_heads, tuple(c.exit_layers)
        self.tokenizer_digest = f"utf8-bytes+eos{EOS_ID}" if c.vocab_size == BYTE_VOCAB + 1 else None
        self._dtype = next(net.parameters()).dtype

    @classmethod
    def load(cls, path: str | Path, name: str | None = None, device: str = "cpu") -> "GPTModel":
        path = Path(path)
        return cls(GPT.from_file(path), name or path.stem, sha256_file(path), device)

    def checkpoint_sha256(self) -> str | None:
        return self._sha256

    def new_cache(self, batch: int, max_len: int) -> GPTCache:
        return GPTCache(self.net.config, batch, max_len, self._dtype, self.device)

    def cache_length(self, cache: GPTCache) -> int:
        return cache.lengths[0]

    def crop(self, cache: GPTCache, length: int) -> None:
        cache.lengths = [min(n, length) for n in cache.lengths]

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, cache: GPTCache, *, exit_layer: int | None = None,
                want_hidden: bool = False) -> ModelOutput:
        net, c = self.net, self.net.config
        depth = c.n_layers if exit_layer is None else exit_layer
        start, t = cache.lengths[0], ids.shape[1]
        if start + t > cache.max_len:
            raise ArbenchError(f"KV cache overflow: {start + t} positions > {cache.max_len} allocated.")
        for layer in range(depth):
            if cache.lengths[layer] != start:
                # A later position may not use more layers than an earlier one: that layer's keys and
                # values for the earlier position were never computed (SkipDecode's monotone schedule).
                raise ArbenchError(
                    f"layer {layer + 1} holds {cache.lengths[layer]} positions but position {start} needs it: an "
                    f"exit schedule must not increase the depth along the sequence."
                )
        cos, sin = rope_tables(c.head_dim, torch.arange(start, start + t, device=ids.device), c.rope_base)
        x = net.tok_emb(ids)
        for layer in range(depth):
            x = net.blocks[layer](x, cos, sin, (cache.keys[layer], cache.values[layer], start))
            cache.lengths[layer] = start + t
        return ModelOutput(net.logits(x), x if want_hidden else None)

    supports_tree = True
    supports_ffn_skip = True

    @torch.inference_mode()
    def forward_ffn_gated(self, ids: torch.Tensor, cache: GPTCache, gate: FFNGate) -> ModelOutput:
        net, c = self.net, self.net.config
        start, t = cache.lengths[0], ids.shape[1]
        if start + t > cache.max_len or any(n != start for n in cache.lengths):
            raise ArbenchError("forward_ffn_gated needs room in the cache and every layer at the same length.")
        cos, sin = rope_tables(c.head_dim, torch.arange(start, start + t, device=ids.device), c.rope_base)
        x = net.tok_emb(ids)
        for layer in range(c.n_layers):
            x = net.blocks[layer].forward_gated(x, cos, sin, (cache.keys[layer], cache.values[layer], start),
                                                layer, gate)
            cache.lengths[layer] = start + t
        return ModelOutput(net.logits(x))

    @torch.inference_mode()
    def forward_tree(self, ids: torch.Tensor, cache: GPTCache, positions: torch.Tensor,
                     mask: torch.Tensor, want_hidden: bool = False) -> ModelOutput:
        net, c = self.net, self.net.config
        start, t = cache.lengths[0], ids.shape[1]
        if start + t > cache.max_len:
            raise ArbenchError(f"KV cache overflow: {start + t} positions > {cache.max_len} allocated.")
        if any(n != start for n in cache.lengths):
            raise ArbenchError("forward_tree needs every layer's cache at the same length (no early exits).")
        full = torch.cat([torch.ones(t, start, dtype=torch.bool, device=ids.device), mask.to(ids.device)], 1)
        cos, sin = rope_tables(c.head_dim, positions.to(ids.device), c.rope_base)
        x = net.tok_emb(ids)
        for layer in range(c.n_layers):
            x = net.blocks[layer](x, cos, sin, (cache.keys[layer], cache.values[layer], start, full))
            cache.lengths[layer] = start + t
        return ModelOutput(net.logits(x), x if want_hidden else None)

    def keep(self, cache: GPTCache, start: int, indices: list[list[int]]) -> None:
        idx = torch.tensor(indices, dtype=torch.long, device=self.device) + start  # (B, n)
        n = idx.shape[1]
        for layer in range(len(cache.keys)):
            for store in (cache.keys[layer], cache.values[layer]):
                b, h, _, d = store.shape
                store[:, :, start:start + n] = store.gather(2, idx[:, None, :, None].expand(b, h, n, d))
        cache.lengths = [start + n] * len(cache.lengths)

    supports_features = True

    @torch.inference_mode()
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.net.tok_emb(ids.to(self.device))

    @torch.inference_mode()
    def hidden_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net.logits(hidden.to(self._dtype))  # `hidden` precedes the final norm

    @torch.inference_mode()
    def draft_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self.num_draft_heads:
            return super().draft_logits(hidden)
        return self.net.head_logits(hidden)


def encode(text: str) -> list[int]:
    """Byte-level tokens of a text (UTF-8)."""
    return list(text.encode("utf-8"))


def decode(ids: list[int]) -> str:
    return bytes(i for i in ids if i < BYTE_VOCAB).decode("utf-8", errors="replace")


def init_gpt(config: GPTConfig, seed: int) -> GPT:
    """A deterministic random initialisation (GPT-2 style scaled residual projections)."""
    torch.manual_seed(seed)
    net = GPT(config)
    for name, p in net.named_parameters():
        if name.endswith(("attn.proj.weight", "mlp.2.weight")):
            nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layers))
    return net
