"""Runs at the same time, runs whose process died, repeated requests, and where results go.

Concurrent runs are real processes (forked from the test process, so they start in milliseconds instead of
re-importing torch): they share the database and, where the test says so, the artifacts folder.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import signal
import sqlite3
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

from harness import config, runner as runner_module
from harness import store as store_module
from harness.cli import main
from harness.errors import ArbenchError
from harness.runner import RunOptions, Runner
from harness.store import Owner, Store, utcnow

FORK = multiprocessing.get_context("fork")


def _expected_mean(n: int, shift: float = 0.5, dim: int = 4) -> float:
    return float(np.mean([np.random.default_rng(i).normal(shift, 1.0, dim) for i in range(n)]))


def _child(url: str, results: str, overrides: dict, start, out) -> None:
    """One `arbench run` in its own process: reports (overrides, run id, stored?, resumed?) or its traceback."""
    os.environ["ARBENCH_RESULTS"] = results
    os.environ["TOY_CALLS"] = "0"
    try:
        start.wait(30)
        runner = Runner(Store(url), RunOptions(progress=False, batch_size=2, shard_size=2))
        result = runner.run("toy-gauss", "toy-sampler", overrides)
        out.put((json.dumps(overrides, sort_keys=True), result.run_id, result.stored, result.resumed, None))
    except BaseException:  # noqa: BLE001 - the parent asserts on it
        out.put((json.dumps(overrides, sort_keys=True), None, None, None, traceback.format_exc()))


def _warm_up(tmp_path: Path, monkeypatch) -> None:
    """One run here first, so that the forked children find plugins, migrations and compiled SQL loaded."""
    with monkeypatch.context() as m:
        m.setenv("ARBENCH_RESULTS", str(tmp_path / "warm-up"))
        Runner(Store(f"sqlite:///{tmp_path / 'warm-up' / 'a.db'}"), RunOptions(progress=False)).run(
            "toy-gauss", "toy-sampler", {"num_samples": 2})


def _run_at_once(url: str, jobs: list[tuple[Path, dict]]) -> list[tuple]:
    start, out = FORK.Event(), FORK.Queue()
    procs = [FORK.Process(target=_child, args=(url, str(results), overrides, start, out)) for results, overrides in jobs]
    for p in procs:
        p.start()
    start.set()
    reports = [out.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return reports


def _eight_at_once(url: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(runner_module, "WAIT_POLL_SECONDS", 0.1)
    _warm_up(tmp_path, monkeypatch)
    same = {"num_samples": 6, "sleep_per_call": 0.3}  # sleeping is no setting of the result (not in the signature)
    folder_a, folder_b = tmp_path / "results-a", tmp_path / "results-b"
    # four identical requests: three share an artifacts folder (the file lock), one uses another folder and meets
    # the others only in the database (the unique run key); and four different requests
    jobs = [(folder_a, same), (folder_a, same), (folder_a, same), (folder_b, same)]
    jobs += [(folder_a, {"num_samples": n, "sleep_per_call": 0.1}) for n in (3, 4)]
    jobs += [(folder_b, {"num_samples": n, "sleep_per_call": 0.1, "shift": 1.5}) for n in (3, 5)]
    reports = _run_at_once(url, jobs)
    errors = [r[4] for r in reports if r[4]]
    assert not errors, errors[0]

    records = Store(url).records()
    assert len(records) == 5, [r["signature"] for r in records]  # one run per distinct request, no duplicate
    assert all(r["status"] == "finished" and r["error"] is None for r in records)
    by_id = {r["run_id"]: r for r in records}
    assert {r[1] for r in reports} == set(by_id)  # every row was reported by a process, and every process's run exists
    identical = [r for r in reports if json.loads(r[0]) == same]
    assert len({r[1] for r in identical}) == 1  # all four report the same run ...
    assert sorted(r[2] for r in identical) == [False, True, True, True]  # ... which exactly one of them ran
    assert by_id[identical[0][1]]["metrics"]["mean_value"]["value"] == pytest.approx(_expected_mean(6), rel=1e-12)
    expected = {"task.num_samples:3|": _expected_mean(3), "task.num_samples:4|": _expected_mean(4)}
    for record in records:
        for key, mean in expected.items():
            if key in record["signature"] and "method.shift:0.5" in record["signature"]:
                assert record["metrics"]["mean_value"]["value"] == pytest.approx(mean, rel=1e-12)
    for folder in (folder_a, folder_b):  # no temporary shard folder left behind
        assert not list(folder.glob("artifacts/*/shards-*/.shard-*")), list(folder.glob("artifacts/*/shards-*/.*"))
    with Store(url).session() as s:  # one task row and one method row, whoever inserted them first
        assert s.scalar(store_module.select(store_module.func.count()).select_from(store_module.TaskRow)) == 1
        assert s.scalar(store_module.select(store_module.func.count()).select_from(store_module.MethodRow)) == 1


def test_eight_runs_at_once_on_a_fresh_sqlite_file(tmp_path, monkeypatch):
    _eight_at_once(f"sqlite:///{tmp_path / 'fresh.db'}", tmp_path, monkeypatch)


@pytest.mark.postgres
def test_eight_runs_at_once_on_postgresql(pg_url, tmp_path, monkeypatch):
    _eight_at_once(pg_url, tmp_path, monkeypatch)


def test_identical_rerun_stores_nothing_and_says_which_run(results_dir, capsys, monkeypatch):
    monkeypatch.setenv("TOY_CALLS", "0")
    argv = ["run", "toy-gauss", "toy-sampler", "--set", "num_samples=6", "--shard-size", "2", "--no-progress"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    (record,) = Store().records()
    assert f"run {record['run_id']}: finished" in first and f"database: sqlite:///{results_dir / 'arbench.db'}" in first
    calls = int(os.environ["TOY_CALLS"])

    assert main(argv) == 0
    again = capsys.readouterr().out
    assert f"run {record['run_id']}: finished (stored before" in again and "nothing was run or stored" in again
    assert "mean_value" in again and str(results_dir / "arbench.db") in again
    assert int(os.environ["TOY_CALLS"]) == calls  # nothing generated
    assert [r["run_id"] for r in Store().records()] == [record["run_id"]]


def test_repeat_stores_a_new_run_linked_to_the_first(results_dir, capsys, monkeypatch):
    monkeypatch.setenv("TOY_CALLS", "0")
    argv = ["run", "toy-gauss", "toy-sampler", "--set", "num_samples=6", "--shard-size", "2", "--no-progress"]
    assert main(argv) == 0
    assert main([*argv, "--repeat"]) == 0
    assert main([*argv, "--repeat"]) == 0
    out = capsys.readouterr().out
    first, second, third = Store().records()
    assert first["repeat_of"] is None and second["repeat_of"] == third["repeat_of"] == first["run_id"]
    assert f"run {second['run_id']}: finished (repeat of run {first['run_id']})" in out
    assert int(os.environ["TOY_CALLS"]) == 9  # each repeat generated all 3 shards again (timings are its own)
    assert len({r["artifacts_path"] for r in (first, second, third)}) == 3
    assert first["signature"] == second["signature"] == third["signature"]
    for record in (first, second, third):
        assert record["metrics"]["mean_value"]["value"] == pytest.approx(_expected_mean(6), rel=1e-12)

    Store().delete_run(second["run_id"])  # a gap in the numbering: the next repeat takes the next free number
    assert main([*argv, "--repeat"]) == 0
    assert [r["repeat_of"] for r in Store().records()] == [None, first["run_id"], first["run_id"]]


def test_scoring_the_same_samples_twice_stores_one_run_but_other_contents_another(results_dir, tmp_path):
    runner = Runner(Store(), RunOptions(progress=False))
    samples = tmp_path / "mine.npy"
    np.save(samples, np.ones((10, 4)))
    first = runner.score("toy-gauss", samples)
    again = runner.score("toy-gauss", samples)
    assert again.stored and again.run_id == first.run_id and again.metrics == first.metrics
    np.save(samples, np.zeros((10, 4)))  # same name, other contents: another request
    other = runner.score("toy-gauss", samples)
    assert not other.stored and other.metrics[0].value == 0.0
    records = Store().records()
    assert len(records) == 2 and records[0]["signature"] != records[1]["signature"]
    assert "samples_sha256:" in records[0]["signature"]


def test_shard_someone_else_finished_first_is_kept_not_an_error(tmp_path):
    final, tmp = tmp_path / "shard-00000", tmp_path / ".shard-00000.tmp-1"
    final.mkdir()
    (final / "values.npy").write_text("theirs")
    tmp.mkdir()
    (tmp / "values.npy").write_text("ours")
    runner_module._move_into_place(tmp, final)
    assert (final / "values.npy").read_text() == "theirs" and not tmp.exists()


# -- runs whose process died ---------------------------------------------------------------------------------
def _crashing_child(results: str, url: str) -> None:
    os.environ["ARBENCH_RESULTS"] = results
    os.environ["TOY_CALLS"] = "0"
    Runner(Store(url), RunOptions(progress=False, batch_size=2, shard_size=2)).run(
        "toy-gauss", "toy-sampler", {"num_samples": 10, "sleep_per_call": 0.2})


def test_killed_run_is_abandoned_in_show_and_export_and_resumed(results_dir, tmp_path, capsys, monkeypatch):
    url = f"sqlite:///{results_dir / 'arbench.db'}"
    _warm_up(tmp_path, monkeypatch)
    proc = FORK.Process(target=_crashing_child, args=(str(results_dir), url))
    proc.start()
    deadline = time.time() + 60
    while time.time() < deadline and len(list(results_dir.glob("artifacts/*/shards-2/shard-*"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    done = len(list(results_dir.glob("artifacts/*/shards-2/shard-*")))
    assert 2 <= done < 5, "the run should have been killed midway"

    assert main(["show"]) == 0
    assert "abandoned" in capsys.readouterr().out
    assert main(["export"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["status"] == "abandoned" and record["pid"] == proc.pid and record["host"] == Owner.me().host
    assert f"pid {proc.pid}" in record["error"] and "Rerun the same command" in record["error"]

    monkeypatch.setenv("TOY_CALLS", "0")
    assert main(["run", "toy-gauss", "toy-sampler", "--set", "num_samples=10", "--shard-size", "2",
                 "--batch-size", "2", "--no-progress"]) == 0
    assert f"run {record['run_id']}: finished (resumed)" in capsys.readouterr().out
    assert int(os.environ["TOY_CALLS"]) == 5 - done  # only the shards the killed process had not finished
    (resumed,) = Store(url).records()
    assert resumed["status"] == "finished" and resumed["error"] is None and resumed["pid"] == os.getpid()
    assert resumed["metrics"]["mean_value"]["value"] == pytest.approx(_expected_mean(10), rel=1e-12)


def test_sigterm_stores_the_run_as_failed_and_resumable(results_dir, tmp_path, monkeypatch):
    def child():
        os.environ["TOY_CALLS"] = "0"
        os._exit(main(["run", "toy-gauss", "toy-sampler", "--set", "num_samples=10", "--set", "sleep_per_call=0.2",
                       "--shard-size", "2", "--batch-size", "2", "--no-progress"]))

    _warm_up(tmp_path, monkeypatch)
    proc = FORK.Process(target=child)
    proc.start()
    deadline = time.time() + 60
    while time.time() < deadline and not list(results_dir.glob("artifacts/*/shards-2/shard-*")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(timeout=60)
    assert proc.exitcode == 130
    (record,) = Store().records()
    assert record["status"] == "failed" and "rerun the same command to resume" in record["error"]


def _run_row(store: Store, **owner) -> str:
    return store.create_run(task=dict(name="toy-gauss", version="1", modality="vector", description="",
                                      primary_metric=None), method=None, kind="run", source="reproduced",
                            label="x", signature="s", signature_hash="h", eval_signature="e",
                            eval_signature_hash="eh", settings={}, run_key="h", **owner)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_run_on_another_machine_is_abandoned_only_when_its_heartbeat_stops(backend, tmp_path, request):
    store = Store(f"sqlite:///{tmp_path / 'a.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url"))
    run_id = _run_row(store, owner=Owner("another-machine", 1))
    assert store.run_for_key("h")["status"] == "running"  # its pid means nothing here: the heartbeat decides
    with store.session() as s:
        s.get(store_module.RunRow, run_id).heartbeat_at = utcnow() - dt.timedelta(
            seconds=store_module.STALE_AFTER_SECONDS + 5)
    seen = store.run_for_key("h")
    assert seen["status"] == "abandoned" and seen["stored_status"] == "running"
    reader = Store(store.url, read_only=True)
    assert reader.records()[0]["status"] == "abandoned"  # derived on read where nothing may be written
    assert store.run_for_key("h")["stored_status"] == "running"
    assert store.records()[0]["status"] == "abandoned"  # written where the store is writable
    assert store.run_for_key("h")["stored_status"] == "abandoned"
    assert store.claim_run(store.run_for_key("h"), Owner.me())  # one process takes it over ...
    assert not store.claim_run(seen, Owner("third", 3))  # ... and a second one, acting on what it read, does not
    assert not store.heartbeat(run_id, Owner("another-machine", 1))  # the old owner learns it lost the run
    assert store.heartbeat(run_id, Owner.me())
    reader.dispose()
    store.dispose()


def test_heartbeat_is_renewed_while_a_run_works(results_dir, monkeypatch, capsys):
    monkeypatch.setattr(store_module, "HEARTBEAT_SECONDS", 0.05)
    result = Runner(Store(), RunOptions(progress=False, shard_size=2, batch_size=2)).run(
        "toy-gauss", "toy-sampler", {"num_samples": 6, "sleep_per_call": 0.2})
    with Store().session() as s:
        run = s.get(store_module.RunRow, result.run_id)
        assert (run.heartbeat_at - run.started_at).total_seconds() > 0.3  # renewed during the 0.6 s of sampling
    assert "warning" not in capsys.readouterr().err


# -- which database ------------------------------------------------------------------------------------------
@pytest.fixture
def user_home(tmp_path, monkeypatch) -> Path:
    """No results setting at all: the defaults a new user gets."""
    for name in ("ARBENCH_RESULTS", "ARBENCH_HOME", "ARBENCH_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "arbench"


def test_default_database_does_not_depend_on_the_working_directory(user_home, tmp_path, monkeypatch, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert main(["run", "toy-gauss", "toy-sampler", "--set", "num_samples=4", "--no-progress"]) == 0
    assert f"database: sqlite:///{user_home / 'arbench.db'}" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path / "b")
    assert config.default_db_url() == f"sqlite:///{user_home / 'arbench.db'}"
    assert main(["show"]) == 0
    assert "toy-gauss" in capsys.readouterr().out
    assert list(user_home.glob("artifacts/toy-gauss-*"))
    assert not (tmp_path / "a" / "results").exists() and not (tmp_path / "b" / "results").exists()

    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "home"))  # one folder for everything ARBench keeps
    assert config.default_db_url() == f"sqlite:///{tmp_path / 'home' / 'results' / 'arbench.db'}"
    monkeypatch.setenv("ARBENCH_RESULTS", str(tmp_path / "r"))
    assert config.artifacts_dir() == tmp_path / "r" / "artifacts"
    monkeypatch.setenv("ARBENCH_DB_URL", "sqlite:///elsewhere.db")
    assert config.default_db_url() == "sqlite:///elsewhere.db"


def test_an_old_results_database_here_gets_a_note_once(user_home, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Store(f"sqlite:///{tmp_path / 'results' / 'arbench.db'}").dispose()
    assert main(["show"]) == 0
    err = capsys.readouterr().err
    assert f"An older database was found at {tmp_path / 'results' / 'arbench.db'}" in err
    assert f"--db sqlite:///{tmp_path / 'results' / 'arbench.db'}" in err and str(user_home / "arbench.db") in err
    assert main(["show"]) == 0
    assert "older database" not in capsys.readouterr().err
    assert main(["--db", f"sqlite:///{tmp_path / 'results' / 'arbench.db'}", "show"]) == 0


def _damage(path: Path) -> None:
    """Overwrite the second page (a b-tree page of the schema's tables) with noise, as a bad disk sector would."""
    with sqlite3.connect(path) as conn:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as fh:
        fh.seek(page)
        fh.write(np.random.default_rng(0).integers(0, 256, page, dtype=np.uint8).tobytes())


def test_damaged_sqlite_file_is_refused_with_a_clear_message(tmp_path, capsys):
    path = tmp_path / "a.db"
    store = Store(f"sqlite:///{path}")
    _run_row(store)
    store.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _damage(path)
    for read_only in (False, True):
        with pytest.raises(ArbenchError, match=rf"the SQLite database {path} is damaged .*nothing was read"):
            Store(f"sqlite:///{path}", read_only=read_only)
    assert main(["--db", f"sqlite:///{path}", "export"]) == 2
    err = capsys.readouterr().err
    assert "is damaged" in err and ".recover" in err and "Traceback" not in err

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database file at all" * 200)
    with pytest.raises(ArbenchError, match="is damaged .*file is not a database"):
        Store(f"sqlite:///{garbage}")
