"""EAGLE-1 decoding (Li et al., ICML 2024, "EAGLE: Speculative Sampling Requires Rethinking Feature
Uncertainty"; github.com/SafeAILab/EAGLE, Apache-2.0), greedy and lossless, with EAGLE-1's static tree or
EAGLE-2's dynamic tree (Li et al., EMNLP 2024, "EAGLE-2: Faster Inference of Language Models with Dynamic Draft
Trees"; strategy `eagle-2`).

A small draft head works at the feature level: from the target's feature f_i (its last layer's output at
position i) and the embedding of the token x_{i+1} it predicts the next feature f_{i+1}, autoregressively; the
target's own LM head turns a predicted feature into next-token logits. The head is `fc` over [embedding; feature]
(2D -> D, with bias) and one Llama decoder layer (its first RMSNorm dropped, as upstream's layer 0), reusing the
target's token embedding and LM head. Each step the head drafts a static tree of candidates level by level
(upstream's `topK_genrate`: every node with children is fed to the head, which offers its top-10 tokens to its
children), the target verifies every node in ONE forward pass with tree attention, and the longest path of
target-greedy tokens is kept, plus the target's next token; the accepted features (from the target's verifying
pass, never the head's guesses) extend the head's own KV cache. The output equals greedy AR decoding.

Written from upstream's EAGLE-1 code (SafeAILab/EAGLE@4a9cf3a, branch `v1`): `EagleHead` is `cnets.Model`
(parameter names kept: `fc`, `layers.0.self_attn.q_proj`, ..., `layers.0.post_attention_layernorm`), `draft_tree`
is `Model.topK_genrate` at temperature 0, `eagle_tree` gives `utils.generate_tree_buffers` (the verification
tree) and the per-level draft buffers of `utils_c.generate_tree_buffers`, `tree_candidates` is
`utils.generate_candidates` and acceptance is `utils.evaluate_posterior` at temperature 0 (the same rule as
Medusa's: `medusa.accept_greedy`). tests/test_decoding_eagle.py compares all of them with upstream's functions on
stored outputs (tests/golden/eagle). Differences, on purpose:
- a batch of rows advances in lockstep (upstream decodes batch size 1): every row drafts and verifies its own
  tree and keeps its own best path, cut to the shortest accepted length of the batch;
- a draft level's node reads its parent's output by the parent's position (upstream repeats the previous level's
  outputs by run lengths, `repeat_nums`, which equals this only when every fed node of a level has a fed child, as
  in upstream's trees; the tree's own indices are computed the same way), so any prefix-closed tree works;
- sampling (upstream's temperature > 0 mode) is not implemented: this strategy is greedy.

EAGLE-2 (`draft_dynamic`, from upstream's main branch, SafeAILab/EAGLE@cb7e084 `cnets1.Model.topK_genrate`, the
same head): the head expands, level by level, the `top_k` nodes of highest cumulative draft log-probability, and
the `total_tokens - 1` best-scored drafted nodes form the tree verified by the target (its shape changes every
step); tested against upstream's function on two settings (tests/golden/make_eagle2.py). As every row's tree has
its own shape, rows of a batch are decoded one after another (upstream: batch size 1).

Features: `ModelOutput.hidden`, mapped to logits by the target's `hidden_logits` (for the bundled GPT the last
block's output before the final LayerNorm; for transformers models the last hidden state, after the final norm,
as upstream). A head file names the target it was trained for (sha256 in its metadata) and is refused with any
other target. The bundled head for `tiny-kjv-target` is trained by `python -m baselines.decoding.train_eagle`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.decoding.addons import WEIGHTS, AddonStrategy, load_state, read_addon, save_addon
from baselines.decoding.medusa import accept_greedy, medusa_buffers
from harness.errors import ArbenchError
from harness.protocols.decoding.generation import GenerationResult, Lockstep
from harness.protocols.decoding.interface import ARModel
from harness.protocols.decoding.strategy import Models
from harness.registry import register_method
from harness.settings import Literal

#: Upstream's top_k: each drafted node offers its 10 best tokens to its children.
TOPK = 10
BUNDLED_HEAD = WEIGHTS / "eagle-tiny-kjv-target.safetensors"

#: Paths of top-k ranks, one per tree node besides the root. `mc_sim_7b_63` is EAGLE-1's default tree
#: (upstream `eagle/model/choices.py`; 25 nodes, depth 5, despite the name it shares with Medusa's 63-node tree).
TREES: dict[str, list[list[int]]] = {
    "mc_sim_7b_63": [[0], [1], [2], [3], [0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [2, 0], [2, 1], [3, 0],
                     [0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 1, 0], [0, 1, 1], [0, 2, 0], [0, 2, 1], [1, 0, 0],
                     [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 2], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1]],
}


# -- the draft head ----------------------------------------------------------------------------------
def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(size)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


class Attention(nn.Module):
    """Llama attention (grouped-query, rotate-half RoPE, no biases) with an explicit (keys, values) cache."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, rope_base: float):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, hidden // heads
        self.q_proj = nn.Linear(hidden, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, hidden, bias=False)
        inv = 1.0 / (rope_base ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, past: tuple | None, mask: torch.Tensor):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        angles = positions.to(x.device).float()[:, None] * self.inv_freq[None]
        emb = torch.cat((angles, angles), -1)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        groups = self.heads // self.kv_heads
        keys, values = (k, v) if groups == 1 else (k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1))
        # scaled dot product, masked keys excluded, softmax over the rest (upstream: additive float32 mask)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask.to(x.device))
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1)), (k, v)


class MLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Upstream's layer 0: no input RMSNorm (fc's output goes straight into attention)."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, intermediate: int, eps: float, rope_base: float):
        super().__init__()
        self.self_attn = Attention(hidden, heads, kv_heads, rope_base)
        self.mlp = MLP(hidden, intermediate)
        self.post_attention_layernorm = RMSNorm(hidden, eps)

    def forward(self, x, positions, past, mask):
        attended, cache = self.self_attn(x, positions, past, mask)
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x)), cache


class EagleHead(nn.Module):
    """fc([embedding; feature]) -> one decoder layer -> the next feature. `forward(features (B, t, D), embeds
    (B, t, D), positions (t,), past, mask)`: `mask` (t, m) bool says which of the last m keys (cached and new)
    each new position sees; every earlier key is seen. Returns (features (B, t, D), cache)."""

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, intermediate_size: int,
                 rms_norm_eps: float = 1e-6, rope_base: float = 10000.0, bias: bool = True):
        super().__init__()
        self.config = {"hidden_size": hidden_size, "num_heads": num_heads, "num_kv_heads": num_kv_heads,
                       "intermediate_size": intermediate_size, "rms_norm_eps": rms_norm_eps,
                       "rope_base": rope_base, "bias": bias}
        self.fc = nn.Linear(2 * hidden_size, hidden_size, bias=bias)
        self.layers = nn.ModuleList([DecoderLayer(hidden_size, num_heads, num_kv_heads, intermediate_size,
                                                  rms_norm_eps, rope_base)])

    def forward(self, features: torch.Tensor, embeds: torch.Tensor, positions: torch.Tensor,
                past: list | None = None, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, list]:
        t = features.shape[1]
        total = t + (0 if past is None else past[0][0].shape[2])
        if mask is None:
            mask = torch.ones(t, t, dtype=torch.bool, device=features.device).tril()
        full = torch.ones(t, total, dtype=torch.bool, device=features.device)
        full[:, total - mask.shape[1]:] = mask
        x = self.fc(torch.cat((embeds.to(features.dtype), features), dim=-1))
        caches = []
        for i, layer in enumerate(self.layers):
            x, cache = layer(x, positions, None if past is None else past[i], full)
            caches.append(cache)
        return x, caches

    def save(self, path: str | Path, target_sha256: str | None, extra: dict[str, Any] | None = None) -> None:
        save_addon(self, path, self.config, target_sha256, extra)

    @classmethod
    def load(cls, path: str | Path, target: ARModel) -> "EagleHead":
        """A head from a file saved by `save`, checked against the target it was trained for."""
        config, state = read_addon(path, target, "EAGLE head file", "python -m baselines.decoding.train_eagle")
        width = state.get("fc.weight", torch.empty(0, 0)).shape[-1] // 2
        probe = target.embed(torch.zeros(1, 1, dtype=torch.long))
        if width != probe.shape[-1]:
            raise ArbenchError(f"the EAGLE head in {path} reads features of width {width}, the target "
                               f"{target.name!r} has {probe.shape[-1]}.")
        head = cls(**config)
        return load_state(head, state, path, "an EAGLE-1 head (fc + one decoder layer)")


# -- the trees (upstream's buffers) ------------------------------------------------------------------
@dataclass(frozen=True)
class DraftLevel:
    """The nodes with children at one depth, fed to the head together: `sources` (n,) index each node's token
    in [root, top-k of draft row 0, of row 1, ...]; `parents` (n,) the position of each node's parent among the
    previous level's outputs; `mask` (n, m) which of the m nodes fed so far (this level's included) each sees."""

    sources: torch.Tensor
    parents: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class EagleTree:
    """Verification buffers as upstream's `generate_tree_buffers` (`attn_mask` (L, L), `tree_indices` (L,) into
    [root, draft rows' top-k], `position_ids` (L,), `retrieve_indices` (P, D + 1) padded with -1) and the draft
    levels (`topK_genrate`'s buffers)."""

    attn_mask: torch.Tensor
    tree_indices: torch.Tensor
    position_ids: torch.Tensor
    retrieve_indices: torch.Tensor
    levels: tuple[DraftLevel, ...]


def eagle_tree(choices: Sequence[Sequence[int]]) -> EagleTree:
    """The tree of `choices` in upstream's layout, node 0 being the root.

    >>> t = eagle_tree([[0], [1], [0, 0]])
    >>> t.tree_indices.tolist(), t.retrieve_indices.tolist()
    ([0, 1, 2, 11], [[0, 1, 3], [0, 2, -1]])
    >>> [(l.sources.tolist(), l.parents.tolist()) for l in t.levels]
    [([1], [0])]
    """
    base = medusa_buffers(choices)  # validates; mask and depths are the same as Medusa's
    paths = sorted((tuple(c) for c in choices), key=lambda p: (len(p), p))
    inner = [p for p in paths if any(q[:-1] == p for q in paths)]  # nodes with children, fed to the head
    row = {p: i + 1 for i, p in enumerate(inner)}
    row[()] = 0  # draft row 0: the head's output at the last accepted position (the root's parent feature)

    def source(p: tuple[int, ...]) -> int:
        return 1 + TOPK * row[p[:-1]] + p[-1]

    tree_indices = torch.tensor([0] + [source(p) for p in paths], dtype=torch.long)
    levels, fed = [], []
    for depth in range(1, max(len(p) for p in paths)):
        level = [p for p in inner if len(p) == depth]
        previous = [p for p in inner if len(p) == depth - 1] or [()]
        fed += level
        mask = torch.tensor([[q == p[:len(q)] for q in fed] for p in level], dtype=torch.bool)
        levels.append(DraftLevel(torch.tensor([source(p) for p in level], dtype=torch.long),
                                 torch.tensor([previous.index(p[:-1]) for p in level], dtype=torch.long), mask))
    # upstream sorts the maximal paths by their node indices, padding (-1) last
    big = len(paths) + 1
    rows = sorted(base.retrieve_indices.tolist(), key=lambda r: [x if x >= 0 else big for x in r])
    return EagleTree(base.attn_mask, tree_indices, base.position_ids, torch.tensor(rows, dtype=torch.long),
                     tuple(levels))


# -- drafting and verification -----------------------------------------------------------------------
@torch.inference_mode()
def draft_tree(head: EagleHead, embed, logits_of, features: torch.Tensor, tokens: torch.Tensor,
               past: list | None, tree: EagleTree) -> tuple[torch.Tensor, list]:
    """Greedy `topK_genrate`: feed the new accepted `features` (B, t, D) with their next `tokens` (B, t) after
    the head's cache `past` (context only), then draft the tree level by level. Returns the top-k tokens of
    every draft row (B, R, TOPK) and the head's context cache (the tree's own keys are dropped)."""
    start = 0 if past is None else past[0][0].shape[2]
    positions = torch.arange(start, start + tokens.shape[1])
    out, past = head(features, embed(tokens), positions, past)
    context = past
    rows = [torch.topk(logits_of(out[:, -1:]), TOPK, dim=-1).indices]  # (B, 1, TOPK)
    length = start + tokens.shape[1]
    for depth, level in enumerate(tree.levels):
        flat = torch.cat([torch.zeros_like(rows[0][:, 0, :1]), torch.cat(rows, 1).flatten(1)], 1)
        ids = flat[:, level.sources.to(flat.device)]
        previous = out[:, -1:] if depth == 0 else out
        positions = torch.full((ids.shape[1],), length + depth, dtype=torch.long)
        out, past = head(previous[:, level.parents.to(out.device)], embed(ids), positions, past, level.mask)
        rows.append(torch.topk(logits_of(out), TOPK, dim=-1).indices)
    return torch.cat(rows, 1), context


def tree_candidates(root: torch.Tensor, draft_rows: torch.Tensor, tree: EagleTree) -> tuple[torch.Tensor,
                                                                                            torch.Tensor]:
    """`generate_candidates` for a batch: `root` (B,) the target's token, `draft_rows` (B, R, TOPK). Returns
    (paths (B, P, D + 1) padded with -1, tree tokens (B, L))."""
    flat = torch.cat([root[:, None], draft_rows.flatten(1)], 1)
    tree_tokens = flat[:, tree.tree_indices.to(flat.device)]
    padded = torch.cat([tree_tokens, tree_tokens.new_full((tree_tokens.shape[0], 1), -1)], 1)
    return padded[:, tree.retrieve_indices.to(flat.device)], tree_tokens


def eagle_decode(model: ARModel, head: EagleHead, prompt: torch.Tensor, max_new_tokens: int,
                 choices: Sequence[Sequence[int]], device: str = "cpu") -> GenerationResult:
    tree = eagle_tree(choices)
    batch, prompt_len = prompt.shape
    size = tree.tree_indices.shape[0]
    state = Lockstep(prompt, max_new_tokens, model.eos_id, device)
    cache = model.new_cache(batch, prompt_len + max_new_tokens + size + 1)
    head = head.to(device)
    prompt = prompt.to(device)
    out = model.forward(prompt, cache, want_hidden=True)
    state.target_passes += 1
    root = out.logits[:, -1].argmax(-1)  # (B,)
    state.append(root[:, None].cpu())
    features, tokens, past = out.hidden, torch.cat([prompt[:, 1:], root[:, None]], 1), None
    mask, nodes = tree.attn_mask.to(device), tree.retrieve_indices.clamp(min=0).to(device)
    rows_index = torch.arange(batch, device=device)

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        return model.hidden_logits(x).float()

    while not state.done():
        draft_rows, past = draft_tree(head, model.embed, logits_of, features.float(), tokens, past, tree)
        state.draft_passes += 1 + len(tree.levels)  # head passes: the new context, then one per tree level
        paths, tree_tokens = tree_candidates(root, draft_rows, tree)
        start = model.cache_length(cache)
        out = model.forward_tree(tree_tokens, cache, tree.position_ids.to(device) + start, mask, want_hidden=True)
        state.target_passes += 1
        logits = out.logits.float()
        picks = [accept_greedy(logits[b][nodes], paths[b]) for b in range(batch)]
        n = min(accept for _, accept in picks)
        kept = tree.retrieve_indices[[best for best, _ in picks], :n + 1].to(device)  # (B, n + 1)
        model.keep(cache, start, kept.tolist())
        accepted = paths[rows_index, torch.tensor([best for best, _ in picks], device=device), 1:n + 1]
        root = logits[rows_index, kept[:, -1]].argmax(-1)
        tokens = torch.cat([accepted, root[:, None]], 1)
        state.append(tokens.cpu())
        # the target's features at the root and the accepted nodes, each paired with the token after it
        features = out.hidden[rows_index[:, None], kept]
    return state.result()


# -- EAGLE-2's dynamic tree ----------------------------------------------------------------------------
@dataclass(frozen=True)
class DynamicTree:
    """One drafted tree (EAGLE-2's `topK_genrate` output for one row): `tokens` (L,) the root then the drafted
    nodes, `attn_mask` (L, L) bool, `position_ids` (L,) depths, `retrieve_indices` (P, D + 1) every leaf's path of
    node indices, padded with -1, in upstream's (greedy: unsorted) order."""

    tokens: torch.Tensor
    attn_mask: torch.Tensor
    position_ids: torch.Tensor
    retrieve_indices: torch.Tensor


def check_dynamic(total_tokens: int, depth: int, top_k: int, vocab_size: int) -> None:
    if not 1 <= top_k <= vocab_size or depth < 1 or not 2 <= total_tokens <= 1 + top_k + depth * top_k ** 2:
        raise ArbenchError(f"EAGLE-2's dynamic tree needs 1 <= top_k <= the vocabulary ({vocab_size}), depth >= 1 "
                           f"and 2 <= total_tokens <= 1 + top_k + depth * top_k^2 (the drafted candidates); got "
                           f"total_tokens={total_tokens}, depth={depth}, top_k={top_k}.")


@torch.inference_mode()
def draft_dynamic(head: EagleHead, embed, logits_of, features: torch.Tensor, tokens: torch.Tensor,
                  past: list | None, total_tokens: int, depth: int, top_k: int) -> tuple[DynamicTree, list]:
    """Greedy EAGLE-2 `topK_genrate` for one row: after feeding the new context (`features` (1, t, D) with the
    tokens after them (1, t), whose last is the root), expand the `top_k` nodes of highest cumulative draft
    log-probability for `depth` levels, then keep the `total_tokens - 1` best-scored drafted nodes (a child never
    outscores its parent) as the tree. Returns the tree and the head's context cache."""
    start = 0 if past is None else past[0][0].shape[2]
    out, past = head(features, embed(tokens), torch.arange(start, start + tokens.shape[1]), past)
    context, length, root = past, start + tokens.shape[1], tokens[0, -1:]
    top = torch.topk(torch.log_softmax(logits_of(out[:, -1])[0], -1), top_k)
    scores, ids, chosen = top.values, top.indices[None], torch.arange(top_k)
    scores_list, tokens_list, parents_list = [scores], [top.indices], [torch.zeros(1, dtype=torch.long)]
    hidden = out[:, -1:].expand(1, top_k, out.shape[-1])
    eye = torch.eye(top_k, dtype=torch.bool)
    mask = eye
    for level in range(depth):
        out, past = head(hidden, embed(ids), torch.full((top_k,), length + level, dtype=torch.long), past, mask)
        # index + 1 of each fed node in the flat score list (0 = the root): upstream's `bias`
        parents_list.append(chosen + 1 + (top_k if level > 0 else 0) + top_k ** 2 * max(0, level - 1))
        top = torch.topk(torch.log_softmax(logits_of(out[0]), -1), top_k)  # (top_k, top_k)
        cumulative = top.values + scores[:, None]
        best = torch.topk(cumulative.flatten(), top_k)
        chosen, scores = best.indices, best.values
        parent = chosen // top_k
        hidden, ids = out[:, parent], top.indices.flatten()[chosen][None]
        scores_list.append(cumulative.flatten())
        tokens_list.append(top.indices.flatten())
        mask = torch.cat([mask[parent], eye], 1)
    picked = torch.sort(torch.topk(torch.cat(scores_list), total_tokens - 1).indices).values
    draft = torch.cat([root.cpu(), torch.cat(tokens_list).cpu()[picked]])
    parents = torch.cat(parents_list)[picked // top_k]
    where = torch.searchsorted(picked, parents - 1)
    where[parents == 0] = -1
    where = (where + 1).tolist()  # each drafted node's parent among the tree's nodes (0 = the root)
    n = total_tokens
    tree_mask = torch.eye(n, dtype=torch.bool)
    tree_mask[:, 0] = True
    for i in range(1, n):
        tree_mask[i] |= tree_mask[where[i - 1]]
    position_ids = tree_mask.sum(1) - 1
    inner = set(where)
    paths = []
    for leaf in (i for i in range(n) if i not in inner):
        path, node = [], leaf
        for _ in range(int(position_ids[leaf]) + 1):
            path.append(node)
            node = where[node - 1] if node else 0
        paths.append(path[::-1])
    width = int(position_ids.max()) + 1
    retrieve = torch.tensor([p + [-1] * (width - len(p)) for p in paths], dtype=torch.long)
    return DynamicTree(draft, tree_mask, position_ids, retrieve), context


def eagle2_decode(model: ARModel, head: EagleHead, prompt: torch.Tensor, max_new_tokens: int, total_tokens: int,
                  depth: int, top_k: int, device: str = "cpu") -> GenerationResult:
    """EAGLE-2 decoding; every row drafts its own tree shape, so rows are decoded one after another (upstream
    decodes batch size 1) and their work is added up."""
    check_dynamic(total_tokens, depth, top_k, model.vocab_size)
    if prompt.shape[0] > 1:
        rows = [eagle2_decode(model, head, prompt[b:b + 1], max_new_tokens, total_tokens, depth, top_k, device)
                for b in range(prompt.shape[0])]
        return GenerationResult([r.tokens[0] for r in rows], sum(r.target_passes for r in rows),
                                sum(r.draft_passes for r in rows), sum(r.steps for r in rows), rows[0].first_token_s,
                                [a for r in rows for a in r.accepted])
    state = Lockstep(prompt, max_new_tokens, model.eos_id, device)
    cache = model.new_cache(1, prompt.shape[1] + max_new_tokens + total_tokens + 1)
    head, prompt = head.to(device), prompt.to(device)
    out = model.forward(prompt, cache, want_hidden=True)
    state.target_passes += 1
    root = out.logits[:, -1].argmax(-1)
    state.append(root[:, None].cpu())
    features, tokens, past = out.hidden, torch.cat([prompt[:, 1:], root[:, None]], 1), None

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        return model.hidden_logits(x).float()

    while not state.done():
        tree, past = draft_dynamic(head, model.embed, logits_of, features.float(), tokens, past, total_tokens, depth,
                                   top_k)
        state.draft_passes += 1 + depth
        start = model.cache_length(cache)
        ids = tree.tokens.to(device)[None]
        out = model.forward_tree(ids, cache, tree.position_ids.to(device) + start, tree.attn_mask.to(device),
                                 want_hidden=True)
        state.target_passes += 1
        logits = out.logits[0].float().cpu()
        paths = torch.cat([tree.tokens, tree.tokens.new_full((1,), -1)])[tree.retrieve_indices]
        best, n = accept_greedy(logits[tree.retrieve_indices.clamp(min=0)], paths)
        kept = tree.retrieve_indices[best, :n + 1]
        model.keep(cache, start, [kept.tolist()])
        root = logits[kept[-1]].argmax(-1, keepdim=True).to(device)
        tokens = torch.cat([paths[best, 1:n + 1].to(device), root])[None]
        state.append(tokens.cpu())
        features = out.hidden[:, kept.to(device)]
    return state.result()


@dataclass
class EagleConfig:
    """`tree`: a named static tree of top-k paths (`TREES`); `head`: a head file (default: the bundled head for
    `tiny-kjv-target`)."""

    tree: Literal["mc_sim_7b_63"] = "mc_sim_7b_63"
    head: str = ""


@dataclass
class Eagle2Config:
    """Each step's tree: `total_tokens` nodes including the root, drafted `depth` levels deep with `top_k` nodes
    expanded per level (upstream's defaults 60 / 7 / 10); `head`: a head file (default: the bundled head for
    `tiny-kjv-target`; EAGLE-2 uses EAGLE-1's heads)."""

    total_tokens: int = 60
    depth: int = 7
    top_k: int = 10
    head: str = ""


class _EagleHeadStrategy(AddonStrategy):
    bundled = BUNDLED_HEAD
    addon_setting = "head"

    @property
    def lossless(self) -> bool:
        return True

    def check(self, models: Models) -> None:
        models.target.require_tree(self.name)
        models.target.require_features(self.name)
        super().check(models)

    def load_addon(self, target: ARModel) -> EagleHead:
        return EagleHead.load(self.addon_path(), target)


@register_method("eagle")
class EagleDecoding(_EagleHeadStrategy):
    description = ("EAGLE-1: a one-layer draft head autoregresses on the target's features and drafts a static "
                   "tree of top-k tokens, verified in one pass with tree attention (greedy, lossless)")
    paper = "Li et al., ICML 2024 (arXiv 2401.15077), github.com/SafeAILab/EAGLE"
    Config = EagleConfig

    def decode(self, models: Models, prompt, max_new_tokens, seeds: Sequence[int]) -> GenerationResult:
        return eagle_decode(models.target, self.bound_addon(models), prompt, max_new_tokens,
                            TREES[self.config.tree], self.device)


@register_method("eagle-2")
class Eagle2Decoding(_EagleHeadStrategy):
    description = ("EAGLE-2: EAGLE's draft head grows a dynamic tree (the nodes of highest cumulative draft "
                   "probability), verified in one pass with tree attention (greedy, lossless)")
    paper = "Li et al., EMNLP 2024 (arXiv 2406.16858), github.com/SafeAILab/EAGLE"
    Config = Eagle2Config

    def check(self, models: Models) -> None:
        check_dynamic(self.config.total_tokens, self.config.depth, self.config.top_k, models.target.vocab_size)
        super().check(models)

    def decode(self, models: Models, prompt, max_new_tokens, seeds: Sequence[int]) -> GenerationResult:
        c = self.config
        return eagle2_decode(models.target, self.bound_addon(models), prompt, max_new_tokens, c.total_tokens,
                             c.depth, c.top_k, self.device)
