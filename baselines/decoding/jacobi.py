"""Jacobi decoding (Santilli et al. 2023, "Accelerating Transformer Inference for Translation via
Parallel Decoding"; the training-free fixed-point iteration behind Lookahead decoding).

Keep a window of n guessed future tokens; one forward pass over [pending, guesses] updates every
guess to the argmax given the guesses before it. The leading guesses that the update confirmed (the
guess equals the argmax computed from a verified prefix) are exact, so every step emits at least one
token and the output equals greedy AR. The other updated guesses seed the next iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from harness.protocols.decoding.generation import GenerationResult, Lockstep
from harness.protocols.decoding.interface import ARModel
from harness.protocols.decoding.strategy import DecodingStrategy, Models
from harness.registry import register_method
from harness.settings import Annotated, Field


def jacobi_decode(model: ARModel, prompt: torch.Tensor, max_new_tokens: int, window: int,
                  device: str = "cpu") -> GenerationResult:
    batch, prompt_len = prompt.shape
    state = Lockstep(prompt, max_new_tokens, model.eos_id, device)
    cache = model.new_cache(batch, prompt_len + max_new_tokens + window)
    logits = model.forward(prompt.to(device), cache).logits[:, -1]
    state.target_passes += 1
    first = logits.argmax(-1)[:, None]
    state.append(first)
    guesses = first.repeat(1, window)  # initial guess: the last known token
    while not state.done():
        fed = model.cache_length(cache)
        n_guess = max(0, min(window, max_new_tokens - state.generated - 1))
        guess = guesses[:, :n_guess]
        update = model.forward(torch.cat([state.seq[:, fed:], guess], 1), cache).logits.argmax(-1)
        state.target_passes += 1
        n = int((guess == update[:, :n_guess]).int().cumprod(1).sum(1).min())
        model.crop(cache, fed + 1 + n)
        state.append(update[:, :n + 1])
        rest = update[:, n + 1:]
        fill = (rest[:, -1:] if rest.shape[1] else update[:, -1:]).repeat(1, window - rest.shape[1])
        guesses = torch.cat([rest, fill], 1)
    return state.result()


@dataclass
class JacobiConfig:
    window: Annotated[int, Field(ge=1, le=1024)] = 4


@register_method("jacobi")
class JacobiDecoding(DecodingStrategy):
    description = "Jacobi decoding: parallel fixed-point iteration over a window of guesses (training-free, lossless)"
    paper = "Santilli et al., ACL 2023 (arXiv 2305.10427)"
    Config = JacobiConfig

    @property
    def lossless(self) -> bool:
        return True

    def decode(self, models: Models, prompt, max_new_tokens, seeds: Sequence[int]) -> GenerationResult:
        return jacobi_decode(models.target, prompt, max_new_tokens, self.config.window, self.device)
