"""The CLI as a user meets it: `arbench diff` names exactly what differs, `show --group` tells rows apart,
the CSV export carries the comparability key, `leaderboard` refuses a taken port, and the pure diff and
settings functions of harness.diff."""

from __future__ import annotations

import csv
import io
import json
import os
import socket

from leaderboard_fixtures import add_run, fid, score

from harness.cli import main
from harness.diff import diff_runs, distinguishing_settings, flatten
from harness.metrics.base import MetricValue
from harness.store import Store

PROV = {"packages": {"torch": "2.5.1", "numpy": "2.1.0"}, "gpu_name": "H100", "batch_size": 16,
        "global_seed": 0, "wall_seconds": 12.0, "log": ["a"]}


def two_runs(store: Store) -> tuple[str, str]:
    """Two runs of one method differing in one setting, one package version and one metric version."""
    a = add_run(store, method="m-a", settings={"cfg": 2.0, "top_k": 0}, provenance=PROV,
                metrics=[fid(2.0), score(200)])
    b = add_run(store, method="m-a", settings={"cfg": 4.0, "top_k": 0},
                provenance={**PROV, "packages": {**PROV["packages"], "torch": "2.6.0"}, "wall_seconds": 30.0,
                            "log": ["b"]},
                metrics=[MetricValue("fid", 2.0, False, "", "2"), score(200)])
    return a, b


def test_diff_names_exactly_the_setting_the_package_and_the_metric_version(results_dir, capsys):
    store = Store()
    a, b = two_runs(store)
    result = diff_runs(*store.records(run_id=a), *store.records(run_id=b))
    assert [d.key for d in result.settings] == ["method.cfg"]
    assert [d.key for d in result.signature] == ["method.cfg"] and result.eval_signature == []
    assert [(d.key, d.a, d.b) for d in result.provenance] == [("packages.torch", "2.5.1", "2.6.0")]
    assert sorted(result.measurements) == ["log", "wall_seconds"]  # counted, not listed
    assert [(m.name, m.changed) for m in result.metrics] == [("fid", ("version",))]
    assert not result.comparable and any("fid: the metric's version differ" in r for r in result.reasons)

    assert main(["diff", a[:8], b]) == 0
    out = capsys.readouterr().out
    assert "NOT comparable" in out and "method.cfg" in out and "A=2.0  B=4.0" in out
    assert "packages.torch" in out and "packages.numpy" not in out and "batch_size" not in out
    assert main(["diff", a, b, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["key"] for d in data["provenance"]] == ["packages.torch"] and data["comparable"] is False


def test_diff_verdicts_same_protocol_and_different_protocols(results_dir):
    store = Store()
    a = add_run(store, method="m-a", settings={"cfg": 2.0}, metrics=[fid(2.0)])
    b = add_run(store, method="m-b", settings={"cfg": 2.0}, metrics=[fid(3.0)])
    paper = add_run(store, method="m-a", source="reported", protocol="paper", metrics=[fid(1.9)])
    rec = {r["run_id"]: r for r in store.records()}
    same = diff_runs(rec[a], rec[b])
    assert same.comparable and "same evaluation signature" in same.reasons[0]
    assert [(m.name, m.changed) for m in same.metrics] == [("fid", ("value",))]
    other = diff_runs(rec[a], rec[paper])
    assert not other.comparable
    assert [d.key for d in other.eval_signature] == ["protocol"]
    assert "evaluation signatures differ (in protocol)" in other.reasons[0]


def test_diff_refuses_unknown_ambiguous_and_short_ids(results_dir, capsys):
    store = Store()
    a = add_run(store, metrics=[fid(1.0)])
    for ident, message in (("zzzzzzzz", "no run 'zzzzzzzz'"), ("ab", "too short")):
        assert main(["diff", a, ident]) == 2
        assert message in capsys.readouterr().err


def test_flatten_and_settings_of_rows():
    assert flatten({"a": {"b": {"c": 1}}, "d": [1, 2], "e": {}}) == {"a.b.c": 1, "d": [1, 2], "e": {}}
    sigs = ["task:t|method:x|method.top_k:1|method.block:4", "task:t|method:x|method.top_k:3|method.block:4",
            "task:t|method:x|method.top_k:3|method.block:4|checkpoint_sha256:" + "ab" * 32, "task:t|method:y"]
    assert distinguishing_settings(sigs) == ["top_k=1", "top_k=3", "top_k=3, checkpoint_sha256=ababababab", ""]


def test_show_groups_by_signature_with_settings_and_picks_metrics(results_dir, capsys):
    store = Store()
    two_runs(store)
    add_run(store, method="m-a", source="reported", protocol="paper", metrics=[fid(1.9)])
    assert main(["show", "toy-board", "--group"]) == 0
    out = capsys.readouterr().out
    assert "protocol group P1" in out and "protocol group P2" in out
    assert "cfg=2.0" in out and "cfg=4.0" in out
    assert out.index("fid ↓") < out.index("inception_score ↑")  # the primary metric first
    assert main(["show", "--metrics", "inception_score"]) == 0
    out = capsys.readouterr().out
    assert "inception_score ↑" in out and "fid ↓" not in out and "1 more metrics: fid" in out


def test_csv_export_carries_signatures_settings_and_provenance(results_dir, capsys):
    store = Store()
    a, _ = two_runs(store)
    assert main(["export", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    row = next(r for r in rows if r["run_id"] == a and r["metric"] == "fid")
    assert row["eval_signature"] == "task:toy-board|protocol:p1" and len(row["eval_signature_hash"]) == 16
    assert json.loads(row["settings"]) == {"method": {"cfg": 2.0, "top_k": 0}}
    assert json.loads(row["provenance"])["packages"]["torch"] == "2.5.1"
    assert row["metric_version"] == "1" and "method.cfg:2.0" in row["signature"]


def test_leaderboard_refuses_a_taken_port(capsys, monkeypatch):
    calls = []
    monkeypatch.setattr("os.execve", lambda *a: calls.append(a))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert main(["leaderboard", "--address", "127.0.0.1", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port} is taken" in err and f"--port {port + 1}" in err and calls == []


def test_no_progress_silences_library_bars(monkeypatch, results_dir):
    for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(name, "0")  # restored after the test
    assert main(["run", "toy-gauss", "toy-sampler", "--set", "num_samples=4", "--no-progress"]) == 0
    assert os.environ["TQDM_DISABLE"] == "1" and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
