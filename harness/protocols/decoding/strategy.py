"""The base of every decoding strategy: a registered `Method` that decodes with bound models.

The `decoding-speedup` tasks bind the models (`bind(Models(target, draft))`), then time
`decode(...)` against the AR baseline. `generate(requests)` is the plain-method view of the same
thing (requests carry `prompt_ids` and `max_new_tokens`), for use outside the timing task.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from harness.protocols.decoding.generation import GenerationResult, SamplingConfig
from harness.protocols.decoding.interface import ARModel
from harness.api import Method, Request
from harness.errors import ArbenchError

MODALITY = "decoding"


@dataclass
class Models:
    """The target model a strategy must reproduce (or approximate) and an optional draft model."""

    target: ARModel
    draft: ARModel | None = None


class DecodingStrategy(Method):
    """A decoding strategy. Subclasses give `paper`, `decode`, and say whether they are lossless."""

    modality = MODALITY
    family = "decoding-strategy"
    paper: ClassVar[str] = ""
    needs_draft: ClassVar[bool] = False
    #: True when the strategy decodes a model of its own (`own_models`) instead of the task's target and draft
    #: (sigma-GPT needs a model trained in shuffled order): the task then times it against AR decoding of that
    #: same model on the same prompts and hardware (a self-speedup), and checks exactness against that model.
    brings_models: ClassVar[bool] = False

    def __init__(self, config: Any = None, device: str = "cpu"):
        super().__init__(config, device)
        self.models: Models | None = None

    @property
    @abstractmethod
    def lossless(self) -> bool:
        """True when the output must equal greedy AR decoding (or, sampling, follow the target distribution)."""

    @property
    def greedy(self) -> bool:
        """True when the strategy's output is deterministic and comparable token by token with greedy AR."""
        return True

    def own_models(self) -> Models:
        """The models a strategy with `brings_models` decodes (loaded on `self.device`)."""
        raise ArbenchError(f"{self.name} decodes the task's models; it brings none of its own.")

    def check(self, models: Models) -> None:
        """Refuse, before any work, models that lack what this strategy needs."""
        if self.needs_draft:
            if models.draft is None:
                raise ArbenchError(f"{self.name} needs a draft model; give one with draft_model=<path or name>.")
            models.target.require_compatible_draft(models.draft, self.name)

    def bind(self, models: Models) -> "DecodingStrategy":
        self.check(models)
        self.models = models
        return self

    def describe(self) -> dict[str, Any]:
        """Everything about this strategy that goes into a signature (hyperparameters and draft model)."""
        info: dict[str, Any] = {"strategy": self.name, **self.settings()}
        if self.needs_draft and self.models is not None and self.models.draft is not None:
            info["draft"] = self.models.draft.describe()
        return info

    @abstractmethod
    def decode(self, models: Models, prompt: torch.Tensor, max_new_tokens: int,
               seeds: Sequence[int]) -> GenerationResult:
        """New tokens for a (batch, length) prompt tensor of equal-length prompts."""

    def generate(self, requests: Sequence[Request]) -> list[list[int]]:
        if self.models is None:
            raise ArbenchError(f"{self.name}: bind models first (the decoding-speedup tasks do this).")
        out = []
        for r in requests:  # prompts differ in length; padding-free batching needs equal lengths
            prompt = torch.tensor([r.condition["prompt_ids"]], dtype=torch.long)
            out.extend(self.decode(self.models, prompt, int(r.condition["max_new_tokens"]), [r.seed]).tokens)
        return out


class SampledStrategy(DecodingStrategy):
    """A lossless strategy that decodes greedily or samples (config fields temperature, top_k, top_p):
    greedy output equals greedy AR decoding, sampled output follows the target distribution."""

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.config.temperature, self.config.top_k, self.config.top_p)

    @property
    def lossless(self) -> bool:
        return True

    @property
    def greedy(self) -> bool:
        return self.sampling.greedy


class LossyStrategy(DecodingStrategy):
    """A greedy strategy that trades quality for speed: the task reports its quality beside its speed."""

    @property
    def lossless(self) -> bool:
        return False
