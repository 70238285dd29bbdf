"""What every strategy shares: stop rules, the result record, sampling warpers, and the batched
"lockstep" bookkeeping (all rows advance by the same number of tokens per step).

Stop rules (identical for every strategy): a row stops at its first EOS or after `max_new_tokens`;
anything a strategy produced after that is trimmed here, so tokens are counted once, from final ids.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from harness.errors import ArbenchError
from harness.timing import synchronize


@dataclass(frozen=True)
class SamplingConfig:
    """temperature 0 = greedy; otherwise softmax(logits / temperature) restricted by top-k and top-p."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def warp(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """The sampling distribution (probabilities, float32) over the last dimension."""
    logits = logits.float() / cfg.temperature
    if cfg.top_k > 0:
        kth = torch.topk(logits, min(cfg.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if cfg.top_p < 1.0:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass strictly above each token
        sorted_p = sorted_p.masked_fill(before >= cfg.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample(probs: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """One token per row of (B, V) probabilities, each row from its own generator.

    The generators live on the CPU and the draw is made there, so that a seed gives the same random stream on
    any device (a CUDA tensor cannot be sampled with a CPU generator).
    """
    rows = probs.detach().float().cpu()
    return torch.cat([torch.multinomial(p[None], 1, generator=g)[0] for p, g in zip(rows, generators)]).to(probs.device)


def row_generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


@dataclass
class GenerationResult:
    """New token ids per row (trimmed: at most one EOS, last), plus the work it took.

    `target_passes`: forward calls of the target model (the prefill included); `draft_passes`: calls
    of a draft model; `steps`: decoding steps after the prefill; `first_token_s`: seconds from the
    start of the call to the first token being known.
    """

    tokens: list[list[int]]
    target_passes: int
    draft_passes: int = 0
    steps: int = 0
    first_token_s: float = 0.0
    accepted: list[int] = field(default_factory=list)


class Lockstep:
    """Tracks a batch of sequences that all grow by the same amount per step (padding-free batching:
    prompts in a batch have equal length). A step that could accept different counts per row keeps
    the smallest, which for a lossless strategy only costs speed."""

    def __init__(self, prompt: torch.Tensor, max_new_tokens: int, eos_id: int | None, device: str):
        if prompt.dim() != 2 or prompt.shape[1] < 1:
            raise ArbenchError("prompts must be a (batch, length >= 1) tensor of token ids")
        self.prompt_len = prompt.shape[1]
        self.seq = prompt.clone()
        self.max_new, self.eos_id, self.device = max_new_tokens, eos_id, device
        self.start = time.perf_counter()
        self.first_token_s = 0.0
        self.target_passes = self.draft_passes = self.steps = 0
        self.accepted: list[int] = []

    @property
    def generated(self) -> int:
        return self.seq.shape[1] - self.prompt_len

    def append(self, new: torch.Tensor) -> None:
        """Add (B, n) tokens to every row."""
        if self.generated == 0:
            synchronize(self.device)
            self.first_token_s = time.perf_counter() - self.start
        else:
            self.steps += 1
            self.accepted.append(new.shape[1])
        self.seq = torch.cat([self.seq, new.to(self.seq.device)], dim=1)

    def done(self) -> bool:
        if self.generated >= self.max_new:
            return True
        if self.eos_id is None:
            return False
        return bool((self.seq[:, self.prompt_len:] == self.eos_id).any(dim=1).all())

    def result(self) -> GenerationResult:
        rows = []
        for row in self.seq[:, self.prompt_len:].tolist():
            row = row[:self.max_new]
            if self.eos_id is not None and self.eos_id in row:
                row = row[:row.index(self.eos_id) + 1]
            rows.append(row)
        return GenerationResult(rows, self.target_passes, self.draft_passes, self.steps, self.first_token_s,
                                self.accepted)


def validate_result(result: GenerationResult, batch: int, max_new_tokens: int, vocab_size: int,
                    eos_id: int | None, strategy: str) -> None:
    """Refuse a strategy's output that breaks the stop rules or the vocabulary."""
    if len(result.tokens) != batch:
        raise ArbenchError(f"{strategy} returned {len(result.tokens)} rows for a batch of {batch}.")
    for b, row in enumerate(result.tokens):
        if len(row) > max_new_tokens:
            raise ArbenchError(f"{strategy} produced {len(row)} tokens for row {b}, over the limit of "
                               f"{max_new_tokens} (max_new_tokens); it must stop at the limit.")
        bad = [t for t in row if not 0 <= t < vocab_size]
        if bad:
            raise ArbenchError(f"{strategy} produced ids {bad[:5]} outside the vocabulary [0, {vocab_size}) "
                               f"in row {b}.")
        if eos_id is not None:
            eos_count = row.count(eos_id)
            if eos_count > 1 or (eos_count == 1 and row[-1] != eos_id):
                raise ArbenchError(f"{strategy} produced {eos_count} EOS tokens in row {b} or tokens after EOS; "
                                   f"a row must end at its first EOS.")
