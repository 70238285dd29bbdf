"""The two pages of the app: the boards (one per task) and a run page.

Every string that comes from the store or the artifact folder (task, method and label names, notes,
signatures, errors, provenance, file names) is shown through a text element (`st.text`, `st.code`,
`st.json`, dataframe cells) or through `md_escape` inside Markdown (headers, captions, image captions),
so none of it can run as HTML or Markdown.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Callable

import pandas as pd
import streamlit as st

from harness.signature import Signature
from harness.store import Store
from leaderboard import artifacts as artifacts_mod
from leaderboard.board import (
    SOURCE_NAMES, Board, FilterOptions, Filters, Group, MetricInfo, family_name, run_link, task_runs, to_csv,
)
from leaderboard.data import StoreSnapshot, eval_signature_text, load_run
from leaderboard.plots import Axis, default_charts, numeric_axes, plot_frame, scatter
from leaderboard.text import md_escape, safe_url

EMPTY_HELP = (
    "No results yet. Fill the store, then reload this page:\n\n"
    "- `arbench demo` runs the bundled offline tasks on their bundled models;\n"
    "- `arbench reported load` adds the paper-reported figures of the seed methods;\n"
    "- `arbench run TASK METHOD` or `arbench score TASK PATH` adds your own."
)
BOARD_TABS = ("tables", "plots: quality against cost")


def signature_lines(signature: str) -> str:
    return signature.replace("|", "\n")


# -- boards ------------------------------------------------------------------------------------------
def render_boards(store: Store, tasks: list[str], board_of: Callable[[str], Board],
                  loaded: Callable[[str], bool] = lambda task: False) -> None:
    """The board of the task chosen in the sidebar; `board_of(task)` loads (or recalls) its unfiltered board
    and `loaded(task)` says whether it is already in memory.

    The tables come first; the plots sit in a second tab that is only built when opened, so a first visit
    does not wait for the chart library and thousands of points to be drawn before the tables. While a
    board loads, an empty table stands in, so the grid's code (about 1.2 MB of JavaScript) is fetched and
    compiled in parallel with the data path rather than after it.
    """
    with st.sidebar:
        st.header("Board")
        task = st.selectbox("task", tasks, key="task")
    board = board_of(task) if loaded(task) else _load_behind_placeholder(task, board_of)
    snapshot = board.snapshot
    filters = _sidebar_filters(board.options, task)
    task_row = snapshot.tasks[snapshot.tasks["task"] == task]
    st.subheader(md_escape(task))
    if len(task_row) and task_row["description"].iloc[0]:
        st.caption(md_escape(task_row["description"].iloc[0]))
    groups, primary = board.filtered(task, filters)
    if not groups:
        st.warning("No row matches the filters; widen them in the sidebar.")
        _render_unfinished(snapshot, task)
        return
    plots = _plot_axes(groups)
    if plots is None:
        _render_tables(store, task, groups, snapshot)
        return
    tables_tab, plots_tab = st.tabs(list(BOARD_TABS), key="board-view", on_change="rerun")
    with tables_tab:
        if tables_tab.open:
            _render_tables(store, task, groups, snapshot)
    with plots_tab:
        if plots_tab.open:
            _render_plots(task, primary, *plots)


def _load_behind_placeholder(task: str, board_of: Callable[[str], Board]) -> Board:
    loading = st.empty()
    with loading.container():
        st.caption(f"loading the board of {md_escape(task)}…")
        st.dataframe(pd.DataFrame(columns=["rank", "label", "method", "family", "source"]), hide_index=True)
    board = board_of(task)
    loading.empty()
    return board


def _render_tables(store: Store, task: str, groups: list[Group], snapshot: StoreSnapshot) -> None:
    st.caption(
        "Rows are grouped by evaluation signature (protocol and scoring): numbers are ranked only inside a "
        "group. Equal ranks mean the rows cannot be told apart within their 95% confidence intervals. "
        "Open a row for its signature, provenance and artifacts.")
    for index, group in enumerate(groups, start=1):
        _render_group(store, task, index, group)
    _render_unfinished(snapshot, task)


def _sidebar_filters(options: FilterOptions, task: str) -> Filters:
    with st.sidebar:
        st.header("Filters")
        search = st.text_input("search by name", key="search")
        chosen_families = st.multiselect("method family", options.families, format_func=family_name,
                                         key=f"families-{task}")
        chosen_sources = st.multiselect("source", options.sources, format_func=SOURCE_NAMES.get,
                                        key=f"sources-{task}")
        chosen_hardware: list[str] = []
        if options.hardware:
            chosen_hardware = st.multiselect("hardware", options.hardware, key=f"hardware-{task}")
        params_range = None
        if options.params_millions is not None:
            low, high = options.params_millions
            chosen = st.slider("parameters (millions)", low, high, (low, high), key=f"params-{task}")
            if chosen != (low, high):
                params_range = (chosen[0] * 1e6, chosen[1] * 1e6)
    return Filters(tuple(chosen_families), tuple(chosen_sources), tuple(chosen_hardware), params_range, search)


def _render_group(store: Store, task: str, index: int, group: Group) -> None:
    table = group.table
    sources = ", ".join(SOURCE_NAMES.get(s, s) for s in group.sources)
    st.markdown(f"#### Protocol group P{index} · {len(table)} rows · {md_escape(sources)}")
    signature = Signature.parse(eval_signature_text(store, group.eval_signature_hash))
    ranked = f"ranked by {md_escape(group.ranked_by.header)}" if group.ranked_by else "not ranked (no metric)"
    protocol = signature.entries.get("reported_protocol")
    named = f" · paper protocol {md_escape(protocol)}" if protocol else ""
    st.caption(f"{ranked}{named} · evaluation signature {md_escape(group.eval_signature_hash)}")
    with st.expander("evaluation signature of this group"):
        st.text(signature_lines(str(signature)))  # st.code would load a 1.5 MB highlighter before the tables
    st.dataframe(group.view, hide_index=True, column_config=_column_config(group),
                 key=f"table-{task}-{group.eval_signature_hash}")
    st.download_button("export this table as CSV", partial(to_csv, table, group.export_columns),  # built on click
                       file_name=f"{task}-P{index}.csv", mime="text/csv",
                       key=f"csv-{task}-{group.eval_signature_hash}")


def _column_config(group: Group) -> dict:
    config = {
        "rank": st.column_config.NumberColumn(
            "rank", format="%d", help="1 + the number of rows better beyond both 95% intervals; equal = a tie"),
        "label": st.column_config.TextColumn("label", width="medium"),
        "params": st.column_config.NumberColumn("params", format="compact"),
        "run": st.column_config.LinkColumn("details", display_text="open ↗",
                                           help="the run page: signature, provenance, artifacts"),
        "signature": st.column_config.TextColumn("signature", help="hash of the full signature (open the row)"),
    }
    for m in group.metrics:
        direction = "higher is better" if m.higher_is_better else "lower is better"
        config[m.header] = st.column_config.NumberColumn(m.header, format="%.4g", help=direction)
    return config


def _plot_axes(groups: list[Group]) -> tuple[pd.DataFrame, list[MetricInfo], list[Axis]] | None:
    """The rows, metrics and plottable axes of a board; None when fewer than two columns can be plotted."""
    frame = plot_frame(groups)
    metrics = list({m.name: m for g in groups for m in g.metrics}.values())
    axes = numeric_axes(frame, metrics)
    return (frame, metrics, axes) if len(axes) >= 2 else None


def _render_plots(task: str, primary: str | None, frame: pd.DataFrame, metrics: list[MetricInfo],
                  axes: list[Axis]) -> None:
    st.caption("Each point opens its run page. Shapes are protocol groups: points of different shapes were "
               "measured under different protocols.")
    charts = default_charts(frame, metrics, primary)
    if charts:
        for column, (x, y) in zip(st.columns(len(charts)), charts):
            with column:
                st.altair_chart(scatter(frame, x, y), width="stretch")
    if st.toggle("plot other columns", value=not charts, key=f"free-axes-{task}"):
        titles = [a.title for a in axes]
        left, right = st.columns(2)
        x_title = left.selectbox("x axis", titles, index=0, key=f"x-{task}")
        y_title = right.selectbox("y axis", titles, index=1, key=f"y-{task}")
        by_title = {a.title: a for a in axes}
        st.altair_chart(scatter(frame, by_title[x_title], by_title[y_title]), width="stretch")


def _render_unfinished(snapshot: StoreSnapshot, task: str) -> None:
    runs = pd.concat([task_runs(snapshot, task, state) for state in ("failed", "abandoned", "running")])
    if runs.empty:
        return
    with st.expander(f"failed and unfinished runs ({len(runs)})"):
        table = pd.DataFrame({"status": runs["status"], "label": runs["label"], "method": runs["method"],
                              "created": runs["created_at"], "run": runs["run_id"].map(run_link)})
        st.dataframe(table, hide_index=True, column_config={
            "run": st.column_config.LinkColumn("details", display_text="open ↗")}, key=f"unfinished-{task}")


# -- run page ----------------------------------------------------------------------------------------
def render_run(store: Store, run_id: str) -> None:
    if st.button("← all boards", key="back"):
        st.query_params.clear()
        st.rerun()
    record = load_run(store, run_id)
    if record is None:
        st.warning(f"There is no run {md_escape(run_id)} in this database; go back to the boards.")
        return
    st.subheader(md_escape(record["label"] or record["method"] or record["run_id"]))
    facts = {
        "task": record["task"], "method": record["method"] or "—",
        "family": family_name(record["method_family"] or ""),
        "source": SOURCE_NAMES.get(record["source"], record["source"]), "kind": record["kind"],
        "status": record["status"], "created": record["created_at"], "run id": record["run_id"],
    }
    st.dataframe(pd.DataFrame({"": list(facts), "value": [str(v) for v in facts.values()]}), hide_index=True,
                 key="facts")
    if record["error"]:
        st.error("This run failed; its error:")
        st.code(record["error"], language=None)
    _render_reported_source(record)
    _render_submission(store, record)
    if record["metrics"]:
        st.markdown("#### Metrics")
        rows = [{"metric": name, "value": m["value"], "95% CI low": m.get("ci_low"), "95% CI high": m.get("ci_high"),
                 "direction": "↑ higher is better" if m["higher_is_better"] else "↓ lower is better",
                 "unit": m["unit"], "version": m["version"], "description": m.get("description", "")}
                for name, m in record["metrics"].items()]
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="metrics")
    _render_artifacts(record.get("artifacts_path"))
    st.markdown("#### Signature")
    st.caption("Numbers are comparable when their evaluation signatures agree; the full signature adds the "
               "method and its settings.")
    st.text(f"evaluation signature {record['eval_signature_hash']}")
    st.code(signature_lines(record["eval_signature"]), language=None)
    st.text(f"full signature {record['signature_hash']}")
    st.code(signature_lines(record["signature"]), language=None)
    left, right = st.columns(2)
    with left:
        st.markdown("#### Settings")
        st.json(record["settings"], expanded=True)
    with right:
        st.markdown("#### Provenance")
        st.json(record["provenance"], expanded=False)


def _render_submission(store: Store, record: dict) -> None:
    """For a run that came through the submission queue: who submitted it and the manifest's public fields."""
    sub_id = (record["settings"] or {}).get("submission_id")
    if record["source"] != "submitted" or not sub_id:
        return
    from harness.submissions import get_submission

    try:
        job = get_submission(store, sub_id)
    except Exception:  # noqa: BLE001 - a missing submission row only hides this section
        return
    st.markdown("#### Submitted by the author")
    st.text(f"{job['submitter']} · submission {job['id']} · licence {job['license']}")
    st.json(job["manifest"], expanded=False)  # public fields only: the contact is never loaded here


def render_queue(store: Store) -> None:
    """The public submission queue: state, task, method and times; never contact data."""
    from harness.submissions import list_submissions

    st.subheader("Submission queue")
    try:
        jobs = list_submissions(store)
    except Exception:  # noqa: BLE001 - a database from before the queue existed
        jobs = []
    if not jobs:
        st.info("No submissions yet. Authors queue one with `arbench submit manifest.toml`; see the README.")
        return
    table = pd.DataFrame([{
        "state": j["state"], "task": j["task"], "label": j["label"], "method": j["method"],
        "submitted at": j["created_at"], "updated at": j["updated_at"], "attempts": j["attempts"],
        "last event": j["history"][-1]["message"].splitlines()[0] if j["history"] else "",
        "run": run_link(j["run_id"]) if j["run_id"] else None,
    } for j in reversed(jobs)])
    st.dataframe(table, hide_index=True, key="queue",
                 column_config={"run": st.column_config.LinkColumn("run", display_text="open ↗")})


def _render_reported_source(record: dict) -> None:
    prov = record["provenance"]
    if record["source"] != "reported":
        return
    st.markdown("#### Source")
    st.text(f"{prov.get('paper', '')}\n{prov.get('where', '')}")
    url = safe_url(prov.get("url"))
    if url:
        st.link_button("open the source", url)
    elif prov.get("url"):
        st.text(f"link (not a web address, shown as text): {prov['url']}")
    if prov.get("verification"):
        st.warning("Not verified against the paper; see below.")
        st.text(prov["verification"])
    if prov.get("note"):
        st.text(prov["note"])


def _render_artifacts(path: str | None) -> None:
    found = artifacts_mod.discover(path)
    st.markdown("#### Artifacts")
    if found is None or found.empty:
        st.caption("No displayable artifacts for this run" + (" (its folder is not on this machine)."
                                                              if path and found is None else "."))
        return
    st.text(f"from {found.root}" + (" (first files only)" if found.truncated else ""))

    def rel(path: Path) -> str:
        return str(path.relative_to(found.root))

    grids = [(p, g) for p in found.found["array"] if (g := artifacts_mod.sample_grid(p)) is not None]
    for p, grid in grids[:2]:
        st.image(grid, caption=f"samples from {md_escape(rel(p))}", width=min(640, grid.shape[1] * 3), clamp=True)
    if found.found["image"]:
        st.image([str(p) for p in found.found["image"]], caption=[md_escape(rel(p)) for p in found.found["image"]],
                 width=220)  # image captions are Markdown
    for p in found.found["audio"]:
        st.text(rel(p))
        st.audio(str(p))
    for p in found.found["video"]:
        st.text(rel(p))
        st.video(str(p))
    for p in found.found["table"]:
        st.text(rel(p))
        st.dataframe(_read_table(p), hide_index=True, key=f"artifact-{rel(p)}")
    for p in found.found["text"]:
        st.text(rel(p))
        st.code(_head(p), language=None)


def _read_table(path: Path, rows: int = 500) -> pd.DataFrame:
    try:
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as fh:
                return pd.DataFrame([json.loads(line) for _, line in zip(range(rows), fh) if line.strip()])
        return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", nrows=rows)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        return pd.DataFrame({"could not read this table": [str(exc)]})


def _head(path: Path, limit: int = 20_000) -> str:
    with path.open(encoding="utf-8", errors="replace") as fh:
        return fh.read(limit)
