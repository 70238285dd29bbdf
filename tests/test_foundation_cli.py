"""The command line: listing, run/show/export, and one clear message for each kind of bad input."""

from __future__ import annotations

import csv
import io
import json

import pytest

from harness.cli import main


def test_tasks_and_methods_list_registered_names(capsys):
    assert main(["tasks"]) == 0
    assert "toy-gauss" in capsys.readouterr().out
    assert main(["methods"]) == 0
    assert "toy-sampler" in capsys.readouterr().out


def test_run_show_export(results_dir, capsys):
    assert main(["run", "toy-gauss", "toy-sampler", "--set", "num_samples=6", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "finished" in out and "mean_value" in out
    assert main(["show"]) == 0
    assert "toy-gauss" in capsys.readouterr().out

    assert main(["export", "--format", "json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    for key in ("run_id", "task", "task_version", "method", "status", "signature", "provenance", "created_at",
                "metrics"):
        assert key in record
    assert record["signature"] and record["provenance"]["harness_version"]
    assert set(record["metrics"]["mean_value"]) >= {"value", "higher_is_better"}

    out_file = results_dir / "runs.csv"
    assert main(["export", "--format", "csv", "--out", str(out_file)]) == 0
    rows = list(csv.DictReader(io.StringIO(out_file.read_text())))
    assert {r["metric"] for r in rows} == {"mean_value", "count"}


@pytest.mark.parametrize("argv,message", [
    (["run", "toy-gaus", "toy-sampler"], "unknown task 'toy-gaus'. Did you mean: toy-gauss?"),
    (["run", "toy-gauss", "toy-sample"], "unknown method 'toy-sample'. Did you mean: toy-sampler"),
    (["run", "toy-gauss", "toy-sampler", "--set", "shift"], "malformed --set 'shift'"),
    (["run", "toy-gauss", "toy-sampler", "--set", "shfit=1"], "Did you mean: shift?"),
    (["run", "toy-gauss", "toy-sampler", "--batch-size", "0"], "--batch-size and --shard-size must be positive"),
    (["--db", "postgresql://u:pw@127.0.0.1:1/x", "show"], "cannot reach the database"),
    (["weights", "verify", "no-such-weights"], "unknown weights no-such-weights"),
])
def test_bad_input_gives_one_clear_message(argv, message, results_dir, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    if argv[0] == "run":  # refused while planning: nothing was stored, not even an empty database
        assert not (results_dir / "arbench.db").exists()


def test_failed_run_is_stored_as_failed_not_as_result(results_dir, monkeypatch, capsys):
    monkeypatch.setenv("TOY_CALLS", "0")
    with pytest.raises(RuntimeError):
        main(["run", "toy-gauss", "toy-sampler", "--set", "crash_after_calls=0", "--no-progress"])
    assert main(["export"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["status"] == "failed" and record["metrics"] == {} and "crashed" in record["error"]
