"""Medusa-1 decoding (Cai et al., ICML 2024, "Medusa: Simple LLM Inference Acceleration Framework with
Multiple Decoding Heads"; github.com/FasterDecoding/Medusa, Apache-2.0), greedy and lossless.

K extra heads read the target's last hidden state; head k guesses the token k + 2 positions ahead (the
target's own LM head gives the next one). Each step builds a sparse tree of candidates from the heads'
top-10 tokens (`medusa_choices`, paths of top-k ranks, e.g. [0, 1] = head 0's best then head 1's second
best), feeds every node in ONE forward pass with a tree attention mask (each node sees the cached prefix
and its ancestors), and keeps the longest path whose tokens are the target's greedy choices, plus the
target's next token at its end. The output equals greedy AR decoding.

Written from upstream's `medusa/model/utils.py` (FasterDecoding/Medusa@e2a5d20): `medusa_buffers` is
`generate_medusa_buffers`, `tree_candidates` is `generate_candidates` at temperature 0, `accept_greedy` is
`evaluate_posterior` at temperature 0 -- tests/test_decoding_medusa.py compares all three with upstream's
functions on stored outputs (tests/golden/medusa). Differences, on purpose:
- a batch of rows advances in lockstep (upstream decodes batch size 1): every row verifies its own tree and
  keeps its own best path, cut to the shortest accepted length of the batch;
- the padding of short paths never counts as accepted (upstream pads paths with token 0 and compares it
  with the logits of the tree's last node: a target whose greedy token there is 0 would accept a token the
  target never chose; for the bundled byte-level models token 0 is a NUL byte, never produced);
- typical acceptance (upstream's sampling mode) is lossy and not implemented: this strategy is greedy.

Heads: upstream's `ResBlock` (x + SiLU(W x + b), W initialised to zero) then a linear map to the vocabulary
(no bias), under upstream's parameter names (`medusa_head.{k}.0.linear.weight`, `medusa_head.{k}.1.weight`),
one ResBlock per head as in every released Medusa-1 model. The heads read `ModelOutput.hidden`; for the
bundled GPT that is the last block's output (before the final LayerNorm). A heads file names the target it
was trained for (sha256 in its metadata) and is refused with any other target. The bundled heads for
`tiny-kjv-target` are trained by `python -m baselines.decoding.train_medusa`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from baselines.decoding.addons import WEIGHTS, AddonStrategy, load_state, read_addon, save_addon
from harness.errors import ArbenchError
from harness.protocols.decoding.generation import GenerationResult, Lockstep
from harness.protocols.decoding.interface import ARModel
from harness.protocols.decoding.strategy import Models
from harness.registry import register_method
from harness.settings import Literal

#: Upstream's TOPK: every head offers its 10 best tokens to the tree.
TOPK = 10
BUNDLED_HEADS = WEIGHTS / "medusa-tiny-kjv-target.safetensors"

#: Paths of top-k ranks, one per tree node besides the root. `kjv-31` is a hand-built 31-node tree for 4 heads,
#: weighted towards the top ranks of the first heads (the bundled heads' held-out top-1 / top-10 accuracy is
#: 0.31 / 0.81 for head 0 down to 0.20 / 0.71 for head 3: `train_medusa.py` records it in the heads file);
#: upstream's `medusa_choices.py` trees are tuned for Vicuna, and its `mc_sim_7b_63` is offered too.
TREES: dict[str, list[list[int]]] = {
    "kjv-31": [[0], [1], [2], [3], [0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [2, 0], [3, 0], [0, 0, 0], [0, 0, 1],
               [0, 0, 2], [0, 1, 0], [1, 0, 0], [0, 2, 0], [2, 0, 0], [1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1],
               [0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 2], [0, 0, 2, 0], [0, 2, 0, 0], [4], [0, 3],
               [0, 0, 3], [1, 2]],
    "mc_sim_7b_63": [[0], [0, 0], [1], [0, 1], [2], [0, 0, 0], [1, 0], [0, 2], [3], [0, 3], [4], [0, 4], [2, 0],
                     [0, 5], [0, 0, 1], [5], [0, 6], [6], [0, 7], [0, 1, 0], [1, 1], [7], [0, 8], [0, 0, 2],
                     [3, 0], [0, 9], [8], [9], [1, 0, 0], [0, 2, 0], [1, 2], [0, 0, 3], [4, 0], [2, 1], [0, 0, 4],
                     [0, 0, 5], [0, 0, 0, 0], [0, 1, 1], [0, 0, 6], [0, 3, 0], [5, 0], [1, 3], [0, 0, 7],
                     [0, 0, 8], [0, 0, 9], [6, 0], [0, 4, 0], [1, 4], [7, 0], [0, 1, 2], [2, 0, 0], [3, 1],
                     [2, 2], [8, 0], [0, 5, 0], [1, 5], [1, 0, 1], [0, 2, 1], [9, 0], [0, 6, 0], [0, 0, 0, 1],
                     [1, 6], [0, 7, 0]],
}


# -- the heads ---------------------------------------------------------------------------------------
class ResBlock(nn.Module):
    """x + SiLU(linear(x)), the linear initialised to zero (an identity block), as upstream."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, hidden_size)
        nn.init.zeros_(self.linear.weight)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.linear(x))


class MedusaHeads(nn.Module):
    """`num_heads` heads, each ResBlock -> Linear(hidden, vocab, bias=False); forward gives (K, B, t, V)."""

    def __init__(self, hidden_size: int, vocab_size: int, num_heads: int = 4):
        super().__init__()
        self.hidden_size, self.vocab_size, self.num_heads = hidden_size, vocab_size, num_heads
        self.medusa_head = nn.ModuleList(
            [nn.Sequential(ResBlock(hidden_size), nn.Linear(hidden_size, vocab_size, bias=False))
             for _ in range(num_heads)])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(hidden) for head in self.medusa_head], dim=0)

    def save(self, path: str | Path, target_sha256: str | None, extra: dict[str, Any] | None = None) -> None:
        save_addon(self, path, {"hidden_size": self.hidden_size, "vocab_size": self.vocab_size,
                                "num_heads": self.num_heads}, target_sha256, extra)

    @classmethod
    def load(cls, path: str | Path, target: ARModel) -> "MedusaHeads":
        """Heads from a file saved by `save`, checked against the target they were trained for."""
        config, state = read_addon(path, target, "Medusa heads file", "python -m baselines.decoding.train_medusa")
        if config["vocab_size"] != target.vocab_size:
            raise ArbenchError(f"the Medusa heads in {path} predict {config['vocab_size']} tokens, the target "
                               f"{target.name!r} has {target.vocab_size}.")
        heads = cls(config["hidden_size"], config["vocab_size"], config["num_heads"])
        return load_state(heads, state, path, "Medusa-1 heads (one ResBlock each)")


# -- the tree (upstream's buffers) -------------------------------------------------------------------
@dataclass(frozen=True)
class TreeBuffers:
    """`attn_mask` (L, L) bool, node i sees node j; `tree_indices` (L,) into [root, head0 top-10, head1 ...];
    `position_ids` (L,) depth of each node; `retrieve_indices` (P, D + 1) the nodes of each maximal path from
    the root, padded with -1."""

    attn_mask: torch.Tensor
    tree_indices: torch.Tensor
    position_ids: torch.Tensor
    retrieve_indices: torch.Tensor


def medusa_buffers(choices: Sequence[Sequence[int]]) -> TreeBuffers:
    """The tree of `choices` in upstream's layout (`generate_medusa_buffers`), node 0 being the root.

    >>> b = medusa_buffers([[0], [1], [0, 0]])
    >>> b.tree_indices.tolist(), b.position_ids.tolist()
    ([0, 1, 2, 11], [0, 1, 1, 2])
    >>> b.retrieve_indices.tolist()
    [[0, 1, 3], [0, 2, -1]]
    """
    paths = sorted((list(c) for c in choices), key=lambda p: (len(p), p))
    if not paths or any(not p or min(p) < 0 or max(p) >= TOPK for p in paths):
        raise ArbenchError(f"a Medusa tree is a list of non-empty paths of top-k ranks in [0, {TOPK}).")
    index = {tuple(p): i + 1 for i, p in enumerate(paths)}
    missing = [p for p in paths if len(p) > 1 and tuple(p[:-1]) not in index]
    if missing or len(index) != len(paths):
        raise ArbenchError(f"a Medusa tree needs every path's parent and no repeated path (first problem: "
                           f"{(missing or paths)[0]}).")
    n = len(paths) + 1
    mask = torch.eye(n, dtype=torch.bool)
    mask[:, 0] = True
    tree_indices = torch.zeros(n, dtype=torch.long)
    position_ids = torch.zeros(n, dtype=torch.long)
    for i, p in enumerate(paths, start=1):
        for depth in range(1, len(p)):
            mask[i, index[tuple(p[:depth])]] = True
        tree_indices[i] = p[-1] + TOPK * (len(p) - 1) + 1
        position_ids[i] = len(p)
    # maximal paths, deepest-last first as upstream (a path already covered by a longer one is skipped)
    covered: set[tuple[int, ...]] = set()
    rows: list[list[int]] = []
    for p in reversed(paths):
        if tuple(p) in covered:
            continue
        rows.append([index[tuple(p[:d])] for d in range(1, len(p) + 1)])
        covered.update(tuple(p[:d]) for d in range(1, len(p) + 1))
    depth = max(len(r) for r in rows)
    retrieve = torch.tensor([[0] + r + [-1] * (depth - len(r)) for r in rows], dtype=torch.long)
    return TreeBuffers(mask, tree_indices, position_ids, retrieve)


def tree_candidates(next_logits: torch.Tensor, medusa_logits: torch.Tensor,
                    buffers: TreeBuffers) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy `generate_candidates` for one row: `next_logits` (V,) of the target at the last accepted token,
    `medusa_logits` (K, V) of the heads there. Returns (paths (P, D + 1) with -1 padding, tree tokens (L,))."""
    root = next_logits.argmax(-1, keepdim=True)
    top = torch.topk(medusa_logits, TOPK, dim=-1).indices.reshape(-1)
    flat = torch.cat([root, top])
    tree = flat[buffers.tree_indices]
    padded = torch.cat([tree, tree.new_full((1,), -1)])
    return padded[buffers.retrieve_indices], tree


def accept_greedy(path_logits: torch.Tensor, paths: torch.Tensor) -> tuple[int, int]:
    """(best path, accepted length) as upstream's greedy `evaluate_posterior`: the path with the most leading
    tokens equal to the target's argmax at their parent (the first such path on ties); padding never matches."""
    match = (paths[:, 1:] == path_logits[:, :-1].argmax(-1)) & (paths[:, 1:] >= 0)
    lengths = match.int().cumprod(1).sum(1)
    accept = int(lengths.max())
    return (int(lengths.argmax()) if accept > 0 else 0), accept


def medusa_decode(model: ARModel, heads: MedusaHeads, prompt: torch.Tensor, max_new_tokens: int,
                  choices: Sequence[Sequence[int]], device: str = "cpu") -> GenerationResult:
    buffers = medusa_buffers(choices)
    batch, prompt_len = prompt.shape
    size = buffers.tree_indices.shape[0]
    state = Lockstep(prompt, max_new_tokens, model.eos_id, device)
    cache = model.new_cache(batch, prompt_len + max_new_tokens + size + 1)
    heads = heads.to(device)
    out = model.forward(prompt.to(device), cache, want_hidden=True)
    state.target_passes += 1
    next_logits = out.logits[:, -1].float()           # (B, V): the target's choice after the accepted tokens
    with torch.inference_mode():
        head_logits = heads(out.hidden[:, -1].float()).transpose(0, 1)  # (B, K, V)
    mask = buffers.attn_mask.to(device)
    nodes = buffers.retrieve_indices.clamp(min=0)  # each path's tree nodes (padding points at the root; never accepted)
    first = True
    while not state.done():
        start = model.cache_length(cache)
        built = [tree_candidates(next_logits[b].cpu(), head_logits[b].cpu(), buffers) for b in range(batch)]
        if first:  # the prefill's own token (the root) is the first generated token
            state.append(torch.stack([tree[:1] for _, tree in built]))
            first = False
            if state.done():
                break
        ids = torch.stack([tree for _, tree in built]).to(device)
        out = model.forward_tree(ids, cache, buffers.position_ids.to(device) + start, mask, want_hidden=True)
        state.target_passes += 1
        logits = out.logits.float().cpu()
        picks = [(paths, *accept_greedy(logits[b][nodes], paths)) for b, (paths, _) in enumerate(built)]
        n = min(accept for _, _, accept in picks)
        kept = [buffers.retrieve_indices[best, :n + 1].tolist() for _, best, _ in picks]
        model.keep(cache, start, kept)
        last = torch.tensor([k[-1] for k in kept], device=out.logits.device)
        rows = torch.arange(batch, device=out.logits.device)
        # accepted tokens after the root (the root was appended when it was chosen), then the next root
        accepted = torch.stack([paths[best, 1:n + 1] for paths, best, _ in picks])
        next_logits = out.logits[rows, last].float()
        with torch.inference_mode():
            head_logits = heads(out.hidden[rows, last].float()).transpose(0, 1)
        state.append(torch.cat([accepted, next_logits.argmax(-1).cpu()[:, None]], 1))
    return state.result()


@dataclass
class MedusaConfig:
    """`tree`: a named tree of head top-k paths (`TREES`); `heads`: a heads file (default: the bundled heads
    for `tiny-kjv-target`)."""

    tree: Literal["kjv-31", "mc_sim_7b_63"] = "kjv-31"
    heads: str = ""


@register_method("medusa")
class MedusaDecoding(AddonStrategy):
    description = ("Medusa-1: 4 extra heads guess the next tokens, a tree of their top-k candidates is verified in "
                   "one pass with tree attention (greedy, lossless)")
    paper = "Cai et al., ICML 2024 (arXiv 2401.10774), github.com/FasterDecoding/Medusa"
    Config = MedusaConfig
    bundled = BUNDLED_HEADS
    addon_setting = "heads"

    @property
    def lossless(self) -> bool:
        return True

    def check(self, models: Models) -> None:
        models.target.require_tree(self.name)
        super().check(models)

    def load_addon(self, target: ARModel) -> MedusaHeads:
        return MedusaHeads.load(self.addon_path(), target)

    def decode(self, models: Models, prompt, max_new_tokens, seeds: Sequence[int]) -> GenerationResult:
        return medusa_decode(models.target, self.bound_addon(models), prompt, max_new_tokens,
                             TREES[self.config.tree], self.device)
