"""Blockwise parallel decoding (Stern, Shazeer & Uszkoreit 2018, "Blockwise Parallel Decoding for Deep
Autoregressive Models").

The base model p_1 predicts the next token and k-1 proposal heads guess the k-1 tokens after it.
One forward pass feeds the pending token and the proposals: it verifies them (keep the longest
prefix where each proposal is p_1's argmax given the tokens before it) and, at the last accepted
position, yields the next base prediction and the next proposals. Exact mode is greedy AR's output
by construction; top-k mode accepts a proposal that is within p_1's top-k (lossy, faster).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from harness.protocols.decoding.generation import GenerationResult, Lockstep
from harness.protocols.decoding.interface import ARModel
from harness.protocols.decoding.strategy import DecodingStrategy, Models
from harness.registry import register_method
from harness.settings import Annotated, Field, PositiveInt


def blockwise_decode(model: ARModel, prompt: torch.Tensor, max_new_tokens: int, block: int, top_k: int = 1,
                     device: str = "cpu") -> GenerationResult:
    """`block` = k in the paper (base prediction + k-1 head proposals); `top_k` = 1 is the exact mode."""
    batch, prompt_len = prompt.shape
    state = Lockstep(prompt, max_new_tokens, model.eos_id, device)
    cache = model.new_cache(batch, prompt_len + max_new_tokens + block)
    out = model.forward(prompt.to(device), cache, want_hidden=True)
    state.target_passes += 1
    state.append(out.logits[:, -1].argmax(-1)[:, None])
    proposals = model.draft_logits(out.hidden[:, -1:])[:, 0, :block - 1].argmax(-1)  # (B, block-1)
    while not state.done():
        fed = model.cache_length(cache)
        n_prop = max(0, min(block - 1, max_new_tokens - state.generated - 1))
        guess = proposals[:, :n_prop]
        out = model.forward(torch.cat([state.seq[:, fed:], guess], 1), cache, want_hidden=True)
        state.target_passes += 1
        if top_k <= 1:
            ok = guess == out.logits[:, :n_prop].argmax(-1)
        else:
            top = torch.topk(out.logits[:, :n_prop], top_k, dim=-1).indices
            ok = (top == guess[..., None]).any(-1)
        n = int(ok.int().cumprod(1).sum(1).min())
        base = out.logits[:, n].argmax(-1)
        model.crop(cache, fed + 1 + n)
        state.append(torch.cat([guess[:, :n], base[:, None]], 1))
        proposals = model.draft_logits(out.hidden[:, n:n + 1])[:, 0, :block - 1].argmax(-1)
    return state.result()


@dataclass
class BlockwiseConfig:
    block: Annotated[int, Field(ge=2, le=1024)] = 4
    top_k: PositiveInt = 1


@register_method("blockwise")
class BlockwiseParallelDecoding(DecodingStrategy):
    description = "blockwise parallel decoding: k-1 proposal heads, verify in one pass (top_k=1 exact, >1 approximate)"
    paper = "Stern, Shazeer & Uszkoreit, NeurIPS 2018 (arXiv 1811.03115)"
    Config = BlockwiseConfig

    @property
    def lossless(self) -> bool:
        return self.config.top_k == 1

    def check(self, models: Models) -> None:
        super().check(models)
        models.target.require_draft_heads(self.config.block - 1, self.name)

    def decode(self, models: Models, prompt, max_new_tokens, seeds: Sequence[int]) -> GenerationResult:
        return blockwise_decode(models.target, prompt, max_new_tokens, self.config.block, self.config.top_k,
                                self.device)
