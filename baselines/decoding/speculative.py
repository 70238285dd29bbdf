"""Speculative decoding with a draft model (Leviathan, Kalman & Matias 2023, "Fast Inference from
Transformers via Speculative Decoding"; Chen et al. 2023, "Accelerating Large Language Model Decoding
with Speculative Sampling").

Each step the draft proposes `k` tokens autoregressively, the target scores all of them in one
forward pass, and the longest acceptable prefix is kept plus one token from the target (the
correction, or the bonus token when all `k` are accepted). Greedy: a draft token is accepted when it
is the target's argmax, so the output equals greedy AR. Sampling: accept with probability
min(1, p/q), on rejection sample from norm(max(0, p - q)); the output follows the target's
(warped) distribution exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from baselines.decoding.ar import choose
from harness.protocols.decoding.generation import GenerationResult, Lockstep, SamplingConfig, row_generators, sample, warp
from harness.protocols.decoding.interface import ARModel
from harness.protocols.decoding.strategy import Models, SampledStrategy
from harness.registry import register_method
from harness.settings import Annotated, Field, Temperature, TopK, TopP


def speculative_decode(target: ARModel, draft: ARModel, prompt: torch.Tensor, max_new_tokens: int, k: int,
                       sampling: SamplingConfig = SamplingConfig(), seeds: Sequence[int] = (),
                       device: str = "cpu") -> GenerationResult:
    batch, prompt_len = prompt.shape
    state = Lockstep(prompt, max_new_tokens, target.eos_id, device)
    generators = None if sampling.greedy else row_generators(list(seeds))
    max_len = prompt_len + max_new_tokens + k + 1
    target_cache, draft_cache = target.new_cache(batch, max_len), draft.new_cache(batch, max_len)
    prompt = prompt.to(device)
    logits = target.forward(prompt, target_cache).logits[:, -1]
    state.target_passes += 1
    state.append(choose(logits, sampling, generators)[:, None])
    while not state.done():
        seq = state.seq
        fed = target.cache_length(target_cache)  # every token but the last (pending) one
        n_draft = max(0, min(k, max_new_tokens - state.generated - 1))
        # Draft: catch up on tokens it has not seen, then propose n_draft tokens.
        feed = seq[:, draft.cache_length(draft_cache):]
        proposals, draft_probs = [], []
        for _ in range(n_draft):
            draft_logits = draft.forward(feed, draft_cache).logits[:, -1]
            state.draft_passes += 1
            if sampling.greedy:
                token = draft_logits.argmax(-1)
            else:
                q = warp(draft_logits, sampling)
                token = sample(q, generators)
                draft_probs.append(q)
            proposals.append(token)
            feed = token[:, None]
        drafted = torch.stack(proposals, 1) if proposals else seq[:, :0]
        # Target: one pass over the pending token and the proposals.
        target_logits = target.forward(torch.cat([seq[:, fed:], drafted], 1), target_cache).logits
        state.target_passes += 1
        if sampling.greedy:
            best = target_logits.argmax(-1)
            accepted = (drafted == best[:, :n_draft]).int().cumprod(1).sum(1)
            n = int(accepted.min())
            new = torch.cat([drafted[:, :n], best[:, n:n + 1]], 1)
        else:
            new = _accept_sampled(target_logits, drafted, draft_probs, sampling, generators)
            n = new.shape[1] - 1
        target.crop(target_cache, fed + 1 + n)
        draft.crop(draft_cache, fed + 1 + n)
        state.append(new)
    return state.result()


def _accept_sampled(target_logits: torch.Tensor, drafted: torch.Tensor, draft_probs: list[torch.Tensor],
                    sampling: SamplingConfig, generators: list[torch.Generator]) -> torch.Tensor:
    """Modified rejection sampling, per row; rows then keep the batch's smallest accepted count n and
    their own valid token at position n (an accepted draft token, the residual sample, or the bonus)."""
    batch, n_draft = drafted.shape
    p = warp(target_logits, sampling)  # (B, n_draft + 1, V)
    rows_accepted, fallback = [], []
    for b in range(batch):
        count = 0
        for i in range(n_draft):
            token = drafted[b, i]
            ratio = p[b, i, token] / draft_probs[i][b, token]
            if torch.rand((), generator=generators[b]).item() < float(ratio):
                count += 1
                continue
            break
        rows_accepted.append(count)
        if count == n_draft:
            fallback.append(sample(p[b, n_draft][None], [generators[b]]))
        else:
            residual = (p[b, count] - draft_probs[count][b]).clamp_min(0)
            fallback.append(sample((residual / residual.sum())[None], [generators[b]]))
    n = min(rows_accepted)
    last = torch.cat([drafted[b, n:n + 1] if rows_accepted[b] > n else fallback[b] for b in range(batch)])
    return torch.cat([drafted[:, :n], last[:, None]], 1)


@dataclass
class SpeculativeConfig:
    k: Annotated[int, Field(ge=1, le=256, description="draft tokens per step")] = 4
    temperature: Temperature = 0.0
    top_k: TopK = 0
    top_p: TopP = 1.0


@register_method("speculative")
class SpeculativeDecoding(SampledStrategy):
    description = "speculative decoding with a draft model: k draft tokens, one target pass to verify (lossless)"
    paper = "Leviathan et al. 2023 (arXiv 2211.17192); Chen et al. 2023 (arXiv 2302.01318)"
    needs_draft = True
    Config = SpeculativeConfig

    def decode(self, models: Models, prompt, max_new_tokens, seeds) -> GenerationResult:
        return speculative_decode(models.target, models.draft, prompt, max_new_tokens, self.config.k,
                                  self.sampling, seeds, self.device)
