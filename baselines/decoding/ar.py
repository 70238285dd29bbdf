"""Autoregressive decoding with a KV cache: the baseline every strategy is timed against.

One forward pass per token after the prefill; greedy (temperature 0) or sampled with temperature,
top-k and top-p, each row from its own seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from harness.protocols.decoding.generation import GenerationResult, Lockstep, SamplingConfig, row_generators, sample, warp
from harness.protocols.decoding.interface import ARModel
from harness.protocols.decoding.strategy import Models, SampledStrategy
from harness.registry import register_method
from harness.settings import Temperature, TopK, TopP


def choose(logits: torch.Tensor, sampling: SamplingConfig, generators: list[torch.Generator] | None) -> torch.Tensor:
    """Next token per row from (B, V) logits."""
    if sampling.greedy:
        return logits.argmax(-1)
    return sample(warp(logits, sampling), generators)


def ar_decode(model: ARModel, prompt: torch.Tensor, max_new_tokens: int, sampling: SamplingConfig = SamplingConfig(),
              seeds: Sequence[int] = (), device: str = "cpu") -> GenerationResult:
    """Plain autoregressive decoding (batch of equal-length prompts)."""
    state = Lockstep(prompt, max_new_tokens, model.eos_id, device)
    generators = None if sampling.greedy else row_generators(list(seeds))
    cache = model.new_cache(prompt.shape[0], prompt.shape[1] + max_new_tokens)
    logits = model.forward(prompt.to(device), cache).logits[:, -1]
    state.target_passes += 1
    token = choose(logits, sampling, generators)
    state.append(token[:, None])
    while not state.done():
        logits = model.forward(token[:, None], cache).logits[:, -1]
        state.target_passes += 1
        token = choose(logits, sampling, generators)
        state.append(token[:, None])
    return state.result()


def greedy_with_steps(model: ARModel, prompt: torch.Tensor, max_new_tokens: int, device: str,
                      step: Callable[[torch.Tensor, Any, Lockstep], torch.Tensor]) -> GenerationResult:
    """Greedy decoding, one token per pass: the prompt through the full model, then each next token
    from `step(token (B, 1), cache, state) -> logits (B, 1, V)` (a strategy's own forward)."""
    state = Lockstep(prompt, max_new_tokens, model.eos_id, device)
    cache = model.new_cache(prompt.shape[0], prompt.shape[1] + max_new_tokens)
    logits = model.forward(prompt.to(device), cache).logits[:, -1]
    state.target_passes += 1
    token = logits.argmax(-1)
    state.append(token[:, None])
    while not state.done():
        logits = step(token[:, None].to(device), cache, state)[:, -1]
        state.target_passes += 1
        token = logits.argmax(-1)
        state.append(token[:, None])
    return state.result()


@dataclass
class ARConfig:
    temperature: Temperature = 0.0
    top_k: TopK = 0
    top_p: TopP = 1.0


@register_method("ar")
class AutoregressiveDecoding(SampledStrategy):
    description = "autoregressive decoding with KV cache, greedy or sampled (temperature/top-k/top-p): the baseline"
    paper = "standard autoregressive decoding"
    Config = ARConfig

    def decode(self, models: Models, prompt, max_new_tokens, seeds) -> GenerationResult:
        return ar_decode(models.target, prompt, max_new_tokens, self.sampling, seeds, self.device)
