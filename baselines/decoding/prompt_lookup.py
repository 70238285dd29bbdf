"""Prompt lookup decoding (Saxena 2023, github.com/apoorvumang/prompt-lookup-decoding; the
`prompt_lookup_num_tokens` mode of Hugging Face `generate`, and Spec-Bench's "PLD").

Training-free speculative decoding whose draft is a copy: the last `max_ngram` tokens of the sequence
(prompt + generated so far) are searched for earlier in the sequence; the `num_tokens` tokens that
followed the first (leftmost) match are the draft, and the target verifies them in one forward pass
as in greedy speculative decoding (keep the longest prefix equal to the target's argmax, plus the
target's own next token). Shorter n-grams are tried when the longest has no match; with no match at
all the step is a plain AR step. The output equals greedy AR decoding.

The candidate search follows `transformers.generation.candidate_generator.PromptLookupCandidateGenerator`
(v5.x) rule for rule -- n-gram sizes from `max_ngram` down to 1, leftmost match with a non-empty
continuation, the draft cut at the sequence end and before the first EOS, none when one token is left, and
candidates looked up already for the prefill -- so that at batch size 1 the forward calls and accepted
tokens are the same as `model.generate(..., prompt_lookup_num_tokens=...)`
(tests/test_decoding_new_strategies.py checks this). It is re-written rather than called because
the library's version is tied to its `generate` loop and to batch size 1; here each row of a batch looks
up its own draft and, as for every strategy here, the batch advances in lockstep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from harness.protocols.decoding.generation import GenerationResult, Lockstep
from harness.protocols.decoding.interface import ARModel
from harness.protocols.decoding.strategy import DecodingStrategy, Models
from harness.registry import register_method
from harness.settings import PositiveInt


def lookup_candidates(seq: Sequence[int], num_tokens: int, max_ngram: int, max_length: int,
                      eos_id: int | None) -> list[int]:
    """The draft for one row: tokens that followed the leftmost earlier occurrence of the longest
    matching suffix n-gram (sizes `max_ngram`..1), at most `num_tokens`, copied only from positions
    below `max_length` (prompt + max_new_tokens; upstream's rule), cut before the first EOS. With one
    token left to generate there is no draft (the target's own token fills it).

    >>> lookup_candidates([5, 6, 7, 8, 5, 6], num_tokens=3, max_ngram=2, max_length=99, eos_id=None)
    [7, 8, 5]
    >>> lookup_candidates([1, 2, 3], num_tokens=3, max_ngram=2, max_length=99, eos_id=None)
    []
    """
    length = len(seq)
    if max_length == length + 1:
        return []
    for n in range(min(max_ngram, length - 1), 0, -1):
        suffix = list(seq[length - n:])
        for start in range(0, length - n + 1):
            if list(seq[start:start + n]) != suffix:
                continue
            begin, end = start + n, min(start + n + num_tokens, length, max_length)
            if begin >= end:
                continue
            chosen = list(seq[begin:end])
            if eos_id is not None and eos_id in chosen:
                chosen = chosen[:chosen.index(eos_id)]
            return chosen  # the first match decides, even when cut to nothing (as upstream)
    return []


def prompt_lookup_decode(model: ARModel, prompt: torch.Tensor, max_new_tokens: int, num_tokens: int = 10,
                         max_ngram: int = 2, device: str = "cpu") -> GenerationResult:
    batch, prompt_len = prompt.shape
    state = Lockstep(prompt, max_new_tokens, model.eos_id, device)
    cache = model.new_cache(batch, prompt_len + max_new_tokens + num_tokens + 1)
    max_length = prompt_len + max_new_tokens
    fed = 0
    while not state.done():
        rows = state.seq.tolist()
        drafts = [lookup_candidates(r, num_tokens, max_ngram, max_length, model.eos_id) for r in rows]
        n_draft = min(len(d) for d in drafts)  # lockstep: the batch verifies equally long drafts
        guess = torch.tensor([d[:n_draft] for d in drafts], dtype=torch.long).reshape(batch, n_draft)
        pending = state.seq[:, fed:]
        logits = model.forward(torch.cat([pending, guess], 1).to(device), cache).logits
        state.target_passes += 1
        choice = logits[:, pending.shape[1] - 1:].argmax(-1).cpu()  # (B, n_draft + 1)
        n = int((guess == choice[:, :n_draft]).int().cumprod(1).sum(1).min())
        fed = state.seq.shape[1] + n
        model.crop(cache, fed)
        if state.generated == 0 and n > 0:  # the prefill verified a draft: its first token, then a step of n
            state.append(choice[:, :1])
            state.append(choice[:, 1:n + 1])
        else:
            state.append(choice[:, :n + 1])
    return state.result()


@dataclass
class PromptLookupConfig:
    """`num_tokens`: draft length (HF `prompt_lookup_num_tokens`); `max_ngram`: longest suffix n-gram
    searched (HF `max_matching_ngram_size`, default 2)."""

    num_tokens: PositiveInt = 10
    max_ngram: PositiveInt = 2


@register_method("prompt-lookup")
class PromptLookupDecoding(DecodingStrategy):
    description = ("prompt lookup decoding: n-gram match in the prompt and output as the draft, verified in one "
                   "pass (training-free, lossless)")
    paper = "Saxena 2023, prompt-lookup-decoding (github.com/apoorvumang/prompt-lookup-decoding)"
    Config = PromptLookupConfig

    @property
    def lossless(self) -> bool:
        return True

    def decode(self, models: Models, prompt, max_new_tokens, seeds: Sequence[int]) -> GenerationResult:
        return prompt_lookup_decode(models.target, prompt, max_new_tokens, self.config.num_tokens,
                                    self.config.max_ngram, self.device)
