"""Token sampling shared by the image generators: temperature, top-k, top-p, classifier-free guidance,
and per-sample random streams.

Upstream samplers draw with one global generator (`torch.multinomial`), so an image depends on its
batch. Here every sample owns a `torch.Generator` seeded from its request and draws its own uniform
numbers; a token is the inverse CDF of the filtered distribution at that number. A sample is then the
same whatever batch it is generated in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class SamplerConfig:
    """LlamaGen's sampler settings (upstream defaults: temperature 1, top-k 0 = off, top-p 1 = off)."""

    cfg_scale: float = 1.0
    cfg_interval: int = -1  # guide only the first cfg_interval + 2 steps (see `guided_step`); -1 = every step
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


def guided_step(sampler: SamplerConfig, step: int) -> bool:
    """Whether decoding step `step` (0 = the step after the class prefix) is guided, as upstream LlamaGen.

    Upstream (`autoregressive/models/generate.py`) guides the prefill step, then in `decode_n_tokens` step
    i = 0, 1, ... (decoding step i + 1) while `i <= cfg_interval`: steps 0 .. cfg_interval + 1, i.e.
    cfg_interval + 2 steps. (Before method version 2 the project guided one step fewer.)

    >>> [guided_step(SamplerConfig(cfg_scale=2.0, cfg_interval=1), s) for s in range(4)]
    [True, True, True, False]
    """
    return sampler.cfg_scale > 1.0 and (sampler.cfg_interval < 0 or step <= sampler.cfg_interval + 1)


def guided_logits(logits: torch.Tensor, batch: int, scale: float, doubled: bool) -> torch.Tensor:
    """LlamaGen's guidance on a [cond; uncond] batch: uncond + scale * (cond - uncond)."""
    if not doubled:
        return logits
    cond, uncond = logits[:batch], logits[batch:]
    return cond if scale == 1.0 else uncond + (cond - uncond) * scale


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k, then nucleus filtering over the last axis (-inf outside), as in LlamaGen/HF.

    Top-p keeps the most likely tokens up to and including the one that brings the cumulative
    probability above `top_p`; top_p >= 1 (LlamaGen) or <= 0 (VAR) means off.
    """
    logits = logits.clone()
    if top_k > 0:
        k = min(top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        logits[logits < kth] = float("-inf")
    if 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = False
        logits[remove.scatter(-1, order, remove)] = float("-inf")
    return logits


def draw(probs: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One token per row of probs (B, n, V), row b drawing n uniforms from generators[b]."""
    batch, n, _ = probs.shape
    if len(generators) != batch:
        raise ValueError(f"{len(generators)} generators for a batch of {batch}")
    u = torch.stack([torch.rand(n, generator=g, dtype=torch.float64) for g in generators]).to(probs.device)
    cdf = probs.double().cumsum(dim=-1)
    idx = torch.searchsorted(cdf, (u * cdf[..., -1]).unsqueeze(-1)).squeeze(-1)
    return idx.clamp_(max=probs.shape[-1] - 1)


def sample_tokens(logits: torch.Tensor, generators: Sequence[torch.Generator], sampler: SamplerConfig) -> torch.Tensor:
    """Token ids (B, n) from logits (B, n, V) after temperature, top-k and top-p."""
    logits = logits / max(sampler.temperature, 1e-5)
    logits = filter_logits(logits, sampler.top_k, sampler.top_p)
    return draw(logits.softmax(dim=-1), generators)


def request_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per sample, seeded from its request (CPU so streams match on every device)."""
    return [torch.Generator().manual_seed(int(seed) % (2 ** 63)) for seed in seeds]
