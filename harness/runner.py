"""The runner: plan -> generate (sharded, resumable) -> score -> record.

    request (CLI: run / score)
      -> Runner.plan: resolve Task + Method, route `--set` values, build the signatures
      -> Task.requests(): deterministic, identical for every method, batch size and world size
      -> Method.generate(batch): shard k goes to rank k % world_size; each finished shard is
         renamed into place atomically, so a killed run loses at most the shard in flight and a
         rerun with the same signature skips the finished ones
      -> Task.score(samples) on rank 0 -> Store: Run + Metric rows with signature and provenance

Requests are idempotent by their full signature (`arbench run` and `arbench score`): a file lock on the request's
artifacts folder makes an identical request on this machine wait for the one in progress, and the run's unique
`run_key` in the database makes sure that only one of any number of identical requests inserts a run. Then a
finished identical run is reported and nothing is run or stored; a failed or abandoned one (its process died) is
taken over and resumed; `--repeat` records a deliberate repeat as its own run, linked to the first.
"""

from __future__ import annotations

import difflib
import errno
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from filelock import FileLock, Timeout
from sqlalchemy.exc import SQLAlchemyError
from tqdm.auto import tqdm

import harness
from harness import distributed, provenance
from harness.api import Method, Request, Task, build_config
from harness.config import DEFAULT_BATCH_SIZE, DEFAULT_SHARD_SIZE, artifacts_dir
from harness.errors import ArbenchError, MissingAssetError
from harness.metrics.base import MetricValue
from harness.registry import METHODS, TASKS
from harness.provenance import sha256_file
from harness.signature import Signature
from harness.store import Owner, RunKeyTaken, Store
from harness.weights import require_all

GLOBAL_SEED = 0
#: how often a request waiting for an identical one in another process looks again (seconds)
WAIT_POLL_SECONDS = 2.0


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
    #: record the request again as a repeat of its stored run (timing studies) instead of reporting that run
    repeat: bool = False


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
    #: an identical request had finished before: this is its stored run, and nothing was run or stored now
    stored: bool = False
    #: the run this one repeats (`--repeat`)
    repeat_of: str | None = None
    resumed: bool = False


@dataclass
class _Claim:
    """What rank 0 decided to do with a request (broadcast to every rank)."""

    run_id: str
    run_dir: Path
    stored: bool = False
    resumed: bool = False
    repeat_of: str | None = None


def samples_sha256(path: Path) -> str:
    """SHA-256 of the samples a user scores: of the file, or of every regular file of a folder (relative path and
    content, in sorted order), so that a score's signature names what was scored, not only its file name."""
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise ArbenchError(f"{path} is neither a regular file nor a folder: give the samples as a file or a folder.")
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(path).as_posix()}\0{sha256_file(item)}\n".encode())
    return digest.hexdigest()


class _Heartbeat:
    """Renews a run's heartbeat from a daemon thread while its process works on it."""

    def __init__(self, store: Store, run_id: str, owner: Owner):
        from harness import store as store_module

        self.store, self.run_id, self.owner = store, run_id, owner
        self.interval = store_module.HEARTBEAT_SECONDS
        self._stop = threading.Event()
        self._warned = False
        self._thread = threading.Thread(target=self._beat, name=f"arbench-heartbeat-{run_id[:8]}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                still_mine = self.store.heartbeat(self.run_id, self.owner)
            except SQLAlchemyError as exc:  # the database is briefly unreachable: try again at the next beat
                still_mine, reason = True, str(getattr(exc, "orig", exc)).splitlines()[0]
                print(f"warning: could not renew the heartbeat of run {self.run_id}: {reason}", file=sys.stderr)
            if not still_mine and not self._warned:
                self._warned = True
                print(f"warning: run {self.run_id} was taken over by another process (this one was thought gone); "
                      "both compute the same result", file=sys.stderr)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


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


@contextmanager
def run_wide_state(seed: int) -> Iterator[None]:
    """Run-wide torch settings for one run, and the caller's back afterwards: TF32 off (the signature says
    `tf32: False`), and the global torch (CPU and initialised CUDA) and NumPy generators seeded with `seed`
    for any code that draws from them. Restored on success and on error, so a caller that runs ARBench
    in its own process keeps its own flags and random streams."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    cpu_rng, numpy_rng = torch.random.get_rng_state(), np.random.get_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.manual_seed(seed)
        np.random.seed(seed)
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
        torch.random.set_rng_state(cpu_rng)
        np.random.set_state(numpy_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


class RunContext:
    """What a task sees while it runs: where to write, which rank it is, logging and progress (the runner's
    implementation of the `harness.api.RunContext` protocol)."""

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
        for k in todo:  # temporary folders an earlier, killed attempt left behind (this rank's shards only)
            for stale in shard_root.glob(f".shard-{k:05d}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
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
                _move_into_place(tmp, finals[k])
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


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename a finished shard folder into place. If another process finished the same shard first (same signature,
    so the same content), keep theirs and drop ours: `rename` of a folder onto a non-empty one fails, never mixes."""
    try:
        os.rename(tmp, final)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


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
            task.check_data()
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
        plan.signature.add("samples", path.name).add("samples_sha256", samples_sha256(path))
        return self._execute(plan, device, lambda ctx: plan.task.score(samples, ctx), default_label=path.stem)

    def record(self, plan: Plan, body: Callable[[RunContext], list[MetricValue]], artifact_key: str) -> RunResult:
        """Run `body` (which scores samples produced elsewhere, e.g. in a submission's sandbox) as a new run
        whose artifacts go to their own folder (`artifact_key` tells it apart from a direct run's)."""
        return self._execute(plan, distributed.resolve_device(self.options.device), body, artifact_key=artifact_key)

    def _execute(self, plan: Plan, device: str, body: Callable[[RunContext], list[MetricValue]],
                 default_label: str | None = None, artifact_key: str | None = None) -> RunResult:
        with run_wide_state(GLOBAL_SEED):
            return self._execute_run(plan, device, body, default_label, artifact_key)

    def _execute_run(self, plan: Plan, device: str, body: Callable[[RunContext], list[MetricValue]],
                     default_label: str | None = None, artifact_key: str | None = None) -> RunResult:
        rank, world_size = distributed.world()
        task = plan.task
        base_dir = artifacts_dir() / "-".join(filter(None, [task.name, plan.signature.hash, artifact_key]))
        lock: FileLock | None = None
        try:
            claim = None
            if rank == 0:
                try:
                    # before the database is touched: building the requests is where a task refuses bad settings
                    prov = self._provenance(plan, device, world_size)
                    if artifact_key is None:  # `arbench run` / `arbench score`: idempotent by signature
                        lock = self._lock_request(base_dir, plan.signature.hash)
                        claim = self._claim(plan, base_dir, default_label, prov)
                    else:  # a submission's run: the queue makes it unique
                        claim = _Claim(self._create(plan, base_dir, default_label, prov), base_dir)
                except BaseException:
                    distributed.broadcast(None)  # the other ranks must not wait for a run that never starts
                    raise
            claim = distributed.broadcast(claim)
            if claim is None:
                raise ArbenchError("rank 0 could not start the run; its error is in rank 0's output")
            if claim.stored:
                return RunResult(claim.run_id, "finished", self._stored_metrics(claim.run_id) if rank == 0 else [],
                                 claim.run_dir, stored=True)
            return self._work(plan, device, body, claim, rank)
        finally:
            if lock is not None:
                lock.release()

    def _work(self, plan: Plan, device: str, body: Callable[[RunContext], list[MetricValue]], claim: _Claim,
              rank: int) -> RunResult:
        run_id, run_dir = claim.run_id, claim.run_dir
        heartbeat = _Heartbeat(self.store, run_id, Owner.me()) if rank == 0 else None
        start = time.perf_counter()
        ctx = None
        try:
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                ctx = RunContext(plan, self.options, run_id, run_dir, device)
                if claim.repeat_of:
                    ctx.log(f"repeat of run {claim.repeat_of}")
                metrics = body(ctx)
            finally:  # before the run is finished or failed: a beat after that would find it no longer running
                if heartbeat is not None:
                    heartbeat.stop()
        except BaseException as exc:
            if rank == 0:
                message = str(exc) if isinstance(exc, ArbenchError) else f"{type(exc).__name__}: {exc}"
                if isinstance(exc, KeyboardInterrupt):
                    message = "interrupted; rerun the same command to resume from the finished shards"
                self.store.fail_run(run_id, message, self._final_provenance(ctx, start) if ctx else None)
            raise
        if rank == 0:
            self.store.finish_run(run_id, metrics, self._final_provenance(ctx, start))
        return RunResult(run_id, "finished", metrics, run_dir, repeat_of=claim.repeat_of, resumed=claim.resumed)

    def _provenance(self, plan: Plan, device: str, world_size: int) -> dict[str, Any]:
        prov = provenance.collect(device, world_size, self.options.batch_size, "float32")
        prov["global_seed"] = GLOBAL_SEED
        if plan.kind == "run":
            seeds = [r.seed for r in plan.task.requests()]
            prov["num_requests"] = len(seeds)
            prov["request_seeds_sha256"] = hashlib.sha256(json.dumps(seeds).encode()).hexdigest()
        if plan.checkpoint_sha256:
            prov["checkpoint_sha256"] = plan.checkpoint_sha256
        if plan.method is not None and plan.method.weights_license:
            prov["weights_license"] = plan.method.weights_license
        return prov

    def _create(self, plan: Plan, run_dir: Path, default_label: str | None, prov: dict[str, Any],
                run_key: str | None = None, repeat_of: str | None = None) -> str:
        """Insert the run row (raises `RunKeyTaken` when another process inserted this key first)."""
        task = plan.task
        return self.store.create_run(
            task=dict(name=task.name, version=task.version, modality=task.modality,
                      description=task.description, primary_metric=task.primary_metric),
            method=plan.method_info,
            kind=plan.kind,
            source=self.options.source or ("reproduced" if plan.kind == "run" else "submitted"),
            label=self.options.label or default_label or (plan.method_info or {}).get("name", task.name),
            signature=str(plan.signature), signature_hash=plan.signature.hash,
            eval_signature=str(plan.eval_signature), eval_signature_hash=plan.eval_signature.hash,
            settings=plan.settings, provenance=prov, artifacts_path=str(run_dir),
            run_key=run_key, repeat_of=repeat_of, owner=Owner.me(),
        )

    def _lock_request(self, base_dir: Path, run_key: str) -> FileLock:
        """Hold the request's artifacts folder: an identical request on this machine (whichever database it
        writes to) waits here until this one is done."""
        try:
            base_dir.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArbenchError(f"cannot create the artifacts folder {base_dir.parent} ({exc.strerror}): set "
                               "ARBENCH_RESULTS (or ARBENCH_HOME) to a writable place.") from exc
        lock = FileLock(f"{base_dir}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            seen = self.store.run_for_key(run_key)
            who = (f"run {seen['id']} (pid {seen['pid']} on {seen['host']})" if seen and seen["status"] == "running"
                   else "another arbench process")
            print(f"waiting: {who} is working on this same request in {base_dir}; this command goes on when it is "
                  "done (Ctrl-C stops waiting, the other one goes on).", file=sys.stderr, flush=True)
            lock.acquire()
        return lock

    def _claim(self, plan: Plan, base_dir: Path, default_label: str | None, prov: dict[str, Any]) -> _Claim:
        """Decide what an `arbench run`/`score` request does, safely against any number of identical requests:
        report the finished run, resume a failed or abandoned one, wait for one in progress, or insert a new one."""
        key, owner = plan.signature.hash, Owner.me()
        self.store.mark_abandoned()
        waiting_for = None
        while True:
            seen = self.store.run_for_key(key)
            if seen is None:
                try:
                    return _Claim(self._create(plan, base_dir, default_label, prov, run_key=key), base_dir)
                except RunKeyTaken:
                    continue
            if seen["status"] == "finished":
                if not self.options.repeat:
                    return _Claim(seen["id"], Path(seen["artifacts_path"] or base_dir), stored=True)
                return self._claim_repeat(plan, base_dir, default_label, prov, seen["id"])
            if seen["status"] in ("failed", "abandoned"):
                if self.store.claim_run(seen, owner, artifacts_path=str(base_dir)):
                    return _Claim(seen["id"], base_dir, resumed=True)
                continue
            if waiting_for != seen["id"]:  # running in a live process that does not share this artifacts folder
                print(f"waiting: run {seen['id']} of this same request is in progress (pid {seen['pid']} on "
                      f"{seen['host']}); this command reports it when it finishes (Ctrl-C stops waiting, the run "
                      "goes on).", file=sys.stderr, flush=True)
                waiting_for = seen["id"]
            time.sleep(WAIT_POLL_SECONDS)

    def _claim_repeat(self, plan: Plan, base_dir: Path, default_label: str | None, prov: dict[str, Any],
                      first: str) -> _Claim:
        """A new run repeating `first`, with its own artifacts folder (a repeat regenerates everything: its timings
        must not come from resumed shards)."""
        n = self.store.count_repeats(first) + 1
        while True:
            run_dir = base_dir.with_name(f"{base_dir.name}-r{n}")
            try:
                run_id = self._create(plan, run_dir, default_label, prov, run_key=f"{plan.signature.hash}.r{n}",
                                      repeat_of=first)
            except RunKeyTaken:  # another process took this number (or a deleted repeat left a gap): the next one
                n += 1
                continue
            shutil.rmtree(run_dir, ignore_errors=True)  # left by a repeat stored in another database
            return _Claim(run_id, run_dir, repeat_of=first)

    def _stored_metrics(self, run_id: str) -> list[MetricValue]:
        (record,) = self.store.records(run_id=run_id)
        return [MetricValue(name, m["value"], m["higher_is_better"], m["unit"], m["version"], m.get("ci_low"),
                            m.get("ci_high"), m.get("description", "")) for name, m in record["metrics"].items()]

    @staticmethod
    def _final_provenance(ctx: RunContext, start: float) -> dict[str, Any]:
        return {
            "wall_seconds": round(time.perf_counter() - start, 3),
            **{k: round(v, 3) for k, v in ctx.timings.items()},
            **provenance.peak_memory(),
            "log": ctx.notes,
            **ctx.extra_provenance,
        }
