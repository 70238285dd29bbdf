"""Reading the store for the boards: a few SQL queries into pandas frames, fast at 10,000 runs.

The leaderboard opens the store read-only. A database written by an older ARBench (an older Alembic
revision) is upgraded in place by the migrations first, so it is never shown half-broken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import case, func, select

from harness.errors import ArbenchError
from harness.store import MetricRow, MethodRow, RunRow, Store, TaskRow

#: Provenance keys read for the filters and plots (the first present one wins). Reported rows carry
#: `params`, `hardware`, `family` (when no method row names it) and `verification` (what is not checked
#: against the paper) from the data file.
PARAMS_KEYS = ("params", "num_parameters")
HARDWARE_KEYS = ("hardware", "gpu_name", "cpu")

RUN_COLUMNS = ["run_id", "task", "method", "family", "kind", "source", "label", "status",
               "signature_hash", "eval_signature_hash", "params", "hardware", "generate_seconds",
               "verification", "created_at", "has_error", "signature", "paper", "lossless", "finished_at",
               "weights_license", "reproducible"]
#: A year in a reported row's `paper` ("Sun et al. 2024, ..."): its publication date on the board.
PAPER_YEAR = r"\b((?:19|20)\d\d)\b"
METRIC_COLUMNS = ["run_id", "name", "value", "ci_low", "ci_high", "higher_is_better", "unit", "version"]


@dataclass
class StoreSnapshot:
    """Everything the boards need, loaded at once: tasks, runs (one row each) and their metric values."""

    tasks: pd.DataFrame
    runs: pd.DataFrame
    metrics: pd.DataFrame
    schema_note: str = ""

    @property
    def empty(self) -> bool:
        return self.runs.empty


def open_store(url: str | None = None) -> tuple[Store, str]:
    """A read-only store, after upgrading an older schema in place; returns (store, note for the user)."""
    from harness.migrations import head_revision

    store = Store(url, read_only=True)
    revision = store.schema_revision()
    if revision is None and not store.table_names():
        return store, ""  # an empty database: nothing to show, nothing to create
    head = head_revision()
    if revision == head:
        return store, ""
    store.dispose()
    try:
        Store(url).dispose()  # opening writable runs the migrations
    except ArbenchError as exc:
        raise ArbenchError(
            f"the database has schema revision {revision}, older than this ARBench's {head}, and could not be "
            f"upgraded ({exc}). Run any `arbench` command with write access to it (e.g. `arbench show`) once."
        ) from exc
    return Store(url, read_only=True), f"the database schema was upgraded from revision {revision} to {head}"


def _json_first(column, keys: tuple[str, ...], kind: str):
    parts = [column[k].as_float() if kind == "float" else column[k].as_string() for k in keys]
    return func.coalesce(*parts) if len(parts) > 1 else parts[0]


TASK_COLUMNS = ["task", "version", "modality", "description", "primary_metric"]


def results_version(store: Store) -> tuple:
    """A fingerprint of the results, from one cheap query (milliseconds at 10,000 runs).

    It changes when a run is added, started or resumed, finished or failed, replaced or removed, and when
    a metric value is added: the count and newest timestamps of the runs and the highest metric id (metric
    rows are only inserted, or deleted with a run or when a run fails, which stamps its finish time).
    The app keys its cached boards on it, so a board is rebuilt as soon as the store changes and never
    while it does not.
    """
    if "runs" not in store.table_names():
        return ()
    newest_metric = select(func.max(MetricRow.id)).scalar_subquery()
    query = select(func.count(RunRow.id), func.max(RunRow.created_at), func.max(RunRow.started_at),
                   func.max(RunRow.finished_at), newest_metric)
    with store.engine.connect() as conn:
        return tuple(str(v) for v in conn.execute(query).one())


def load_board_tasks(store: Store) -> list[str]:
    """Tasks with at least one finished run: those with reproduced or submitted rows first, then paper-only
    boards, each part in name order (one GROUP BY query)."""
    if "runs" not in store.table_names():
        return []
    own = func.sum(case((RunRow.source != "reported", 1), else_=0))
    query = (select(TaskRow.name, own).join(RunRow, RunRow.task_id == TaskRow.id)
             .where(RunRow.status == "finished").group_by(TaskRow.name))
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [name for name, _ in sorted(rows, key=lambda r: (not r[1], r[0]))]


def load_snapshot(store: Store, task: str | None = None) -> StoreSnapshot:
    """Tasks, and the runs and metric values of `task` (of every task when None), as frames.

    Three plain queries read through the driver's cursor; a page loads only the board it shows.
    """
    if "runs" not in store.table_names():
        return StoreSnapshot(pd.DataFrame(columns=TASK_COLUMNS), pd.DataFrame(columns=RUN_COLUMNS + ["published"]),
                             pd.DataFrame(columns=METRIC_COLUMNS))
    family = func.coalesce(MethodRow.family, RunRow.provenance["family"].as_string())
    runs_q = (
        select(
            RunRow.id.label("run_id"), TaskRow.name.label("task"), MethodRow.name.label("method"),
            family.label("family"), RunRow.kind, RunRow.source, RunRow.label, RunRow.status,
            RunRow.signature_hash, RunRow.eval_signature_hash,
            _json_first(RunRow.provenance, PARAMS_KEYS, "float").label("params"),
            _json_first(RunRow.provenance, HARDWARE_KEYS, "string").label("hardware"),
            RunRow.provenance["generate_seconds"].as_float().label("generate_seconds"),
            RunRow.provenance["verification"].as_string().label("verification"),
            RunRow.created_at, RunRow.error.is_not(None).label("has_error"), RunRow.signature,
            RunRow.provenance["paper"].as_string().label("paper"),
            RunRow.provenance["lossless"].as_boolean().label("lossless"), RunRow.finished_at,
            RunRow.provenance["weights_license"].as_string().label("weights_license"),
            RunRow.provenance["reproducible"].as_string().label("reproducible"),
        )
        .join(TaskRow, RunRow.task_id == TaskRow.id)
        .outerjoin(MethodRow, RunRow.method_id == MethodRow.id)
        .order_by(RunRow.created_at)
    )
    metrics_q = select(MetricRow.run_id, MetricRow.name, MetricRow.value, MetricRow.ci_low, MetricRow.ci_high,
                       MetricRow.higher_is_better, MetricRow.unit, MetricRow.version)
    tasks_q = select(TaskRow.name.label("task"), TaskRow.version, TaskRow.modality, TaskRow.description,
                     TaskRow.primary_metric).order_by(TaskRow.name)
    with store.engine.connect() as conn:
        if task is not None:
            task_id = int(conn.execute(select(TaskRow.id).where(TaskRow.name == task)).scalar() or -1)
            runs_q = runs_q.where(RunRow.task_id == task_id)
            metrics_q = metrics_q.join(RunRow, MetricRow.run_id == RunRow.id).where(RunRow.task_id == task_id)
        runs = _frame(conn, runs_q, RUN_COLUMNS)
        metrics = _frame(conn, metrics_q, METRIC_COLUMNS)
        tasks = _frame(conn, tasks_q, TASK_COLUMNS)
    for col in ("method", "family", "label", "hardware", "verification", "signature", "paper", "weights_license",
                "reproducible"):
        runs[col] = runs[col].fillna("")
    runs["published"] = runs["paper"].str.extract(PAPER_YEAR, expand=False).fillna("")
    for col in ("params", "generate_seconds"):
        runs[col] = pd.to_numeric(runs[col], errors="coerce")
    runs["has_error"] = runs["has_error"].astype(bool)
    for col in ("value", "ci_low", "ci_high"):
        metrics[col] = pd.to_numeric(metrics[col], errors="coerce")
    metrics["higher_is_better"] = metrics["higher_is_better"].astype(bool)
    return StoreSnapshot(tasks, runs, metrics)


def _frame(conn, query, columns: list[str]) -> pd.DataFrame:
    """Rows of a query as a frame through the driver's own cursor: SQLAlchemy's per-row result processing
    costs seconds at 100,000 metric values. The queries' only bound values are constants and an integer
    task id, so rendering them as literals is safe.

    Text columns stay Python objects: the board's lookups (`isin`, grouping, per-row links) run about a
    third faster on them than on pandas' Arrow-backed strings."""
    sql = str(query.compile(conn.engine, compile_kwargs={"literal_binds": True}))
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql)
        frame = pd.DataFrame.from_records(cursor.fetchall(), columns=columns)
    finally:
        cursor.close()
    text = [c for c in frame.columns if pd.api.types.is_string_dtype(frame[c]) and frame[c].dtype != object]
    return frame.astype({c: object for c in text}) if text else frame


def load_run(store: Store, run_id: str) -> dict[str, Any] | None:
    """One run as the `arbench export` record (with its full signature, provenance and error)."""
    records = store.records(run_id=run_id)
    return records[0] if records else None


def eval_signature_text(store: Store, eval_signature_hash: str) -> str:
    """The evaluation signature behind a hash (one query per shown group, not per run)."""
    with store.engine.connect() as conn:
        return conn.execute(
            select(RunRow.eval_signature).where(RunRow.eval_signature_hash == eval_signature_hash).limit(1)
        ).scalar() or ""
