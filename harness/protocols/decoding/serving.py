"""Serving under an arrival process: requests arrive over time and a batching policy decides when each joins
the batch (`benchmarks/serving_bench.py`; docs/decoding.md, "Serving").

The engine (`SlotEngine`) keeps one KV-cache slot per in-flight request of the project's GPT, each slot at its
own length, so one decoding step can advance requests that started at different times (each at its own
position: its own rotary angles and its own attention span). A policy only decides which waiting requests
enter which step; the engine, the model and the greedy outputs are the same for every policy, so a
comparison measures the policy alone.

The clock is simulated where nothing runs and real where something does: arrivals are timestamps of a
(seeded) process, every prefill and decoding step advances the clock by its measured wall time, and an idle
engine jumps to the next arrival. Latency = completion time - arrival time; time to first token likewise.

`RequestBatching` is the baseline every serving system starts from (FasterTransformer's static batching,
"request-level scheduling" in Orca): when the engine is idle it takes up to `max_batch` waiting requests and
decodes them until the last one finishes; requests arriving meanwhile wait. It is credited generously: a
request counts as done at its own last token, not when its batch returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import ArbenchError
from harness.protocols.decoding.gpt import GPTModel, apply_rope, rope_tables


# -- the engine --------------------------------------------------------------------------------------
class SlotEngine:
    """Greedy decoding of the project's GPT with one KV slot per request, each slot at its own length."""

    def __init__(self, model: GPTModel, slots: int, max_len: int):
        if not isinstance(model, GPTModel):
            raise ArbenchError(f"the serving engine runs the project's GPT (GPTModel), not {type(model).__name__}.")
        self.model, self.net, self.max_len = model, model.net, max_len
        self.cache = model.new_cache(slots, max_len)
        self.lengths = [0] * slots
        self.eos_id = model.eos_id

    @torch.inference_mode()
    def prefill(self, slot: int, ids: Sequence[int]) -> int:
        """Feed a prompt into an empty slot; returns its first greedy token."""
        net, c, t = self.net, self.net.config, len(ids)
        if t + 1 > self.max_len:
            raise ArbenchError(f"a prompt of {t} tokens does not fit a slot of {self.max_len} positions.")
        device = self.model.device
        cos, sin = rope_tables(c.head_dim, torch.arange(t, device=device), c.rope_base)
        x = net.tok_emb(torch.tensor([list(ids)], device=device))
        for layer, block in enumerate(net.blocks):
            keys = self.cache.keys[layer][slot:slot + 1]  # views into the slot
            values = self.cache.values[layer][slot:slot + 1]
            x = block(x, cos, sin, (keys, values, 0))
        self.lengths[slot] = t
        return int(net.logits(x[:, -1]).argmax(-1))

    @torch.inference_mode()
    def step(self, slots: Sequence[int], tokens: Sequence[int]) -> list[int]:
        """Feed one token to each slot (at that slot's own position); returns each slot's next greedy token."""
        net, c = self.net, self.net.config
        device = self.model.device
        idx = torch.tensor(list(slots), device=device)
        pos = torch.tensor([self.lengths[s] for s in slots], device=device)
        if int(pos.max()) + 1 > self.max_len:
            raise ArbenchError(f"a slot is full ({self.max_len} positions); give the engine longer slots.")
        span = int(pos.max()) + 1
        cos, sin = rope_tables(c.head_dim, pos, c.rope_base)
        cos, sin = cos[:, None, None, :], sin[:, None, None, :]
        visible = (torch.arange(span, device=device)[None, :] <= pos[:, None])[:, None, None, :]  # (n, 1, 1, span)
        x = net.tok_emb(torch.tensor(list(tokens), device=device))[:, None, :]
        n, h, hd = len(slots), c.n_heads, c.head_dim
        for layer, block in enumerate(net.blocks):
            attn = block.attn
            q, k, v = attn.qkv(block.ln1(x)).view(n, 1, 3, h, hd).permute(2, 0, 3, 1, 4)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            keys, values = self.cache.keys[layer], self.cache.values[layer]
            keys[idx, :, pos] = k[:, :, 0]
            values[idx, :, pos] = v[:, :, 0]
            out = F.scaled_dot_product_attention(q, keys[idx, :, :span], values[idx, :, :span], attn_mask=visible)
            x = x + attn.proj(out.transpose(1, 2).reshape(n, 1, c.d_model))
            x = x + block.mlp(block.ln2(x))
        for s in slots:
            self.lengths[s] += 1
        return net.logits(x[:, -1]).argmax(-1).tolist()


# -- requests and the simulated clock ---------------------------------------------------------------
@dataclass(frozen=True)
class ServingRequest:
    id: str
    arrival: float  # seconds from the start of the trace
    prompt: tuple[int, ...]
    max_new_tokens: int


@dataclass
class Served:
    request: ServingRequest
    tokens: list[int] = field(default_factory=list)
    first_token_at: float = 0.0
    finished_at: float = 0.0

    @property
    def latency(self) -> float:
        return self.finished_at - self.request.arrival

    @property
    def ttft(self) -> float:
        return self.first_token_at - self.request.arrival

    def done(self, eos_id: int | None) -> bool:
        return len(self.tokens) >= self.request.max_new_tokens or (eos_id is not None and bool(self.tokens)
                                                                   and self.tokens[-1] == eos_id)


def poisson_arrivals(n: int, rate: float, seed: int) -> list[float]:
    """n arrival times of a Poisson process with `rate` requests per second (exponential gaps), seeded."""
    if rate <= 0 or n < 1:
        raise ArbenchError("an arrival process needs n >= 1 requests and a rate > 0 per second.")
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=n)
    return np.cumsum(gaps).tolist()


class Clock:
    """Simulated time that advances by measured wall time while the engine works (`timer`: a monotonic clock
    in seconds; tests give one whose readings they control)."""

    def __init__(self, timer=time.perf_counter):
        self.now = 0.0
        self.busy = 0.0
        self.timer = timer

    def run(self, fn, *args):
        start = self.timer()
        out = fn(*args)
        spent = self.timer() - start
        self.now += spent
        self.busy += spent
        return out


class Policy(Protocol):
    """A batching policy: before every decoding step, how many waiting requests may join the batch."""

    name: str
    max_batch: int

    def admissions(self, state: "ServingState") -> int:
        """How many waiting requests to prefill into free slots now (oldest first)."""


def serve(policy: Policy, engine: SlotEngine, requests: Sequence[ServingRequest], clock: Clock) -> list[Served]:
    """Serve every request under `policy`: arrivals join the queue, the policy admits, one step decodes every
    active request; returns the requests (in arrival order) with their tokens and times."""
    state = ServingState(engine, sorted(requests, key=lambda r: r.arrival), clock, policy.max_batch)
    while not state.all_done():
        state.arrive()
        state.idle_until_next()
        state.admit(policy.admissions(state))
        if state.active:
            state.decode_step()
    return sorted(state.finished, key=lambda s: s.request.arrival)


@dataclass
class ServingState:
    """What every policy tracks: the queue, the active slots, and the finished requests."""

    engine: SlotEngine
    requests: list[ServingRequest]
    clock: Clock
    max_batch: int
    waiting: list[Served] = field(default_factory=list)
    active: dict[int, Served] = field(default_factory=dict)  # slot -> request
    finished: list[Served] = field(default_factory=list)
    next_arrival: int = 0

    def arrive(self) -> None:
        """Move every request that has arrived by now into the queue."""
        while self.next_arrival < len(self.requests) and self.requests[self.next_arrival].arrival <= self.clock.now:
            self.waiting.append(Served(self.requests[self.next_arrival]))
            self.next_arrival += 1

    def idle_until_next(self) -> None:
        if not self.waiting and not self.active and self.next_arrival < len(self.requests):
            self.clock.now = max(self.clock.now, self.requests[self.next_arrival].arrival)
            self.arrive()

    def all_done(self) -> bool:
        return self.next_arrival == len(self.requests) and not self.waiting and not self.active

    def admit(self, count: int) -> None:
        """Prefill up to `count` waiting requests into free slots, oldest first."""
        free = [s for s in range(self.max_batch) if s not in self.active]
        for slot in free[:count]:
            if not self.waiting:
                break
            served = self.waiting.pop(0)
            token = self.clock.run(self.engine.prefill, slot, served.request.prompt)
            served.tokens.append(token)
            served.first_token_at = self.clock.now
            self._settle(slot, served)

    def decode_step(self) -> None:
        slots = sorted(self.active)
        nxt = self.clock.run(self.engine.step, slots, [self.active[s].tokens[-1] for s in slots])
        for slot, token in zip(slots, nxt):
            served = self.active.pop(slot)
            served.tokens.append(token)
            self._settle(slot, served)

    def _settle(self, slot: int, served: Served) -> None:
        if served.done(self.engine.eos_id):
            served.finished_at = self.clock.now
            self.finished.append(served)
        else:
            self.active[slot] = served


@dataclass
class RequestBatching:
    """Static (request-level) batching: a new batch starts only when the engine is idle."""

    max_batch: int = 8
    name: str = "request-batching"

    def admissions(self, state: ServingState) -> int:
        return 0 if state.active else self.max_batch


def summarize(served: Sequence[Served], clock: Clock) -> dict[str, float]:
    """Latency and time-to-first-token percentiles (seconds), throughput over the makespan, busy fraction."""
    latency = np.array([s.latency for s in served])
    ttft = np.array([s.ttft for s in served])
    tokens = sum(len(s.tokens) for s in served)
    makespan = max(s.finished_at for s in served) - min(s.request.arrival for s in served)
    return {"latency_mean_s": float(latency.mean()), "latency_p50_s": float(np.percentile(latency, 50)),
            "latency_p90_s": float(np.percentile(latency, 90)), "ttft_mean_s": float(ttft.mean()),
            "ttft_p90_s": float(np.percentile(ttft, 90)), "tokens_per_s": tokens / makespan,
            "busy_fraction": clock.busy / clock.now if clock.now else 0.0, "requests": float(len(served))}
