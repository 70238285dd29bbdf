"""A user-side plugin for the runner tests: a tiny real task and method registered from outside the project.

`toy-gauss` asks for N vectors, one per request; `toy-sampler` draws each from N(shift, 1) with the
request's own seed. The score is the mean of all values and the count, accumulated in a way that
does not depend on batching. `toy-sampler` can be told to crash after a number of calls (resume tests).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from harness.api import Method, Request, SubmissionSpec, Task
from harness.errors import InputError
from harness.metrics.base import Accumulator, MetricValue
from harness.registry import register_method, register_task


class MeanValue(Accumulator):
    metric_name = "mean_value"
    higher_is_better = True
    unit = ""
    version = "1"

    def __init__(self):
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        self.total += values.double().sum()
        self.count += values.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count


@dataclass
class ToyTaskConfig:
    num_samples: int = 10
    dim: int = 4
    seed: int = 0


@register_task("toy-gauss")
class ToyGauss(Task):
    version = "1"
    modality = "vector"
    submission = SubmissionSpec("vector", "generate(requests) -> float array (N, dim)")
    description = "test task: mean of generated Gaussian vectors"
    primary_metric = "mean_value"
    Config = ToyTaskConfig

    def requests(self) -> list[Request]:
        return [Request(i, f"item-{i:04d}", self.config.seed * 100003 + i, {"dim": self.config.dim})
                for i in range(self.config.num_samples)]

    def write_shard(self, outputs, requests: Sequence[Request], directory: Path) -> None:
        np.save(directory / "values.npy", outputs)
        (directory / "ids.json").write_text(json.dumps([r.id for r in requests]))

    def read_generated(self, shard_dirs, requests):
        return np.concatenate([np.load(d / "values.npy", allow_pickle=False) for d in shard_dirs])

    def load_samples(self, path: Path):
        try:
            values = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"{path} is not a plain .npy array ({exc}); save it with np.save") from exc
        if values.shape != (self.config.num_samples, self.config.dim):
            raise InputError(f"{path} has shape {values.shape}, expected ({self.config.num_samples}, "
                             f"{self.config.dim}): one row per request")
        return values

    def score(self, samples, ctx) -> list[MetricValue]:
        metric = MeanValue()
        for start in range(0, len(samples), 3):
            metric.update(torch.from_numpy(samples[start:start + 3]))
        return [*metric.values(), MetricValue("count", float(len(samples)), True, "samples")]


@dataclass
class ToySamplerConfig:
    shift: float = 0.5
    crash_after_calls: int = -1  # for resume tests only
    sleep_per_call: float = 0.0  # for kill tests only


@register_method("toy-sampler")
class ToySampler(Method):
    description = "test method: seeded Gaussian vectors"
    modality = "vector"
    family = "test"
    Config = ToySamplerConfig

    def settings(self):
        return {"shift": self.config.shift}

    def generate(self, requests: Sequence[Request]) -> np.ndarray:
        calls = int(os.environ.get("TOY_CALLS", "0"))
        if 0 <= self.config.crash_after_calls <= calls:
            raise RuntimeError("toy sampler crashed on purpose")
        os.environ["TOY_CALLS"] = str(calls + 1)
        time.sleep(self.config.sleep_per_call)
        rows = [np.random.default_rng(r.seed).normal(self.config.shift, 1.0, r.condition["dim"]) for r in requests]
        return np.stack(rows)
