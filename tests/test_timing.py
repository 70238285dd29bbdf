"""The timing harness on fake workloads whose costs are known."""

from __future__ import annotations

import time
import types

import numpy as np
import pytest

from harness import timing
from harness.provenance import hardware_fingerprint
from harness.timing import TimingConfig, compare


class FakeClock:
    """A clock that only moves when a fake workload 'spends' time: exact, drift under our control."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=fake.perf_counter))
    return fake


def test_known_speedup_with_drift_and_cold_start(clock):
    """A costs 2 units x item size, B 1 unit; the machine slows down steadily (drift) and the first
    call of each is 50x slower (cold start). Interleaving + warm-up recover exactly 2.0."""
    calls = {"n": 0}
    cold = {"a": True, "b": True}

    def workload(name, unit):
        def run(size):
            drift = 1.0 + 0.01 * calls["n"]
            calls["n"] += 1
            cost = unit * size * drift * (50.0 if cold[name] else 1.0)
            cold[name] = False
            clock.now += cost
            return size * 10
        return run

    items = [1, 2, 3, 4, 5, 6]
    result = compare({"a": workload("a", 2e-3), "b": workload("b", 1e-3)}, items,
                     TimingConfig(warmup=1, rounds=4, bootstrap=500), device="cpu")
    s = result.speedup("b", baseline="a")
    # Drift between the two calls of a pair is one step (1%), and the rotation alternates who goes first.
    assert s.value == pytest.approx(2.0, rel=0.01)
    assert s.ci_low <= s.value <= s.ci_high
    assert s.ci_high - s.ci_low < 0.05
    assert result.times["a"].shape == (4, 6)
    assert result.outputs["b"] == [10, 20, 30, 40, 50, 60]
    # Warm-up excluded: no kept time carries the 50x cold-start cost.
    assert result.times["a"].max() < 2e-3 * 6 * 1.6
    # Interleaved: consecutive calls alternate between the two callables.
    names = [name for _, _, name in result.order]
    assert all(x != y for x, y in zip(names[0::2], names[1::2]))
    assert names[:4] == ["a", "b", "b", "a"]


def test_sequential_timing_would_be_biased(clock):
    """The reason for interleaving: timed back to back (A then B) under drift, the ratio is off."""
    calls = {"n": 0}

    def make(unit):
        def run(_):
            calls["n"] += 1
            clock.now += unit * (1.0 + 0.05 * calls["n"])
        return run

    a, b = make(2e-3), make(1e-3)
    seq_a = compare({"a": a}, list(range(10)), TimingConfig(warmup=0, rounds=1))
    seq_b = compare({"b": b}, list(range(10)), TimingConfig(warmup=0, rounds=1))
    sequential = seq_a.total("a") / seq_b.total("b")
    calls["n"] = 0
    inter = compare({"a": a, "b": b}, list(range(10)), TimingConfig(warmup=0, rounds=1)).speedup("b", "a")
    assert abs(sequential - 2.0) > 0.3
    assert inter.value == pytest.approx(2.0, rel=0.03)


def test_per_group_speedup_and_latency(clock):
    def make(cost_of):
        def run(item):
            clock.now += cost_of(item)
        return run

    items = [("fast", 1), ("fast", 2), ("slow", 1), ("slow", 2)]
    base = make(lambda it: it[1] * 1e-3)
    cand = make(lambda it: it[1] * 1e-3 / (4.0 if it[0] == "fast" else 1.25))
    result = compare({"base": base, "cand": cand}, items, TimingConfig(warmup=0, rounds=3, bootstrap=200))
    groups = result.speedup_by_group("cand", "base", [g for g, _ in items])
    assert groups["fast"].value == pytest.approx(4.0)
    assert groups["slow"].value == pytest.approx(1.25)
    lat = result.latency("base")
    assert lat["p50"] == pytest.approx(1.5e-3)
    assert lat["p90"] == pytest.approx(2e-3)


def test_bootstrap_is_seeded_and_ci_covers_noise():
    rng = np.random.default_rng(1)
    base = rng.lognormal(0, 0.3, size=(3, 40)) * 2.0
    cand = base / 2.0 * rng.lognormal(0, 0.05, size=(3, 40))
    result = timing.TimingResult(["base", "cand"], {"base": base, "cand": cand}, {}, TimingConfig(bootstrap=1000),
                                 "cpu-test")
    s1, s2 = result.speedup("cand", "base"), result.speedup("cand", "base")
    assert s1 == s2
    assert s1.ci_low < 2.0 < s1.ci_high
    assert s1.ci_high - s1.ci_low < 0.2


def test_real_clock_sleep_workload():
    """On the real clock (no fakes): 30 ms vs 10 ms of sleep gives about 3x, with the machine's fingerprint
    (sleeps long enough that a late wake-up on a busy machine does not move the ratio much)."""
    result = compare({"slow": lambda _: time.sleep(0.03), "fast": lambda _: time.sleep(0.01)}, [0, 1, 2],
                     TimingConfig(warmup=1, rounds=3, bootstrap=200))
    assert result.speedup("fast", "slow").value == pytest.approx(3.0, rel=0.25)
    assert result.hardware == hardware_fingerprint("cpu")


def test_config_validation():
    with pytest.raises(ValueError):
        TimingConfig(rounds=0)
    with pytest.raises(ValueError):
        compare({}, [1])


def test_cuda_calls_keep_event_times_and_peak_memory_per_callable(clock, monkeypatch):
    """On a CUDA device each call is bracketed by CUDA events and the allocator's peak is reset before it.
    A fake CUDA runtime whose GPU clock moves only with kernel time: 'a' spends 1 ms of host overhead and
    2 ms of GPU time per call, 'b' 0.5 ms and 3 ms; 'a' allocates 100 bytes at most, 'b' 300."""
    state = {"gpu": 0.0, "peak": 0, "syncs": 0, "resets": 0}

    class Event:
        def __init__(self, enable_timing=False):
            assert enable_timing
            self.at = None

        def record(self):
            self.at = state["gpu"]

        def elapsed_time(self, end):  # milliseconds, as torch.cuda.Event
            return (end.at - self.at) * 1e3

    def reset(device):
        state["resets"] += 1
        state["peak"] = 0

    fake_cuda = types.SimpleNamespace(
        synchronize=lambda device=None: state.__setitem__("syncs", state["syncs"] + 1), Event=Event,
        reset_peak_memory_stats=reset, max_memory_allocated=lambda device=None: state["peak"])
    monkeypatch.setattr(timing, "torch", types.SimpleNamespace(device=timing.torch.device, cuda=fake_cuda))

    def workload(host, gpu, peak):
        def run(item):
            clock.now += host + gpu
            state["gpu"] += gpu
            state["peak"] = max(state["peak"], peak - item)
            return item
        return run

    result = compare({"a": workload(1e-3, 2e-3, 100), "b": workload(0.5e-3, 3e-3, 300)}, [0, 1, 2],
                     TimingConfig(warmup=1, rounds=2, bootstrap=100), device="cuda")
    assert result.device_times is not None and result.device_times["a"].shape == (2, 3)
    np.testing.assert_allclose(result.device_times["a"], 2e-3)
    np.testing.assert_allclose(result.times["a"], 3e-3)
    assert result.speedup("b", "a").value == pytest.approx(3.0 / 3.5)             # wall clock: b is slower
    assert result.speedup("b", "a", clock="device").value == pytest.approx(2.0 / 3.0)  # GPU time alone
    assert result.peak_bytes == {"a": 100, "b": 300}
    assert state["resets"] == 2 * 3 * 2  # before every timed call (not the warm-up)
    with pytest.raises(ValueError, match="CUDA-event times exist only for CUDA devices"):
        compare({"a": lambda _: None}, [0], TimingConfig(warmup=0, rounds=1, bootstrap=10)).speedup(
            "a", "a", clock="device")
