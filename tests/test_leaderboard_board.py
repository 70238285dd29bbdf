"""Board logic without Streamlit: ranking with interval ties, comparability groups, paper gaps, filters,
CSV export, safe text, artifact discovery, and reading old or empty databases."""

from __future__ import annotations

import csv
import html as html_lib
import io
import os

import markdown_it
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from leaderboard_fixtures import EVIL_LABEL, add_run, artifact_folder, fid, score

from harness.metrics.base import MetricValue
from harness.migrations import head_revision, upgrade_to
from harness.store import MetricRow, Store
from leaderboard.artifacts import discover, sample_grid
from leaderboard.board import HIDDEN_COLUMNS, Board, Filters, build_groups, rank_with_ties, to_csv
from leaderboard.data import load_board_tasks, load_snapshot, open_store, results_version
from leaderboard.plots import default_charts, plot_frame, scatter
from leaderboard.text import md_escape, safe_url


@pytest.fixture
def store(results_dir) -> Store:
    return Store()


# -- ranking -----------------------------------------------------------------------------------------
def test_overlapping_intervals_tie_and_separable_rows_do_not():
    # lower is better: A=[0.9,1.1] and B=[1.05,1.25] overlap -> tie; C=[1.9,2.1] is worse than both.
    ranks = rank_with_ties([1.0, 1.15, 2.0], [0.9, 1.05, 1.9], [1.1, 1.25, 2.1], higher_is_better=False)
    assert ranks.tolist() == [1, 1, 3]
    ranks = rank_with_ties([1.0, 1.15, 2.0], [0.9, 1.05, 1.9], [1.1, 1.25, 2.1], higher_is_better=True)
    assert ranks.tolist() == [2, 2, 1]


def test_rows_without_intervals_tie_only_when_equal_and_missing_values_are_unranked():
    nan = float("nan")
    ranks = rank_with_ties([3.0, 1.0, 1.0, nan], [nan] * 4, [nan] * 4, higher_is_better=False)
    assert ranks[:3].tolist() == [3, 1, 1] and np.isnan(ranks[3])


def test_rank_matches_its_definition_on_random_boards():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 12))
        v = rng.normal(size=n)
        half = rng.uniform(0, 0.5, size=n)
        hib = bool(rng.integers(2))
        ranks = rank_with_ties(v, v - half, v + half, hib)
        for i in range(n):
            better = sum((v[j] - half[j] > v[i] + half[i]) if hib else (v[j] + half[j] < v[i] - half[i])
                         for j in range(n))
            assert ranks[i] == 1 + better


# -- groups, order, gaps -------------------------------------------------------------------------------
def test_groups_follow_the_eval_signature_and_rank_only_inside(store):
    add_run(store, method="m-a", protocol="p1", metrics=[fid(3.0, 0.1), score(100)])
    add_run(store, method="m-b", protocol="p1", metrics=[fid(2.0, 0.1), score(90)])
    add_run(store, method="m-c", protocol="p2", metrics=[fid(1.0, 0.1)])  # better, but another protocol
    groups, primary = build_groups(load_snapshot(store), "toy-board")
    assert primary == "fid"
    assert [len(g.table) for g in groups] == [2, 1]
    p1 = groups[0].table
    assert p1["method"].tolist() == ["m-b", "m-a"]  # lower FID first
    assert p1["rank"].tolist() == [1, 2]
    assert groups[1].table["rank"].tolist() == [1]
    assert "fid ↓" in p1.columns and "inception_score ↑" in p1.columns
    assert p1["fid 95% CI"].tolist() == ["[1.9, 2.1]", "[2.9, 3.1]"]


def test_a_group_without_the_primary_metric_is_ranked_by_its_own(store):
    add_run(store, method="m-a", protocol="p1", metrics=[score(10)])
    add_run(store, method="m-b", protocol="p1", metrics=[score(20)])
    add_run(store, method="m-c", protocol="p2", metrics=[fid(1.0)])
    groups, _ = build_groups(load_snapshot(store), "toy-board")
    by_size = sorted(groups, key=lambda g: -len(g.table))
    assert by_size[0].ranked_by.name == "inception_score"
    assert by_size[0].table["method"].tolist() == ["m-b", "m-a"]


def test_gap_between_paper_and_reproduced_number_of_the_same_method(store):
    add_run(store, method="m-a", source="reported", label="m-a (paper)", protocol="paper-protocol",
            metrics=[fid(2.0)])
    add_run(store, method="m-a", source="reproduced", metrics=[fid(2.5)])
    add_run(store, method="m-b", source="reproduced", metrics=[fid(4.0)])
    groups, _ = build_groups(load_snapshot(store), "toy-board")
    reproduced = next(g.table for g in groups if "reproduced by ARBench" in set(g.table["source"]))
    row = reproduced.set_index("method")
    assert row.at["m-a", "paper fid"] == 2.0
    assert row.at["m-a", "Δ vs paper (fid)"] == pytest.approx(0.5)
    assert pd.isna(row.at["m-b", "Δ vs paper (fid)"])
    paper = next(g.table for g in groups if set(g.table["source"]) == {"reported in a paper"})
    # a paper's own row has no gap to itself: the column is there (same table layout) and empty
    assert "Δ vs paper (fid)" in paper.columns and paper["Δ vs paper (fid)"].isna().all()
    assert "paper fid" in paper.columns and paper["paper fid"].isna().all()


def test_filters(store):
    add_run(store, method="llamagen-b", family="raster-ar", provenance={"params": 111e6, "hardware": "A100"},
            metrics=[fid(5.0)])
    add_run(store, method="var-d16", family="next-scale", provenance={"params": 310e6, "hardware": "H100"},
            metrics=[fid(3.0)])
    add_run(store, method="mar-b", family="masked", source="submitted", label="MAR (b)",
            provenance={"num_parameters": 208e6}, metrics=[fid(2.0)])
    snap = load_snapshot(store)

    def shown(**kw):
        groups, _ = build_groups(snap, "toy-board", Filters(**kw))
        return sorted(m for g in groups for m in g.table["method"])

    assert shown() == ["llamagen-b", "mar-b", "var-d16"]
    assert shown(families=("next-scale",)) == ["var-d16"]
    assert shown(sources=("submitted",)) == ["mar-b"]
    assert shown(hardware=("A100",)) == ["llamagen-b"]
    assert shown(params_range=(150e6, 400e6)) == ["mar-b", "var-d16"]
    assert shown(search="LLAMA") == ["llamagen-b"]
    assert shown(search="(b") == ["mar-b"]  # plain text, not a regular expression
    assert shown(search="nothing") == []


def test_cached_board_view_export_and_filter_choices_on_a_synthetic_store(store):
    from leaderboard.synthetic import SyntheticSpec, fill_synthetic

    fill_synthetic(store, SyntheticSpec(runs=600, metrics_per_run=4, tasks=2, methods=20))
    snapshot = load_snapshot(store, "synthetic-task-0")
    board = Board.build(snapshot, "synthetic-task-0")
    assert sum(len(g.table) for g in board.groups) == 300 and len(board.groups) == 3
    for group in board.groups:
        assert not set(HIDDEN_COLUMNS) & set(group.view.columns) and len(group.view) == len(group.table)
        assert "verification" not in group.view.columns  # empty in every synthetic row: not shown
        rows = list(csv.reader(io.StringIO(to_csv(group.table, group.export_columns).decode())))
        assert rows[0] == [c for c in group.view.columns if c != "run"] + ["run_id", "eval_signature_hash"]
        assert [r[-2] for r in rows[1:]] == group.table["run_id"].tolist()  # every row, not only the visible ones
        assert {r[-1] for r in rows[1:]} == {group.eval_signature_hash} and "settings" in rows[0]
    from leaderboard.views import _group_csv  # the board's download: the signature's text on every row too

    rows = list(csv.DictReader(io.StringIO(_group_csv(group.table, group.export_columns, "task:t|p:1").decode())))
    assert {r["eval_signature"] for r in rows} == {"task:t|p:1"} and len(rows) == len(group.table)
    options = board.options
    assert options.sources == ["reproduced", "submitted", "reported"]
    assert len(options.hardware) == 3 and options.params_millions[0] < options.params_millions[1]
    assert board.filtered("synthetic-task-0", Filters()) == (board.groups, board.primary)
    narrowed, _ = board.filtered("synthetic-task-0", Filters(sources=("reported",)))
    assert {s for g in narrowed for s in g.table["source"]} == {"reported in a paper"}


# -- export and text safety ------------------------------------------------------------------------------
def test_csv_export_neutralises_spreadsheet_formulas_but_keeps_numbers():
    table = pd.DataFrame({"label": ["=HYPERLINK(\"http://x\")", "+cmd", "plain"], "fid": [-1.5, 2.0, 3.0]})
    rows = list(csv.reader(io.StringIO(to_csv(table).decode())))
    assert rows == [["label", "fid"], ["'=HYPERLINK(\"http://x\")", "-1.5"], ["'+cmd", "2.0"], ["plain", "3.0"]]


@pytest.mark.parametrize("text", [EVIL_LABEL, "<script>alert(1)</script>", "![x](http://evil/x.png)",
                                  "# not a heading", "a_b*c*", "$\\frac{1}{2}$", "line\nbreak"])
def test_md_escape_renders_as_literal_text(text):
    html = markdown_it.MarkdownIt("commonmark").render(md_escape(text))
    for tag in ("<img", "<a ", "<script", "<h1", "<em", "<strong", "<code"):
        assert tag not in html
    literal = html.removeprefix("<p>").removesuffix("</p>\n")
    assert html_lib.unescape(literal) == text.replace("\n", " ")


def test_safe_url_allows_only_web_links():
    assert safe_url("https://github.com/FoundationVision/VAR") == "https://github.com/FoundationVision/VAR"
    for bad in ("javascript:alert(1)", "data:text/html,<b>x</b>", "file:///etc/passwd", "", None, "//evil"):
        assert safe_url(bad) is None


# -- artifacts -------------------------------------------------------------------------------------------
def test_artifacts_are_found_by_type_and_links_are_not_followed(tmp_path):
    run_dir = artifact_folder(tmp_path / "run")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    os.symlink(outside, run_dir / "linked.txt")
    found = discover(run_dir)
    names = {k: [p.name for p in v] for k, v in found.found.items()}
    assert names["image"] == ["samples_grid.png"]
    assert names["audio"] == ["sample_000.wav"]
    assert names["table"] == ["per_sentence.tsv"]
    assert names["text"] == [] and names["video"] == []
    assert discover(tmp_path / "missing") is None and discover(None) is None


def test_image_and_video_shards_become_sample_grids_and_pickles_are_refused(tmp_path):
    images = np.arange(5 * 4 * 6 * 3, dtype=np.uint8).reshape(5, 4, 6, 3)
    np.save(tmp_path / "images.npy", images)
    grid = sample_grid(tmp_path / "images.npy", side=2, gap=0, min_tile=0)
    assert grid.shape == (8, 12, 3)  # 2x2 tiles of the first 4 images
    assert (grid[4:8, 6:12] == images[3]).all()
    grid = sample_grid(tmp_path / "images.npy", side=2, gap=2, min_tile=12)  # enlarged x2, 2 white pixels apart
    assert grid.shape == (2 * 8 + 2, 2 * 12 + 2, 3) and (grid[8:10] == 255).all() and (grid[:, 12:14] == 255).all()
    assert (grid[10:18, 14:26] == images[3].repeat(2, 0).repeat(2, 1)).all()
    clip_frames = np.arange(3, dtype=np.uint8)[:, None, None, None]  # frame t is filled with t
    np.save(tmp_path / "videos.npy", np.zeros((2, 3, 4, 4, 3), np.uint8) + clip_frames)
    frames = sample_grid(tmp_path / "videos.npy", side=8, gap=0, min_tile=0)
    assert frames.shape == (4, 12, 3) and frames[0, 4, 0] == 1  # the 3 frames of the first clip, in a row
    np.save(tmp_path / "labels.npy", np.arange(5))
    np.save(tmp_path / "floats.npy", images.astype(np.float32))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert all(sample_grid(tmp_path / f) is None for f in ("labels.npy", "floats.npy", "objects.npy"))


# -- reading the database ----------------------------------------------------------------------------------
def test_empty_database_has_no_runs_and_creates_nothing(tmp_path):
    path = tmp_path / "empty.db"
    sa.create_engine(f"sqlite:///{path}").connect().close()
    store, note = open_store(f"sqlite:///{path}")
    assert load_snapshot(store).empty and load_board_tasks(store) == [] and note == ""
    assert store.table_names() == []


def test_older_schema_is_upgraded_not_shown_broken(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    upgrade_to(engine, "0001")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO tasks (id, name, version, modality, description, created_at) "
                             "VALUES (1, 'old-task', '1', 'class-to-image', '', '2025-01-01 00:00:00')")
        conn.exec_driver_sql("INSERT INTO runs (id, task_id, task_version, kind, status, signature, signature_hash,"
                             " settings, provenance, created_at) VALUES ('r1', 1, '1', 'score', 'finished', 'a:b',"
                             " 'h', '{}', '{}', '2025-01-01 00:00:00')")
        conn.exec_driver_sql("INSERT INTO metrics (run_id, name, value, higher_is_better, unit, version, "
                             "description) VALUES ('r1', 'fid', 4.2, 0, '', '1', '')")
    engine.dispose()
    store, note = open_store(url)
    assert store.read_only and store.schema_revision() == head_revision()
    assert "upgraded from revision 0001" in note
    groups, _ = build_groups(load_snapshot(store), "old-task")
    row = groups[0].table.iloc[0]
    assert row["source"] == "submitted by the author" and row["fid ↓"] == 4.2


def test_snapshot_loads_one_tasks_metrics(store):
    add_run(store, task="board-a", metrics=[fid(1.0)])
    add_run(store, task="board-b", metrics=[fid(2.0), score(3.0)])
    assert len(load_snapshot(store).metrics) == 3
    assert load_snapshot(store, "board-b").metrics["value"].tolist() == [2.0, 3.0]
    assert load_snapshot(store, "no-such-board").metrics.empty
    assert load_snapshot(store, "board-b").runs["task"].tolist() == ["board-b"]
    add_run(store, task="a-paper-board", source="reported", metrics=[fid(1.0)])
    add_run(store, task="board-c", error="failed")
    assert load_board_tasks(store) == ["board-a", "board-b", "a-paper-board"]  # own rows first, no failed-only


def test_results_version_changes_with_every_kind_of_write(store):
    versions = [results_version(store)]
    run_id = add_run(store, metrics=[fid(1.0)])
    versions.append(results_version(store))
    add_run(store, method="m-failed", error="boom")
    versions.append(results_version(store))
    with store.session() as session:  # a metric value added to an existing run
        session.add(MetricRow(run_id=run_id, name="inception_score", value=3.0, higher_is_better=True))
    versions.append(results_version(store))
    store.delete_run(run_id)
    versions.append(results_version(store))
    assert len(set(versions)) == len(versions) and results_version(store) == versions[-1]


@pytest.mark.postgres
def test_snapshot_and_board_on_postgresql(pg_url, tmp_path):
    store = Store(pg_url)
    add_run(store, method="m-a", provenance={"params": 1e8, "hardware": "A100", "verification": "unverified — x"},
            metrics=[fid(2.0, 0.1)])
    add_run(store, method="m-b", metrics=[fid(3.0, 0.1), score(5.0)])
    reader, _ = open_store(pg_url)
    snap = load_snapshot(reader, "toy-board")
    row = snap.runs.set_index("method").loc["m-a"]
    assert row["params"] == 1e8 and row["hardware"] == "A100" and row["verification"] == "unverified — x"
    groups, _ = build_groups(snap, "toy-board")
    assert groups[0].table["method"].tolist() == ["m-a", "m-b"] and groups[0].table["rank"].tolist() == [1, 2]
    version = results_version(reader)
    assert results_version(reader) == version
    add_run(store, method="m-c", metrics=[fid(4.0, 0.1)])
    assert results_version(reader) != version
    reader.dispose()
    store.dispose()


def test_plots_put_quality_against_speed_parameters_and_link_points(store):
    for method, speedup, exact, passes, params in (("ar", 1.0, 1.0, 1.0, 1e8), ("spec", 2.1, 0.8, 0.4, 2e8),
                                                   ("jacobi", 0.9, 0.5, 0.9, 3e8)):
        add_run(store, task="decode", method=method, primary="speedup", provenance={"params": params}, metrics=[
            MetricValue("speedup", speedup, True, "x"),
            MetricValue("forward_passes_per_token", passes, False, "passes"),
            MetricValue("exact_match_rate", exact, True)])
    groups, primary = build_groups(load_snapshot(store), "decode")
    frame = plot_frame(groups)
    charts = default_charts(frame, groups[0].metrics, primary)
    assert [(x.title, y.title) for x, y in charts] == [("speedup ↑ (x)", "exact_match_rate ↑"),
                                                       ("parameters", "exact_match_rate ↑")]
    spec = scatter(frame, *charts[0]).to_dict()
    line, points_layer = spec["layer"]  # the Pareto front under the points
    assert points_layer["encoding"]["href"]["field"] == "run" and line["mark"]["type"] == "line"
    data = list(spec["datasets"].values())
    points = max(data, key=len)
    assert sorted(p["run"] for p in points) == sorted(groups[0].table["run"])
    assert all(p["run"].startswith("?run=") for p in points)
    front = min(data, key=len)  # speedup up, exact match up: ar (1.0, 1.0) and spec (2.1, 0.8); jacobi is beaten
    assert sorted(p["label"] for p in front) == ["ar", "spec"]
    assert spec["layer"][1]["encoding"]["x"]["axis"]["format"] == "~g"
    assert scatter(frame, *charts[1]).to_dict()["layer"][-1]["encoding"]["x"]["axis"]["format"] == "~s"  # 100M


# -- rows you can tell apart -----------------------------------------------------------------------------
def test_settings_column_tells_rows_of_one_method_apart_and_reruns_show_once(store):
    add_run(store, method="m-a", settings={"cfg": 2.0, "top_k": 0}, metrics=[fid(3.0)])
    add_run(store, method="m-a", settings={"cfg": 4.0, "top_k": 0}, metrics=[fid(2.5)])
    rerun = add_run(store, method="m-a", settings={"cfg": 4.0, "top_k": 0}, metrics=[fid(2.4)])  # same signature
    add_run(store, method="m-b", settings={"cfg": 4.0}, metrics=[fid(2.0)])
    (group,), _ = build_groups(load_snapshot(store), "toy-board")
    table = group.table
    assert table[["label", "settings", "runs"]].values.tolist() == [
        ["m-b", "", 1], ["m-a", "cfg=4.0", 2], ["m-a", "cfg=2.0", 1]]
    assert table.loc[1, "run_id"] == rerun and table.loc[1, "fid ↓"] == 2.4  # the newest of the reruns
    assert "method" not in group.view and "runs" in group.view  # labels say the method; a count is shown


def decoding_run(store, method, speedup, exact, nll=None, lossless=None, settings=None):
    metrics = [MetricValue("speedup", speedup, True, "x"), MetricValue("tokens_per_s", 100 * speedup, True, "tokens/s"),
               MetricValue("exact_match_rate", exact, True)]
    if nll is not None:
        metrics.append(MetricValue("quality_target_nll", nll, False, "nats/token"))
    provenance = {} if lossless is None else {"lossless": lossless}
    return add_run(store, task="decode", method=method, primary="speedup", metrics=metrics, provenance=provenance,
                   settings=settings)


def test_lossy_decoding_rows_are_never_ranked_with_lossless_ones(store):
    decoding_run(store, "speculative", 1.8, 1.0, lossless=True)
    decoding_run(store, "blockwise", 1.5, 1.0, settings={"top_k": 1})  # no declaration, no lossy metric
    decoding_run(store, "blockwise", 2.6, 0.0, nll=2.9, settings={"top_k": 3})  # the lossy track's metric
    decoding_run(store, "early-exit", 3.0, 0.2, nll=3.1, lossless=False)
    groups, _ = build_groups(load_snapshot(store), "decode")
    assert [(g.track, g.table["label"].tolist()) for g in groups] == [
        ("lossless", ["speculative", "blockwise"]), ("lossy", ["early-exit", "blockwise"])]
    assert groups[1].table["rank"].tolist() == [1, 2]  # ranked among the lossy rows only
    assert groups[0].eval_signature_hash == groups[1].eval_signature_hash and groups[0].key != groups[1].key
    columns = groups[1].table.columns.tolist()  # exact match and NLL right beside the speedup
    assert columns[columns.index("speedup ↑ (x)") + 1:][:2] == ["exact_match_rate ↑", "quality_target_nll ↓ (nats/token)"]
    assert columns.index("tokens_per_s ↑ (tokens/s)") > columns.index("source")
    board = Board.build(load_snapshot(store, "decode"), "decode")  # a filter that leaves no lossy row keeps
    (only,), _ = board.filtered("decode", Filters(search="speculative"))  # the group's track (and its number)
    assert only.key == groups[0].key and only.table["label"].tolist() == ["speculative"]
    other = add_run(store, task="decode", method="speculative", protocol="p2", primary="speedup",
                    metrics=[MetricValue("speedup", 1.2, True, "x")])
    groups, _ = build_groups(load_snapshot(store), "decode")  # no lossy row under p2: no split there
    assert next(g for g in groups if other in set(g.table["run_id"])).track == ""


def test_reported_rows_are_dated_by_publication(store):
    add_run(store, method="m-a", source="reported", protocol="paper", metrics=[fid(2.0)],
            provenance={"paper": "Sun et al. 2024, Autoregressive Model Beats Diffusion"})
    add_run(store, method="m-b", source="reported", protocol="paper", metrics=[fid(3.0)],
            provenance={"paper": "a paper without a year"})
    add_run(store, method="m-c", metrics=[fid(1.0)])
    groups, _ = build_groups(load_snapshot(store), "toy-board")
    dates = {label: date for g in groups for label, date in zip(g.table["label"], g.table["date"])}
    assert dates["m-a"] == "2024" and dates["m-b"] == ""
    assert dates["m-c"] == pd.Timestamp.now("UTC").strftime("%Y-%m-%d")


def test_overview_summary_counts_sources_and_names_the_main_group(store):
    from leaderboard.board import summarize

    add_run(store, method="m-a", metrics=[fid(2.0)])
    add_run(store, method="m-b", source="submitted", metrics=[fid(1.0)])
    add_run(store, method="m-a", source="reported", protocol="paper", metrics=[fid(1.9)])
    add_run(store, method="m-c", error="boom")
    add_run(store, task="other", method="m-z", metrics=[fid(0.5)])
    summary = summarize(load_snapshot(store), "toy-board")
    assert summary.counts == {"reproduced by ARBench": 1, "submitted by the author": 1, "reported in a paper": 1}
    assert summary.main_group.table["label"].tolist() == ["m-b", "m-a"]
    board = Board.build(load_snapshot(store, "toy-board"), "toy-board")  # the board's own P1, built alone
    paper = ["paper fid", "Δ vs paper (fid)"]  # paper gaps need the other groups: not on the card
    pd.testing.assert_frame_equal(summary.main_group.table.drop(columns=paper, errors="ignore"),
                                  board.groups[0].table.drop(columns=paper))
    assert summary.protocol == "ARBench protocol, task v1" and summary.modality == "class-to-image"
    assert summary.last_change.startswith(pd.Timestamp.now("UTC").strftime("%Y-%m-%d"))


def test_a_declared_weights_licence_is_said_in_the_board_row(store):
    """Methods whose weights forbid commercial use declare it (`Method.weights_license`); the runner records it and
    the board's table shows it in the row, not only on the run page. Boards without any keep no such column."""
    add_run(store, method="m-a", metrics=[fid(3.0)])
    add_run(store, method="m-b", metrics=[fid(2.0)],
            provenance={"weights_license": "CC-BY-NC-SA-4.0, NON-COMMERCIAL use only"})
    table = build_groups(load_snapshot(store), "toy-board")[0][0].table
    assert table.set_index("method")["weights licence"].to_dict() == {
        "m-b": "CC-BY-NC-SA-4.0, NON-COMMERCIAL use only", "m-a": ""}
    add_run(store, task="toy-board-2", method="m-c", metrics=[fid(1.0)])
    assert "weights licence" not in build_groups(load_snapshot(store), "toy-board-2")[0][0].table.columns
