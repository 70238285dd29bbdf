"""Submissions: manifest validation, the shared queue (4 workers on PostgreSQL), leases after a SIGKILL,
sandbox limits, refusal of code-running pickles, and equality with a direct `arbench run`."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from harness.errors import ArbenchError
from harness.provenance import sha256_file
from harness.runner import RunOptions, Runner
from harness.store import Store
from harness.submissions import get_submission, list_submissions, submit
from harness.worker import Limits, Worker

TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent

ADAPTER = textwrap.dedent('''
    import os, sys, time
    from dataclasses import dataclass
    import numpy as np
    from safetensors.numpy import load_file
    from harness.api import Method

    @dataclass
    class ShiftConfig:
        checkpoint: str = ""
        behaviour: str = "ok"
        target: str = ""

    class ShiftModel(Method):
        description = "test adapter: Gaussian vectors around a shift read from its checkpoint"
        modality = "vector"
        family = "test-adapter"
        Config = ShiftConfig

        def __init__(self, config, device="cpu"):
            super().__init__(config, device)
            self.shift = float(load_file(config.checkpoint)["shift"][0]) if config.checkpoint else 0.0

        def settings(self):
            return {"behaviour": self.config.behaviour}

        def generate(self, requests):
            b = self.config.behaviour
            if b == "raise":
                raise ValueError("adapter exploded on purpose")
            if b == "hang":
                time.sleep(10 ** 6)
            if b == "allocate":
                hog = []
                while True:
                    hog.append(bytearray(10 ** 8))
            if b == "open_db":
                import sqlite3
                conn = sqlite3.connect(self.config.target)
                conn.execute("DELETE FROM metrics")
                conn.commit()
            if b == "garbage":
                sys.stdout.buffer.write(bytes(range(256)) * 50)
                sys.stdout.flush()
            return np.stack([np.random.default_rng(r.seed).normal(self.shift, 1.0, r.condition["dim"])
                             for r in requests])
''')


def _manifest(folder: Path, **fields) -> Path:
    lines = []
    tables = {k: fields.pop(k) for k in list(fields) if isinstance(fields[k], dict)}
    for key, value in fields.items():
        lines.append(f"{key} = {json.dumps(value)}")
    tables.setdefault("submitter", {"name": "Jane Doe", "contact": "jane@example.org"})
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = folder / "manifest.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _adapter_bundle(folder: Path, shift: float = 0.75, **settings) -> Path:
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "shift_adapter.py").write_text(ADAPTER)
    save_file({"shift": np.array([shift], dtype=np.float32)}, str(folder / "model.safetensors"))
    return _manifest(folder, task="toy-gauss", method="shift_adapter:ShiftModel", adapter_path="adapter",
                     license="MIT", label="Shift (author)",
                     checkpoint={"path": "model.safetensors", "sha256": sha256_file(folder / "model.safetensors")},
                     settings=settings or {"behaviour": "ok"}, task_settings={"num_samples": 6})


@pytest.fixture
def store(results_dir) -> Store:
    return Store(f"sqlite:///{results_dir / 'arbench.db'}")


@pytest.mark.parametrize("fields,message", [
    (dict(task="toy-gauss", method="toy-sampler"), "key 'license' is missing"),
    (dict(task="toy-gauss", method="toy-sampler", licence="MIT"), "key 'licence' is not a manifest key (did you "
                                                                  "mean 'license'?)"),
    (dict(task="toy-gaus", method="toy-sampler", license="MIT"), "'toy-gaus' is not a registered task (did you "
                                                                 "mean toy-gauss?)"),
    (dict(task="toy-gauss", method="toy-smpler", license="MIT"), "(did you mean toy-sampler?)"),
    (dict(task="toy-gauss", method="toy-sampler", license="MIT", settings={"shfit": 1}),
     "key 'settings.shfit' is not a setting (did you mean 'shift'?)"),
    (dict(task="toy-gauss", method="toy-sampler", license=3), "key 'license': 3 is not of type 'string'"),
    (dict(task="toy-gauss", method="mod:Cls", license="MIT"), "key 'adapter_path' is missing"),
    (dict(task="toy-gauss", method="mod:Cls", license="MIT", adapter_path="nowhere",
          checkpoint={"path": "x.safetensors", "sha256": "ab"}), "key 'checkpoint.sha256' must be 64"),
    (dict(task="toy-gauss", method="toy-sampler", license="MIT", submitter={"contact": "x@y"}),
     "key 'submitter.name' is missing"),
])
def test_manifest_errors_name_the_key_and_what_is_expected(tmp_path, store, fields, message):
    with pytest.raises(ArbenchError, match="the manifest is not valid") as info:
        submit(store, _manifest(tmp_path, **fields))
    assert message in str(info.value)
    assert list_submissions(store) == []


def test_submission_equals_direct_run_and_keeps_contact_private(tmp_path, store, results_dir):
    path = _manifest(tmp_path, task="toy-gauss", method="toy-sampler", license="MIT", label="Toy (author)",
                     settings={"shift": 0.25}, task_settings={"num_samples": 9})
    sub_id = submit(store, path)
    assert get_submission(store, sub_id)["state"] == "pending"
    assert Worker(store, lease_seconds=20, limits=Limits(memory_mb=6144, wall_seconds=300)).run(once=True) == 1
    job = get_submission(store, sub_id)
    assert job["state"] == "finished", job["history"]
    assert [e["state"] for e in job["history"]] == ["pending", "validating", "running", "finished"]
    assert "contact" not in job and "jane@example.org" not in json.dumps(store.records())
    (record,) = store.records()
    assert record["source"] == "submitted" and record["label"] == "Toy (author)"
    assert record["artifacts_path"].endswith(f"submission-{sub_id}")  # never mixed with a direct run's shards

    direct = Runner(Store(f"sqlite:///{tmp_path / 'direct.db'}"), RunOptions(progress=False)).run(
        "toy-gauss", "toy-sampler", {"num_samples": 9, "shift": 0.25})
    assert record["signature"] == str(Runner(store).plan("toy-gauss", "toy-sampler",
                                                         {"num_samples": 9, "shift": 0.25}).signature)
    assert record["metrics"]["mean_value"]["value"] == direct.metrics[0].value


def test_adapter_jobs_and_their_failures(tmp_path, store, results_dir):
    def queue(name: str, **kwargs) -> str:
        folder = tmp_path / name
        folder.mkdir()
        return submit(store, _adapter_bundle(folder, **kwargs))

    ok = queue("ok", behaviour="ok")
    raising = queue("raise", behaviour="raise")
    allocating = queue("alloc", behaviour="allocate")
    db_path = results_dir / "arbench.db"
    opening = queue("db", behaviour="open_db", target=str(db_path))
    garbage = queue("garbage", behaviour="garbage")
    bad_sha = queue("sha", behaviour="ok")
    (Path(get_submission(store, bad_sha)["bundle_path"]) / "model.safetensors").write_bytes(b"tampered")

    marker = tmp_path / "pwned"
    evil_dir = tmp_path / "evil"
    evil_dir.mkdir()
    (evil_dir / "adapter").mkdir()
    (evil_dir / "adapter" / "shift_adapter.py").write_text(ADAPTER)

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (evil_dir / "model.pt").write_bytes(pickle.dumps({"shift": Evil()}))
    evil = submit(store, _manifest(evil_dir, task="toy-gauss", method="shift_adapter:ShiftModel",
                                   adapter_path="adapter", license="MIT",
                                   checkpoint={"path": "model.pt", "sha256": sha256_file(evil_dir / "model.pt")}))

    worker = Worker(store, lease_seconds=30, limits=Limits(memory_mb=4096, wall_seconds=240))
    for _ in range(7):
        worker.run(once=True)
    state = {s: get_submission(store, s) for s in (ok, raising, allocating, opening, garbage, bad_sha, evil)}
    assert state[ok]["state"] == "finished", state[ok]["history"]
    finished_run = [r for r in store.records() if r["run_id"] == state[ok]["run_id"]][0]
    assert finished_run["metrics"]["mean_value"]["value"] == pytest.approx(
        np.mean([np.random.default_rng(i).normal(0.75, 1.0, 4) for i in range(6)]), rel=1e-6)
    assert "checkpoint_sha256" in finished_run["signature"]
    assert state[garbage]["state"] == "finished"  # garbage on stdout is only log
    assert "adapter exploded on purpose" in state[raising]["error"]
    assert "memory limit of 4096 MB" in state[allocating]["error"]
    # the child cannot reach the real database: it is hidden (an empty folder) or not writable
    assert state[opening]["state"] == "failed" and "sqlite3.OperationalError" in state[opening]["error"]
    assert "does not have the manifest's sha256" in state[bad_sha]["error"]
    assert "refused" in state[evil]["error"] and "weights_only" in state[evil]["error"]
    assert not marker.exists()
    # the database is intact: the finished runs still have their metric values
    assert all(r["metrics"] for r in store.records() if r["status"] == "finished")


def test_a_hanging_adapter_is_stopped_by_its_time_limit(tmp_path, store):
    sub_id = submit(store, _adapter_bundle(tmp_path, behaviour="hang"))
    Worker(store, lease_seconds=30, limits=Limits(memory_mb=4096, wall_seconds=20)).run(once=True)
    job = get_submission(store, sub_id)
    assert job["state"] == "failed" and "time limit of 20 s" in job["error"]


@pytest.mark.postgres
def test_four_workers_share_fifty_jobs_exactly_once(pg_url, tmp_path, results_dir):
    store = Store(pg_url)
    manifest = _manifest(tmp_path, task="toy-gauss", method="toy-sampler", license="MIT")
    ids = [submit(store, manifest) for _ in range(50)]
    log = tmp_path / "claims.log"
    env = dict(os.environ, PYTHONPATH=f"{TESTS_DIR}{os.pathsep}{ROOT}")
    workers = [subprocess.Popen([sys.executable, "-m", "plugins.queue_worker", pg_url, f"w{i}", str(log)],
                                env=env) for i in range(4)]
    for proc in workers:
        assert proc.wait(timeout=300) == 0
    claims = Counter(log.read_text().split())
    assert set(claims) == set(ids) and set(claims.values()) == {1}
    for job in list_submissions(store):
        assert job["state"] == "finished" and job["attempts"] == 1
        assert [e["state"] for e in job["history"]] == ["pending", "validating", "running", "finished"]
    store.dispose()


@pytest.mark.postgres
def test_job_of_a_killed_worker_is_rerun_once_after_its_lease_expires(pg_url, tmp_path, results_dir):
    store = Store(pg_url)
    sub_id = submit(store, _manifest(tmp_path, task="toy-gauss", method="toy-sampler", license="MIT",
                                     settings={"sleep_per_call": 6.0}, task_settings={"num_samples": 4}))
    env = dict(os.environ, PYTHONPATH=f"{TESTS_DIR}{os.pathsep}{ROOT}", ARBENCH_RESULTS=str(results_dir))
    cmd = [sys.executable, "-m", "harness", "--db", pg_url, "worker", "--once", "--lease-seconds", "3"]
    first = subprocess.Popen(cmd, env=env)
    deadline = time.time() + 180
    while get_submission(store, sub_id)["state"] != "running" and time.time() < deadline:
        time.sleep(0.2)
    assert get_submission(store, sub_id)["state"] == "running"
    first.send_signal(signal.SIGKILL)
    first.wait()
    time.sleep(4)  # the lease runs out
    second = subprocess.run(cmd, env=env, timeout=300, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    job = get_submission(store, sub_id)
    assert job["state"] == "finished" and job["attempts"] == 2, job["history"]
    assert any("expired (worker presumed dead)" in e["message"] for e in job["history"])
    assert len([r for r in store.records() if r["status"] == "finished"]) == 1
    store.dispose()
