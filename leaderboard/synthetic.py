"""Synthetic stores for the leaderboard's tests and benchmark: many runs, written in bulk by `Store.insert_bulk`.

The rows are made up (they say so in their labels' provenance) and never go into a real store. This module
only builds the values; the store writes them (the leaderboard itself never writes).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from harness.signature import Signature
from harness.store import Store, utcnow

FAMILIES = ("raster-ar", "next-scale", "masked", "nat", "diffusion")
SOURCES = ("reproduced", "submitted", "reported")
HARDWARE = ("NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", "cpu-x86_64")


@dataclass(frozen=True)
class SyntheticSpec:
    """How big a synthetic store is: runs spread over tasks, each with `metrics_per_run` values."""

    runs: int = 10_000
    metrics_per_run: int = 10
    tasks: int = 5
    methods: int = 200
    protocols_per_task: int = 3
    seed: int = 0


def fill_synthetic(store: Store, spec: SyntheticSpec = SyntheticSpec()) -> list[str]:
    """Insert tasks, methods, runs and metric values with bulk inserts; returns the run ids."""
    rng = np.random.default_rng(spec.seed)
    now = utcnow()
    task_names = [f"synthetic-task-{i}" for i in range(spec.tasks)]
    metric_names = ["fid"] + [f"metric_{k}" for k in range(1, spec.metrics_per_run - 1)] + ["speedup"]
    tasks = [dict(id=i + 1, name=name, version="1", modality="synthetic", description=f"synthetic task {i}",
                  primary_metric="fid", created_at=now) for i, name in enumerate(task_names)]
    methods = [dict(id=i + 1, name=f"method-{i}", family=FAMILIES[i % len(FAMILIES)], description="synthetic",
                    created_at=now) for i in range(spec.methods)]
    run_rows, metric_rows, ids = [], [], []
    for r in range(spec.runs):
        task = r % spec.tasks
        protocol = int(rng.integers(spec.protocols_per_task))
        eval_sig = Signature().add("task", task_names[task]).add("protocol", protocol)
        method = int(rng.integers(spec.methods))
        sig = Signature(dict(eval_sig.entries)).add("method", f"method-{method}").add("run", r)
        run_id = hashlib.sha256(f"synthetic-{spec.seed}-{r}".encode()).hexdigest()[:32]
        ids.append(run_id)
        run_rows.append(dict(
            id=run_id, task_id=task + 1, task_version="1", method_id=method + 1, kind="run",
            source=SOURCES[r % len(SOURCES)], label=f"method-{method} run {r}", status="finished",
            signature=str(sig), signature_hash=sig.hash, eval_signature=str(eval_sig),
            eval_signature_hash=eval_sig.hash, settings={"method": {"cfg": float(rng.uniform(1, 4))}},
            provenance={"params": float(rng.integers(10, 3000)) * 1e6,
                        "hardware": HARDWARE[r % len(HARDWARE)], "synthetic": True,
                        "generate_seconds": float(rng.uniform(1, 100))},
            created_at=now, started_at=now, finished_at=now,
        ))
        for name in metric_names:
            value = float(rng.uniform(1, 20))
            half = float(rng.uniform(0.05, 1.0))
            metric_rows.append(dict(
                run_id=run_id, name=name, value=value, ci_low=value - half, ci_high=value + half,
                higher_is_better=name != "fid", unit="x" if name == "speedup" else "", version="1",
                description="synthetic"))
    store.insert_bulk(tasks=tasks, methods=methods, runs=run_rows, metrics=metric_rows)
    return ids
