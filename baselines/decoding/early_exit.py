"""Early exit with a monotone per-position schedule (after SkipDecode: Del Corro et al. 2023,
"SkipDecode: Autoregressive Skip Decoding with Batching and Caching for Efficient LLM Inference").

Every row of a batch exits at the same depth for a given position, and the depth never increases
along the sequence: a later token only attends, in the layers it runs, to earlier positions that ran
those layers too, so the KV cache stays valid with no recomputation. The depth falls linearly from
`max_layers` (after `full_depth_tokens` tokens) to `min_layers` at generated token `decay_tokens`,
snapped down to the model's exit layers. SkipDecode skips lower layers; this reads out from
intermediate exits instead (the bundled model is trained with exit losses), which keeps the same
monotone-schedule property. Lossy: its quality is reported separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from baselines.decoding.ar import greedy_with_steps
from harness.protocols.decoding.generation import GenerationResult
from harness.protocols.decoding.interface import ARModel
from harness.protocols.decoding.strategy import LossyStrategy, Models
from harness.errors import ArbenchError
from harness.registry import register_method
from harness.settings import NonNegativeInt, PositiveInt


@dataclass
class EarlyExitConfig:
    max_layers: PositiveInt = 8
    min_layers: PositiveInt = 4
    full_depth_tokens: NonNegativeInt = 4
    decay_tokens: NonNegativeInt = 64

    def __post_init__(self):
        if (not 1 <= self.min_layers <= self.max_layers or self.full_depth_tokens < 0
                or self.decay_tokens < self.full_depth_tokens):
            raise ValueError(f"need 1 <= min_layers <= max_layers and 0 <= full_depth_tokens <= decay_tokens: {self}")


def exit_schedule(config: EarlyExitConfig, allowed: Sequence[int], length: int) -> list[int]:
    """Depth for generated tokens 1..length-1 (token 0 comes from the full-depth prefill)."""
    allowed = sorted(allowed)
    depths = []
    for i in range(length):
        if i < config.full_depth_tokens:
            target = config.max_layers
        else:
            frac = min(1.0, (i - config.full_depth_tokens) / max(1, config.decay_tokens - config.full_depth_tokens))
            target = config.max_layers - frac * (config.max_layers - config.min_layers)
        below = [a for a in allowed if a <= target + 1e-9]
        if not below:
            raise ArbenchError(f"no exit layer at or below depth {target}; exits are {allowed}.")
        depths.append(below[-1])
    return depths


def early_exit_decode(model: ARModel, prompt: torch.Tensor, max_new_tokens: int, config: EarlyExitConfig,
                      device: str = "cpu") -> GenerationResult:
    allowed = sorted(set(model.exit_layers) | {model.num_layers})
    depths = exit_schedule(config, allowed, max_new_tokens)
    return greedy_with_steps(model, prompt, max_new_tokens, device, lambda token, cache, state: model.forward(
        token, cache, exit_layer=depths[state.generated]).logits)


@register_method("early-exit")
class EarlyExitDecoding(LossyStrategy):
    description = "early exit with a monotone per-position depth schedule that keeps the KV cache valid (lossy)"
    paper = "Del Corro et al. 2023, SkipDecode (arXiv 2307.02628)"
    Config = EarlyExitConfig

    def check(self, models: Models) -> None:
        super().check(models)
        target = models.target
        if not target.exit_layers:
            raise ArbenchError(f"{self.name} needs a model with intermediate-layer exits; {target.name!r} has none "
                               f"(the bundled tiny-kjv-target has exits after layers 2, 4 and 6).")
        if self.config.max_layers > target.num_layers:
            raise ArbenchError(f"max_layers={self.config.max_layers} exceeds the model's {target.num_layers} layers.")
        target.require_exits([self.config.min_layers], self.name)

    def decode(self, models: Models, prompt, max_new_tokens, seeds: Sequence[int]) -> GenerationResult:
        return early_exit_decode(models.target, prompt, max_new_tokens, self.config, self.device)
