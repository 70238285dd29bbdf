"""The Streamlit app's logic under Streamlit's AppTest: empty and missing databases, boards with groups,
ties, sources and CSV export, filters, run pages with signature, error text and artifacts, an older
schema, and user strings that try to inject HTML or Markdown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
import streamlit as st
from leaderboard_fixtures import EVIL_LABEL, EVIL_TASK_DESCRIPTION, add_run, artifact_folder, fid, score
from streamlit.testing.v1 import AppTest

from harness.migrations import upgrade_to
from harness.store import Store

APP = str(Path(__file__).resolve().parent.parent / "leaderboard" / "app.py")


@pytest.fixture(autouse=True)
def fresh_caches():
    st.cache_data.clear()
    st.cache_resource.clear()


def app(run_id: str | None = None, **params: str) -> AppTest:
    """The app at `?run=run_id` or at the query parameters `params` (e.g. task="toy-board": a linked board)."""
    at = AppTest.from_file(APP, default_timeout=60)
    if run_id:
        at.query_params["run"] = run_id
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "subheader", "title", "info", "warning", "error", "text",
                                  "code")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def test_empty_store_says_how_to_fill_it(results_dir):
    Store().dispose()
    body = texts(app())
    assert "arbench demo" in body and "arbench reported load" in body


def test_missing_database_is_explained(results_dir, monkeypatch):
    monkeypatch.setenv("ARBENCH_DB_URL", f"sqlite:///{results_dir / 'nowhere.db'}")
    at = app()
    assert "no database at" in at.error[0].value and "arbench demo" in texts(at)


def test_board_groups_ties_sources_and_csv(results_dir):
    store = Store()
    add_run(store, method="m-a", metrics=[fid(2.00, 0.2), score(200)])
    add_run(store, method="m-b", metrics=[fid(2.10, 0.2), score(210)])  # overlaps m-a: a tie
    add_run(store, method="m-c", metrics=[fid(5.00, 0.2), score(90)])
    add_run(store, method="m-a", source="reported", label="m-a (paper)", protocol="paper", metrics=[fid(1.9)])
    add_run(store, method="m-d", error="CUDA out of memory")
    at = app(task="toy-board")
    assert at.sidebar.selectbox[0].value == "toy-board"
    tables = [d.value for d in at.dataframe]
    board = tables[0]
    assert board["label"].tolist() == ["m-a", "m-b", "m-c"]
    assert board["rank"].tolist() == [1, 1, 3]
    assert set(board["source"]) == {"reproduced by ARBench"}
    assert board.loc[board["label"] == "m-a", "Δ vs paper (fid)"].iloc[0] == pytest.approx(0.1)
    assert tables[1]["source"].tolist() == ["reported in a paper"]
    assert tables[-1]["status"].tolist() == ["failed"]  # failed runs stay reachable, unranked
    assert all(link.startswith("?run=") for link in board["run"])
    assert len(at.get("download_button")) == 2
    body = texts(at)
    assert "Protocol group P1" in body and "Protocol group P2" in body
    assert "task:toy-board\nprotocol:p1" in body  # the group's evaluation signature


def test_plots_tab_is_built_only_when_opened(results_dir):
    store = Store()
    add_run(store, method="m-a", metrics=[fid(2.0, 0.2), score(200)], provenance={"params": 1e8})
    add_run(store, method="m-b", metrics=[fid(3.0, 0.2), score(150)], provenance={"params": 3e8})
    at = app(task="toy-board")
    assert [t.label for t in at.tabs] == ["tables", "plots: quality against cost"]
    assert len(at.dataframe) == 1 and not at.get("vega_lite_chart")  # no chart before the tab is opened
    at.session_state["board-view"] = "plots: quality against cost"
    at.run()
    assert not at.exception, at.exception
    charts = at.get("vega_lite_chart")
    assert charts and not at.dataframe  # the closed tables tab is not built either
    assert "Each point opens its run page" in texts(at)


def test_board_is_built_once_per_version_of_the_results(results_dir, monkeypatch):
    from leaderboard import views
    from leaderboard.board import Board

    builds, build = [], Board.build.__func__

    def counted(cls, snapshot, task):
        builds.append(task)
        return build(cls, snapshot, task)

    monkeypatch.setattr(Board, "build", classmethod(counted))
    placeholders = []
    behind_placeholder = views._load_behind_placeholder
    monkeypatch.setattr(views, "_load_behind_placeholder",
                        lambda task, board_of: placeholders.append(task) or behind_placeholder(task, board_of))
    store = Store()
    add_run(store, method="m-a", metrics=[fid(2.0, 0.2)])
    at = app(task="toy-board")
    at.run()
    assert builds == ["toy-board"] and placeholders == ["toy-board"]  # the rerun reuses the board, shown at once
    add_run(store, method="m-b", metrics=[fid(1.0, 0.2)])
    at.run()
    assert builds == ["toy-board"] * 2 and placeholders == ["toy-board"] * 2
    assert at.dataframe[0].value["label"].tolist() == ["m-b", "m-a"]  # the loading table is gone


def test_sidebar_filters_narrow_the_board(results_dir):
    store = Store()
    add_run(store, method="llamagen-b", family="raster-ar", metrics=[fid(5.0)])
    add_run(store, method="var-d16", family="next-scale", source="submitted", metrics=[fid(3.0)])
    at = app(task="toy-board")
    at.sidebar.text_input(key="search").input("llama").run()
    assert [d.value["label"].tolist() for d in at.dataframe] == [["llamagen-b"]]
    at.sidebar.text_input(key="search").input("").run()
    at.sidebar.multiselect(key="sources-toy-board").select("submitted").run()
    assert [d.value["label"].tolist() for d in at.dataframe] == [["var-d16"]]
    at.sidebar.multiselect(key="sources-toy-board").unselect("submitted").run()
    at.sidebar.multiselect(key="families-toy-board").select("raster-ar").run()
    assert [d.value["label"].tolist() for d in at.dataframe] == [["llamagen-b"]]
    at.sidebar.text_input(key="search").input("nothing like it").run()
    assert "No row matches the filters" in texts(at)


def test_run_page_shows_signature_provenance_and_artifacts(results_dir, tmp_path):
    store = Store()
    run_id = add_run(store, method="m-a", settings={"cfg": 2.0}, metrics=[fid(2.0, 0.1)],
                     provenance={"hardware": "A100"}, artifacts=artifact_folder(tmp_path / "run"))
    at = app(run_id)
    body = texts(at)
    assert "task:toy-board\nprotocol:p1\nmethod:m-a\nmethod.cfg:2.0" in body
    assert len(at.get("image")) == 1 and len(at.get("audio")) == 1
    tables = [d.value for d in at.dataframe]
    assert any(list(t.columns) == ["id", "hypothesis", "reference", "bleu"] for t in tables)
    assert any("A100" in j.value for j in at.json)


def test_run_page_shows_the_weights_licence_a_method_declares(results_dir):
    store = Store()
    run_id = add_run(store, method="m-a", provenance={"weights_license": "Adobe Research License: NON-COMMERCIAL"})
    facts = app(run_id).dataframe[0].value
    assert "weights licence" in list(facts[""]) and "NON-COMMERCIAL" in " ".join(facts["value"])


def test_failed_run_page_shows_its_error_as_text(results_dir):
    store = Store()
    run_id = add_run(store, method="m-a", error="Traceback:\n  <b>boom</b> **not bold**")
    at = app(run_id)
    assert "Traceback:\n  <b>boom</b> **not bold**" in [c.value for c in at.code]
    assert at.error[0].value == "This run failed; its error:"


def test_unknown_run_id_is_reported_not_crashing(results_dir):
    Store().dispose()
    at = app("does-not-exist<b>")
    assert "no run does\\-not\\-exist\\<b\\>" in at.warning[0].value


def test_user_strings_cannot_inject_html_or_markdown(results_dir):
    store = Store()
    run_id = add_run(store, task="evil-board", method="m-a", label=EVIL_LABEL, metrics=[fid(2.0)],
                     task_description=EVIL_TASK_DESCRIPTION)
    for at in (app(), app(run_id)):
        markdown_bodies = [e.value for kind in ("markdown", "caption", "subheader", "title", "info", "warning",
                                                 "error") for e in getattr(at, kind)]
        carrying = [b for b in markdown_bodies if "xss" in b]
        assert carrying
        for body in carrying:  # every Markdown-active character of the payload arrives backslash-escaped
            unescaped = re.sub(r"\\.", "", body)
            assert not set(unescaped) & set("<>[]()*_`$#:=!"), body
    board = app()
    assert EVIL_LABEL in board.dataframe[0].value["label"].tolist()  # grid cells are text
    page = app(run_id)
    assert page.subheader[0].value.replace("\\", "") == EVIL_LABEL


def test_older_schema_is_upgraded_on_open(results_dir):
    path = results_dir / "arbench.db"
    results_dir.mkdir(parents=True)
    engine = sa.create_engine(f"sqlite:///{path}")
    upgrade_to(engine, "0001")
    engine.dispose()
    at = app()
    assert "upgraded from revision 0001" in at.toast[0].value
    assert "arbench demo" in texts(at)


def test_public_queue_and_submitted_run_show_no_contact_data(results_dir, tmp_path):
    from harness.metrics.base import MetricValue
    from harness.submissions import advance, claim, submit

    store = Store()
    manifest = tmp_path / "manifest.toml"
    manifest.write_text('task = "toy-gauss"\nmethod = "toy-sampler"\nlicense = "MIT"\nlabel = "Toy (author)"\n'
                        '[submitter]\nname = "Jane Doe"\ncontact = "jane-secret@example.org"\n')
    sub_id = submit(store, manifest)
    run_id = add_run(store, method="toy-sampler", source="submitted", label="Toy (author)",
                     metrics=[MetricValue("mean_value", 0.5, True)])
    with store.session() as session:
        from harness.store import RunRow

        row = session.get(RunRow, run_id)
        row.settings = {**row.settings, "submission_id": sub_id}
    assert claim(store, "w1") == sub_id
    advance(store, sub_id, "w1", "finished", "scored", run_id=run_id)

    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.sidebar.toggle[0].set_value(True).run()
    assert not at.exception, at.exception
    queue = at.dataframe[0].value
    assert list(queue["state"]) == ["finished"] and list(queue["label"]) == ["Toy (author)"]
    assert "jane-secret" not in queue.to_csv()

    run_page = app(run_id)
    body = texts(run_page) + "\n".join(str(j.value) for j in run_page.json)
    assert "Submitted by the author" in body and "Jane Doe" in body
    assert "jane-secret" not in body


# -- overview, links, diff ----------------------------------------------------------------------------------
def test_overview_lists_every_task_and_opens_a_board_in_one_click(results_dir):
    store = Store()
    add_run(store, method="m-a", settings={"cfg": 2.0}, metrics=[fid(2.0)])
    add_run(store, method="m-a", settings={"cfg": 4.0}, metrics=[fid(3.0)])
    add_run(store, method="m-a", source="reported", protocol="paper", metrics=[fid(1.9)])
    add_run(store, task="other-board", method="m-z", source="reported", metrics=[score(5.0)], primary="inception_score")
    at = app()  # no ?task=: the landing page
    body = texts(at)
    body = body.replace("\\", "")  # Markdown escapes
    assert "All tasks" in body and "toy-board" in body and "other-board" in body
    assert "2 reproduced by ARBench · 1 reported in a paper" in body and "main protocol group P1" in body
    toy, other = (d.value for d in at.dataframe)  # the cards' top rows (AppTest does not expose their keys)
    assert toy["label"].tolist() == ["m-a · cfg=2.0", "m-a · cfg=4.0"] and toy["rank"].tolist() == [1, 2]
    assert other["label"].tolist() == ["m-z"] and "fid ↓" in toy and "inception_score ↑" in other
    at.button(key="open-other-board").click().run()
    assert not at.exception and at.sidebar.selectbox(key="task").value == "other-board"
    assert "Protocol group P1" in texts(at) and "All tasks" not in texts(at)


def test_a_link_reproduces_task_group_and_filters(results_dir):
    store = Store()
    add_run(store, method="m-a", metrics=[fid(2.0)])
    add_run(store, method="m-b", source="submitted", metrics=[fid(2.5)])
    add_run(store, method="m-a", source="reported", protocol="paper", metrics=[fid(1.9)])
    board = app(task="toy-board")
    groups = board.sidebar.selectbox(key="group-toy-board").options
    assert len(groups) == 2 and groups[0].startswith("P1 · 2 rows")
    from leaderboard.board import Board
    from leaderboard.data import load_snapshot

    paper_key = Board.build(load_snapshot(store, "toy-board"), "toy-board").groups[1].key
    at = app(task="toy-board", group=paper_key)
    assert [d.value["label"].tolist() for d in at.dataframe] == [["m-a"]]
    assert "Protocol group P2" in texts(at) and "Protocol group P1" not in texts(at)
    at = app(task="toy-board", **{"sources-toy-board": "submitted"})
    assert [d.value["label"].tolist() for d in at.dataframe] == [["m-b"]]


def test_compare_page_names_what_differs_and_why(results_dir):
    store = Store()
    a = add_run(store, method="m-a", settings={"cfg": 2.0}, metrics=[fid(2.0)],
                provenance={"packages": {"torch": "2.5.1"}})
    b = add_run(store, method="m-a", settings={"cfg": 4.0}, metrics=[fid(2.5)],
                provenance={"packages": {"torch": "2.6.0"}})
    paper = add_run(store, method="m-a", source="reported", protocol="paper", metrics=[fid(1.9)])
    at = app(compare=f"{a[:8]},{b}")
    verdict = at.success[0].value.replace("\\", "")  # Markdown escapes
    assert verdict.startswith("**Comparable.**") and "settings (method.cfg)" in verdict
    metrics, signature, settings, provenance = (d.value for d in at.dataframe)
    assert signature[["key", "A", "B", "kind"]].values.tolist() == [["method.cfg", "2.0", "4.0", "method"]]
    assert settings[["key", "A", "B"]].values.tolist() == [["method.cfg", "2.0", "4.0"]]
    assert provenance["key"].tolist() == ["packages.torch"]
    assert metrics[["metric", "differs in", "comparable"]].values.tolist() == [["fid", "value", "yes"]]
    at = app(compare=f"{a},{paper}")
    verdict = at.error[0].value.replace("\\", "")
    assert verdict.startswith("**Not comparable.**") and "evaluation signatures differ (in protocol)" in verdict
    at = app(compare=f"{a},nosuchrun")
    assert "no run 'nosuchrun'" in at.warning[0].value.replace("\\", "")


def test_board_offers_a_comparison_of_any_two_rows(results_dir):
    store = Store()
    a = add_run(store, method="m-a", metrics=[fid(2.0)])
    b = add_run(store, method="m-b", metrics=[fid(2.5)])
    at = app(task="toy-board")
    assert at.selectbox(key="compare-a-toy-board").value == a and at.selectbox(key="compare-b-toy-board").value == b
    (button,) = at.get("link_button")
    assert button.proto.url == f"?compare={a},{b}"


def assert_no_none_cells(at: AppTest) -> int:
    """Streamlit draws a missing value as a grey "None" unless the table sets a placeholder: every table with
    a missing value must set it to "" (blank), and no text cell may hold the word. Returns the tables checked."""
    for table in at.dataframe:
        frame = table.value
        if frame.isna().to_numpy().any():
            assert table.proto.HasField("placeholder") and table.proto.placeholder == "", list(frame.columns)
        assert not frame.astype(str).isin(["None", "nan"]).to_numpy().any() or frame.isna().to_numpy().any()
    return len(at.dataframe)


def test_no_cell_renders_none_on_any_page(results_dir, tmp_path):
    store = Store()
    a = add_run(store, method="m-a", metrics=[fid(2.0, 0.1), score(100)], provenance={"params": 1e8})
    b = add_run(store, method="m-b", metrics=[fid(3.0)], artifacts=artifact_folder(tmp_path / "run"))  # no IS
    add_run(store, method="m-c", error="boom")
    checked = 0
    for page in (app(), app(task="toy-board"), app(run_id=b), app(compare=f"{a},{b}")):
        checked += assert_no_none_cells(page)
    assert checked >= 6
