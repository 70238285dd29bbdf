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


# -- streaming: first-packet latency and per-chunk real-time factor ----------------------------------------------
@dataclass(frozen=True)
class StreamMeasurement:
    """One streamed request: when each chunk was ready and how much output it carried.

    `ready[i]` is the seconds from the call to chunk i being ready (the device synchronised before the clock is
    read), so `ready[0]` is the first-packet latency (time to first audio). Chunk i's compute time is
    `ready[i] - ready[i-1]` (from the call for the first), and its real-time factor is that time over the chunk's
    `durations[i]` (seconds of audio): below 1 the chunk was made faster than it plays.

    >>> m = StreamMeasurement(ready=(0.2, 0.5, 1.1), durations=(0.4, 1.2, 2.0))
    >>> m.first_packet, [round(x, 3) for x in m.chunk_seconds], [round(x, 3) for x in m.chunk_rtf]
    (0.2, [0.2, 0.3, 0.6], [0.5, 0.25, 0.3])
    >>> round(m.rtf, 3)  # whole request: 1.1 s for 3.6 s of audio
    0.306
    """

    ready: tuple[float, ...]
    durations: tuple[float, ...]

    def __post_init__(self):
        if not self.ready or len(self.ready) != len(self.durations):
            raise ValueError("a stream measurement needs one ready time and one duration per chunk, at least one")

    @property
    def first_packet(self) -> float:
        return self.ready[0]

    @property
    def chunk_seconds(self) -> tuple[float, ...]:
        return tuple(np.diff((0.0,) + tuple(self.ready)).tolist())

    @property
    def chunk_rtf(self) -> tuple[float, ...]:
        return tuple(s / max(d, 1e-9) for s, d in zip(self.chunk_seconds, self.durations))

    @property
    def rtf(self) -> float:
        return self.ready[-1] / max(sum(self.durations), 1e-9)


def measure_stream(start: Callable[[], Iterable[Any]], duration: Callable[[Any], float],
                   device: str | torch.device = "cpu", clock: Callable[[], float] = time.perf_counter
                   ) -> tuple[StreamMeasurement, list[Any]]:
    """Consume one stream, reading `clock` (after a device synchronisation) before the call and as each chunk
    arrives; `duration(chunk)` is the chunk's length in seconds of output. Returns the measurement and the chunks.
    `clock` is replaceable so tests can give exact times."""
    synchronize(device)
    begin = clock()
    ready, durations, chunks = [], [], []
    for chunk in start():
        synchronize(device)
        ready.append(clock() - begin)
        durations.append(float(duration(chunk)))
        chunks.append(chunk)
    if not chunks:
        raise ValueError("the stream yielded no chunk: nothing to time")
    return StreamMeasurement(tuple(ready), tuple(durations)), chunks


def stream_timing(start: Callable[[Any], Iterable[Any]], items: Sequence[Any], duration: Callable[[Any], float],
                  warmup: int = 2, device: str | torch.device = "cpu",
                  clock: Callable[[], float] = time.perf_counter) -> list[StreamMeasurement]:
    """`measure_stream` of every item after `warmup` discarded streams (of the first items, cycling)."""
    if not items:
        raise ValueError("stream_timing() needs at least one item")
    for w in range(warmup):
        for _ in start(items[w % len(items)]):
            pass
    return [measure_stream(lambda item=item: start(item), duration, device, clock)[0] for item in items]


def streaming_summary(measurements: Sequence[StreamMeasurement]) -> dict[str, float]:
    """p50/p95 of first-packet latency (over requests) and of chunk RTF (over every chunk of every request).

    >>> streaming_summary([StreamMeasurement((0.1, 0.3), (0.5, 1.0)), StreamMeasurement((0.3,), (0.6,))])
    {'first_packet_p50': 0.2, 'first_packet_p95': 0.29, 'chunk_rtf_p50': 0.2, 'chunk_rtf_p95': 0.47, 'chunks': 3.0}
    """
    if not measurements:
        raise ValueError("no stream measurements")
    first = np.array([m.first_packet for m in measurements])
    rtf = np.array([r for m in measurements for r in m.chunk_rtf])
    fp50, fp95 = np.percentile(first, [50, 95])
    r50, r95 = np.percentile(rtf, [50, 95])
    return {"first_packet_p50": round(float(fp50), 12), "first_packet_p95": round(float(fp95), 12),
            "chunk_rtf_p50": round(float(r50), 12), "chunk_rtf_p95": round(float(r95), 12),
            "chunks": float(rtf.size)}
