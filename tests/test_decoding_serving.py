"""Serving under an arrival process (harness/protocols/decoding/serving.py) and Flover's temporal fusion
(baselines/decoding/flover.py): the slot engine equals greedy decoding of each request alone, both policies
give every request the same tokens, and the schedules (who waits, when each finishes) are exact on an engine
whose costs are known."""

from __future__ import annotations

import pytest
import torch

from baselines.decoding.ar import ar_decode
from baselines.decoding.flover import TemporalFusion
from harness.errors import ArbenchError
from harness.protocols.decoding.bundled import BUNDLED_PROMPTS, load_model, read_prompts
from harness.protocols.decoding.serving import (Clock, RequestBatching, ServingRequest, SlotEngine, poisson_arrivals,
                                                serve, summarize)
from test_decoding_strategies import random_gpt

torch.set_num_threads(1)


def trace(prompts, lengths, arrivals):
    return [ServingRequest(str(i), a, tuple(p), n) for i, (p, n, a) in enumerate(zip(prompts, lengths, arrivals))]


@pytest.mark.parametrize("policy", [RequestBatching(max_batch=3), TemporalFusion(max_batch=3)])
def test_every_request_gets_its_greedy_tokens_under_either_policy(policy):
    target = random_gpt(0, vocab_size=12)
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 12, (int(n),), generator=gen).tolist() for n in (5, 9, 7, 12, 6)]
    lengths = [20, 6, 14, 9, 17]
    requests = trace(prompts, lengths, poisson_arrivals(5, rate=200.0, seed=1))
    served = serve(policy, SlotEngine(target, 3, 64), requests, Clock())
    for s in served:
        ref = ar_decode(target, torch.tensor([list(s.request.prompt)]), s.request.max_new_tokens).tokens[0]
        assert s.tokens == ref, s.request.id
        assert s.request.arrival <= s.first_token_at <= s.finished_at


def test_bundled_model_slots_equal_greedy():
    target = load_model("tiny-kjv-target")
    rows = read_prompts(BUNDLED_PROMPTS)[::6][:4]
    requests = trace([r["ids"] for r in rows], [24, 8, 16, 12], [0.0, 0.0, 0.001, 0.002])
    for s in serve(TemporalFusion(max_batch=4), SlotEngine(target, 4, 128), requests, Clock()):
        assert s.tokens == ar_decode(target, torch.tensor([list(s.request.prompt)]), 24).tokens[0][:len(s.tokens)]


class FakeEngine:
    """Known costs: a prefill costs 1 s, a decoding step 1 s whatever the batch; tokens are 1, 2, 3, ..."""

    eos_id = None

    def __init__(self, clock_box):
        self.box = clock_box

    def prefill(self, slot, ids):
        self.box[0] += 1.0
        return 1

    def step(self, slots, tokens):
        self.box[0] += 1.0
        return [t + 1 for t in tokens]


def test_schedules_on_known_costs():
    """A (10 tokens) arrives at 0, B (2 tokens) at 1.5. Request batching: B waits for A's whole batch (A done
    at 10, B prefilled 10-11, done 12). Temporal fusion: B joins at the step after its arrival (prefill 2-3, one
    shared step 3-4: B done at 4) and A is delayed by B's prefill (done at 11)."""
    def run(policy):
        box = [0.0]
        requests = trace([[5], [6]], [10, 2], [0.0, 1.5])
        served = serve(policy, FakeEngine(box), requests, Clock(timer=lambda: box[0]))
        return {s.request.id: (s.first_token_at, s.finished_at, s.tokens) for s in served}

    static = run(RequestBatching(max_batch=2))
    fused = run(TemporalFusion(max_batch=2))
    assert static == {"0": (1.0, 10.0, list(range(1, 11))), "1": (11.0, 12.0, [1, 2])}
    assert fused == {"0": (1.0, 11.0, list(range(1, 11))), "1": (3.0, 4.0, [1, 2])}


def test_idle_engine_jumps_to_the_next_arrival_and_summary():
    box = [0.0]
    requests = trace([[5], [6]], [2, 2], [0.0, 100.0])
    clock = Clock(timer=lambda: box[0])
    served = serve(TemporalFusion(max_batch=2), FakeEngine(box), requests, clock)
    assert [(s.first_token_at, s.finished_at) for s in served] == [(1.0, 2.0), (101.0, 102.0)]
    stats = summarize(served, clock)
    assert stats["latency_mean_s"] == 2.0 and stats["busy_fraction"] == pytest.approx(4 / 102)
    assert stats["tokens_per_s"] == pytest.approx(4 / 102)


def test_bad_inputs_are_refused():
    with pytest.raises(ArbenchError, match="rate > 0"):
        poisson_arrivals(3, 0.0, 0)
    with pytest.raises(ArbenchError, match="does not fit"):
        SlotEngine(random_gpt(0, vocab_size=12), 1, 4).prefill(0, [1, 2, 3, 4])
    from test_decoding_strategies import BigramModel

    with pytest.raises(ArbenchError, match="project's GPT"):
        SlotEngine(BigramModel(torch.zeros(4, 4)), 1, 8)
