"""The runner: plan -> generate (sharded, resumable) -> score -> record.

    request (CLI: run / score)
      -> Runner.plan: resolve Task + Method, route `--set` values, build the signatures
      -> Task.requests(): deterministic, identical for every method, batch size and world size
      -> Method.generate(batch): shard k goes to rank k % world_size; each finished shard is
         renamed into place atomically, so a killed run loses at most the shard in flight and a
         rerun with the same signature skips the finished ones
      -> Task.score(samples) on rank 0 -> Store: Run + Metric rows with signature and provenance
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

import harness
from harness import distributed, provenance
from harness.api import Method, Request, Task, build_config
from harness.config import DEFAULT_BATCH_SIZE, DEFAULT_SHARD_SIZE, artifacts_dir
from harness.errors import ArbenchError, MissingAssetError
from harness.metrics.base import MetricValue
from harness.registry import METHODS, TASKS
from harness.signature import Signature
from harness.store import Store
from harness.weights import require_all

GLOBAL_SEED = 0


@dataclass
class RunOptions:
    """Settings of the runner itself. None of them changes a number, so none is in the signature
    (batch size, world size and device are provenance)."""

    batch_size: int = DEFAULT_BATCH_SIZE
    shard_size: int = DEFAULT_SHARD_SIZE
    device: str = "auto"
    label: str | None = None
    source: str | None = None
    progress: bool = True


@dataclass
class Plan:
    task: Task
    method: Method | None
    kind: str
    signature: Signature
    eval_signature: Signature
    settings: dict[str, Any]
    #: name/family/description of the method for the store (also set when the method runs elsewhere)
    method_info: dict[str, str] | None = None
    checkpoint_sha256: str | None = None


@dataclass
class RunResult:
    run_id: str
    status: str
    metrics: list[MetricValue] = field(default_factory=list)
    run_dir: Path | None = None


def split_overrides(task_cls: type[Task], method_cls: type[Method] | None,
                    overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route `--set key=value` pairs to the task or the method (`task.`/`method.` prefixes force it)."""
    task_keys = {f.name for f in fields(task_cls.Config)}
    method_keys = {f.name for f in fields(method_cls.Config)} if method_cls else set()
    task_values: dict[str, Any] = {}
    method_values: dict[str, Any] = {}
    for key, value in overrides.items():
        if key.startswith("task."):
            task_values[key[5:]] = value
        elif key.startswith("method."):
            if method_cls is None:
                raise ArbenchError(f"setting {key!r} is for a method, but this command runs no method.")
            method_values[key[7:]] = value
        elif key in task_keys and key in method_keys:
            raise ArbenchError(f"setting {key!r} exists for both the task and the method; "
                               f"write task.{key}=... or method.{key}=...")
        elif key in task_keys:
            task_values[key] = value
        elif key in method_keys:
            method_values[key] = value
        else:
            known = sorted(task_keys | method_keys)
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            owners = f"task {task_cls.name!r}" + (f" or method {method_cls.name!r}" if method_cls else "")
            raise ArbenchError(f"unknown setting {key!r} for {owners}.{hint} "
                               f"Known settings: {', '.join(known) or '(none)'}.")
    return task_values, method_values


def concat_outputs(parts: list[Any]) -> Any:
    """Join per-batch outputs into one shard's outputs (arrays, lists, tuples or dicts of them)."""
    first = parts[0]
    if isinstance(first, np.ndarray):
        return np.concatenate(parts, axis=0)
    if isinstance(first, torch.Tensor):
        return torch.cat(parts, dim=0)
    if isinstance(first, list):
        return [item for part in parts for item in part]
    if isinstance(first, tuple):
        return tuple(concat_outputs([p[i] for p in parts]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: concat_outputs([p[k] for p in parts]) for k in first}
    raise TypeError(f"cannot join method outputs of type {type(first).__name__}")


class RunContext:
    """What a task sees while it runs: where to write, which rank it is, logging and progress."""

    def __init__(self, plan: Plan, options: RunOptions, run_id: str, run_dir: Path, device: str):
        self.plan = plan
        self.task = plan.task
        self.method = plan.method
        self.options = options
        self.run_id = run_id
        self.run_dir = run_dir
        self.device = device
        self.rank, self.world_size = distributed.world()
        self.is_main = self.rank == 0
        self.notes: list[str] = []
        self.extra_provenance: dict[str, Any] = {}
        self.timings: dict[str, float] = {}

    def log(self, message: str) -> None:
        """A line for the run's log (kept in its provenance) and the terminal."""
        self.notes.append(message)
        if self.is_main:
            print(f"[{self.task.name}] {message}", file=sys.stderr)

    def progress(self, iterable: Iterable, total: int | None = None, desc: str = "") -> Iterable:
        disable = not self.options.progress or not self.is_main
        return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False, file=sys.stderr)

    def artifact(self, name: str) -> Path:
        """A path inside the run's artifact folder (per-sample rows, sample grids, ...)."""
        path = self.run_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def generate_sharded(self, method: Method, requests: Sequence[Request],
                         write_shard: Callable[[Any, Sequence[Request], Path], None]) -> list[Path]:
        """Generate every request, shard by shard; returns the shard folders in request order."""
        size = self.options.shard_size
        shards = [requests[i:i + size] for i in range(0, len(requests), size)]
        shard_root = self.run_dir / f"shards-{size}"
        shard_root.mkdir(parents=True, exist_ok=True)
        finals = [shard_root / f"shard-{k:05d}" for k in range(len(shards))]
        mine = [k for k in range(len(shards)) if k % self.world_size == self.rank]
        todo = [k for k in mine if not finals[k].is_dir()]
        if len(todo) < len(mine):
            self.log(f"resuming: {len(mine) - len(todo)} of {len(mine)} shards already done")
        start = time.perf_counter()
        failure: BaseException | None = None
        try:
            for k in self.progress(todo, total=len(todo), desc=f"generate ({method.name})"):
                tmp = shard_root / f".shard-{k:05d}.tmp-{os.getpid()}"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                shard = shards[k]
                bs = self.options.batch_size
                parts = [method.generate(shard[i:i + bs]) for i in range(0, len(shard), bs)]
                write_shard(concat_outputs(parts), shard, tmp)
                os.replace(tmp, finals[k])
        except Exception as exc:  # every rank must learn that one failed, or the others wait forever
            failure = exc
        self.timings["generate_seconds"] = time.perf_counter() - start
        everyone_ok = distributed.all_ok(failure is None)
        if failure is not None:
            raise failure
        if not everyone_ok:
            raise ArbenchError("generation failed on another rank; its error is in that rank's output")
        distributed.barrier()
        return finals


class Runner:
    """Resolves tasks and methods by name and runs them into a store."""

    def __init__(self, store: Store | None = None, options: RunOptions | None = None, db_url: str | None = None):
        self._store = store
        self._db_url = db_url
        self.options = options or RunOptions()

    @property
    def store(self) -> Store:
        """Opened on first use, so that only rank 0 of a distributed run ever connects."""
        if self._store is None:
            self._store = Store(self._db_url)
        return self._store

    # -- planning ------------------------------------------------------------------------------
    def plan(self, task_name: str, method_name: str | None, overrides: dict[str, Any] | None = None,
             kind: str = "run", device: str = "cpu") -> Plan:
        task_cls = TASKS.get(task_name)
        method_cls = METHODS.get(method_name) if method_name else None
        task_values, method_values = split_overrides(task_cls, method_cls, overrides or {})
        task = task_cls(build_config(task_cls.Config, task_values, f"task {task_name!r}"))
        method = None
        if method_cls is not None:
            method = method_cls(build_config(method_cls.Config, method_values, f"method {method_name!r}"),
                                device=device)
            task.check_method(method)
        if method is None:
            return self._plan(task, None, kind, None, None, None)
        info = dict(name=method.name, family=method.family, description=method.description, version=method.version)
        settings = method.settings()
        try:
            checkpoint = method.checkpoint_sha256()
        except MissingAssetError:  # name the task's missing files (references, evaluators) in the same message
            require_all([method.checkpoint_sha256, task.signature], f"{task_name} with {method_name}")
            raise
        return self._plan(task, info, kind, settings, checkpoint, method)

    def plan_external(self, task_name: str, task_overrides: dict[str, Any], method_info: dict[str, str],
                      method_settings: dict[str, Any], checkpoint_sha256: str | None, kind: str = "run") -> Plan:
        """A plan for a method that runs outside this process (a submission's sandboxed adapter)."""
        task_cls = TASKS.get(task_name)
        task = task_cls(build_config(task_cls.Config, task_overrides, f"task {task_name!r}"))
        return self._plan(task, method_info, kind, method_settings, checkpoint_sha256, None)

    @staticmethod
    def _plan(task: Task, method_info: dict[str, str] | None, kind: str, method_settings: dict[str, Any] | None,
              checkpoint_sha256: str | None, method: Method | None) -> Plan:
        eval_sig = task.signature()
        eval_sig.add("harness", harness.__version__).add("tf32", False)
        sig = Signature(dict(eval_sig.entries)).add("kind", kind)
        if method_info is not None:
            sig.add("method", method_info["name"]).add("method_version", method_info.get("version", "1"))
            sig.update("method", method_settings or {})
            if checkpoint_sha256:
                sig.add("checkpoint_sha256", checkpoint_sha256)
        settings = {"task": task.settings(), "method": method_settings}
        return Plan(task, method, kind, sig, eval_sig, settings, method_info, checkpoint_sha256)

    # -- execution -----------------------------------------------------------------------------
    def run(self, task_name: str, method_name: str, overrides: dict[str, Any] | None = None) -> RunResult:
        """Generate with a method, score, and record (the `arbench run` command)."""
        device = distributed.resolve_device(self.options.device)
        created_group = distributed.init_if_needed(device)
        try:
            plan = self.plan(task_name, method_name, overrides, kind="run", device=device)
            return self._execute(plan, device, lambda ctx: plan.task.run(plan.method, ctx))
        finally:
            if created_group:  # a group the caller made is the caller's to close
                distributed.shutdown()

    def score(self, task_name: str, path: str | Path, overrides: dict[str, Any] | None = None) -> RunResult:
        """Score samples a user already has (the `arbench score` command)."""
        device = distributed.resolve_device(self.options.device)
        plan = self.plan(task_name, None, overrides, kind="score", device=device)
        path = Path(path)
        if not path.exists():
            raise ArbenchError(f"no samples at {path}: give the path of an existing file or folder.")
        samples = plan.task.load_samples(path)  # validation happens here, before anything is stored
        plan.signature.add("samples", path.name)
        return self._execute(plan, device, lambda ctx: plan.task.score(samples, ctx), default_label=path.stem)

    def record(self, plan: Plan, body: Callable[[RunContext], list[MetricValue]], artifact_key: str) -> RunResult:
        """Run `body` (which scores samples produced elsewhere, e.g. in a submission's sandbox) as a new run
        whose artifacts go to their own folder (`artifact_key` tells it apart from a direct run's)."""
        return self._execute(plan, distributed.resolve_device(self.options.device), body, artifact_key=artifact_key)

    def _execute(self, plan: Plan, device: str, body: Callable[[RunContext], list[MetricValue]],
                 default_label: str | None = None, artifact_key: str | None = None) -> RunResult:
        rank, world_size = distributed.world()
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        task = plan.task
        run_dir = artifacts_dir() / "-".join(filter(None, [task.name, plan.signature.hash, artifact_key]))
        run_id = None
        torch.manual_seed(GLOBAL_SEED)  # for any code that draws from the global generators
        np.random.seed(GLOBAL_SEED)
        if rank == 0:
            prov = provenance.collect(device, world_size, self.options.batch_size, "float32")
            prov["global_seed"] = GLOBAL_SEED
            if plan.kind == "run":
                seeds = [r.seed for r in task.requests()]
                prov["num_requests"] = len(seeds)
                prov["request_seeds_sha256"] = hashlib.sha256(json.dumps(seeds).encode()).hexdigest()
            if plan.checkpoint_sha256:
                prov["checkpoint_sha256"] = plan.checkpoint_sha256
            resumable = plan.kind == "run" and artifact_key is None  # only `arbench run` resumes its own attempts
            run_id = self.store.find_resumable(plan.signature.hash, plan.kind) if resumable else None
            if run_id:
                self.store.mark_running(run_id)
            else:
                run_id = self.store.create_run(
                    task=dict(name=task.name, version=task.version, modality=task.modality,
                              description=task.description, primary_metric=task.primary_metric),
                    method=plan.method_info,
                    kind=plan.kind,
                    source=self.options.source or ("reproduced" if plan.kind == "run" else "submitted"),
                    label=self.options.label or default_label or (plan.method_info or {}).get("name", task.name),
                    signature=str(plan.signature), signature_hash=plan.signature.hash,
                    eval_signature=str(plan.eval_signature), eval_signature_hash=plan.eval_signature.hash,
                    settings=plan.settings, provenance=prov, artifacts_path=str(run_dir),
                )
        run_id = distributed.broadcast(run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        ctx = RunContext(plan, self.options, run_id, run_dir, device)
        start = time.perf_counter()
        try:
            metrics = body(ctx)
        except BaseException as exc:
            if rank == 0:
                message = str(exc) if isinstance(exc, ArbenchError) else f"{type(exc).__name__}: {exc}"
                if isinstance(exc, KeyboardInterrupt):
                    message = "interrupted; rerun the same command to resume from the finished shards"
                self.store.fail_run(run_id, message, self._final_provenance(ctx, start))
            raise
        if rank == 0:
            self.store.finish_run(run_id, metrics, self._final_provenance(ctx, start))
        return RunResult(run_id, "finished", metrics, run_dir)

    @staticmethod
    def _final_provenance(ctx: RunContext, start: float) -> dict[str, Any]:
        return {
            "wall_seconds": round(time.perf_counter() - start, 3),
            **{k: round(v, 3) for k, v in ctx.timings.items()},
            **provenance.peak_memory(),
            "log": ctx.notes,
            **ctx.extra_provenance,
        }
