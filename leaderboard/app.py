"""ARBench leaderboard (Streamlit). Start it with `arbench leaderboard`; it reads `ARBENCH_DB_URL` (or the per-user
default database, `harness.config.default_db_url`) through a read-only connection and never writes results.

Pages: the overview of every task (the landing page), the boards (one per task: `?task=<name>`, chosen in
the sidebar or from the overview; protocol group, filters, tab and plot axes are query parameters too), a run
page (`?run=<id>`) and the diff of two runs (`?compare=<id>,<id>`).
"""

from __future__ import annotations

import streamlit as st

from harness.config import default_db_url
from harness.errors import ArbenchError
from harness.store import Store, mask_url
from leaderboard.board import Board, TaskSummary, summarize
from leaderboard.data import load_board_tasks, load_snapshot, open_store, results_version
from leaderboard.text import md_escape
from leaderboard.views import EMPTY_HELP, render_boards, render_compare, render_overview, render_queue, render_run

#: Boards are rebuilt when `results_version` changes; this only bounds how long a change that the
#: fingerprint cannot see (an edit made by hand in the database) stays hidden.
SAFETY_TTL_SECONDS = 600
MAX_CACHED_BOARDS = 32


@st.cache_resource(show_spinner=False)
def cached_store(url: str) -> tuple[Store, str]:
    return open_store(url)


@st.cache_data(ttl=SAFETY_TTL_SECONDS, max_entries=MAX_CACHED_BOARDS, show_spinner=False)
def cached_board_tasks(url: str, version: tuple) -> list[str]:
    return load_board_tasks(cached_store(url)[0])


@st.cache_data(ttl=SAFETY_TTL_SECONDS, max_entries=MAX_CACHED_BOARDS, show_spinner=False)
def cached_board(url: str, task: str, version: tuple) -> Board:
    """A task's runs and metrics with its ranked, unfiltered groups, built once per version of the results."""
    return Board.build(load_snapshot(cached_store(url)[0], task), task)


@st.cache_resource(show_spinner=False)
def built_boards() -> set[tuple]:
    """Keys of the boards this server has built (the data cache cannot be asked whether it holds one): a
    board not in it is shown behind a loading placeholder."""
    return set()


@st.cache_data(ttl=SAFETY_TTL_SECONDS, max_entries=MAX_CACHED_BOARDS, show_spinner=False)
def cached_summaries(url: str, tasks: tuple[str, ...], version: tuple) -> list[TaskSummary]:
    """The overview cards, from one snapshot of every task (only each task's main group is ranked)."""
    snapshot = load_snapshot(cached_store(url)[0])
    return [summarize(snapshot, task) for task in tasks]


def main() -> None:
    st.set_page_config(page_title="ARBench leaderboard", layout="wide")
    st.title("ARBench leaderboard")
    url = default_db_url()
    run_id = st.query_params.get("run")
    compare = st.query_params.get("compare")
    single = bool(run_id or compare)
    try:
        store, schema_note = cached_store(url)
        version = () if single else results_version(store)
        tasks = [] if single else cached_board_tasks(url, version)
    except ArbenchError as exc:
        st.error(md_escape(exc))
        st.info(EMPTY_HELP)
        return
    if schema_note:
        st.toast(md_escape(schema_note))
    st.caption(f"results from {md_escape(mask_url(url))} · boards rebuilt whenever the results change")
    task, show_queue = None, False
    if not single:
        with st.sidebar:
            st.header("Board")
            task = st.selectbox("task", tasks, index=None, placeholder="overview of all tasks", key="task",
                                bind="query-params")
            show_queue = st.toggle("submission queue", key="queue-toggle")
    if compare:
        render_compare(store, compare)
    elif run_id:
        render_run(store, run_id)
    elif show_queue:
        render_queue(store)
    elif not tasks:
        st.info(EMPTY_HELP)
    elif task is None:
        render_overview(cached_summaries(url, tuple(tasks), version))
    else:
        built = built_boards()

        def board_of(task: str) -> Board:
            board = cached_board(url, task, version)
            if len(built) > 4 * MAX_CACHED_BOARDS:  # keys of older versions pile up as results are added
                built.clear()
            built.add((url, task, version))
            return board

        render_boards(store, task, board_of, loaded=lambda task: (url, task, version) in built)


main()
