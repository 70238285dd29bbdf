"""FFN skipping after FFN-SkipLLM (Jaiswal et al., EMNLP 2024, "FFN-SkipLLM: A Hidden Gem for
Autoregressive Decoding with Adaptive Feed Forward Skipping"). Training-free and lossy.

Only feed-forward blocks are skipped; attention runs in every layer, so the KV cache is complete
and no state is copied (the paper's argument against layer skipping and early exit). For every
decoded token, layer by layer: the cosine similarity between the residual stream entering and
leaving an FFN block measures how much the block changes the token's representation; once it
reaches `threshold` in the skippable region, the token is "saturated" and the following FFN blocks
of that region are skipped greedily, at most `max_skip` per token. The first `cold_first` and last
`cold_last` layers (the paper's cold regions, which change representations most) are never skipped,
and the first `warmup_tokens` generated tokens run the full model (the paper's warm-up, so that the
early KV cache -- the attention sink -- is built by the full network).

The paper gives no reference code; its thresholds and the skip budget are calibrated per model
(it reports ~25-30% of FFN blocks skipped with a marginal change, degrading at >= 35%), so they are
settings here. Decisions are per row, from the row's own activations: a row's output does not depend
on its batch (rows that skip get a zero FFN update; the FFN is not run when every row skips).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Sequence

import torch
from pydantic import Field
import torch.nn.functional as F

from baselines.decoding.ar import greedy_with_steps
from harness.protocols.decoding.generation import GenerationResult
from harness.protocols.decoding.interface import ARModel
from harness.protocols.decoding.strategy import LossyStrategy, Models
from harness.errors import ArbenchError
from harness.registry import register_method
from harness.settings import NonNegativeInt


@dataclass
class FFNSkipConfig:
    threshold: Annotated[float, Field(ge=-1, le=1, description="cosine similarity")] = 0.95
    max_skip: NonNegativeInt = 2
    cold_first: NonNegativeInt = 2
    cold_last: NonNegativeInt = 1
    warmup_tokens: NonNegativeInt = 4


class SaturationGate:
    """The per-token skipping rule, one state per row (an `FFNGate`). Counts executed and skipped blocks."""

    def __init__(self, config: FFNSkipConfig, num_layers: int, batch: int):
        self.config, self.batch = config, batch
        self.region = range(config.cold_first, num_layers - config.cold_last)
        self.skipped_blocks = self.total_blocks = 0
        self.reset()

    def reset(self) -> None:
        """A new token: no row is saturated yet."""
        self.saturated = torch.zeros(self.batch, dtype=torch.bool)
        self.skipped = torch.zeros(self.batch, dtype=torch.long)
        self.current: torch.Tensor | None = None

    def skip(self, layer: int) -> torch.Tensor | None:
        self.total_blocks += self.batch
        if layer not in self.region:
            self.current = None
            return None
        self.current = self.saturated & (self.skipped < self.config.max_skip)
        self.skipped += self.current.long()
        self.skipped_blocks += int(self.current.sum())
        return self.current

    def observe(self, layer: int, before: torch.Tensor, after: torch.Tensor) -> None:
        if layer not in self.region:
            return
        cos = F.cosine_similarity(before[:, -1].float(), after[:, -1].float(), dim=-1).cpu()
        ran = torch.ones_like(self.saturated) if self.current is None else ~self.current
        self.saturated |= ran & (cos >= self.config.threshold)


def ffn_skip_decode(model: ARModel, prompt: torch.Tensor, max_new_tokens: int, config: FFNSkipConfig,
                    device: str = "cpu") -> tuple[GenerationResult, SaturationGate]:
    gate = SaturationGate(config, model.num_layers, prompt.shape[0])

    def step(token, cache, state):
        if state.generated < config.warmup_tokens:
            return model.forward(token, cache).logits
        gate.reset()
        return model.forward_ffn_gated(token, cache, gate).logits

    return greedy_with_steps(model, prompt, max_new_tokens, device, step), gate


@register_method("ffn-skip")
class FFNSkipDecoding(LossyStrategy):
    description = ("FFN-SkipLLM-style FFN skipping: skip feed-forward blocks once a token's representation "
                   "saturates (cosine similarity), attention and KV cache intact (training-free, lossy)")
    paper = "Jaiswal et al., EMNLP 2024, FFN-SkipLLM (arXiv 2404.03865)"
    Config = FFNSkipConfig

    def check(self, models: Models) -> None:
        super().check(models)
        target = models.target
        target.require_ffn_skip(self.name)
        if self.config.cold_first + self.config.cold_last >= target.num_layers:
            raise ArbenchError(f"{self.name}: cold_first + cold_last = "
                               f"{self.config.cold_first + self.config.cold_last} leaves no skippable layer of "
                               f"{target.num_layers}; lower them.")

    def decode(self, models: Models, prompt, max_new_tokens, seeds: Sequence[int]) -> GenerationResult:
        return ffn_skip_decode(models.target, prompt, max_new_tokens, self.config, self.device)[0]
