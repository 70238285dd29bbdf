"""Workers: take submissions from the shared queue and run them, each in a limited child process.

    arbench worker [--once] [--task T ...]

claim (atomic) -> validating: manifest again, checkpoint sha256, no pickle that needs code
-> running: `python -m harness.sandbox` under limits -> the worker (harness code) scores the samples
the child handed back and records a `submitted` run -> finished | failed, with the reason in the history.
The lease is renewed by a thread while the job runs; a cancelled or reaped job is abandoned at once.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.config import results_dir
from harness.errors import ArbenchError
from harness.provenance import sha256_file
from harness.registry import METHODS
from harness.runner import RunOptions, Runner
from harness.store import Store
from harness.submissions import advance, claim, get_submission, renew, tomllib, validate_manifest

SHARD_NAME = re.compile(r"^shards-\d+/shard-\d{5}$")
# Mounts a tmpfs over each folder to hide, keeps the working folder writable, makes the rest read-only.
ISOLATE_SCRIPT = (
    'work=$1; shift; while [ "$1" != "--" ]; do mount -t tmpfs -o size=1m,mode=000 none "$1" || exit 97; shift; '
    'done; shift; mount --bind "$work" "$work" && mount -o remount,bind,ro / || exit 97; exec "$@"'
)


@dataclass
class Limits:
    """What a submission's child process may use."""

    memory_mb: int = 8192
    wall_seconds: float = 3600.0
    open_files: int = 256
    file_size_mb: int = 4096


class JobFailed(Exception):
    """A submission failed for a reason that goes into its history."""


@lru_cache(maxsize=1)
def namespaces_available() -> bool:
    """Whether this machine lets us start the child in its own network and mount namespaces."""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--mount", "--net", "--propagation", "private", "true"],
                           capture_output=True, timeout=10)
    return probe.returncode == 0


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
                 batch_size: int = 16, shard_size: int = 64):
        self.store = store
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.tasks = tasks
        self.lease_seconds = lease_seconds
        self.limits = limits or Limits()
        self.poll_seconds = poll_seconds
        self.batch_size, self.shard_size = batch_size, shard_size

    def run(self, once: bool = False) -> int:
        """Process jobs until the queue is empty (`once`) or forever; returns the number processed."""
        done = 0
        while True:
            sub_id = claim(self.store, self.worker_id, self.tasks, self.lease_seconds)
            if sub_id is None:
                if once:
                    return done
                time.sleep(self.poll_seconds)
                continue
            self.process(sub_id)
            done += 1
            if once:
                return done

    def process(self, sub_id: str) -> str:
        """Run one claimed job to its end; never raises for the job's own failures."""
        keeper = LeaseKeeper(self.store, sub_id, self.worker_id, self.lease_seconds)
        keeper.start()
        workdir = Path(tempfile.mkdtemp(prefix="arbench-sandbox-"))
        try:
            job = get_submission(self.store, sub_id)
            manifest, checkpoint = self._validate(job)
            if not advance(self.store, sub_id, self.worker_id, "running",
                           f"validated; running in a sandbox ({self._isolation_summary()})"):
                return "abandoned"
            result = self._run_child(job, manifest, checkpoint, workdir, keeper)
            if keeper.lost.is_set() or not renew(self.store, sub_id, self.worker_id, self.lease_seconds):
                return "abandoned"
            run_id = self._score(job, manifest, checkpoint, result, workdir)
            advance(self.store, sub_id, self.worker_id, "finished", f"scored as run {run_id}", run_id=run_id)
            return "finished"
        except (JobFailed, ArbenchError) as exc:
            reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - the worker and the queue carry on whatever a job does
            reason = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            keeper.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        advance(self.store, sub_id, self.worker_id, "failed", reason, error=reason)
        return "failed"

    # -- steps ---------------------------------------------------------------------------------
    def _validate(self, job: dict[str, Any]) -> tuple[dict[str, Any], Path | None]:
        bundle = Path(job["bundle_path"])
        manifest = tomllib.loads((bundle / "manifest.toml").read_text(encoding="utf-8"))
        validate_manifest(manifest, bundle)
        spec = manifest.get("checkpoint")
        if spec is None:
            return manifest, None
        path = bundle / spec["path"] if "path" in spec else self._download(spec["url"], bundle)
        digest = sha256_file(path)
        if digest != spec["sha256"]:
            raise JobFailed(f"checkpoint sha256 is {digest}, but the manifest says {spec['sha256']}; "
                            "fix the manifest or upload the intended file")
        check_checkpoint_is_safe(path)
        return manifest, path

    @staticmethod
    def _download(url: str, bundle: Path) -> Path:
        target = bundle / "checkpoint.download"
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as exc:
            raise JobFailed(f"could not download the checkpoint from {url}: {exc}") from exc
        return target

    def _isolation_summary(self) -> str:
        parts = [f"memory {self.limits.memory_mb} MB", f"wall {self.limits.wall_seconds:g} s",
                 f"{self.limits.open_files} open files", "own folder", "no database credentials"]
        parts.append("no network, results hidden, read-only filesystem" if namespaces_available()
                     else "namespaces unavailable here: network and filesystem not isolated")
        return ", ".join(parts)

    def _run_child(self, job: dict[str, Any], manifest: dict[str, Any], checkpoint: Path | None,
                   workdir: Path, keeper: LeaseKeeper) -> dict[str, Any]:
        bundle = Path(job["bundle_path"])
        adapter_dir = None
        if manifest.get("adapter_path"):
            adapter_dir = workdir / "adapter" / Path(manifest["adapter_path"]).name
            copy = shutil.copytree if (bundle / manifest["adapter_path"]).is_dir() else shutil.copy2
            adapter_dir.parent.mkdir()
            copy(bundle / manifest["adapter_path"], adapter_dir)
        child_checkpoint = None
        if checkpoint is not None:
            child_checkpoint = workdir / ("checkpoint" + "".join(checkpoint.suffixes[-1:]))
            shutil.copy2(checkpoint, child_checkpoint)
        out = workdir / "out"
        out.mkdir()
        spec = {"task": job["task"], "method": job["method"], "settings": manifest.get("settings", {}),
                "task_settings": manifest.get("task_settings", {}), "checkpoint": str(child_checkpoint or ""),
                "adapter_dir": str(adapter_dir) if adapter_dir else None, "out_dir": str(out),
                "batch_size": self.batch_size, "shard_size": self.shard_size}
        (workdir / "spec.json").write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "harness.sandbox", str(workdir / "spec.json")]
        if namespaces_available():
            hidden = sorted({str(results_dir())} | set(self._sqlite_dirs()))
            hidden = [h for h in hidden if Path(h).is_dir() and not str(workdir).startswith(h)]
            cmd = ["unshare", "--mount", "--net", "--propagation", "private", "--", "sh", "-c", ISOLATE_SCRIPT,
                   "sh", str(workdir), *hidden, "--", *cmd]
        log_path = workdir / "child.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, cwd=workdir, env=self._child_env(workdir), stdout=log, stderr=log,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=self._limit_child)
            deadline = time.monotonic() + self.limits.wall_seconds
            while proc.poll() is None:
                if keeper.lost.is_set():
                    _kill(proc)
                    raise JobFailed("the job was cancelled or its lease was lost; the child was stopped")
                if time.monotonic() > deadline:
                    _kill(proc)
                    raise JobFailed(f"the method ran past the time limit of {self.limits.wall_seconds:g} s "
                                    "and was stopped")
                time.sleep(0.2)
        tail = _tail(log_path)
        if proc.returncode != 0:
            if proc.returncode == 97:
                raise JobFailed("the sandbox could not be set up (mount namespace); the job did not run")
            if "MemoryError" in tail or proc.returncode in (-signal.SIGKILL, -signal.SIGSEGV):
                raise JobFailed(f"the method exceeded the memory limit of {self.limits.memory_mb} MB "
                                f"(exit {proc.returncode}); last output:\n{tail}")
            raise JobFailed(f"the method failed (exit {proc.returncode}); last output:\n{tail}")
        try:
            result = json.loads((out / "result.json").read_text()[:1_000_000])
            assert isinstance(result, dict) and isinstance(result.get("shards"), list)
            assert all(isinstance(s, str) and SHARD_NAME.match(s) for s in result["shards"])
            assert isinstance(result.get("method_settings"), dict)
        except (OSError, ValueError, AssertionError) as exc:
            raise JobFailed(f"the sandbox handed back no valid result ({type(exc).__name__}); "
                            f"last output:\n{tail}") from exc
        return result

    @staticmethod
    def _child_env(workdir: Path) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), "TMPDIR": str(workdir),
               "XDG_CACHE_HOME": str(workdir / ".cache"), "MPLCONFIGDIR": str(workdir / ".mpl"),
               "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1", "ARBENCH_RESULTS": str(workdir / "none")}
        for key in ("ARBENCH_PLUGINS", "PYTHONPATH", "OMP_NUM_THREADS", "LANG", "LC_ALL",
                    "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            if key in os.environ:
                env[key] = os.environ[key]
        return env

    def _sqlite_dirs(self) -> list[str]:
        if self.store.is_sqlite and self.store.engine.url.database not in (None, "", ":memory:"):
            return [str(Path(self.store.engine.url.database).resolve().parent)]
        return []

    def _limit_child(self) -> None:
        _die_with_parent()
        memory = self.limits.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.limits.open_files, self.limits.open_files))
        size = self.limits.file_size_mb * 2**20
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        cpu = int(self.limits.wall_seconds) + 60
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))

    def _score(self, job: dict[str, Any], manifest: dict[str, Any], checkpoint: Path | None,
               result: dict[str, Any], workdir: Path) -> str:
        method = job["method"]
        info = {"name": method, "family": result.get("family") or "submitted",
                "description": str(result.get("description") or "")[:500]}
        if method in METHODS.names():
            cls = METHODS.get(method)
            info = {"name": method, "family": cls.family, "description": cls.description, "version": cls.version}
        runner = Runner(self.store, RunOptions(label=job["label"], source="submitted", progress=False))
        plan = runner.plan_external(job["task"], manifest.get("task_settings", {}), info,
                                    result["method_settings"], sha256_file(checkpoint) if checkpoint else None)
        plan.settings["submission_id"] = job["id"]
        out = workdir / "out"

        def score(ctx):
            requests = plan.task.requests()
            shard_dirs = []
            for rel in result["shards"]:
                target = ctx.run_dir / "submission" / rel
                if target.exists():
                    shutil.rmtree(target)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(out / rel, target, symlinks=False)
                shard_dirs.append(target)
            expected = -(-len(requests) // self.shard_size)
            if len(shard_dirs) != expected:
                raise JobFailed(f"the sandbox handed back {len(shard_dirs)} shards, expected {expected}")
            return plan.task.score(plan.task.read_generated(shard_dirs, requests), ctx)

        return runner.record(plan, score, artifact_key=f"submission-{job['id']}").run_id


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


def _die_with_parent() -> None:
    """Linux: the child gets SIGKILL if the worker dies, so a killed worker leaves no orphan running."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _tail(path: Path, size: int = 2000) -> str:
    data = path.read_bytes()[-size:]
    text = data.decode("utf-8", errors="replace")
    return "".join(ch if ch.isprintable() or ch in "\n\t" else "?" for ch in text).strip()
