"""The pages of the app: the overview of every task, the boards (one per task), a run page and the diff
of two runs.

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
from urllib.parse import quote

import pandas as pd
import streamlit as st

from harness.diff import diff_runs, resolve_run
from harness.errors import ArbenchError
from harness.signature import Signature
from harness.store import Store
from leaderboard import artifacts as artifacts_mod
from leaderboard.board import (
    SOURCE_NAMES, TRACK_NAMES, Board, FilterOptions, Filters, Group, MetricInfo, TaskSummary, family_name, run_link,
    task_runs, to_csv,
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


# -- overview ----------------------------------------------------------------------------------------
TOP_ROWS = 3


def open_board(task: str) -> None:
    """Button callback: show `task`'s board (the sidebar's bound selectbox puts it in the URL)."""
    st.session_state["task"] = task


def render_overview(summaries: list[TaskSummary]) -> None:
    """The landing page: every task with its modality, main protocol, row counts by source, its top rows and
    when it last changed; one click opens its board."""
    st.subheader("All tasks")
    st.caption("Each card is one task's board: its main protocol group (the rows ARBench ranks together), the "
               "top rows of that group, how many rows each source contributes, and when it last changed. Open "
               "a board for every group, filters, plots and the run pages; every view has its own link.")
    columns = st.columns(2, gap="medium")
    for index, summary in enumerate(summaries):
        with columns[index % 2].container(border=True):
            _render_task_card(summary)


def _render_task_card(summary: TaskSummary) -> None:
    head, button = st.columns([3, 2], vertical_alignment="center")
    head.markdown(f"#### {md_escape(summary.task)}")
    button.button("open board →", key=f"open-{summary.task}", on_click=open_board, args=(summary.task,),
                  type="primary", width="stretch")
    counts = " · ".join(f"{n} {source}" for source, n in summary.counts.items() if n)
    st.caption(f"{md_escape(summary.modality)} · {md_escape(counts) or 'no finished rows'} · last change "
               f"{md_escape(summary.last_change)}")
    if summary.description:
        st.caption(md_escape(summary.description))
    group = summary.main_group
    if group is None:
        return
    st.caption(f"main protocol group P1: {md_escape(summary.protocol)} · {_rows(len(group.table))}"
               + (f" · {md_escape(TRACK_LABELS.get(group.track, ''))}" if group.track else ""))
    top = group.table.head(TOP_ROWS)
    # One narrow card: the settings ride in the label cell ("digits-pca-gaussian · temperature=0.8").
    top = top.assign(label=top["label"] + top["settings"].map(lambda text: f" · {text}" if text else ""))
    columns = ["rank", "label"] + ([group.ranked_by.header] if group.ranked_by else [])  # sources: caption
    shown = top[[c for c in columns if c in top and not _all_blank(top[c])]]
    config = {**_column_config(group), "label": st.column_config.TextColumn("label", width=270)}
    st.dataframe(shown, hide_index=True, column_config=config, placeholder="", key=f"overview-{summary.task}")


def _all_blank(column: pd.Series) -> bool:
    return bool(column.isna().all() or column.astype(str).eq("").all())


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


TRACK_LABELS = {"lossless": "lossless decoding", "lossy": "lossy decoding"}


# -- boards ------------------------------------------------------------------------------------------
def render_boards(store: Store, task: str, board_of: Callable[[str], Board],
                  loaded: Callable[[str], bool] = lambda task: False) -> None:
    """The board of `task` (chosen in the sidebar or by `?task=`); `board_of(task)` loads (or recalls) its
    unfiltered board and `loaded(task)` says whether it is already in memory.

    Every choice on the board (protocol group, filters, tab, plot axes) is a widget bound to a query
    parameter, so the URL reproduces the view. The tables come first; the plots sit in a second tab that is
    only built when opened, so a first visit does not wait for the chart library and thousands of points to
    be drawn before the tables. While a board loads, an empty table stands in, so the grid's code (about
    1.2 MB of JavaScript) is fetched and compiled in parallel with the data path rather than after it.
    """
    board = board_of(task) if loaded(task) else _load_behind_placeholder(task, board_of)
    snapshot = board.snapshot
    filters = _sidebar_filters(board.options, task)
    task_row = snapshot.tasks[snapshot.tasks["task"] == task]
    st.subheader(md_escape(task))
    if len(task_row) and task_row["description"].iloc[0]:
        st.caption(md_escape(task_row["description"].iloc[0]))
    groups, primary = board.filtered(task, filters)
    chosen = _sidebar_group(board.groups, task)
    if chosen is not None:
        groups = [g for g in groups if g.key == chosen]
    numbers = {g.key: i for i, g in enumerate(board.groups, start=1)}  # P1, P2... as on the unfiltered board
    if not groups:
        st.warning("No row matches the filters; widen them in the sidebar.")
        _render_unfinished(snapshot, task)
        return
    plots = _plot_axes(groups, numbers)
    if plots is None:
        _render_tables(store, task, groups, snapshot, numbers)
        return
    tables_tab, plots_tab = st.tabs(list(BOARD_TABS), key="board-view", on_change="rerun", bind="query-params")
    with tables_tab:
        if tables_tab.open:
            _render_tables(store, task, groups, snapshot, numbers)
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


def _render_tables(store: Store, task: str, groups: list[Group], snapshot: StoreSnapshot,
                   numbers: dict[str, int]) -> None:
    st.caption(
        "Rows are grouped by evaluation signature (protocol and scoring): numbers are ranked only inside a "
        "group. Equal ranks mean the rows cannot be told apart within their 95% confidence intervals. "
        "`settings` shows what tells a row apart from the other rows of its method; identical reruns are "
        "one row, with their count under `runs`. Open a row for its signature, provenance and artifacts.")
    for group in groups:
        _render_group(store, task, numbers[group.key], group)
    _render_compare_picker(task, groups, numbers)
    _render_unfinished(snapshot, task)


def _sidebar_filters(options: FilterOptions, task: str) -> Filters:
    bound = {"bind": "query-params"}
    with st.sidebar:
        st.header("Filters")
        search = st.text_input("search by name", key="search", **bound)
        # The options are the stored codes (raster-ar, reported...), not display names: a bound widget puts
        # its shown text in the URL, and codes keep links short and stable.
        chosen_families = st.multiselect("method family", options.families, key=f"families-{task}", **bound)
        chosen_sources = st.multiselect("source", options.sources, key=f"sources-{task}", **bound)
        chosen_hardware: list[str] = []
        if options.hardware:
            chosen_hardware = st.multiselect("hardware", options.hardware, key=f"hardware-{task}", **bound)
        params_range = None
        if options.params_millions is not None:
            low, high = options.params_millions
            chosen = st.slider("parameters (millions)", low, high, (low, high), key=f"params-{task}", **bound)
            if chosen != (low, high):
                params_range = (chosen[0] * 1e6, chosen[1] * 1e6)
    return Filters(tuple(chosen_families), tuple(chosen_sources), tuple(chosen_hardware), params_range, search)


def _sidebar_group(groups: list[Group], task: str) -> str | None:
    """The protocol group the visitor narrowed the board to (None: all of them)."""
    if len(groups) < 2:
        return None
    names = {g.key: f"P{i} · {_rows(len(g.table))} · {', '.join(SOURCE_NAMES.get(s, s) for s in g.sources)}"
             + (f" · {TRACK_LABELS[g.track]}" if g.track else "") for i, g in enumerate(groups, start=1)}
    # Synced with `?group=<evaluation signature hash>` by hand: a bound selectbox would put its shown text
    # (with row counts that change as runs are added) in the URL instead of the stable hash.
    key, linked = f"group-{task}", st.query_params.get("group")
    if key not in st.session_state and linked in names:
        st.session_state[key] = linked
    with st.sidebar:
        chosen = st.selectbox("protocol group", list(names), index=None, format_func=names.get,
                              placeholder="all protocol groups", key=key)
    if chosen:
        st.query_params["group"] = chosen
    elif "group" in st.query_params:
        del st.query_params["group"]
    return chosen


def _render_group(store: Store, task: str, index: int, group: Group) -> None:
    table = group.table
    sources = ", ".join(SOURCE_NAMES.get(s, s) for s in group.sources)
    track = f" · {TRACK_LABELS[group.track]}" if group.track else ""
    st.markdown(f"#### Protocol group P{index} · {_rows(len(table))} · {md_escape(sources)}{md_escape(track)}")
    signature = Signature.parse(eval_signature_text(store, group.eval_signature_hash))
    ranked = f"ranked by {md_escape(group.ranked_by.header)}" if group.ranked_by else "not ranked (no metric)"
    protocol = signature.entries.get("reported_protocol")
    named = f" · paper protocol {md_escape(protocol)}" if protocol else ""
    st.caption(f"{ranked}{named} · evaluation signature {md_escape(group.eval_signature_hash)}")
    if group.track:
        st.caption(md_escape(TRACK_NAMES[group.track]))
    with st.expander("evaluation signature of this group"):
        st.text(signature_lines(str(signature)))  # st.code would load a 1.5 MB highlighter before the tables
    st.dataframe(group.view, hide_index=True, column_config=_column_config(group), placeholder="",
                 key=f"table-{task}-{group.key}")
    st.download_button("export this table as CSV",  # the file is built on click
                       partial(_group_csv, table, group.export_columns, str(signature)),
                       file_name=f"{task}-P{index}.csv", mime="text/csv", key=f"csv-{task}-{group.key}")


def _group_csv(table: pd.DataFrame, columns: list[str], eval_signature: str) -> bytes:
    """A group's CSV with its comparability key: the evaluation signature's hash and text on every row."""
    return to_csv(table.assign(eval_signature=eval_signature), columns + ["eval_signature"])


#: Cell formats by metric unit (printf style): the unit goes into the cell, not only the header.
UNIT_FORMATS = {"x": "%.2f×", "ms": "%.1f ms", "s": "%.3g s", "MB": "%.0f MB", "tokens/s": "%.1f tok/s",
                "img/s": "%.3g img/s", "nats/token": "%.3f nats/tok", "passes": "%.3g", "tokens": "%.3g",
                "fraction": "%.3f", "%": "%.2f%%"}


def _column_config(group: Group) -> dict:
    config = {
        "rank": st.column_config.NumberColumn(
            "rank", format="%d", help="1 + the number of rows better beyond both 95% intervals; equal = a tie"),
        "label": st.column_config.TextColumn("label", width="medium"),
        "run": st.column_config.LinkColumn("details", display_text="open ↗", width="small",
                                           help="the run page: signature, provenance, artifacts"),
        "settings": st.column_config.TextColumn(
            "settings", help="the settings that tell this row apart from the other rows of its "
                                             "method in this group (from the full signatures)"),
        "runs": st.column_config.NumberColumn("runs", format="×%d", help="identical reruns (one signature) "
                                                                         "shown as this one row: the newest"),
        "params": st.column_config.NumberColumn("params", format="compact", help="parameter count"),
        "date": st.column_config.TextColumn("date", help="a paper row's publication year; the day any other "
                                                         "run was stored"),
        "signature": st.column_config.TextColumn("signature", help="hash of the full signature (open the row)"),
    }
    for m in group.metrics:
        direction = "higher is better" if m.higher_is_better else "lower is better"
        config[m.header] = st.column_config.NumberColumn(m.header, format=UNIT_FORMATS.get(m.unit, "%.4g"),
                                                         help=direction)
    return config


def _render_compare_picker(task: str, groups: list[Group], numbers: dict[str, int]) -> None:
    """Two rows of the board into the diff page (`?compare=A,B`)."""
    rows = pd.concat([g.table.assign(group=f"P{numbers[g.key]}") for g in groups], ignore_index=True)
    if len(rows) < 2:
        return
    names = {r.run_id: f"{r.group} · {r.label}" + (f" · {r.settings}" if r.settings else "") + f" · {r.run_id[:8]}"
             for r in rows.itertuples(index=False)}
    with st.expander("compare two runs: what differs, and can their numbers be compared?"):
        left, right = st.columns(2)
        ids = list(names)
        a = left.selectbox("run A", ids, index=0, format_func=names.get, key=f"compare-a-{task}")
        b = right.selectbox("run B", ids, index=1, format_func=names.get, key=f"compare-b-{task}")
        if a == b:
            st.caption("Pick two different runs.")
        else:
            st.link_button("show the differences", compare_link(a, b))


def compare_link(a: str, b: str) -> str:
    return f"?compare={quote(a, safe='')},{quote(b, safe='')}"


def _plot_axes(groups: list[Group], numbers: dict[str, int]
               ) -> tuple[pd.DataFrame, list[MetricInfo], list[Axis]] | None:
    """The rows, metrics and plottable axes of a board; None when fewer than two columns can be plotted."""
    frame = plot_frame(groups, [numbers[g.key] for g in groups])
    metrics = list({m.name: m for g in groups for m in g.metrics}.values())
    axes = numeric_axes(frame, metrics)
    return (frame, metrics, axes) if len(axes) >= 2 else None


def _render_plots(task: str, primary: str | None, frame: pd.DataFrame, metrics: list[MetricInfo],
                  axes: list[Axis]) -> None:
    st.caption("Each point opens its run page. Shapes are protocol groups: points of different shapes were "
               "measured under different protocols. The dashed line joins the Pareto front of each protocol "
               "group: the rows no other row of the group beats on both axes.")
    charts = default_charts(frame, metrics, primary)
    if charts:
        for column, (x, y) in zip(st.columns(len(charts)), charts):
            with column:
                st.altair_chart(scatter(frame, x, y), width="stretch")
    if st.toggle("plot other columns", value=not charts, key=f"free-axes-{task}", bind="query-params"):
        titles = [a.title for a in axes]
        left, right = st.columns(2)
        x_title = left.selectbox("x axis", titles, index=0, key=f"x-{task}", bind="query-params")
        y_title = right.selectbox("y axis", titles, index=1, key=f"y-{task}", bind="query-params")
        by_title = {a.title: a for a in axes}
        st.altair_chart(scatter(frame, by_title[x_title], by_title[y_title]), width="stretch")


def _render_unfinished(snapshot: StoreSnapshot, task: str) -> None:
    runs = pd.concat([task_runs(snapshot, task, state) for state in ("failed", "abandoned", "running")])
    if runs.empty:
        return
    with st.expander(f"failed and unfinished runs ({len(runs)})"):
        table = pd.DataFrame({"status": runs["status"], "label": runs["label"], "method": runs["method"],
                              "created": runs["created_at"], "run": runs["run_id"].map(run_link)})
        st.dataframe(table, hide_index=True, placeholder="", column_config={
            "run": st.column_config.LinkColumn("details", display_text="open ↗")}, key=f"unfinished-{task}")


# -- diff page ---------------------------------------------------------------------------------------
def render_compare(store: Store, pair: str) -> None:
    """`?compare=A,B`: what differs between two runs and whether their numbers compare (harness.diff)."""
    back_button()
    ids = [p.strip() for p in pair.split(",") if p.strip()]
    if len(ids) != 2:
        st.warning("A comparison needs two run ids: ?compare=RUN_A,RUN_B (the run pages show the ids).")
        return
    try:
        records = [resolve_run(store, i) for i in ids]
    except ArbenchError as exc:
        st.warning(md_escape(exc))
        return
    result = diff_runs(*records)
    st.subheader("Comparing two runs")
    for name, record in zip("AB", records):
        left, right = st.columns([4, 1], vertical_alignment="center")
        left.markdown(f"**{name}** · {md_escape(record['label'] or record['method'] or record['run_id'])} · "
                      f"{md_escape(record['task'])} · {md_escape(SOURCE_NAMES.get(record['source'], record['source']))}"
                      f" · run {md_escape(record['run_id'][:12])}")
        right.link_button("run page ↗", run_link(record["run_id"]))
    verdict = st.success if result.comparable else st.error
    headline = "Comparable" if result.comparable else "Not comparable"
    verdict(f"**{headline}.** " + (md_escape(result.reasons[0]) if result.reasons else ""))
    if len(result.reasons) > 1:
        st.text("\n".join(f"• {r}" for r in result.reasons[1:]))
    st.markdown("#### Metrics")
    if result.metrics:
        st.dataframe(pd.DataFrame([{
            "metric": m.name, "A": _metric_value(m.a), "B": _metric_value(m.b),
            "A version": (m.a or {}).get("version", ""), "B version": (m.b or {}).get("version", ""),
            "differs in": ", ".join(m.changed),
            "comparable": ("only in A" if m.b is None else "only in B") if "missing" in m.changed
            else "yes" if m.comparable else "no",
        } for m in result.metrics]), hide_index=True, placeholder="", key="diff-metrics")
    else:
        st.caption("The same metric values, versions and units.")
    for title, items, what in (("Signature", result.signature, "the signature keys"),
                               ("Settings", result.settings, "the stored task and method settings"),
                               ("Provenance", result.provenance, "hardware, software, seeds, batch size")):
        st.markdown(f"#### {title}")
        if not items:
            st.caption(f"No difference in {what}.")
            continue
        rows = pd.DataFrame([{"key": d.key, "A": _cell(d.a), "B": _cell(d.b), "kind": d.note} for d in items])
        st.dataframe(rows if rows["kind"].ne("").any() else rows.drop(columns="kind"), hide_index=True,
                     placeholder="", key=f"diff-{title}")
    if result.measurements:
        st.caption("Measurements of the runs themselves (always differ, not listed): "
                   + md_escape(", ".join(result.measurements)))


def _metric_value(m: dict | None) -> str:
    if m is None:
        return "(absent)"
    value = m.get("value")
    return "" if value is None else f"{value:.6g} {m.get('unit') or ''}".strip()


def _cell(value) -> str:
    if value is None:
        return "(absent)"
    return value if isinstance(value, str) else json.dumps(value, default=str)


def back_button() -> None:
    if st.button("← all boards", key="back"):
        st.query_params.clear()
        st.rerun()


# -- run page ----------------------------------------------------------------------------------------
def render_run(store: Store, run_id: str) -> None:
    back_button()
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
    if (record["provenance"] or {}).get("weights_license"):  # declared by the method (e.g. non-commercial)
        facts["weights licence"] = record["provenance"]["weights_license"]
    st.dataframe(pd.DataFrame({"": list(facts), "value": [str(v) for v in facts.values()]}), hide_index=True,
                 key="facts", placeholder="")
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
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="metrics", placeholder="")
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
                 column_config={"run": st.column_config.LinkColumn("run", display_text="open ↗")}, placeholder="")


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
    if prov.get("reproducible"):
        st.text(f"reproducible with ARBench: {prov['reproducible']}")
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
    for p, grid in grids[:1]:
        st.image(grid, caption=f"samples from {md_escape(rel(p))}", width=min(960, max(320, grid.shape[1])), clamp=True)
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
        st.dataframe(_read_table(p), hide_index=True, key=f"artifact-{rel(p)}", placeholder="")
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
