"""The curated paper-reported results: the bundled file validates, loading is idempotent, corrections
replace rows, marks stay on the rows, bad files are refused with a fix-it message, and the board keeps
figures from different evaluation protocols apart."""

from __future__ import annotations

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

import pytest
from leaderboard_fixtures import add_run, fid
from sqlalchemy import func, select

from harness.cli import main as cli_main
from harness.errors import InputError
from harness.registry import METHODS, TASKS
from harness.store import MethodRow, RunRow, Store, TaskRow
from leaderboard.board import build_groups
from leaderboard.data import load_snapshot
from harness.reported import DEFAULT_FILE, load_reported, read_data_file

SEED_METHODS = ("LlamaGen", "VAR", "MAR", "RAR", "PAR", "xAR", "FlowAR", "ImageFolder", "AiM", "RQ-Transformer")


@pytest.fixture
def store(results_dir) -> Store:
    return Store()


def run_count(store: Store) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(RunRow))


def test_bundled_file_covers_the_seed_methods_with_sources():
    data, entries = read_data_file(DEFAULT_FILE)
    tasks = {e.task for e in entries}
    assert {"imagenet256-c2i", "geneval", "ucf101-fvd2048-16f-128", "seed-tts-en", "wmt14-en-de",
            "decoding-speedup"} <= tasks
    imagenet = [e.label for e in entries if e.task == "imagenet256-c2i"]
    for name in SEED_METHODS:
        assert any(label.startswith(name) for label in imagenet), name
    for e in entries:
        assert e.provenance["paper"] and e.provenance["where"]
        assert e.provenance["data_version"] == data["data_version"]
    llamagen = next(e for e in entries if e.label == "LlamaGen-B")
    assert llamagen.settings["method"]["cfg"] == 2.0 and llamagen.metrics["fid"] == 5.46


def test_load_is_idempotent_and_marks_stay(store):
    first = load_reported(store)
    count = run_count(store)
    assert first.added == count > 50 and first.updated == first.removed == 0
    second = load_reported(store)
    assert (second.added, second.updated, second.removed, second.unchanged) == (0, 0, 0, count)
    assert run_count(store) == count

    records = {r["label"]: r for r in store.records(task="imagenet256-c2i")}
    l3b = records["LlamaGen-3B (384)"]
    assert l3b["kind"] == l3b["source"] == "reported" and l3b["status"] == "finished"
    assert "[2nd" in l3b["metrics"]["inception_score"]["description"]
    assert "[2nd" not in l3b["metrics"]["fid"]["description"]
    assert "inception_score" in l3b["provenance"]["verification"]
    assert "cfg:1.65" in l3b["signature"].replace("method.", "")
    assert records["LlamaGen-B"]["provenance"].get("verification") is None
    nat = store.records(task="wmt16-en-ro")
    npd = next(r for r in nat if r["label"] == "NAT + NPD (s=100)")
    assert "[abs" in npd["metrics"]["tok_bleu"]["description"] and "[unv" in npd["metrics"]["speedup"]["description"]


def test_a_corrected_figure_replaces_its_row_and_a_dropped_one_is_removed(store, tmp_path):
    text = DEFAULT_FILE.read_text(encoding="utf-8")
    load_reported(store, _copy(tmp_path, text))
    count = run_count(store)
    corrected = text.replace("metrics = { fid = 5.46,", "metrics = { fid = 5.47,")
    corrected = corrected.replace('label = "ImageFolder"', 'label = "ImageFolder (renamed)"')
    summary = load_reported(store, _copy(tmp_path, corrected))
    assert (summary.added, summary.updated, summary.removed) == (1, 1, 1)
    assert run_count(store) == count
    labels = {r["label"]: r for r in store.records(task="imagenet256-c2i")}
    assert labels["LlamaGen-B"]["metrics"]["fid"]["value"] == 5.47
    assert "ImageFolder" not in labels and "ImageFolder (renamed)" in labels


def test_existing_task_and_method_rows_are_not_overwritten(store):
    add_run(store, task="imagenet256-c2i", method="llamagen-b", family="raster-ar", metrics=[fid(5.9)],
            task_description="ours")
    load_reported(store)
    with store.session() as s:
        method = s.scalar(select(MethodRow).where(MethodRow.name == "llamagen-b"))
        task = s.scalar(select(TaskRow).where(TaskRow.name == "imagenet256-c2i"))
        assert method.description == "test method" and task.description == "ours" and task.version == "1"
    groups, _ = build_groups(load_snapshot(store, "imagenet256-c2i"), "imagenet256-c2i")
    mine = next(g.table for g in groups if "reproduced by ARBench" in set(g.table["source"]))
    assert mine.iloc[0]["paper fid"] == 5.46
    assert mine.iloc[0]["Δ vs paper (fid)"] == pytest.approx(0.44)


def test_rows_say_whether_arbench_can_reproduce_them(store):
    """A linked method gives the command, `availability` the reason it cannot; the board shows both."""
    load_reported(store)
    dalle = next(r for r in store.records(task="geneval") if r["label"] == "DALL-E 3")
    assert dalle["provenance"]["reproducible"] == "no: a closed system, served through an API only"
    groups, _ = build_groups(load_snapshot(store, "imagenet256-c2i"), "imagenet256-c2i")
    rows = {label: text for g in groups for label, text in zip(g.table["label"], g.table["reproducible here"])}
    assert rows["LlamaGen-B"] == "yes: arbench run imagenet256-c2i llamagen-b"
    _, entries = read_data_file(DEFAULT_FILE)
    for e in entries:  # "yes" only where the command would run: a registered method on a registered task
        said = e.provenance.get("reproducible", "")
        assert not said.startswith("yes") or (e.method in METHODS.names() and e.task in TASKS.names()), e.label
    assert not next(e for e in entries if e.label == "LlamaGen-XXL (384)").provenance.get("reproducible")
    tts = {r["label"]: r["provenance"].get("reproducible") for r in store.records(task="librispeech-pc")}
    assert tts["MELLE (continuation)"] == "no: no official code or weights were released"


def test_different_evaluators_are_never_ranked_together(store):
    load_reported(store)
    groups, _ = build_groups(load_snapshot(store, "imagenet256-c2i"), "imagenet256-c2i")
    group_of = {label: i for i, g in enumerate(groups) for label in g.table["label"]}
    assert group_of["LlamaGen-B"] == group_of["VAR-d16"]  # both ADM suite
    assert group_of["MAR-B"] != group_of["LlamaGen-B"]  # torch-fidelity fork
    assert group_of["RQ-Transformer 3.8B"] != group_of["LlamaGen-B"]  # own pytorch-fid statistics
    assert len({group_of["MAR-B"], group_of["RQ-Transformer 3.8B"], group_of["AiM-B"]}) == 3


BAD_FILES = [
    ("schema_version = 1\n", "data_version"),
    ('schema_version = 2\ndata_version = "x"\n', "schema_version must be 1"),
    ("this is = not toml [", "not valid TOML"),
]
ENTRY_MUTATIONS = [
    ({"metrics": {"fid": "low"}}, "must be a finite number"),
    ({"metrics": {"fid": float("nan")}}, "must be a finite number"),
    ({"metrics": {"fidd": 1.0}}, "has no [metrics.fidd] table"),
    ({"protocol": "nope"}, "protocol 'nope' is not defined"),
    ({"marks": {"fid": "maybe"}}, "mark 'maybe' is not one of"),
    ({"marks": {"throughput": "2nd"}}, "mark on 'throughput'"),
    ({"colour": "red"}, "unknown keys ['colour']"),
    ({"paper": ""}, "missing paper"),
    ({"task": "geneval"}, "belongs to task 'imagenet256-c2i'"),
    ({"availability": "rumoured"}, "availability 'rumoured' is not one of"),
    ({"availability": "api-only"}, "linked to ARBench method 'llamagen-b' can be reproduced"),
]


@pytest.mark.parametrize("text,message", BAD_FILES)
def test_bad_files_are_refused(tmp_path, text, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[")):
        read_data_file(_copy(tmp_path, text))


@pytest.mark.parametrize("change,message", ENTRY_MUTATIONS)
def test_bad_entries_are_refused_with_their_label(tmp_path, change, message):
    data = tomllib.loads(DEFAULT_FILE.read_text(encoding="utf-8"))
    entry = {**data["result"][0], **change}
    path = tmp_path / "bad.toml"
    path.write_text(_minimal_toml(data, entry), encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_data_file(path)
    assert message in str(info.value) and "LlamaGen-B" in str(info.value)


def test_duplicate_labels_are_refused(tmp_path):
    data = tomllib.loads(DEFAULT_FILE.read_text(encoding="utf-8"))
    entry = data["result"][0]
    path = tmp_path / "dup.toml"
    path.write_text(_minimal_toml(data, entry, entry), encoding="utf-8")
    with pytest.raises(InputError, match="distinct labels"):
        read_data_file(path)


def test_cli_loads_twice_without_duplicates(results_dir, capsys):
    url = f"sqlite:///{results_dir / 'cli.db'}"
    assert cli_main(["--db", url, "reported", "load"]) == 0
    assert " 0 updated" in capsys.readouterr().out
    assert cli_main(["--db", url, "reported", "load"]) == 0
    assert "0 added" in capsys.readouterr().out
    assert cli_main(["--db", url, "reported", "load", "--file", str(results_dir / "missing.toml")]) == 2
    assert "no reported-results file" in capsys.readouterr().err


def _copy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "reported_results.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _toml_value(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def _minimal_toml(data: dict, *entries: dict) -> str:
    """A data file with the real metric and protocol tables and only the given entries."""
    lines = ["schema_version = 1", 'data_version = "test"']
    for table in ("metrics", "protocols", "tasks"):
        for name, body in data[table].items():
            lines.append(f'[{table}."{name}"]')
            lines += [f"{k} = {_toml_value(v)}" for k, v in body.items()]
    for entry in entries:
        lines.append("[[result]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"
