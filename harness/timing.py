"""The timing harness: compare callables on the same items, interleaved, in one process.

Protocol (docs/decoding.md, "The protocol"):

* warm-up calls are made and thrown away before anything is timed;
* the device is synchronised before and after each timed call (CUDA kernels are asynchronous);
* within each round, every item is run by every callable back to back (A B A B ...), the order
  rotating from item to item and round to round, so clock and thermal drift hit all callables alike;
* every per-call time is kept; an item's time is the median over rounds (robust to outliers);
* on a CUDA device every call is also bracketed by CUDA events on the current stream (`device_times`: the GPU's
  own clock, a cross-check of the wall clock that shows how much of a call the GPU was not given work, e.g. launch
  overhead of small decoding steps) and its peak allocated memory is kept per callable (`peak_bytes`, with the
  allocator's peak statistic reset before each call). Speedups use the wall clock: it is what a user waits for;
  the event clock alone would hide host-side overhead that a strategy adds or removes;
* speedup = baseline time / candidate time as a ratio of totals over items, with a paired bootstrap
  95% interval that resamples items (the same items for both), seeded.

Usage::

    result = compare({"ar": run_ar, "spec": run_spec}, prompts, TimingConfig(rounds=5), device="cpu")
    s = result.speedup("spec", baseline="ar")          # Speedup(value, ci_low, ci_high)
    result.latency("spec")                              # {"p50": ..., "p90": ..., "mean": ...}
    result.hardware                                      # provenance.hardware_fingerprint(device)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np
import torch

from harness.provenance import hardware_fingerprint


@dataclass(frozen=True)
class TimingConfig:
    """How much to time. `warmup` calls per callable are discarded; `rounds` passes over the items are kept."""

    warmup: int = 2
    rounds: int = 3
    bootstrap: int = 2000
    seed: int = 0

    def __post_init__(self):
        if self.warmup < 0 or self.rounds < 1 or self.bootstrap < 1:
            raise ValueError(f"timing needs warmup >= 0, rounds >= 1 and bootstrap >= 1, got {self}")


@dataclass(frozen=True)
class Speedup:
    """baseline time / candidate time (ratio of totals) with a paired bootstrap 95% interval."""

    value: float
    ci_low: float
    ci_high: float


def synchronize(device: str | torch.device) -> None:
    """Wait for queued device work so that a wall-clock reading covers it (a no-op on the CPU)."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


def timed_call(fn: Callable[[], Any], device: str | torch.device = "cpu") -> tuple[float, Any]:
    """(seconds, result) of one call, with the device synchronised on both sides."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


@dataclass(frozen=True)
class CallMeasurement:
    """One timed call: wall seconds; on CUDA also the CUDA-event seconds and the peak bytes allocated."""

    seconds: float
    device_seconds: float | None = None
    peak_bytes: int | None = None


def measured_call(fn: Callable[[], Any], device: str | torch.device = "cpu") -> tuple[CallMeasurement, Any]:
    """`timed_call`, plus CUDA events around the call and the allocator's peak during it on a CUDA device."""
    dev = torch.device(device)
    if dev.type != "cuda":
        seconds, result = timed_call(fn, dev)
        return CallMeasurement(seconds), result
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start = time.perf_counter()
    begin.record()
    result = fn()
    end.record()
    torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    return CallMeasurement(seconds, begin.elapsed_time(end) / 1e3, int(torch.cuda.max_memory_allocated(dev))), result


@dataclass
class TimingResult:
    """Per-call times of every callable: `times[name]` has shape (rounds, items), in seconds.

    `outputs[name][i]` is what the callable returned for item i in the last round (for checks such
    as exactness against a baseline). `order` lists the calls as they were made, for audit.
    """

    names: list[str]
    times: dict[str, np.ndarray]
    outputs: dict[str, list[Any]]
    config: TimingConfig
    hardware: str
    order: list[tuple[int, int, str]] = field(default_factory=list)
    #: CUDA-event seconds, shaped as `times` (None off CUDA).
    device_times: dict[str, np.ndarray] | None = None
    #: The highest allocated bytes seen during any timed call of each callable (None off CUDA).
    peak_bytes: dict[str, int] | None = None

    def per_item(self, name: str, clock: str = "wall") -> np.ndarray:
        """Median over rounds of each item's time (seconds), by the wall clock or the CUDA events ("device")."""
        return np.median(self._times(clock)[name], axis=0)

    def _times(self, clock: str) -> dict[str, np.ndarray]:
        if clock == "wall":
            return self.times
        if clock == "device" and self.device_times is not None:
            return self.device_times
        raise ValueError(f"no {clock!r} clock in this result (CUDA-event times exist only for CUDA devices)")

    def total(self, name: str, items: Sequence[int] | None = None) -> float:
        per_item = self.per_item(name)
        return float(per_item.sum() if items is None else per_item[list(items)].sum())

    def speedup(self, name: str, baseline: str, items: Sequence[int] | None = None, clock: str = "wall") -> Speedup:
        """Total baseline time / total candidate time over `items` (default all), paired bootstrap CI."""
        index = np.arange(self.times[name].shape[1]) if items is None else np.asarray(list(items), dtype=int)
        if index.size == 0:
            raise ValueError("speedup over an empty set of items")
        base, cand = self.per_item(baseline, clock)[index], self.per_item(name, clock)[index]
        value = float(base.sum() / cand.sum())
        rng = np.random.default_rng(self.config.seed)
        draws = rng.integers(0, index.size, size=(self.config.bootstrap, index.size))
        ratios = base[draws].sum(axis=1) / cand[draws].sum(axis=1)
        low, high = np.percentile(ratios, [2.5, 97.5])
        return Speedup(value, float(low), float(high))

    def speedup_by_group(self, name: str, baseline: str, groups: Sequence[Hashable]) -> dict[Hashable, Speedup]:
        """Speedup per group label (one label per item, e.g. a prompt category)."""
        labels = list(groups)
        return {g: self.speedup(name, baseline, [i for i, x in enumerate(labels) if x == g])
                for g in dict.fromkeys(labels)}

    def latency(self, name: str) -> dict[str, float]:
        """p50 / p90 / mean of every kept per-call time (seconds)."""
        flat = self.times[name].ravel()
        p50, p90 = np.percentile(flat, [50, 90])
        return {"p50": float(p50), "p90": float(p90), "mean": float(flat.mean())}


def compare(callables: Mapping[str, Callable[[Any], Any]], items: Sequence[Any],
            config: TimingConfig | None = None, device: str | torch.device = "cpu") -> TimingResult:
    """Time every callable on every item, interleaved; see the module docstring for the protocol.

    Each callable takes one item. Warm-up runs the first items (cycling) `config.warmup` times per
    callable, interleaved the same way, and is not recorded.
    """
    config = config or TimingConfig()
    names = list(callables)
    if not names or not items:
        raise ValueError("compare() needs at least one callable and one item")
    n_items = len(items)
    for w in range(config.warmup):
        for name in _rotated(names, w):
            timed_call(lambda: callables[name](items[w % n_items]), device)
    times = {name: np.zeros((config.rounds, n_items)) for name in names}
    on_cuda = torch.device(device).type == "cuda"
    device_times = {name: np.zeros((config.rounds, n_items)) for name in names} if on_cuda else None
    peak_bytes = {name: 0 for name in names} if on_cuda else None
    outputs: dict[str, list[Any]] = {name: [None] * n_items for name in names}
    order: list[tuple[int, int, str]] = []
    for r in range(config.rounds):
        for i, item in enumerate(items):
            for name in _rotated(names, r + i):
                measured, out = measured_call(lambda: callables[name](item), device)
                times[name][r, i] = measured.seconds
                if device_times is not None and peak_bytes is not None:
                    device_times[name][r, i] = measured.device_seconds
                    peak_bytes[name] = max(peak_bytes[name], measured.peak_bytes or 0)
                outputs[name][i] = out
                order.append((r, i, name))
    return TimingResult(names, times, outputs, config, hardware_fingerprint(str(device)), order, device_times,
                        peak_bytes)


def _rotated(names: list[str], shift: int) -> list[str]:
    k = shift % len(names)
    return names[k:] + names[:k]
