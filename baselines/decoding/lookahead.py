"""Lookahead decoding (Fu, Bailis, Stoica & Zhang, ICML 2024, "Break the Sequential Dependency of LLM
Inference Using Lookahead Decoding"; hao-ai-lab/LookaheadDecoding, parameters LEVEL = N,
WINDOW_SIZE = W, GUESS_SET_SIZE = G).

Training-free and lossless under greedy decoding. Every step is one forward pass of the target over
three parts, with a custom attention mask (`ARModel.forward_tree`):

* the pending token x at position p (the last accepted token, not yet in the KV cache);
* the **lookahead branch**: a 2D window of N-1 levels of W guessed tokens; the token of level j,
  column i sits at position p+1+i+j and sees x, level 0's columns 0..i and column i of levels 1..j --
  a Jacobi iteration along each column's diagonal trajectory. The argmax at the top level gives one new
  token per column; with it each column is an N-gram (level 0 .. level N-2, new), stored in the
  **n-gram pool** under its first token (at most G per key, least recently produced dropped first).
  The window then slides: level 0 is dropped and the new tokens become the top level. While the
  window fills (the first N-2 steps) the new tokens are appended as a level instead;
* the **verification branch**: the (at most G) pool n-grams keyed by x, each a chain at positions
  p+1..p+N-1 seeing x and its own earlier tokens. The candidate with the longest prefix equal to the
  target's argmax is accepted, plus the target's own next token, as in greedy speculative decoding.

The pending token and the accepted candidate's keys/values are kept (`ARModel.keep`); the branches'
are dropped. Level 0 starts as tokens drawn from the prompt (as upstream) with the request's own
seeded generator, so a row's output and its window do not depend on its batch; a batch advances in
lockstep by its rows' smallest accepted count (pools and windows are per row). As upstream, the
window is not re-aligned when more than one token is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Sequence

import torch
from pydantic import Field

from harness.protocols.decoding.generation import GenerationResult, Lockstep, row_generators
from harness.protocols.decoding.interface import ARModel
from harness.protocols.decoding.strategy import DecodingStrategy, Models
from harness.registry import register_method
from harness.settings import PositiveInt


class NGramPool:
    """n-grams keyed by their first token: up to `size` continuations per key, most recent last."""

    def __init__(self, size: int):
        self.size, self.table = size, {}

    def add(self, key: int, continuation: tuple[int, ...]) -> None:
        entries = self.table.setdefault(key, [])
        if continuation in entries:
            entries.remove(continuation)
        elif len(entries) >= self.size:
            entries.pop(0)
        entries.append(continuation)

    def get(self, key: int) -> list[tuple[int, ...]]:
        return list(self.table.get(key, ()))


def step_layout(levels: int, window: int, n_cand: int, cand_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Position offsets (from the pending token's position) and the (t, t) attention mask of one step:
    index 0 = pending token, then the lookahead window level by level, then the candidates.

    >>> offsets, mask = step_layout(levels=2, window=2, n_cand=1, cand_len=2)
    >>> offsets.tolist()
    [0, 1, 2, 2, 3, 1, 2]
    >>> mask.int().tolist()[4]  # level 1, column 1: x, level 0 columns 0..1, itself
    [1, 1, 1, 0, 1, 0, 0]
    """
    t = 1 + levels * window + n_cand * cand_len
    offsets = torch.zeros(t, dtype=torch.long)
    mask = torch.zeros(t, t, dtype=torch.bool)
    mask[:, 0] = True
    for j in range(levels):
        for i in range(window):
            a = 1 + j * window + i
            offsets[a] = 1 + i + j
            mask[a, 1:2 + i] = True  # level 0, columns 0..i
            for jj in range(1, j + 1):
                mask[a, 1 + jj * window + i] = True  # column i of levels 1..j
    base = 1 + levels * window
    for g in range(n_cand):
        for k in range(cand_len):
            a = base + g * cand_len + k
            offsets[a] = 1 + k
            mask[a, base + g * cand_len:a + 1] = True
    return offsets, mask


def lookahead_decode(model: ARModel, prompt: torch.Tensor, max_new_tokens: int, ngram: int = 5, window: int = 7,
                     guesses: int = 7, seeds: Sequence[int] = (), device: str = "cpu") -> GenerationResult:
    """`ngram` = N (n-gram size, N-1 lookahead levels), `window` = W, `guesses` = G (max candidates)."""
    batch, prompt_len = prompt.shape
    state = Lockstep(prompt, max_new_tokens, model.eos_id, device)
    extra = 1 + (ngram - 1) * window + guesses * (ngram - 1)
    cache = model.new_cache(batch, prompt_len + max_new_tokens + extra + 1)
    logits = model.forward(prompt.to(device), cache).logits[:, -1]
    state.target_passes += 1
    pending = logits.argmax(-1).cpu()
    state.append(pending[:, None])
    generators = row_generators(list(seeds) if len(seeds) == batch else [0] * batch)
    picks = [torch.randint(prompt_len, (window,), generator=g) for g in generators]
    levels = [torch.stack([prompt[b, picks[b]] for b in range(batch)])]  # (B, W) per level
    pools = [NGramPool(guesses) for _ in range(batch)]
    cand_len = ngram - 1
    while not state.done():
        start = model.cache_length(cache)
        cands = [pools[b].get(int(pending[b])) for b in range(batch)]
        n_cand = max(len(c) for c in cands)
        cand_ids = torch.tensor([[list(c[min(g, len(c) - 1)]) if c else [0] * cand_len for g in range(n_cand)]
                                 for c in cands], dtype=torch.long).reshape(batch, n_cand * cand_len)
        offsets, mask = step_layout(len(levels), window, n_cand, cand_len)
        ids = torch.cat([pending[:, None], *levels, cand_ids], 1)
        out = model.forward_tree(ids.to(device), cache, offsets + start, mask).logits.argmax(-1).cpu()
        state.target_passes += 1
        # verification: longest candidate prefix equal to the target's choices
        base = 1 + len(levels) * window
        best, best_len = [0] * batch, [0] * batch
        for b in range(batch):
            for g in range(len(cands[b])):
                c = cand_ids[b, g * cand_len:(g + 1) * cand_len]
                choices = torch.cat([out[b, :1], out[b, base + g * cand_len:base + (g + 1) * cand_len - 1]])
                m = int((c == choices).int().cumprod(0).sum())
                if m > best_len[b]:
                    best[b], best_len[b] = g, m
        n = min(best_len)
        tokens, keep = [], []
        for b in range(batch):
            first = base + best[b] * cand_len
            chosen = cand_ids[b, best[b] * cand_len:best[b] * cand_len + n].tolist()
            bonus = int(out[b, 0]) if n == 0 else int(out[b, first + n - 1])
            tokens.append(chosen + [bonus])
            keep.append([0] + [first + k for k in range(n)])
        model.keep(cache, start, keep)
        new = torch.tensor(tokens, dtype=torch.long)
        state.append(new)
        pending = new[:, -1]
        # lookahead: the top level's choices; harvest n-grams once the window is full, then slide
        top = 1 + (len(levels) - 1) * window
        produced = out[:, top:top + window]
        if len(levels) == ngram - 1:
            for b in range(batch):
                for i in range(window):
                    column = tuple(int(level[b, i]) for level in levels[1:]) + (int(produced[b, i]),)
                    pools[b].add(int(levels[0][b, i]), column)
            levels = levels[1:] + [produced]
        else:
            levels.append(produced)
    return state.result()


@dataclass
class LookaheadConfig:
    """Upstream's defaults: LEVEL (ngram) 5, WINDOW_SIZE 7, GUESS_SET_SIZE 7."""

    ngram: Annotated[int, Field(ge=2)] = 5
    window: PositiveInt = 7
    guesses: PositiveInt = 7


@register_method("lookahead")
class LookaheadDecoding(DecodingStrategy):
    description = ("lookahead decoding: Jacobi window fills an n-gram pool, pool n-grams verified in the same "
                   "pass (training-free, lossless)")
    paper = "Fu, Bailis, Stoica & Zhang, ICML 2024 (arXiv 2402.02057)"
    Config = LookaheadConfig

    @property
    def lossless(self) -> bool:
        return True

    def check(self, models: Models) -> None:
        super().check(models)
        models.target.require_tree(self.name)

    def decode(self, models: Models, prompt, max_new_tokens, seeds: Sequence[int]) -> GenerationResult:
        return lookahead_decode(models.target, prompt, max_new_tokens, self.config.ngram, self.config.window,
                                self.config.guesses, seeds, self.device)
