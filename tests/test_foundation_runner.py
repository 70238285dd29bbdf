"""The runner: end to end, invariance to batch size and world size, resume after a crash or a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.errors import ArbenchError
from harness.runner import RunOptions, Runner
from harness.store import Store

TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent


def _runner(results: Path, **options) -> Runner:
    return Runner(Store(f"sqlite:///{results / 'arbench.db'}"), RunOptions(progress=False, **options))


def _expected_mean(n: int, dim: int = 4, shift: float = 0.5, seed: int = 0) -> float:
    rows = [np.random.default_rng(seed * 100003 + i).normal(shift, 1.0, dim) for i in range(n)]
    return float(np.mean(rows))


def test_run_end_to_end_records_metrics_signature_provenance(results_dir):
    result = _runner(results_dir, batch_size=4, shard_size=8).run("toy-gauss", "toy-sampler", {"num_samples": 20})
    values = {m.name: m.value for m in result.metrics}
    assert values["mean_value"] == pytest.approx(_expected_mean(20), rel=1e-12)
    assert values["count"] == 20
    (record,) = Store(f"sqlite:///{results_dir / 'arbench.db'}").records()
    assert record["status"] == "finished" and record["source"] == "reproduced"
    assert "task.num_samples:20" in record["signature"] and "method.shift:0.5" in record["signature"]
    assert "method" not in record["eval_signature"]
    for key in ("harness_version", "python", "packages", "world_size", "batch_size", "wall_seconds",
                "peak_rss_mb", "device", "tf32_matmul", "dtype", "global_seed", "request_seeds_sha256"):
        assert key in record["provenance"], key
    assert record["provenance"]["batch_size"] == 4


@pytest.mark.parametrize("batch_size,shard_size", [(1, 3), (7, 64)])
def test_result_does_not_depend_on_batch_or_shard_size(results_dir, batch_size, shard_size):
    result = _runner(results_dir, batch_size=batch_size, shard_size=shard_size).run(
        "toy-gauss", "toy-sampler", {"num_samples": 13})
    assert result.metrics[0].value == pytest.approx(_expected_mean(13), rel=1e-12)


def test_crash_is_stored_as_failed_and_rerun_resumes(results_dir, monkeypatch):
    monkeypatch.setenv("TOY_CALLS", "0")
    runner = _runner(results_dir, batch_size=2, shard_size=2)
    with pytest.raises(RuntimeError, match="crashed on purpose"):
        runner.run("toy-gauss", "toy-sampler", {"num_samples": 10, "crash_after_calls": 3})
    (failed,) = runner.store.records()
    assert failed["status"] == "failed" and "crashed on purpose" in failed["error"]
    assert failed["metrics"] == {}
    shard_root = Path(failed["artifacts_path"]) / "shards-2"
    # the three finished shards survived; the one in flight stayed a temporary folder, never a result
    assert sorted(p.name for p in shard_root.glob("shard-*")) == ["shard-00000", "shard-00001", "shard-00002"]
    assert [p.name.split(".tmp")[0] for p in shard_root.glob(".shard-*")] == [".shard-00003"]

    monkeypatch.setenv("TOY_CALLS", "0")
    result = runner.run("toy-gauss", "toy-sampler", {"num_samples": 10})  # crash setting is not in the signature
    assert result.run_id == failed["run_id"]  # the same run, resumed
    assert int(os.environ["TOY_CALLS"]) == 2  # 5 shards of 1 call each; the 3 finished ones were not regenerated
    (record,) = runner.store.records()
    assert record["status"] == "finished" and record["error"] is None
    assert record["metrics"]["mean_value"]["value"] == pytest.approx(_expected_mean(10), rel=1e-12)
    assert any("resuming" in line for line in record["provenance"]["log"])


def _cli_env(results: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ARBENCH_RESULTS=str(results), PYTHONPATH=f"{TESTS_DIR}{os.pathsep}{ROOT}",
               ARBENCH_PLUGINS="plugins.toy", OMP_NUM_THREADS="1")
    env.pop("ARBENCH_DB_URL", None)
    return env


def test_killed_run_resumes_from_finished_shards(results_dir):
    args = [sys.executable, "-m", "harness", "run", "toy-gauss", "toy-sampler", "--set", "num_samples=12",
            "--set", "sleep_per_call=0.4", "--shard-size", "2", "--batch-size", "2", "--no-progress"]
    proc = subprocess.Popen(args, env=_cli_env(results_dir), cwd=results_dir.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    done: list[Path] = []
    while time.time() < deadline and len(done) < 2:
        done = list(results_dir.glob("artifacts/*/shards-2/shard-*"))
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= len(done) < 6, "the run should have been killed midway"
    finished_before = {p.name for p in results_dir.glob("artifacts/*/shards-2/shard-*")}

    rerun = subprocess.run(args[:-5] + ["--set", "sleep_per_call=0", "--shard-size", "2", "--batch-size", "2",
                                        "--no-progress"], env=_cli_env(results_dir), cwd=results_dir.parent,
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: {len(finished_before)} of 6 shards already done" in rerun.stderr
    records = Store(f"sqlite:///{results_dir / 'arbench.db'}").records()
    assert len(records) == 1 and records[0]["status"] == "finished"
    assert records[0]["metrics"]["mean_value"]["value"] == pytest.approx(_expected_mean(12), rel=1e-12)


def test_two_gloo_ranks_give_the_same_result_as_one(results_dir):
    env = _cli_env(results_dir)
    common = ["toy-gauss", "toy-sampler", "--set", "num_samples=11", "--shard-size", "2", "--no-progress"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29517", "-m", "harness", "run", *common, "--batch-size", "3",
                          "--device", "cpu"], env=env, cwd=results_dir.parent, capture_output=True, text=True,
                         timeout=240)
    assert two.returncode == 0, two.stderr[-3000:]
    store = Store(f"sqlite:///{results_dir / 'arbench.db'}")
    (dist_record,) = store.records()
    assert dist_record["provenance"]["world_size"] == 2
    shard_dirs = sorted(Path(dist_record["artifacts_path"]).glob("shards-2/shard-*"))
    assert len(shard_dirs) == 6

    one_results = results_dir.parent / "one"
    one = _runner(one_results, batch_size=5, shard_size=2).run("toy-gauss", "toy-sampler", {"num_samples": 11})
    assert dist_record["metrics"]["mean_value"]["value"] == one.metrics[0].value  # bit-identical
    assert dist_record["signature"] == str(_runner(one_results).plan("toy-gauss", "toy-sampler",
                                                                      {"num_samples": 11}).signature)


def test_score_validates_before_storing_anything(results_dir, tmp_path):
    runner = _runner(results_dir)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 4)))
    with pytest.raises(ArbenchError, match=r"shape \(3, 4\), expected \(10, 4\)"):
        runner.score("toy-gauss", bad)
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ArbenchError, match="not a plain .npy"):
        runner.score("toy-gauss", pickled)
    with pytest.raises(ArbenchError, match="no samples at"):
        runner.score("toy-gauss", tmp_path / "missing.npy")
    assert runner.store.records() == []

    good = tmp_path / "mine.npy"
    np.save(good, np.ones((10, 4)))
    result = runner.score("toy-gauss", good)
    (record,) = runner.store.records()
    assert record["kind"] == "score" and record["source"] == "submitted" and record["label"] == "mine"
    assert result.metrics[0].value == 1.0


def test_plan_routes_settings_and_refuses_unknown_ones(results_dir):
    runner = _runner(results_dir)
    plan = runner.plan("toy-gauss", "toy-sampler", {"num_samples": "5", "shift": 1, "task.seed": 3})
    assert plan.task.config.num_samples == 5 and plan.task.config.seed == 3
    assert plan.method.config.shift == 1.0 and isinstance(plan.method.config.shift, float)
    with pytest.raises(ArbenchError, match="unknown setting 'num_sample'.*Did you mean: num_samples"):
        runner.plan("toy-gauss", "toy-sampler", {"num_sample": 5})
    with pytest.raises(ArbenchError, match="num_samples=many: Input should be a valid integer"):
        runner.plan("toy-gauss", "toy-sampler", {"num_samples": "many"})
    with pytest.raises(ArbenchError, match="has no setting 'sheft'.*Did you mean: shift"):
        runner.plan("toy-gauss", "toy-sampler", {"method.sheft": 1})
