"""Linearized LLaMA: augmented linear attention (You et al., ICML 2024, "When Linear Attention Meets
Autoregressive Decoding", GATECH-EIC/Linearized-LLM, Apache-2.0), the attention of the released
`LinearizedLLM/llama-2-7b-aug-linear` (LLaMA-2-7B fine-tuned with it). Lossy: it decodes another model.

Per head, after RoPE, with q^ = q/|q| and k^ = k/|k| (upstream's feature map: L2 normalisation, no epsilon),
positions split into chunks of `group_size` (64) from the start, position t in chunk g:

    out_t = sum_{s in chunk g, s <= t} relu(q^_t . k^_s)^2 v_s                    (local, causal, unnormalised)
          + global_factor * q^_t . sum_{s in chunks < g} k^_s v_s^T                (grouped linear attention)
          + sum_{j=0}^{K//2} w_j v_{t - K//2 + j}                                  (masked depthwise conv, K = 63)

`w` is the layer's `dwconv` (Conv2d over (time, 1) with one channel per head) times its `conv_mask` (taps
after the centre zeroed: causal), as upstream applies it at every forward (`dwconv.weight.data *= conv_mask`).
This is upstream's training-time form (`linear_forward_noflashattn` with USE_LOCAL, USE_GLOBAL, GLOBAL_FACTOR,
ADD_CONV), which defines the released model; `tests/golden/make_linearized.py` checks it against that code.

Decoding is recurrent: per layer the state is the sum of k^ v^T over completed chunks, the current chunk's
normalised keys and values (< group_size) and the last K//2 values (the conv window), so a decoding step costs
O(group_size + d) per head whatever the length. Feeding any number of tokens continues from the state with the
same formula, so token-by-token decoding equals the parallel form (tested). Upstream's own decoding paths
(`linear_forward_inference`, the Medusa `modeling_llama_kv.py`) re-run the parallel form over a full KV cache and
treat the token that completes a chunk differently (read from the code: `linear_forward_inference` gives it no
local part and a global part over all chunks including its own; Medusa's status-2 path no global part); the
project follows the training-time formula at every position.

Speculation on the state: `forward_tree` feeds a token tree (Medusa) in one pass without changing the state;
each node gets the training-time formula over the committed positions and its root path (local part over its own
chunk, global part over every chunk completed before it, the conv "unfolded" into one matrix of taps per head,
as upstream's Medusa `build_medusa_conv` does); `keep` commits the accepted path's keys and values. Upstream's
tree path (`medusa_status[0] == 1`) gives a node that starts a new chunk inside the tree no global part for the
chunk just completed ("we choose not to follow the original global"); the project does. `crop` rolls back
within the latest forward pass (the state before it and the pass's keys/values are kept until the next one).

Weights: a Hugging Face LLaMA folder (config.json + *.safetensors, or *.bin read with `weights_only=True`) whose
attention modules carry upstream's extra names `model.layers.N.self_attn.dwconv.weight` (H, 1, 63, 1),
`...self_attn.conv_mask` (1, 1, 63, 1; rebuilt when absent) and `...self_attn.global_factor` (1,).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from baselines.decoding.ar import ar_decode
from harness.errors import ArbenchError
from harness.protocols.decoding.generation import GenerationResult
from harness.protocols.decoding.interface import ARModel, ModelOutput
from harness.protocols.decoding.strategy import LossyStrategy, Models
from harness.registry import register_method
from harness.settings import Annotated, Field

GROUP_SIZE = 64  # upstream GROUP_SIZE default (llama_attn_replace.py), used for the released model
KERNEL_SIZE = 63  # fine-tune.py: res_kernel_size = 63

#: Where the released checkpoint lives. Its file list and hashes could not be read here (no network): the
#: sha256 of the weights is unknown, so the loader records the folder's own digest (HFCausalLM's rule) instead.
WEIGHTS = {
    "llama-2-7b-aug-linear": {
        "url": "https://huggingface.co/LinearizedLLM/llama-2-7b-aug-linear",
        "licence": "Llama 2 Community License (LLaMA-2-7B weights); code Apache-2.0",
        "sha256": None,
        "download": "huggingface-cli download LinearizedLLM/llama-2-7b-aug-linear --local-dir llama-2-7b-aug-linear",
        "base": "meta-llama/Llama-2-7b-hf",
    },
}


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)  # upstream: no epsilon (a zero q or k gives NaN there too)


def conv_mask(kernel_size: int) -> torch.Tensor:
    """(1, 1, K, 1): ones up to the centre tap, zeros after it (fine-tune.py's `conv_mask`)."""
    mask = torch.ones(1, 1, kernel_size, 1)
    mask[:, :, kernel_size // 2 + 1:] = 0.0
    return mask


def _chunks(x: torch.Tensor, group: int) -> torch.Tensor:
    b, h, t, d = x.shape
    return F.pad(x, (0, 0, 0, -t % group)).view(b, h, -1, group, d)


@dataclass
class LayerState:
    """The recurrent state of one layer (batch-first tensors, heads after repeat_kv)."""

    kv: torch.Tensor | None = None  # (B, H, D, D): sum of k^ v^T over completed chunks
    keys: torch.Tensor | None = None  # (B, H, c, D), c < group: the current chunk's normalised keys
    values: torch.Tensor | None = None  # (B, H, c, D)
    tail: torch.Tensor | None = None  # (B, H, <= K//2, D): the last values, the conv window


@dataclass
class LastPass:
    """What undoing or settling the latest pass needs: the length before it, the layer states before it (None
    for a tree pass, which leaves them unchanged) and, per layer, the normalised keys and values it fed."""

    start: int
    before: list[LayerState] | None
    fed: list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class LinearState:
    """A cache for `LinearizedLlama`: one `LayerState` per layer, the number of positions fed, and the latest
    pass (`crop` may go back to any length it covers; a tree pass waits for `keep`)."""

    layers: list[LayerState] = field(default_factory=list)
    length: int = 0
    last: LastPass | None = None


def augmented_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, conv_weight: torch.Tensor,
                               global_factor: torch.Tensor, group: int,
                               state: LayerState | None = None,
                               fed: list | None = None) -> torch.Tensor:
    """Augmented linear attention of `t` new positions (B, H, t, D) (q, k after RoPE, k and v repeated to H
    heads), continuing `state` (whose current chunk starts at a chunk boundary) and updating it in place.
    `conv_weight` (H, 1, K, 1) must already be masked (causal). Returns (B, H, t, D); `fed` (a list) receives
    the new positions' normalised keys and values (for `commit` when a pass is rolled back)."""
    b, h, t, d = q.shape
    state = state if state is not None else LayerState()
    q, k = _normalize(q), _normalize(k)
    past = 0 if state.keys is None else state.keys.shape[2]
    keys = k if state.keys is None else torch.cat([state.keys, k], 2)
    values = v if state.values is None else torch.cat([state.values, v], 2)
    if past + t <= group:  # every new position in the current chunk (decoding): no padding to whole chunks
        local = F.relu(q @ keys.transpose(2, 3)) ** 2
        local = local * torch.ones(t, past + t, dtype=q.dtype, device=q.device).tril(past)
        out = local @ values
        if state.kv is not None:
            out = out + (q @ state.kv) * global_factor
        kv = (keys.transpose(2, 3) @ values)[:, :, None] if past + t == group else None
    else:
        # the new queries, placed after the current chunk's `past` positions; padding is never attended (causal)
        qs = _chunks(F.pad(q, (0, 0, past, 0)), group)
        ks, vs = _chunks(keys, group), _chunks(values, group)
        local = F.relu(torch.einsum("bhgns,bhgms->bhgnm", qs, ks)) ** 2
        local = local * torch.ones(group, group, dtype=q.dtype, device=q.device).tril()
        out = torch.einsum("bhgnm,bhgme->bhgne", local, vs)
        kv = torch.einsum("bhgcs,bhgce->bhgse", ks, vs)
        prefix = torch.cumsum(kv, dim=2) - kv  # exclusive: completed chunks before each chunk
        if state.kv is not None:
            prefix = prefix + state.kv[:, :, None]
        out = out + torch.einsum("bhgcs,bhgse->bhgce", qs, prefix) * global_factor
        out = out.reshape(b, h, -1, d)[:, :, past:past + t]
    # the masked depthwise conv over values: K//2 past values and the current one
    reach = conv_weight.shape[2] // 2
    window = v if state.tail is None else torch.cat([state.tail, v], 2)
    if t == 1:  # one output: the taps up to the centre against the window
        taps = conv_weight[:, 0, :reach + 1, 0][:, -window.shape[2]:]
        out = out + torch.einsum("hj,bhjd->bhd", taps, window)[:, :, None]
    else:
        out = out + F.conv2d(window, conv_weight, padding=(reach, 0), groups=h)[:, :, -t:]
    # the state after these positions
    if fed is not None:
        fed.append((k, v))
    full = keys.shape[2] // group * group
    if full:
        done = kv[:, :, :full // group].sum(2)
        state.kv = done if state.kv is None else state.kv + done
    state.keys, state.values = keys[:, :, full:], values[:, :, full:]
    state.tail = window[:, :, -reach:] if reach else window[:, :, :0]
    return out


def commit(state: LayerState, k: torch.Tensor, v: torch.Tensor, group: int, reach: int) -> None:
    """Advance `state` by positions whose normalised keys `k` and values `v` (B, H, n, D) were computed
    elsewhere (a tree pass, a pass being rolled back): the same update as `augmented_linear_attention`'s."""
    keys = k if state.keys is None else torch.cat([state.keys, k], 2)
    values = v if state.values is None else torch.cat([state.values, v], 2)
    full = keys.shape[2] // group * group
    if full:
        ks, vs = _chunks(keys[:, :, :full], group), _chunks(values[:, :, :full], group)
        done = torch.einsum("bhgcs,bhgce->bhgse", ks, vs).sum(2)
        state.kv = done if state.kv is None else state.kv + done
    state.keys, state.values = keys[:, :, full:], values[:, :, full:]
    window = v if state.tail is None else torch.cat([state.tail, v], 2)
    state.tail = window[:, :, -reach:] if reach else window[:, :, :0]


def tree_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, conv_weight: torch.Tensor,
                          global_factor: torch.Tensor, group: int, state: LayerState, depth: torch.Tensor,
                          mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented linear attention of the `t` nodes of a token tree (B, H, t, D) fed after `state`, which is
    left unchanged: node i sits `depth[i]` positions after the committed ones and sees the committed positions
    and the nodes `mask[i]` allows, which must be one node at each depth below its own (its root path; checked
    by `LinearizedLlama.forward_tree`). Each node gets the training-time formula over that sequence:
    local relu^2 attention over the positions of its own chunk, global linear attention over every chunk
    completed before it (the committed chunk plus ancestors included when the node starts a new chunk), and
    the masked conv over its last K//2 + 1 positions (the "unfolded DWConv": one (t, window) matrix of taps
    per head). Returns (output (B, H, t, D), the nodes' normalised keys for `commit`)."""
    q, k = _normalize(q), _normalize(k)
    dtype, device = q.dtype, q.device
    past = 0 if state.keys is None else state.keys.shape[2]
    chunk = (past + depth) // group  # 0: the committed positions' chunk; 1, 2, ...: later chunks
    same = mask & (chunk[:, None] == chunk[None, :])
    before = mask & (chunk[:, None] > chunk[None, :])
    scores = q @ k.transpose(2, 3)  # (B, H, t, t)
    weights = F.relu(scores) ** 2 * same.to(dtype) + scores * before.to(dtype) * global_factor
    out = weights @ v
    if past:
        first = (chunk == 0).to(dtype)[:, None]  # (t, 1): the node is in the committed positions' chunk
        committed = q @ state.keys.transpose(2, 3)
        weights = F.relu(committed) ** 2 * first + committed * (1 - first) * global_factor
        out = out + weights @ state.values
    if state.kv is not None:
        out = out + (q @ state.kv) * global_factor
    # the conv: node i at depth d_i puts tap j on the position d_i - reach + j of its sequence
    reach = conv_weight.shape[2] // 2
    tail = v[:, :, :0] if state.tail is None else state.tail
    r = tail.shape[2]
    tap = torch.cat([torch.arange(-r, 0, device=device)[None].expand(len(depth), r), depth[None].expand(len(depth), -1)
                     ], 1) - depth[:, None] + reach  # (t, r + t)
    seen = torch.cat([torch.ones(len(depth), r, dtype=torch.bool, device=device), mask], 1) & (tap >= 0)
    taps = conv_weight[:, 0, :reach + 1, 0][:, tap.clamp(0, reach)] * seen.to(dtype)  # (H, t, r + t)
    out = out + taps @ torch.cat([tail, v], 2)
    return out, k


class AugmentedLinearAttention(nn.Module):
    """Replacement for a transformers `LlamaAttention` with upstream's parameter names (q/k/v/o_proj taken
    over from the original module, plus `dwconv`, `conv_mask`, `global_factor`)."""

    def __init__(self, original: nn.Module, config: Any, group_size: int = GROUP_SIZE, kernel_size: int = KERNEL_SIZE):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (original.q_proj, original.k_proj, original.v_proj,
                                                              original.o_proj)
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.group_size = group_size
        self.dwconv = nn.Conv2d(self.num_heads, self.num_heads, kernel_size=(kernel_size, 1),
                                padding=(kernel_size // 2, 0), bias=False, groups=self.num_heads)
        self.register_buffer("conv_mask", conv_mask(kernel_size))
        self.global_factor = nn.Parameter(torch.zeros(1))

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                state: LayerState | None = None, fed: list | None = None,
                tree: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """`tree` = (depth, mask): feed tree nodes after `state` without changing it (`tree_linear_attention`);
        `fed` receives the new positions' normalised keys and values."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        b, t, _ = hidden.shape
        q = self.q_proj(hidden).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden).view(b, t, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden).view(b, t, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        groups = self.num_heads // self.num_key_value_heads
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)  # transformers' repeat_kv
        taps = self.dwconv.weight * self.conv_mask
        if tree is None:
            out = augmented_linear_attention(q, k, v, taps, self.global_factor, self.group_size, state, fed)
        else:
            out, keys = tree_linear_attention(q, k, v, taps, self.global_factor, self.group_size,
                                              state if state is not None else LayerState(), *tree)
            if fed is not None:
                fed.append((keys, v))
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder: *.safetensors, else *.bin through `torch.load(weights_only=True)`
    (never an unrestricted unpickle)."""
    files = sorted(folder.glob("*.safetensors"))
    state: dict[str, torch.Tensor] = {}
    if files:
        from safetensors.torch import load_file

        for f in files:
            state.update(load_file(str(f)))
        return state
    for f in sorted(folder.glob("*.bin")):
        try:
            state.update(torch.load(f, map_location="cpu", weights_only=True, mmap=True))
        except Exception as exc:  # the restricted unpickler refuses anything but tensors and plain containers
            raise ArbenchError(f"{f} could not be read as plain tensors ({exc}); convert it to safetensors.") from exc
    if not state:
        raise ArbenchError(f"{folder} holds no *.safetensors or *.bin weights.")
    return state


class LinearizedLlama(ARModel):
    """A LLaMA whose attention is augmented linear attention, seen through a recurrent state (`LinearState`)."""

    def __init__(self, model: Any, name: str, eos_id: int | None, device: str = "cpu", revision: str | None = None):
        self.model = model.to(device).eval()
        self.name, self.device, self.revision = name, torch.device(device), revision
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.eos_id = eos_id
        self.num_layers = len(model.model.layers)

    @classmethod
    def from_llama(cls, model: Any, group_size: int = GROUP_SIZE, name: str = "linearized",
                   **kwargs) -> "LinearizedLlama":
        """Swap every layer's `self_attn` of a transformers `LlamaForCausalLM` for `AugmentedLinearAttention`
        (new conv taps and global factor are zero: load trained ones with `load_state_dict`)."""
        for layer in model.model.layers:
            layer.self_attn = AugmentedLinearAttention(layer.self_attn, model.config, group_size)
        eos = kwargs.pop("eos_id", model.config.eos_token_id)
        return cls(model, name, eos[0] if isinstance(eos, list) else eos, **kwargs)

    @classmethod
    def load(cls, path: str | Path, group_size: int = GROUP_SIZE, device: str = "cpu") -> "LinearizedLlama":
        """Load a released-layout folder (e.g. `llama-2-7b-aug-linear`; offline, float32)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoConfig, LlamaForCausalLM

        from harness.protocols.decoding.hf import _folder_digest, _tokenizer_digest

        path = Path(path).expanduser()
        if not (path / "config.json").is_file():
            raise ArbenchError(f"{path} is not a model folder (no config.json). Download the linearized model with "
                               f"`{WEIGHTS['llama-2-7b-aug-linear']['download']}` and pass that folder.")
        config = AutoConfig.from_pretrained(path)
        if config.model_type != "llama":
            raise ArbenchError(f"{path} holds a {config.model_type!r} model; augmented linear attention is "
                               f"implemented for LLaMA (model_type 'llama').")
        state = {k: v.float() for k, v in _read_weights(path).items()}
        with torch.device("meta"):
            model = LlamaForCausalLM(config)
        adapter = cls.from_llama(model, group_size, path.name, device="meta")
        names = set(model.state_dict())
        for key in [k for k in names if k.endswith("self_attn.conv_mask") and k not in state]:
            taps = state.get(key.replace("conv_mask", "dwconv.weight"))
            if taps is not None:  # a buffer upstream rebuilds at start-up: the same causal mask
                state[key] = conv_mask(taps.shape[2])
        if getattr(config, "tie_word_embeddings", False) and "lm_head.weight" not in state:
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
        missing, unexpected = sorted(names - set(state)), sorted(set(state) - names)
        if missing or unexpected:
            raise ArbenchError(f"{path} is not in the linearized LLaMA layout: missing {missing[:4]}"
                               f"{' ...' if len(missing) > 4 else ''}, unexpected {unexpected[:4]}"
                               f"{' ...' if len(unexpected) > 4 else ''} (expected upstream's names, e.g. "
                               f"model.layers.0.self_attn.dwconv.weight and ...self_attn.global_factor).")
        model.load_state_dict(state, strict=True, assign=True)
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        model.model.rotary_emb = LlamaRotaryEmbedding(config)  # its inv_freq is not in the checkpoint
        adapter = cls(model, path.name, adapter.eos_id, device, revision=_folder_digest(path))
        adapter.tokenizer_digest = _tokenizer_digest(path)
        return adapter

    def checkpoint_sha256(self) -> str | None:
        return self.revision

    def new_cache(self, batch: int, max_len: int) -> LinearState:
        return LinearState([LayerState() for _ in range(self.num_layers)])

    def cache_length(self, cache: LinearState) -> int:
        return cache.length

    def crop(self, cache: LinearState, length: int) -> None:
        """Roll back within the latest pass: restore the states before it and commit the positions kept (a
        linear-attention state cannot forget older positions: it holds their sum)."""
        last = cache.last
        if length >= cache.length:
            return
        if last is None or length < last.start or (last.before is None and length != last.start):
            reach = "" if last is None else f" (the latest pass covers {last.start}..{cache.length})"
            raise ArbenchError(f"{self.name}: a linear-attention state cannot forget positions before its latest "
                               f"pass (crop from {cache.length} to {length}{reach}); roll back only what the "
                               f"latest forward fed, or settle a tree pass with keep().")
        if last.before is None:  # a tree pass dropped whole
            cache.last, cache.length = None, last.start
            return
        n = length - last.start
        cache.layers = [replace(s) for s in last.before]
        fed = [(k[:, :, :n], v[:, :, :n]) for k, v in last.fed]
        self._commit(cache, fed)
        cache.length, cache.last = length, LastPass(last.start, last.before, fed)

    def _commit(self, cache: LinearState, fed: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        for layer, state, (k, v) in zip(self.model.model.layers, cache.layers, fed):
            attn = layer.self_attn
            commit(state, k, v, attn.group_size, attn.dwconv.weight.shape[2] // 2)

    def _run(self, ids: torch.Tensor, cache: LinearState, positions: torch.Tensor, want_hidden: bool,
             tree: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[ModelOutput, list]:
        if cache.last is not None and cache.last.before is None:
            raise ArbenchError(f"{self.name}: the latest tree pass is not settled; call keep() (or crop to "
                               f"{cache.last.start}) before feeding more tokens.")
        inner = self.model.model
        hidden = inner.embed_tokens(ids.to(self.device))
        cos, sin = inner.rotary_emb(hidden, positions.to(self.device)[None])
        fed: list = []
        for layer, state in zip(inner.layers, cache.layers):
            hidden = hidden + layer.self_attn(layer.input_layernorm(hidden), cos, sin, state, fed, tree)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        hidden = inner.norm(hidden)
        return ModelOutput(self.model.lm_head(hidden), hidden if want_hidden else None), fed

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, cache: LinearState, *, exit_layer: int | None = None,
                want_hidden: bool = False) -> ModelOutput:
        if exit_layer is not None and exit_layer != self.num_layers:
            self.require_exits([exit_layer], "early exit")
        start = cache.length
        before = [replace(s) for s in cache.layers]  # shallow: a pass replaces the state's tensors, never edits them
        out, fed = self._run(ids, cache, torch.arange(start, start + ids.shape[1]), want_hidden, None)
        cache.length, cache.last = start + ids.shape[1], LastPass(start, before, fed)
        return out

    supports_tree = True

    @torch.inference_mode()
    def forward_tree(self, ids: torch.Tensor, cache: LinearState, positions: torch.Tensor,
                     mask: torch.Tensor, want_hidden: bool = False) -> ModelOutput:
        """Each node continues the committed state along its root path (the nodes its mask allows must be one
        at each earlier position from the cache's end: Medusa's and lookahead's trees are). The state is
        unchanged until `keep`."""
        start, t = cache.length, ids.shape[1]
        depth = positions.cpu().long() - start
        mask = mask.cpu().bool()
        levels = torch.arange(max(int(depth.max()), 0) + 1)
        counts = (mask[:, :, None] & (depth[None, :, None] == levels)).sum(1)  # (t, levels): seen nodes per depth
        wrong = (counts != (levels <= depth[:, None]).long()).any(1) | ~mask.diagonal() | (depth < 0)
        if wrong.any():
            i = int(wrong.nonzero()[0])
            seen = sorted(depth[mask[i]].tolist())
            raise ArbenchError(
                f"{self.name}: tree node {i} (position {int(positions[i])}) sees tree positions "
                f"{[start + d for d in seen]}; a linear-attention state feeds a tree only when every node sees "
                f"exactly one node at each position from {start} up to its own (its path from the root).")
        out, fed = self._run(ids, cache, positions.cpu().long(), want_hidden,
                             (depth.to(self.device), mask.to(self.device)))
        cache.length, cache.last = start + t, LastPass(start, None, fed)
        return out

    def keep(self, cache: LinearState, start: int, indices: list[list[int]]) -> None:
        """Commit, per row, the tree nodes `indices[b]` (a root path, in order) into the state."""
        last = cache.last
        if last is None or last.before is not None or last.start != start:
            raise ArbenchError(f"{self.name}: keep() settles the latest tree pass (fed at {start}); there is none.")
        idx = torch.tensor(indices, dtype=torch.long, device=self.device)  # (B, n)
        picked = []
        for k, v in last.fed:
            where = idx[:, None, :, None].expand(k.shape[0], k.shape[1], idx.shape[1], k.shape[3])
            picked.append((k.gather(2, where), v.gather(2, where)))
        self._commit(cache, picked)
        cache.length, cache.last = start + idx.shape[1], None


@dataclass
class LinearizedConfig:
    #: folder of the linearized checkpoint (released layout, e.g. llama-2-7b-aug-linear); named apart from the
    #: task's `model` (the original LLaMA, the AR baseline and the judge of quality)
    linearized_model: str = ""
    group_size: Annotated[int, Field(ge=1, le=65_536, description="chunk length (released model: 64)")] = GROUP_SIZE


@register_method("linearized-llm")
class LinearizedLLM(LossyStrategy):
    description = ("greedy AR decoding of a linearized LLaMA (augmented linear attention: local relu^2 attention in "
                   "chunks + grouped linear attention + masked depthwise conv; recurrent state), timed against AR "
                   "decoding of the original model; lossy: quality under the original model")
    paper = "You et al., ICML 2024, When Linear Attention Meets Autoregressive Decoding (arXiv 2406.07368)"
    Config = LinearizedConfig

    def __init__(self, config: Any = None, device: str = "cpu"):
        super().__init__(config, device)
        self.linearized: LinearizedLlama | None = None

    def check(self, models: Models) -> None:
        super().check(models)
        if not self.config.linearized_model:
            raise ArbenchError(f"{self.name} decodes a linearized model: give its folder with "
                               f"linearized_model=<path> (e.g. `{WEIGHTS['llama-2-7b-aug-linear']['download']}`).")
        if self.linearized is None:
            self.linearized = LinearizedLlama.load(self.config.linearized_model, self.config.group_size, self.device)
        # the task's target is the original model: outputs are compared and scored under its tokenizer
        models.target.require_compatible_draft(self.linearized, self.name)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.linearized is not None:
            info["linearized_model"] = self.linearized.describe()
        return info

    def decode(self, models: Models, prompt, max_new_tokens, seeds: Sequence[int]) -> GenerationResult:
        if self.linearized is None:
            self.check(models)
        return ar_decode(self.linearized, prompt, max_new_tokens, device=self.device)
