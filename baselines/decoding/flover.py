"""Temporal fusion of requests (Flover: Yao et al. 2023, "Flover: A Temporal Fusion Framework for Efficient
Autoregressive Model Parallel Inference", arXiv 2305.13484).

Flover lets a request that arrives while others are being decoded join the running batch at the next
iteration instead of waiting for the batch to finish: its context is processed, it takes a free KV slot, and
from then on it advances in the same decoding steps as the older requests, each at its own position (Flover
"fuses" requests along time; Orca calls the same scheduling iteration-level). A finished request leaves at
once and frees its slot. Flover's other parts are engineering for its multi-GPU FasterTransformer backend
(memory shuffling of the KV cache, tensor parallelism) and are not a policy: on the slot engine of
`harness/protocols/decoding/serving.py` a slot is simply reused.

It is not a `DecodingStrategy`: it changes when a request is computed, not which tokens it gets (outputs
equal greedy decoding of each request alone; `tests/test_decoding_serving.py`). It is compared with
request-level batching by `benchmarks/serving_bench.py` on the same arrival trace.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.protocols.decoding.serving import ServingState


@dataclass
class TemporalFusion:
    """Admit waiting requests into free slots before every decoding step (Flover's temporal fusion)."""

    max_batch: int = 8
    name: str = "temporal-fusion (Flover)"

    def admissions(self, state: ServingState) -> int:
        return self.max_batch - len(state.active)
