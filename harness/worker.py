"""Workers: take submissions from the shared queue and run them, each in a sandbox.

    arbench worker [--once | --max-jobs N] [--task T ...] [--allow-unsandboxed]

claim (atomic) -> validating: manifest again (paths confined to the bundle), checkpoint sha256 (downloaded
over https only, capped), no pickle that needs code; the task's requests built here and handed to the child
as data, with copies of the files they name (`Task.input_keys`) and no task data folder -> running:
`python -m harness.sandbox` in the job's sandbox (`harness.isolation`: bubblewrap, an unprivileged uid,
resource limits; the history states the isolation the job had) -> the worker copies back regular files only, checks them with the task's own
loader and scores them (harness code), and records a `submitted` run -> finished | failed, with the
reason in the history. The lease is renewed by a thread while the job runs; a cancelled or reaped job
is abandoned at once, its sandbox killed.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.api import Request, build_config
from harness.errors import ArbenchError
from harness.isolation import (JOB_MOUNT, Isolation, Limits, SandboxError, TailBuffer, child_env, harvest, kill_uid,
                               limiter, make_job_dir, pick_uid, probe_isolation, sandbox_command, stage_inputs,
                               stage_settings)
from harness.metrics.base import MetricValue
from harness.provenance import sha256_file
from harness.registry import METHODS, TASKS
from harness.runner import RunOptions, Runner
from harness.store import Store
from harness.submissions import advance, claim, get_submission, renew, submissions_dir, tomllib, validate_manifest
from harness.weights import DownloadError, download

__all__ = ["Limits", "Worker", "JobFailed", "JobOutcome", "check_checkpoint_is_safe"]

SHARD_NAME = re.compile(r"^shards-\d+/shard-\d{5}$")
METRIC_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")
RESULT_MAX_BYTES = 16 * 2**20
CHECKPOINT_MAX_BYTES = 64 * 2**30
#: Exit statuses of a child killed by the kernel for a limit (bwrap reports 128 + signal).
LIMIT_SIGNALS = {signal.SIGKILL: "memory", signal.SIGSEGV: "memory", signal.SIGXCPU: "CPU time",
                 signal.SIGXFSZ: "file size"}


class JobFailed(Exception):
    """A submission failed for a reason that goes into its history."""


@dataclass
class JobOutcome:
    """What became of one job (`arbench worker` prints it)."""

    submission_id: str
    state: str  # finished | failed | abandoned
    run_id: str | None = None
    reason: str = ""
    metrics: list[MetricValue] = field(default_factory=list)

    def line(self) -> str:
        if self.state != "finished":
            return f"{self.submission_id}: {self.state}" + (f": {self.reason.splitlines()[0]}" if self.reason else "")
        shown = ", ".join(f"{m.name}={m.value:.4g}" if m.value is not None else f"{m.name}=-"
                          for m in self.metrics[:4])
        return f"{self.submission_id}: finished as run {self.run_id}: {shown}"


class LeaseKeeper(threading.Thread):
    def __init__(self, store: Store, sub_id: str, worker: str, lease_seconds: float):
        super().__init__(daemon=True)
        self.store, self.sub_id, self.worker, self.lease_seconds = store, sub_id, worker, lease_seconds
        self.lost = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.lease_seconds / 3):
            try:
                if not renew(self.store, self.sub_id, self.worker, self.lease_seconds):
                    self.lost.set()
                    return
            except Exception:  # noqa: BLE001 - a database hiccup: try again at the next tick
                continue

    def stop(self) -> None:
        self._halt.set()


class Worker:
    """One worker process; any number of them, on any number of machines, can share one database."""

    def __init__(self, store: Store, worker_id: str | None = None, tasks: list[str] | None = None,
                 lease_seconds: float = 30.0, limits: Limits | None = None, poll_seconds: float = 2.0,
                 batch_size: int = 16, shard_size: int = 64, allow_unsandboxed: bool = False,
                 isolation: Isolation | None = None):
        self.store = store
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.tasks = tasks
        self.lease_seconds = lease_seconds
        self.limits = limits or Limits()
        self.poll_seconds = poll_seconds
        self.batch_size, self.shard_size = batch_size, shard_size
        self.isolation = isolation or probe_isolation()
        self.allow_unsandboxed = allow_unsandboxed
        if not self.isolation.sandboxed:
            what = ("ALLOWED by --allow-unsandboxed: submitted code will run with resource limits only"
                    if allow_unsandboxed else "submitted adapters will be refused (registered methods still run)")
            print(f"worker {self.worker_id}: no sandbox here ({self.isolation.detail}); {what}", file=sys.stderr)

    def run(self, once: bool = False, max_jobs: int | None = None, report=None) -> int:
        """Process jobs until the queue is empty (`once`), `max_jobs` are done, or forever; returns how many
        were processed. `report` is called with each job's `JobOutcome`."""
        done = 0
        while max_jobs is None or done < max_jobs:
            sub_id = claim(self.store, self.worker_id, self.tasks, self.lease_seconds)
            if sub_id is None:
                if once:
                    break
                time.sleep(self.poll_seconds)
                continue
            outcome = self.process(sub_id)
            if report is not None:
                report(outcome)
            done += 1
        return done

    def process(self, sub_id: str) -> JobOutcome:
        """Run one claimed job to its end; never raises for the job's own failures."""
        keeper = LeaseKeeper(self.store, sub_id, self.worker_id, self.lease_seconds)
        keeper.start()
        job_dir = make_job_dir()
        try:
            job = get_submission(self.store, sub_id)
            manifest, checkpoint = self._validate(job)
            requests = self._prepare(job, manifest)
            task_cls = TASKS.get(job["task"])
            keys = task_cls.input_settings if task_cls.submission.timing_study else task_cls.input_keys
            shown = (f"; the files named by {', '.join(keys)} copied into the job, no task data folder shown" if keys
                     else "; no task data shown")
            if not advance(self.store, sub_id, self.worker_id, "running",
                           f"validated; running ({self.isolation.summary(self.limits)}{shown})"):
                return JobOutcome(sub_id, "abandoned")
            result = self._run_child(job, manifest, checkpoint, job_dir, keeper, requests)
            if keeper.lost.is_set() or not renew(self.store, sub_id, self.worker_id, self.lease_seconds):
                return JobOutcome(sub_id, "abandoned")
            run = self._score(job, manifest, checkpoint, result, job_dir)
            advance(self.store, sub_id, self.worker_id, "finished", f"scored as run {run.run_id}", run_id=run.run_id)
            return JobOutcome(sub_id, "finished", run.run_id, metrics=list(run.metrics))
        except (JobFailed, ArbenchError, SandboxError) as exc:
            reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - the worker and the queue carry on whatever a job does
            reason = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            keeper.stop()
            shutil.rmtree(job_dir, ignore_errors=True)
        advance(self.store, sub_id, self.worker_id, "failed", reason, error=reason)
        return JobOutcome(sub_id, "failed", reason=reason)

    # -- steps ---------------------------------------------------------------------------------
    def _validate(self, job: dict[str, Any]) -> tuple[dict[str, Any], Path | None]:
        bundle = Path(job["bundle_path"])
        manifest = tomllib.loads((bundle / "manifest.toml").read_text(encoding="utf-8"))
        validate_manifest(manifest, bundle)  # paths confined to the bundle, again
        spec = manifest.get("checkpoint")
        if spec is None:
            return manifest, None
        if "path" in spec:
            path = bundle / spec["path"]
            if sha256_file(path) != spec["sha256"]:
                raise JobFailed(f"the checkpoint does not have the manifest's sha256 {spec['sha256']}; fix the "
                                "manifest or upload the intended file")
        else:
            path = bundle / "checkpoint.download"
            try:
                download(spec["url"], path, spec["sha256"], max_bytes=CHECKPOINT_MAX_BYTES)
            except DownloadError as exc:
                raise JobFailed(f"checkpoint: {exc}") from exc
        check_checkpoint_is_safe(path)
        return manifest, path

    def _prepare(self, job: dict[str, Any], manifest: dict[str, Any]) -> list[Request]:
        """Refusals before any sandbox starts; returns the task's requests (built here, from the operator's data,
        and handed to the child as data, with copies of the files they name)."""
        if ":" in job["method"] and not self.isolation.sandboxed and not self.allow_unsandboxed:
            raise JobFailed(f"refused: this worker has no sandbox ({self.isolation.detail}) and runs no submitted "
                            "code; install bubblewrap, or have the operator start a worker with "
                            "--allow-unsandboxed, then retry the submission")
        task_cls = TASKS.get(job["task"])
        if task_cls.submission is None:
            raise JobFailed(f"task {job['task']!r} declares no submission interface")
        # the task's data (prompt lists, control maps, references) is read here, never by the child
        task = task_cls(build_config(task_cls.Config, manifest.get("task_settings", {}), f"task {job['task']!r}"))
        return task.requests()

    def _hidden(self) -> list[str]:
        return [str(submissions_dir()), *self._sqlite_dirs()]

    def _run_child(self, job: dict[str, Any], manifest: dict[str, Any], checkpoint: Path | None,
                   job_dir: Path, keeper: LeaseKeeper, requests: list[Request]) -> dict[str, Any]:
        bundle = Path(job["bundle_path"])
        spec: dict[str, Any] = {"task": job["task"], "method": job["method"], "settings": manifest.get("settings", {}),
                                "task_settings": manifest.get("task_settings", {}), "batch_size": self.batch_size,
                                "shard_size": self.shard_size,
                                "timing_study": TASKS.get(job["task"]).submission.timing_study}
        if manifest.get("adapter_path"):
            source = bundle / manifest["adapter_path"]
            spec["adapter"] = f"adapter/{source.name}"
            (job_dir / "adapter").mkdir()
            if source.is_dir():
                shutil.copytree(source, job_dir / spec["adapter"], symlinks=True)
            else:
                shutil.copyfile(source, job_dir / spec["adapter"])
        if checkpoint is not None:
            spec["checkpoint"] = "checkpoint" + "".join(checkpoint.suffixes[-1:])
            shutil.copyfile(checkpoint, job_dir / spec["checkpoint"])
        level = self.isolation.level if self.isolation.sandboxed else "none"
        inside = JOB_MOUNT if level != "none" else str(job_dir)
        if spec["timing_study"]:  # the child runs the task's run(): the files its settings name, copied
            try:
                spec["task_settings"] = stage_settings(spec["task_settings"], TASKS.get(job["task"]).input_settings,
                                                       job_dir, inside, self.limits, self._hidden())
            except SandboxError as exc:
                raise JobFailed(str(exc)) from exc
        else:  # the child generates for exactly these (it needs no reference data to make them)
            spec["requests"] = "requests.json"
            try:  # the files they name (control maps, voice prompts), copied; what lies beside them stays here
                requests = stage_inputs(requests, TASKS.get(job["task"]).input_keys, job_dir, inside, self.limits,
                                        self._hidden())
            except SandboxError as exc:
                raise JobFailed(str(exc)) from exc
            rows = [{"index": r.index, "id": r.id, "seed": r.seed, "condition": dict(r.condition)} for r in requests]
            (job_dir / "requests.json").write_text(json.dumps(rows))
        (job_dir / "spec.json").write_text(json.dumps(spec))
        for root, dirs, files in os.walk(job_dir):  # readable by the job's uid, writable by nobody but root
            for name in dirs + files:
                path = Path(root) / name
                if not path.is_symlink():
                    path.chmod(0o755 if path.is_dir() else 0o644)
        out = job_dir / "out"
        out.mkdir(mode=0o700)
        uid = pick_uid() if level == "bubblewrap" else None
        if uid is not None:
            os.chown(out, uid, uid)
        cmd = sandbox_command(level, job_dir, [sys.executable, "-m", "harness.sandbox", f"{inside}/spec.json"], uid,
                              self.limits, hide=self._hidden())
        env = child_env(inside)
        if level == "none":
            env.update(HOME=str(out), TMPDIR=str(out), XDG_CACHE_HOME=str(out / ".cache"))
        proc = subprocess.Popen(cmd, cwd=job_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=limiter(level, self.limits))
        tail = TailBuffer(proc.stdout, self.limits.log_kb * 1024)
        tail.start()
        try:
            deadline = time.monotonic() + self.limits.wall_seconds
            while proc.poll() is None:
                if keeper.lost.is_set():
                    raise JobFailed("the job was cancelled or its lease was lost; the sandbox was stopped")
                if time.monotonic() > deadline:
                    raise JobFailed(f"the method ran past the time limit of {self.limits.wall_seconds:g} s "
                                    "and was stopped")
                time.sleep(0.2)
        finally:
            _kill(proc)  # the sandbox's PID namespace, and with it every process in it
            if uid is not None:
                kill_uid(uid)  # anything that still runs under the job's uid
            tail.join(timeout=10)
            proc.stdout.close()
        code = proc.returncode
        signum = -code if code < 0 else code - 128 if level != "none" and code > 128 else 0
        log = tail.text()
        if code != 0:
            if signum in LIMIT_SIGNALS or "MemoryError" in log:
                what = LIMIT_SIGNALS.get(signum, "memory")
                cpu = self.limits.cpu_seconds or int(self.limits.wall_seconds) + 60
                limit = {"memory": f"{self.limits.memory_mb} MB", "CPU time": f"{cpu} s",
                         "file size": f"{self.limits.file_size_mb} MB"}[what]
                raise JobFailed(f"the method exceeded the {what} limit of {limit} (exit {code}); last output:\n{log}")
            raise JobFailed(f"the method failed (exit {code}); last output:\n{log}")
        try:
            harvest(out, job_dir / "harvest", self.limits)
        except SandboxError as exc:
            raise JobFailed(f"refused the method's output: {exc}") from exc
        return self._read_result(job_dir / "harvest", log, spec["timing_study"])

    @staticmethod
    def _read_result(folder: Path, log: str, timing_study: bool) -> dict[str, Any]:
        path = folder / "result.json"
        try:
            if path.stat().st_size > RESULT_MAX_BYTES:
                raise ValueError("result.json is too large")
            result = json.loads(path.read_text(encoding="utf-8"))
            if not (isinstance(result, dict) and isinstance(result.get("method_settings"), dict)):
                raise ValueError("no method_settings")
            if timing_study:
                result["metrics"] = [_metric(m) for m in result.get("metrics") or []]
                if not result["metrics"] or len(result["metrics"]) > 500:
                    raise ValueError("no metrics, or too many")
            else:
                shards = result.get("shards")
                if not (isinstance(shards, list) and all(isinstance(s, str) and SHARD_NAME.match(s) for s in shards)):
                    raise ValueError("bad shard list")
                if any(not (folder / s).is_dir() for s in shards):
                    raise ValueError("a listed shard is not a folder")
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise JobFailed(f"the sandbox handed back no valid result ({exc}); last output:\n{log}") from exc
        return result

    def _sqlite_dirs(self) -> list[str]:
        if self.store.is_sqlite and self.store.engine.url.database not in (None, "", ":memory:"):
            return [str(Path(self.store.engine.url.database).resolve().parent)]
        return []

    def _score(self, job: dict[str, Any], manifest: dict[str, Any], checkpoint: Path | None,
               result: dict[str, Any], job_dir: Path):
        method = job["method"]
        info = {"name": method, "family": str(result.get("family") or "submitted")[:100],
                "description": str(result.get("description") or "")[:500]}
        if method in METHODS.names():
            cls = METHODS.get(method)
            info = {"name": method, "family": cls.family, "description": cls.description, "version": cls.version}
        runner = Runner(self.store, RunOptions(label=job["label"], source="submitted", progress=False,
                                               shard_size=self.shard_size, batch_size=self.batch_size))
        plan = runner.plan_external(job["task"], manifest.get("task_settings", {}), info,
                                    result["method_settings"], sha256_file(checkpoint) if checkpoint else None)
        plan.settings["submission_id"] = job["id"]
        harvested = job_dir / "harvest"
        isolation = self.isolation.summary(self.limits)

        def timed(ctx):
            ctx.extra_provenance["isolation"] = isolation
            ctx.extra_provenance["measured_in_sandbox"] = (
                "timing study: the task's own run() timed method and baseline inside the sandbox; the numbers "
                "came back as data and are only as trustworthy as that process")
            return result["metrics"]

        def score(ctx):
            ctx.extra_provenance["isolation"] = isolation
            ctx.extra_provenance["scored_from"] = (
                "the samples the sandbox handed back, read by the task's own loader; timings a task's run() adds "
                "for trusted code (translation latency, TTS real-time factor) are not measured for a submission")
            requests = plan.task.requests()
            expected = -(-len(requests) // self.shard_size)
            if len(result["shards"]) != expected:
                raise JobFailed(f"the sandbox handed back {len(result['shards'])} shards, expected {expected}")
            shard_dirs = []
            for rel in result["shards"]:
                target = ctx.run_dir / "submission" / rel
                shutil.rmtree(target, ignore_errors=True)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(harvested / rel, target)  # harvested: plain files only
                shard_dirs.append(target)
            return plan.task.score_generated(shard_dirs, requests, ctx)  # the task's loader validates them

        body = timed if TASKS.get(job["task"]).submission.timing_study else score
        return runner.record(plan, body, artifact_key=f"submission-{job['id']}")


def _metric(raw: Any) -> MetricValue:
    """A metric a timing study's sandbox reported, checked field by field (it is untrusted data)."""
    if not isinstance(raw, dict) or set(raw) - {"name", "value", "higher_is_better", "unit", "version", "ci_low",
                                                "ci_high", "description"}:
        raise ValueError("a metric is not a plain record")
    name = raw.get("name")
    if not (isinstance(name, str) and METRIC_NAME.match(name)) or not isinstance(raw.get("higher_is_better"), bool):
        raise ValueError("a metric has a bad name or direction")
    numbers = {}
    for key in ("value", "ci_low", "ci_high"):
        x = raw.get(key)
        if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x)):
            raise ValueError(f"metric {name}: {key} is not a finite number")
        numbers[key] = None if x is None else float(x)
    texts = {k: str(raw.get(k, ""))[:limit] for k, limit in (("unit", 20), ("version", 20), ("description", 500))}
    return MetricValue(name, numbers["value"], raw["higher_is_better"], texts["unit"], texts["version"] or "1",
                       numbers["ci_low"], numbers["ci_high"], texts["description"])


def check_checkpoint_is_safe(path: Path) -> None:
    """Refuse any checkpoint that is not safetensors or a plain tensor pickle (`weights_only=True`)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt"):
                return
        except Exception as exc:  # noqa: BLE001 - any parse failure means a broken file
            raise JobFailed(f"the checkpoint is not a valid safetensors file: {exc}") from exc
    import pickle

    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, AttributeError) as exc:
        raise JobFailed(
            "refused: the checkpoint is not safetensors and cannot be loaded with weights_only=True (it would "
            f"need to run code to unpickle: {str(exc).splitlines()[0][:300]}). Save the state dict as "
            "safetensors (safetensors.torch.save_file) and submit that."
        ) from exc


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
