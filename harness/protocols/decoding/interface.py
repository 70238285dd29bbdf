"""The autoregressive model interface that every decoding strategy drives.

A model is fed tokens in order and keeps a KV cache, so feeding `t` new tokens costs one forward
pass over `t` positions, whatever came before. Strategies only ever:

* `new_cache(batch, max_len)` -> an opaque cache;
* `forward(ids, cache)` -> logits for the `t` new positions (and the cache grows by `t`);
* `crop(cache, length)` -> forget positions >= length (rejected speculation);
* optionally `draft_logits(hidden)` (blockwise proposal heads) and `forward(..., exit_layer=e)`
  (intermediate-layer exits sharing the final norm and LM head);
* optionally `forward_tree(ids, cache, positions, mask)` + `keep(cache, start, indices)`: feed several
  branches in one pass (each new token at an explicit position, seeing the cached prefix and the new
  tokens its mask allows), then keep only the accepted branch's keys/values (lookahead decoding, Medusa);
* optionally `forward_ffn_gated(ids, cache, gate)`: a forward pass whose feed-forward blocks an
  `FFNGate` may skip per row (FFN skipping; attention and the KV cache are always computed);
* optionally `embed(ids)` and `hidden_logits(hidden)`: the input embedding and the map from `ModelOutput.hidden`
  to logits (feature-level drafts such as EAGLE reuse both).

A strategy that needs an optional capability checks it with `require_*` before doing anything, so a
model without it is refused up front with a message that says what is missing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from harness.errors import ArbenchError


@dataclass
class ModelOutput:
    """Logits (B, t, V) for the fed positions; `hidden` (B, t, D) is the last computed layer's output
    when asked for (the input of proposal heads)."""

    logits: torch.Tensor
    hidden: torch.Tensor | None = None


class FFNGate(Protocol):
    """Decides, layer by layer, which rows skip a feed-forward block (`forward_ffn_gated`)."""

    def skip(self, layer: int) -> torch.Tensor | None:
        """(B,) bool: rows whose FFN of `layer` (0-based) is skipped; None: no row skips."""

    def observe(self, layer: int, before: torch.Tensor, after: torch.Tensor) -> None:
        """The residual stream (B, t, D) before and after `layer`'s FFN block (equal for skipped rows)."""


class ARModel(ABC):
    """An autoregressive LM seen through a KV cache. Subclasses set the attributes below."""

    name: str = ""
    vocab_size: int = 0
    eos_id: int | None = None
    num_layers: int = 0
    #: Number of blockwise proposal heads (head j predicts the token j+1 positions after the next one).
    num_draft_heads: int = 0
    #: Layer counts after which `forward(exit_layer=...)` may exit (the full depth is always allowed).
    exit_layers: tuple[int, ...] = ()
    #: Identifies the token-to-id mapping (sha256 of it, or a name for a fixed one); None when unknown, in which
    #: case a draft is checked by vocabulary size and EOS id only.
    tokenizer_digest: str | None = None

    @abstractmethod
    def new_cache(self, batch: int, max_len: int) -> Any:
        """An empty cache for `batch` sequences of at most `max_len` positions."""

    @abstractmethod
    def forward(self, ids: torch.Tensor, cache: Any, *, exit_layer: int | None = None,
                want_hidden: bool = False) -> ModelOutput:
        """Feed `ids` (B, t) after the cached positions; returns their logits and extends the cache."""

    @abstractmethod
    def crop(self, cache: Any, length: int) -> None:
        """Drop every cached position >= `length`."""

    @abstractmethod
    def cache_length(self, cache: Any) -> int:
        """How many positions the cache holds (as seen by the first layer)."""

    #: True when `forward_tree` and `keep` are implemented.
    supports_tree: bool = False

    def forward_tree(self, ids: torch.Tensor, cache: Any, positions: torch.Tensor,
                     mask: torch.Tensor, want_hidden: bool = False) -> ModelOutput:
        """Feed `ids` (B, t) at absolute `positions` (t,): new token i sees every cached position and the
        new tokens j with `mask[i, j]` (t, t, bool, True on the diagonal). The cache grows by `t`.
        `want_hidden`: also the last layer's output (Medusa heads read it)."""
        raise ArbenchError(f"model {self.name!r} cannot feed tree-masked branches (forward_tree).")

    def keep(self, cache: Any, start: int, indices: list[list[int]]) -> None:
        """Keep cached positions < `start`, then for row b the new positions `start + i` for i in
        `indices[b]`, in order (every row keeps as many)."""
        raise ArbenchError(f"model {self.name!r} cannot compact its cache (keep).")

    #: True when `forward_ffn_gated` is implemented.
    supports_ffn_skip: bool = False

    def forward_ffn_gated(self, ids: torch.Tensor, cache: Any, gate: FFNGate) -> ModelOutput:
        """`forward`, with each layer's FFN block skipped for the rows `gate.skip(layer)` names (the
        residual stream passes unchanged); attention runs in every layer, so the KV cache stays complete."""
        raise ArbenchError(f"model {self.name!r} cannot skip feed-forward blocks (forward_ffn_gated).")

    #: True when `embed` and `hidden_logits` are implemented.
    supports_features: bool = False

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The input token embeddings (B, t, D) of `ids` (B, t)."""
        raise ArbenchError(f"model {self.name!r} does not expose its token embedding (embed).")

    def hidden_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits (..., V) from features shaped like `ModelOutput.hidden` (..., D): whatever the model applies
        after its last layer's output (a final norm where `hidden` precedes it, then the LM head)."""
        raise ArbenchError(f"model {self.name!r} does not expose its LM head (hidden_logits).")

    def draft_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Proposal-head logits (B, t, num_draft_heads, V) from `hidden` (B, t, D)."""
        raise ArbenchError(f"model {self.name!r} has no blockwise proposal heads.")

    def checkpoint_sha256(self) -> str | None:
        return None

    def describe(self) -> dict[str, Any]:
        """What identifies this model in a signature."""
        return {"name": self.name, "sha256": self.checkpoint_sha256(), "vocab": self.vocab_size}

    # -- capability checks (refuse up front) ----------------------------------------------------
    def require_draft_heads(self, k: int, strategy: str) -> None:
        if self.num_draft_heads < k:
            raise ArbenchError(
                f"{strategy} needs {k} blockwise proposal heads, but model {self.name!r} has "
                f"{self.num_draft_heads}. Use a model with trained heads (the bundled `tiny-kjv` target has them) "
                f"or lower the block size."
            )

    def require_exits(self, layers: list[int], strategy: str) -> None:
        allowed = set(self.exit_layers) | {self.num_layers}
        missing = sorted(set(layers) - allowed)
        if missing:
            raise ArbenchError(
                f"{strategy} exits after layers {missing}, but model {self.name!r} supports exits only after "
                f"{sorted(allowed) if self.exit_layers else 'its last layer (no intermediate exits)'}. "
                f"Choose exit layers among those, or use a model trained with intermediate exits."
            )

    def require_tree(self, strategy: str) -> None:
        if not self.supports_tree:
            raise ArbenchError(f"{strategy} feeds tree-masked branches in one pass, which model {self.name!r} "
                               f"({type(self).__name__}) does not implement (forward_tree/keep).")

    def require_features(self, strategy: str) -> None:
        if not self.supports_features:
            raise ArbenchError(f"{strategy} drafts at the feature level with the target's embedding and LM head, "
                               f"which model {self.name!r} ({type(self).__name__}) does not expose "
                               f"(embed/hidden_logits).")

    def require_ffn_skip(self, strategy: str) -> None:
        if not self.supports_ffn_skip:
            raise ArbenchError(f"{strategy} skips feed-forward blocks, which model {self.name!r} "
                               f"({type(self).__name__}) does not expose (forward_ffn_gated).")

    def require_compatible_draft(self, draft: "ARModel", strategy: str) -> None:
        if draft.vocab_size != self.vocab_size or draft.eos_id != self.eos_id:
            raise ArbenchError(
                f"{strategy}: draft model {draft.name!r} (vocab {draft.vocab_size}, eos {draft.eos_id}) does not "
                f"share the target's vocabulary (vocab {self.vocab_size}, eos {self.eos_id}); the draft must use "
                f"the same tokenizer."
            )
        # equal sizes are not enough (Llama-2 and Mistral both have 32,000 ids that mean different strings)
        if self.tokenizer_digest and draft.tokenizer_digest and self.tokenizer_digest != draft.tokenizer_digest:
            raise ArbenchError(
                f"{strategy}: draft model {draft.name!r} has as many token ids as the target {self.name!r} "
                f"({self.vocab_size}) but another tokenizer (its token-to-id mapping differs: digest "
                f"{draft.tokenizer_digest[:12]} vs {self.tokenizer_digest[:12]}); the draft must use the same tokenizer."
            )
