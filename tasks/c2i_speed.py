"""c2i-speedup-digits: how much faster a class-to-image generator is than a baseline generator, timed in one
process with the timing harness (`harness.timing.compare`: warm-up excluded, interleaved, paired
bootstrap interval), at batch 1 and at a larger batch, on the bundled digits models.

The default pairing is the question of PAR: the region-parallel digits model against the raster one
(`--set baseline=...` picks another). Both generate the same labels with the same seeds. Metrics:
speedup (baseline time / method time) and, for method and baseline, images/s and latency per image at
each batch size, plus decoding steps per image. Quality is not measured here: the same methods score
on `digits-c2i`. The hardware fingerprint is in the signature; compare speedups only within one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from harness import provenance
from harness.api import Method, Request, Task
from harness.errors import ArbenchError
from harness.metrics.base import MetricValue
from harness.registry import METHODS, register_task
from harness.settings import Annotated, BatchSizes, Field, Literal, Seed
from harness.signature import Signature
from harness.timing import TimingConfig, compare

TIMING_VERSION = "1"


@dataclass
class C2ISpeedConfig:
    baseline: str = "digits-ar-raster"
    num_classes: Literal[10] = 10
    image_size: Annotated[int, Field(ge=8, le=256)] = 32
    items: Annotated[int, Field(ge=1, le=10_000)] = 5  # timed batches per batch size (labels 0.., seeds from the item index)
    batch_sizes: BatchSizes = (1, 16)
    warmup: Annotated[int, Field(ge=0, le=1000)] = 1
    rounds: Annotated[int, Field(ge=1, le=1000)] = 2
    threads: Annotated[int, Field(ge=1, le=1024)] = 1
    seed: Seed = 0


@register_task("c2i-speedup-digits")
class C2ISpeedupDigits(Task):
    version = "1"
    modality = "class-to-image"
    description = "class-to-image decoding speed vs a baseline generator (images/s, latency, speedup), digits models"
    primary_metric = "speedup_b1"
    Config = C2ISpeedConfig
    offline = True
    demo_methods = ("digits-ar-par",)

    def batches(self, size: int) -> list[list[Request]]:
        cfg = self.config
        out = []
        for item in range(cfg.items):
            start = item * size
            out.append([Request(start + j, f"b{size}-{start + j}", cfg.seed * 1_000_003 + start + j,
                                {"label": (start + j) % cfg.num_classes, "image_size": cfg.image_size})
                        for j in range(size)])
        return out

    def requests(self) -> list[Request]:
        return [r for size in self.config.batch_sizes for batch in self.batches(size) for r in batch]

    def signature(self) -> Signature:
        sig = super().signature()
        baseline = METHODS.get(self.config.baseline)()
        sig.add("baseline_settings", baseline.settings())
        sig.add("baseline_checkpoint_sha256", (baseline.checkpoint_sha256() or "none")[:16])
        sig.add("timing", TIMING_VERSION)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        sig.add("hardware", provenance.hardware_fingerprint(device, self.config.threads))
        return sig

    # -- a timing study: nothing is stored as samples ------------------------------------------
    def write_shard(self, outputs: Any, requests: Sequence[Request], directory: Path) -> None:
        raise ArbenchError(f"{self.name} is a timing study and stores no samples")

    def read_generated(self, shard_dirs, requests) -> Any:
        raise ArbenchError(f"{self.name} is a timing study and stores no samples")

    def score(self, samples: Any, ctx) -> list[MetricValue]:
        raise ArbenchError(f"{self.name} is a timing study: run `arbench run {self.name} <method>`.")

    def run(self, method: Method, ctx) -> list[MetricValue]:
        if ctx.world_size > 1:
            raise ArbenchError(f"{self.name} times one process; run it without torchrun.")
        baseline = METHODS.get(self.config.baseline)(device=ctx.device)
        self.check_method(baseline)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.config.threads)
        try:
            return self._timed(method, baseline, ctx)
        finally:
            torch.set_num_threads(threads)

    def _timed(self, method: Method, baseline: Method, ctx) -> list[MetricValue]:
        cfg = self.config
        timing = TimingConfig(warmup=cfg.warmup, rounds=cfg.rounds, seed=cfg.seed)
        callables = {"method": method.generate, "baseline": baseline.generate}
        metrics: list[MetricValue] = []
        for size in cfg.batch_sizes:
            ctx.log(f"timing {method.name} vs {baseline.name} at batch {size} ({cfg.items} batches, {cfg.rounds} rounds)")
            result = compare(callables, self.batches(size), timing, device=ctx.device)
            s = result.speedup("method", baseline="baseline")
            metrics.append(MetricValue(f"speedup_b{size}", s.value, True, "x", TIMING_VERSION, s.ci_low, s.ci_high,
                                       f"{baseline.name} time / {method.name} time at batch {size} (paired bootstrap 95% CI)"))
            for name, who in (("method", method.name), ("baseline", baseline.name)):
                images = size * cfg.items
                suffix = "" if name == "method" else "_baseline"
                metrics.append(MetricValue(f"images_per_s_b{size}{suffix}", images / result.total(name), True,
                                           "images/s", TIMING_VERSION,
                                           description=f"{who}: images / time at batch {size} (median of rounds)"))
                metrics.append(MetricValue(f"latency_ms_per_image_b{size}{suffix}",
                                           1000 * result.latency(name)["p50"] / size, False, "ms", TIMING_VERSION,
                                           description=f"{who}: median batch time / batch size at batch {size}"))
            ctx.extra_provenance[f"timing_b{size}"] = {"hardware": result.hardware, "order_len": len(result.order)}
        for name, who in ((method, ""), (baseline, "_baseline")):
            steps = getattr(name, "decode_steps", None)
            if steps is not None:
                metrics.append(MetricValue(f"steps_per_image{who}", float(steps), False, "steps", TIMING_VERSION,
                                           description=f"{name.name}: sequential network passes per image"))
        return metrics
