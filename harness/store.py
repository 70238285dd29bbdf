"""The result store: SQLAlchemy 2 models and a small API over them.

SQLite (`arbench.db` in the user's results folder, WAL; see `harness.config.results_dir`) by default; any
SQLAlchemy URL through `ARBENCH_DB_URL` or `--db` (PostgreSQL for shared use). The schema is owned by Alembic
migrations (`harness/migrations`): opening a store upgrades an older database in place, never by deleting it.
A damaged SQLite file is refused when it is opened (`PRAGMA quick_check`), never read.

Concurrency: task and method rows are upserted (`INSERT ... ON CONFLICT`); a run requested by `arbench run` or
`arbench score` carries a unique `run_key` (its full signature hash), so two identical requests cannot both insert
one; a `running` run names its process (host, pid) and renews a heartbeat, and reads as `abandoned` once that
process is gone.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    case,
    create_engine,
    event,
    insert,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, selectinload, sessionmaker

from harness.config import default_db_url
from harness.errors import ArbenchError, InputError

RUN_STATES = ("running", "finished", "failed", "abandoned")
SOURCES = ("reproduced", "submitted", "reported")
#: a running run's process renews its heartbeat this often (seconds) ...
HEARTBEAT_SECONDS = 15.0
#: ... and a run not heard from for this long reads as abandoned (its process or its machine is gone)
STALE_AFTER_SECONDS = 120.0


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}


class TaskRow(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    version: Mapped[str] = mapped_column(String(32))
    modality: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    primary_metric: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class MethodRow(Base):
    __tablename__ = "methods"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    family: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class RunRow(Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    task_version: Mapped[str] = mapped_column(String(32))
    method_id: Mapped[int | None] = mapped_column(ForeignKey("methods.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))  # run | score | reported
    source: Mapped[str] = mapped_column(String(16), default="reproduced")
    label: Mapped[str] = mapped_column(String(256), default="")
    status: Mapped[str] = mapped_column(String(16), default="running")
    signature: Mapped[str] = mapped_column(Text, default="")
    signature_hash: Mapped[str] = mapped_column(String(16), default="", index=True)
    eval_signature: Mapped[str] = mapped_column(Text, default="")
    eval_signature_hash: Mapped[str] = mapped_column(String(16), default="", index=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    artifacts_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    #: the request's identity (full signature hash, `.rN` for the N-th repeat); NULL where runs are not idempotent
    run_key: Mapped[str | None] = mapped_column(String(40), nullable=True, unique=True)
    #: id of the first run of a deliberate repeat
    repeat_of: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    #: the process working on the run (or that last did) and when it last said it is alive
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)

    task: Mapped[TaskRow] = relationship()
    method: Mapped[MethodRow | None] = relationship()
    metrics: Mapped[list["MetricRow"]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="MetricRow.id"
    )


class MetricRow(Base):
    __tablename__ = "metrics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    ci_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    ci_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    higher_is_better: Mapped[bool] = mapped_column(Boolean)
    unit: Mapped[str] = mapped_column(String(32), default="")
    version: Mapped[str] = mapped_column(String(32), default="1")
    description: Mapped[str] = mapped_column(Text, default="")
    run: Mapped[RunRow] = relationship(back_populates="metrics")


SUBMISSION_STATES = ("pending", "validating", "running", "finished", "failed", "cancelled")


class SubmissionRow(Base):
    """A submitted checkpoint (or adapter) waiting for, or going through, a worker."""

    __tablename__ = "submissions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    task: Mapped[str] = mapped_column(String(128))
    method: Mapped[str] = mapped_column(String(256))
    label: Mapped[str] = mapped_column(String(256), default="")
    submitter: Mapped[str] = mapped_column(String(256))
    contact: Mapped[str | None] = mapped_column(String(256), nullable=True)  # private: never exported or shown
    license: Mapped[str] = mapped_column(String(128), default="")
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # public fields only
    bundle_path: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    events: Mapped[list["SubmissionEventRow"]] = relationship(
        back_populates="submission", cascade="all, delete-orphan", order_by="SubmissionEventRow.id"
    )


class SubmissionEventRow(Base):
    """One state change of a submission, with its reason: the visible history of the job."""

    __tablename__ = "submission_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    submission: Mapped[SubmissionRow] = relationship(back_populates="events")


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised through every SQLite test
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()


def _looks_damaged(reason: str) -> bool:
    return any(word in reason for word in ("not a database", "malformed", "corrupt"))


def mask_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


class RunKeyTaken(Exception):
    """Another process inserted the run with this key first (the caller reads that run and decides again)."""


@dataclass(frozen=True)
class Owner:
    """The process that works on a run."""

    host: str
    pid: int

    @classmethod
    def me(cls) -> "Owner":
        return cls(socket.gethostname(), os.getpid())


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this machine still runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def effective_status(status: str, host: str | None, pid: int | None, heartbeat_at: dt.datetime | None,
                     started_at: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """A run's status as it should be shown: a `running` run whose process is gone reads `abandoned`.

    Gone means: on this machine, its pid no longer runs; anywhere, no heartbeat for `STALE_AFTER_SECONDS`."""
    if status != "running":
        return status
    if host == socket.gethostname() and pid is not None and not process_alive(pid):
        return "abandoned"
    last = heartbeat_at or started_at
    if last is None or ((now or utcnow()) - last).total_seconds() > STALE_AFTER_SECONDS:
        return "abandoned"
    return "running"


def _same_state(seen: dict[str, Any]) -> list:
    """WHERE clauses that hold only while a run is as `seen` (compare-and-set: no one took it since)."""
    def same(column, value):
        return column.is_(None) if value is None else column == value

    return [RunRow.id == seen["id"], RunRow.status == seen["stored_status"], same(RunRow.host, seen["host"]),
            same(RunRow.pid, seen["pid"]), same(RunRow.heartbeat_at, seen["heartbeat_at"])]


def _upsert(session: Session, model: type[Base], key: str, values: dict[str, Any]) -> int:
    """Insert a row, or update the one with the same unique `key`, in one statement; return its id.

    `INSERT ... ON CONFLICT DO UPDATE` (SQLite >= 3.24, PostgreSQL) rather than select-then-insert, which fails
    with a UNIQUE violation when two processes register the same task at the same moment."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # other databases: plain select-then-write (no concurrent first writes there)
        row = session.scalar(select(model).where(getattr(model, key) == values[key]))
        if row is None:
            row = model(**values)
            session.add(row)
        for name, value in values.items():
            setattr(row, name, value)
        session.flush()
        return row.id
    stmt = insert(model).values(**values)
    stmt = stmt.on_conflict_do_update(index_elements=[key],
                                      set_={k: stmt.excluded[k] for k in values if k != key})
    return session.execute(stmt.returning(model.id)).scalar_one()


class Store:
    """Runs and their metric values in a SQL database.

    Args:
        url: a SQLAlchemy URL; default `ARBENCH_DB_URL`, else `arbench.db` in the user's results folder.
        read_only: open without creating or migrating anything (what the leaderboard does).
    """

    def __init__(self, url: str | None = None, read_only: bool = False):
        self.url = url or default_db_url()
        self.read_only = read_only
        try:
            parsed = make_url(self.url)
        except ArgumentError as exc:
            raise ArbenchError(
                f"database URL {self.url!r} is not a valid SQLAlchemy URL ({exc}). "
                "Set ARBENCH_DB_URL to e.g. sqlite:///results/arbench.db or postgresql://user@host/db."
            ) from exc
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        connect_args: dict[str, Any] = {}
        if self.is_sqlite:
            path = parsed.database
            if path and path != ":memory:":
                self._prepare_sqlite_path(Path(path))
                if read_only:
                    self.url = f"sqlite:///file:{Path(path).resolve()}?mode=ro&uri=true"
            connect_args["timeout"] = 30
        else:
            connect_args["connect_timeout"] = 10
        try:
            self.engine = create_engine(self.url, connect_args=connect_args, pool_pre_ping=True)
        except (ArgumentError, ImportError) as exc:
            raise ArbenchError(
                f"cannot open database {mask_url(self.url)}: {exc}. ARBench uses SQLite (sqlite:///PATH) or "
                "PostgreSQL (postgresql://user@host/db); check --db or ARBENCH_DB_URL."
            ) from exc
        if self.is_sqlite:
            _sqlite_pragmas(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._check_reachable()
        if not read_only:
            self.upgrade()

    def _prepare_sqlite_path(self, path: Path) -> None:
        if self.read_only:
            if not path.exists():
                raise ArbenchError(f"no database at {path}. Run `arbench demo` or `arbench run ...` to create one.")
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArbenchError(
                f"cannot create the results folder {path.parent}: {exc.strerror}. "
                "Set ARBENCH_RESULTS (or ARBENCH_DB_URL, or --db) to a writable place."
            ) from exc
        probe = path.parent / f".write-test-{uuid.uuid4().hex}"
        try:
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise ArbenchError(
                f"the results folder {path.parent} is not writable ({exc.strerror}). "
                "Fix its permissions, or set ARBENCH_RESULTS (or ARBENCH_DB_URL) to a writable place."
            ) from exc

    def _check_reachable(self) -> None:
        try:
            with self.engine.connect() as conn:
                if self.is_sqlite:
                    self._check_sqlite_intact(conn)
                    if not self.read_only:
                        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        except ArbenchError:
            raise
        except (OperationalError, SQLAlchemyError) as exc:
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            if self.is_sqlite and isinstance(exc, DatabaseError) and _looks_damaged(reason):
                raise self._damaged(reason) from exc
            raise ArbenchError(
                f"cannot reach the database at {mask_url(self.url)}: {reason}. "
                "Check that the server runs and that ARBENCH_DB_URL is right (unset it to use the default database)."
            ) from exc

    def _check_sqlite_intact(self, conn) -> None:
        """Refuse a damaged SQLite file before anything is read from it or written to it."""
        problems = [row[0] for row in conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise self._damaged("; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3
                                                            else ""))

    def _damaged(self, reason: str) -> ArbenchError:
        path = make_url(self.url).database or self.url
        path = path.removeprefix("file:").split("?")[0]
        return ArbenchError(
            f"the SQLite database {path} is damaged ({reason}); nothing was read from it or written to it. "
            f"Restore it from a backup, or salvage what is readable into a new file with "
            f"`sqlite3 {path} .recover | sqlite3 recovered.db` and use that one (--db sqlite:///recovered.db); "
            f"keep the damaged file until you have checked the copy."
        )

    def upgrade(self) -> None:
        """Bring the schema to the newest revision (creates it on an empty database)."""
        from harness.migrations import upgrade_to_head

        upgrade_to_head(self.engine)

    def schema_revision(self) -> str | None:
        from harness.migrations import current_revision

        return current_revision(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error."""
        with self._sessions() as session:
            with session.begin():
                yield session

    def dispose(self) -> None:
        self.engine.dispose()

    # -- registration -------------------------------------------------------------------------
    def _task_row(self, session: Session, name: str, version: str, modality: str, description: str,
                  primary_metric: str | None) -> TaskRow:
        row_id = _upsert(session, TaskRow, "name", dict(name=name, version=version, modality=modality,
                                                          description=description, primary_metric=primary_metric))
        return session.get(TaskRow, row_id, populate_existing=True)

    def _method_row(self, session: Session, name: str, family: str, description: str) -> MethodRow:
        row_id = _upsert(session, MethodRow, "name", dict(name=name, family=family, description=description))
        return session.get(MethodRow, row_id, populate_existing=True)

    # -- runs ---------------------------------------------------------------------------------
    def create_run(
        self,
        *,
        task: dict[str, Any],
        method: dict[str, Any] | None,
        kind: str,
        source: str,
        label: str,
        signature: str,
        signature_hash: str,
        eval_signature: str,
        eval_signature_hash: str,
        settings: dict[str, Any],
        provenance: dict[str, Any] | None = None,
        artifacts_path: str | None = None,
        run_id: str | None = None,
        status: str = "running",
        run_key: str | None = None,
        repeat_of: str | None = None,
        owner: Owner | None = None,
    ) -> str:
        """Insert a run in state `running` (or the given state) and return its id.

        With a `run_key`, raises `RunKeyTaken` when a run with that key exists already (inserted by another
        process a moment ago, say): the key is unique in the database, so at most one such insert succeeds."""
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
        run_id = run_id or uuid.uuid4().hex
        now = utcnow()
        try:
            with self.session() as s:
                task_row = self._task_row(s, **task)
                method_row = self._method_row(s, method["name"], method.get("family", ""),
                                              method.get("description", "")) if method else None
                s.add(RunRow(
                    id=run_id, task_id=task_row.id, task_version=task["version"],
                    method_id=method_row.id if method_row else None, kind=kind, source=source, label=label,
                    status=status, signature=signature, signature_hash=signature_hash,
                    eval_signature=eval_signature, eval_signature_hash=eval_signature_hash,
                    settings=settings, provenance=provenance or {}, artifacts_path=artifacts_path,
                    created_at=now, started_at=now, run_key=run_key, repeat_of=repeat_of,
                    host=owner.host if owner else None, pid=owner.pid if owner else None,
                    heartbeat_at=now if owner else None,
                ))
        except IntegrityError:
            if run_key is not None and self.run_for_key(run_key) is not None:
                raise RunKeyTaken(run_key) from None
            raise
        return run_id

    def run_for_key(self, run_key: str) -> dict[str, Any] | None:
        """The run with this key, as far as deciding what to do with a request needs: id, `status` (as shown:
        `abandoned` where its process is gone), `stored_status`, owner, heartbeat and artifacts folder."""
        with self.session() as s:
            row = s.execute(
                select(RunRow.id, RunRow.status, RunRow.host, RunRow.pid, RunRow.heartbeat_at, RunRow.started_at,
                       RunRow.artifacts_path).where(RunRow.run_key == run_key)
            ).one_or_none()
        if row is None:
            return None
        return dict(id=row.id, stored_status=row.status, host=row.host, pid=row.pid,
                    heartbeat_at=row.heartbeat_at, artifacts_path=row.artifacts_path,
                    status=effective_status(row.status, row.host, row.pid, row.heartbeat_at, row.started_at))

    def count_repeats(self, run_id: str) -> int:
        """How many deliberate repeats of this run are stored."""
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(RunRow).where(RunRow.repeat_of == run_id))

    def claim_run(self, seen: dict[str, Any], owner: Owner, artifacts_path: str | None = None) -> bool:
        """Take over a failed or abandoned run (`seen`, from `run_for_key`) to resume it. True for the one process
        that gets it; False when another process changed it since it was read."""
        now = utcnow()
        values: dict[str, Any] = dict(status="running", error=None, host=owner.host, pid=owner.pid, heartbeat_at=now,
                                      started_at=now, finished_at=None)
        if artifacts_path is not None:
            values["artifacts_path"] = artifacts_path
        with self.session() as s:
            result = s.execute(update(RunRow).where(*_same_state(seen)).values(**values))
            return result.rowcount == 1

    def heartbeat(self, run_id: str, owner: Owner) -> bool:
        """Say that `owner` still works on the run (a run wrongly marked abandoned meanwhile, e.g. while its
        process was stopped, is running again). False when another process has taken the run over."""
        with self.session() as s:
            result = s.execute(
                update(RunRow)
                .where(RunRow.id == run_id, RunRow.host == owner.host, RunRow.pid == owner.pid,
                       RunRow.status.in_(("running", "abandoned")))
                .values(heartbeat_at=utcnow(), status="running",
                        error=case((RunRow.status == "abandoned", None), else_=RunRow.error)))
            return result.rowcount == 1

    def mark_abandoned(self) -> list[str]:
        """Write `abandoned` on every `running` run whose process is gone; returns their ids (none when the store
        is read-only: readers see the same status through `records`, derived on the fly)."""
        if self.read_only:
            return []
        with self.session() as s:
            rows = s.execute(select(RunRow.id, RunRow.status, RunRow.host, RunRow.pid, RunRow.heartbeat_at,
                                    RunRow.started_at).where(RunRow.status == "running")).all()
        marked = []
        for row in rows:
            if effective_status(row.status, row.host, row.pid, row.heartbeat_at, row.started_at) != "abandoned":
                continue
            seen = dict(id=row.id, stored_status=row.status, host=row.host, pid=row.pid,
                        heartbeat_at=row.heartbeat_at)
            try:
                with self.session() as s:
                    if s.execute(update(RunRow).where(*_same_state(seen)).values(
                            status="abandoned", error=abandoned_message(row.host, row.pid, row.heartbeat_at))).rowcount:
                        marked.append(row.id)
            except (OperationalError, ProgrammingError):  # an account or file we may only read: shown, not written
                break
        return marked

    def finish_run(self, run_id: str, metrics: Sequence[Any], provenance: dict[str, Any]) -> None:
        """Store the metric values and mark the run finished, in one transaction."""
        with self.session() as s:
            run = s.get(RunRow, run_id)
            run.metrics.clear()
            for m in metrics:
                run.metrics.append(MetricRow(
                    name=m.name, value=m.value, ci_low=m.ci_low, ci_high=m.ci_high,
                    higher_is_better=m.higher_is_better, unit=m.unit, version=m.version,
                    description=m.description,
                ))
            run.provenance = {**(run.provenance or {}), **provenance}
            run.status, run.error, run.finished_at = "finished", None, utcnow()

    def fail_run(self, run_id: str, error: str, provenance: dict[str, Any] | None = None) -> None:
        """Mark a run failed with its error text; a failed run never keeps metric values."""
        with self.session() as s:
            run = s.get(RunRow, run_id)
            if run is None:
                return
            run.metrics.clear()
            if provenance:
                run.provenance = {**(run.provenance or {}), **provenance}
            run.status, run.error, run.finished_at = "failed", error, utcnow()

    def delete_run(self, run_id: str) -> None:
        with self.session() as s:
            run = s.get(RunRow, run_id)
            if run is not None:
                s.delete(run)

    # -- reading ------------------------------------------------------------------------------
    def records(self, task: str | None = None, status: str | None = None,
                run_id: str | None = None) -> list[dict[str, Any]]:
        """Every run as a plain record (the `arbench export` format); a run whose process is gone is `abandoned`
        (and is written so, where the store is writable)."""
        self.mark_abandoned()
        with self.session() as s:
            query = (
                select(RunRow)
                .options(selectinload(RunRow.metrics), selectinload(RunRow.task), selectinload(RunRow.method))
                .order_by(RunRow.created_at)
            )
            if task:
                query = query.join(TaskRow).where(TaskRow.name == task)
            if status and status not in ("running", "abandoned"):  # those two are told apart below
                query = query.where(RunRow.status == status)
            if run_id:
                query = query.where(RunRow.id == run_id)
            records = [run_record(r) for r in s.scalars(query)]
        return [r for r in records if status is None or r["status"] == status]

    def table_names(self) -> list[str]:
        return inspect(self.engine).get_table_names()

    # -- the submission queue (harness/submissions.py and harness/worker.py call these) ------------------------
    def add_submission(self, *, max_attempts: int, **fields: Any) -> None:
        """A new pending job with its first history entry."""
        with self.session() as s:
            row = SubmissionRow(state="pending", max_attempts=max_attempts, **fields)
            row.events.append(SubmissionEventRow(state="pending", message="submitted"))
            s.add(row)

    def list_submissions(self, state: str | None = None) -> list[dict[str, Any]]:
        with self.session() as s:
            query = select(SubmissionRow).order_by(SubmissionRow.created_at, SubmissionRow.id)
            if state:
                query = query.where(SubmissionRow.state == state)
            return [submission_record(r) for r in s.scalars(query)]

    def get_submission(self, sub_id: str) -> dict[str, Any]:
        with self.session() as s:
            row = s.get(SubmissionRow, sub_id)
            if row is None:
                raise ArbenchError(f"no submission {sub_id!r}; see `arbench submissions`")
            return submission_record(row)

    def _queue_lock(self, query):
        return query if self.is_sqlite else query.with_for_update(skip_locked=True)

    def reap_expired_submissions(self) -> int:
        """Return jobs whose worker's lease ran out to pending (or fail them after max_attempts)."""
        now = utcnow()
        reaped = 0
        with self.session() as s:
            rows = s.scalars(self._queue_lock(select(SubmissionRow).where(
                SubmissionRow.state.in_(("validating", "running")), SubmissionRow.lease_expires_at < now))).all()
            for row in rows:
                who = row.lease_owner
                row.lease_owner, row.lease_expires_at = None, None
                if row.attempts >= row.max_attempts:
                    row.error = f"the worker's lease expired {row.attempts} times; giving up"
                    _submission_event(s, row, "failed", row.error, who)
                else:
                    _submission_event(s, row, "pending", f"lease of worker {who} expired (worker presumed dead); "
                                      f"back in the queue (attempt {row.attempts} of {row.max_attempts} used)", who)
                reaped += 1
        return reaped

    def claim_submission(self, worker: str, tasks: list[str] | None = None,
                         lease_seconds: float = 60.0) -> str | None:
        """Atomically take the oldest pending job (of the given tasks); returns its id or None."""
        self.reap_expired_submissions()
        for _ in range(20):  # a few rounds: another worker may win the compare-and-set for the same row
            with self.session() as s:
                query = select(SubmissionRow.id).where(SubmissionRow.state == "pending")
                if tasks:
                    query = query.where(SubmissionRow.task.in_(tasks))
                sub_id = s.scalar(self._queue_lock(query.order_by(SubmissionRow.created_at, SubmissionRow.id).limit(1)))
                if sub_id is None:
                    return None
                now = utcnow()
                taken = s.execute(
                    update(SubmissionRow)
                    .where(SubmissionRow.id == sub_id, SubmissionRow.state == "pending")
                    .values(state="validating", lease_owner=worker, attempts=SubmissionRow.attempts + 1,
                            lease_expires_at=now + dt.timedelta(seconds=lease_seconds), updated_at=now)
                    .execution_options(synchronize_session=False)
                ).rowcount
                if taken == 1:
                    s.add(SubmissionEventRow(submission_id=sub_id, state="validating", message="claimed",
                                             worker=worker, at=now))
                    return sub_id
        return None

    def renew_submission(self, sub_id: str, worker: str, lease_seconds: float) -> bool:
        """Extend the lease; False means the job is no longer this worker's (cancelled, or reaped)."""
        now = utcnow()
        with self.session() as s:
            return s.execute(
                update(SubmissionRow)
                .where(SubmissionRow.id == sub_id, SubmissionRow.lease_owner == worker,
                       SubmissionRow.state.in_(("validating", "running")))
                .values(lease_expires_at=now + dt.timedelta(seconds=lease_seconds))
                .execution_options(synchronize_session=False)
            ).rowcount == 1

    def advance_submission(self, sub_id: str, worker: str, state: str, message: str, **values: Any) -> bool:
        """A worker moves its job to the next state; False if the job is no longer its own."""
        with self.session() as s:
            row = s.get(SubmissionRow, sub_id, with_for_update=not self.is_sqlite)
            if row is None or row.lease_owner != worker or row.state not in ("validating", "running"):
                return False
            for key, value in values.items():
                setattr(row, key, value)
            if state in ("finished", "failed"):
                row.lease_owner, row.lease_expires_at = None, None
            _submission_event(s, row, state, message, worker)
            return True

    def cancel_submission(self, sub_id: str) -> None:
        with self.session() as s:
            row = s.get(SubmissionRow, sub_id, with_for_update=not self.is_sqlite)
            if row is None:
                raise ArbenchError(f"no submission {sub_id!r}; see `arbench submissions`")
            if row.state in ("finished", "failed", "cancelled"):
                raise ArbenchError(f"submission {sub_id} is already {row.state}; nothing to cancel")
            row.lease_owner, row.lease_expires_at = None, None
            _submission_event(s, row, "cancelled", "cancelled by request", None)

    def retry_submission(self, sub_id: str) -> None:
        with self.session() as s:
            row = s.get(SubmissionRow, sub_id, with_for_update=not self.is_sqlite)
            if row is None:
                raise ArbenchError(f"no submission {sub_id!r}; see `arbench submissions`")
            if row.state not in ("failed", "cancelled"):
                raise ArbenchError(f"submission {sub_id} is {row.state}; only failed or cancelled ones can be "
                                   "retried")
            row.attempts, row.error, row.run_id = 0, None, None
            _submission_event(s, row, "pending", "retry requested", None)

    # -- runs whose values were not computed here: paper-reported figures, synthetic test stores ---------
    # (the one write path for them: harness/reported.py and leaderboard/synthetic.py build the values, the
    # store writes the rows)
    def sync_reported(self, runs: Sequence["ReportedRun"], data_file: str) -> dict[str, int]:
        """Make the store's reported runs those of one data file, in one transaction (all or nothing).

        A run whose `content_sha256` is already stored is left alone, a changed one replaces its old row, and a
        reported run of the same `data_file` that `runs` no longer lists is removed. Task and method rows that
        the store already has are used as they are (the registry's metadata wins); missing ones are created
        from `ReportedRun.task_fields` and the method fields. Returns the counts added, updated, unchanged and
        removed.
        """
        counts = {"added": 0, "updated": 0, "unchanged": 0, "removed": 0}
        with self.session() as s:
            existing = {r.id: r for r in s.scalars(select(RunRow).where(RunRow.kind == "reported"))}
            for e in runs:
                old = existing.pop(e.run_id, None)
                if old is not None and (old.provenance or {}).get("entry_sha256") == e.content_sha256:
                    counts["unchanged"] += 1
                    continue
                if old is not None:
                    s.delete(old)
                    s.flush()
                    counts["updated"] += 1
                else:
                    counts["added"] += 1
                task_row = self._kept_task_row(s, e.task, e.task_fields)
                method_row = self._kept_method_row(s, e.method, e.method_family,
                                                   e.method_description) if e.method else None
                run = RunRow(
                    id=e.run_id, task_id=task_row.id, task_version="reported",
                    method_id=method_row.id if method_row else None, kind="reported", source="reported",
                    label=e.label, status="finished", signature=e.signature, signature_hash=e.signature_hash,
                    eval_signature=e.eval_signature, eval_signature_hash=e.eval_signature_hash,
                    settings=e.settings, provenance={**e.provenance, "entry_sha256": e.content_sha256},
                    started_at=utcnow(), finished_at=utcnow(),
                )
                for m in e.metrics:
                    run.metrics.append(MetricRow(**m))
                s.add(run)
            for stale in existing.values():  # rows of this data file that a newer version no longer lists
                if (stale.provenance or {}).get("data_file") == data_file:
                    s.delete(stale)
                    counts["removed"] += 1
        return counts

    def _kept_task_row(self, session: Session, name: str, fields: dict[str, Any] | None) -> TaskRow:
        """The task's row as stored; created from `fields` only when the store has none yet."""
        row = session.scalar(select(TaskRow).where(TaskRow.name == name))
        if row is not None:
            return row
        if fields is None:
            raise InputError(f"task {name!r} is not in the store yet and has no [tasks.{name}] table in the data "
                             "file (modality, primary_metric, description); add one.")
        row = TaskRow(name=name, **fields)
        session.add(row)
        session.flush()
        return row

    def _kept_method_row(self, session: Session, name: str, family: str, description: str) -> MethodRow:
        """The method's row as stored; created only when the store has none yet."""
        row = session.scalar(select(MethodRow).where(MethodRow.name == name))
        if row is None:
            row = MethodRow(name=name, family=family, description=description)
            session.add(row)
            session.flush()
        return row

    def insert_bulk(self, *, tasks: Sequence[dict[str, Any]], methods: Sequence[dict[str, Any]],
                    runs: Sequence[dict[str, Any]], metrics: Sequence[dict[str, Any]]) -> None:
        """Insert rows given as column dicts with bulk INSERTs, in one transaction (synthetic stores for the
        leaderboard's tests and benchmark: 10,000 runs in seconds)."""
        with self.session() as s:
            for table, rows in ((TaskRow, tasks), (MethodRow, methods), (RunRow, runs), (MetricRow, metrics)):
                if rows:
                    s.execute(insert(table), list(rows))


@dataclass
class ReportedRun:
    """A paper-reported figure set as `Store.sync_reported` stores it (built by harness/reported.py).

    `task_fields` (version, modality, description, primary_metric) create the task's row where the store has
    none yet (None: refuse); `metrics` are MetricRow column dicts; `content_sha256` tells an unchanged entry.
    """

    run_id: str
    task: str
    task_fields: dict[str, Any] | None
    method: str | None
    method_family: str
    method_description: str
    label: str
    signature: str
    signature_hash: str
    eval_signature: str
    eval_signature_hash: str
    settings: dict[str, Any]
    provenance: dict[str, Any]
    content_sha256: str
    metrics: list[dict[str, Any]]


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


def abandoned_message(host: str | None, pid: int | None, heartbeat_at: dt.datetime | None) -> str:
    who = f"its process (pid {pid} on {host})" if pid is not None else "its process"
    when = f"; last heard of at {_iso(heartbeat_at)}" if heartbeat_at else ""
    return (f"abandoned: {who} stopped without finishing{when}. Rerun the same command to resume it "
            "from its finished shards.")


def run_record(run: RunRow) -> dict[str, Any]:
    metrics: dict[str, dict[str, Any]] = {}
    for m in run.metrics:
        entry: dict[str, Any] = {"value": m.value, "higher_is_better": m.higher_is_better, "unit": m.unit,
                                 "version": m.version}
        if m.ci_low is not None:
            entry["ci_low"], entry["ci_high"] = m.ci_low, m.ci_high
        if m.description:
            entry["description"] = m.description
        metrics[m.name] = entry
    status = effective_status(run.status, run.host, run.pid, run.heartbeat_at, run.started_at)
    error = run.error
    if status == "abandoned" and error is None:  # derived on read (a read-only store writes nothing)
        error = abandoned_message(run.host, run.pid, run.heartbeat_at)
    return {
        "run_id": run.id,
        "task": run.task.name,
        "task_version": run.task_version,
        "modality": run.task.modality,
        "method": run.method.name if run.method else None,
        "method_family": run.method.family if run.method else None,
        "label": run.label,
        "kind": run.kind,
        "source": run.source,
        "status": status,
        "repeat_of": run.repeat_of,
        "host": run.host,
        "pid": run.pid,
        "heartbeat_at": _iso(run.heartbeat_at),
        "signature": run.signature,
        "signature_hash": run.signature_hash,
        "eval_signature": run.eval_signature,
        "eval_signature_hash": run.eval_signature_hash,
        "settings": run.settings or {},
        "provenance": run.provenance or {},
        "error": error,
        "artifacts_path": run.artifacts_path,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "metrics": metrics,
    }


def submission_record(row: SubmissionRow, private: bool = False) -> dict[str, Any]:
    """A submission as a plain dict; the contact is included only when `private` is asked for."""
    out = {
        "id": row.id, "task": row.task, "method": row.method, "label": row.label, "submitter": row.submitter,
        "license": row.license, "state": row.state, "attempts": row.attempts, "max_attempts": row.max_attempts,
        "lease_owner": row.lease_owner, "run_id": row.run_id, "error": row.error, "manifest": row.manifest,
        "bundle_path": row.bundle_path,
        "created_at": row.created_at.isoformat(timespec="seconds") + "Z",
        "updated_at": row.updated_at.isoformat(timespec="seconds") + "Z",
        "history": [{"at": e.at.isoformat(timespec="seconds") + "Z", "state": e.state, "message": e.message,
                     "worker": e.worker} for e in row.events],
    }
    if private:
        out["contact"] = row.contact
    return out


def _submission_event(s: Session, row: SubmissionRow, state: str, message: str, worker: str | None) -> None:
    row.state, row.updated_at = state, utcnow()
    s.add(SubmissionEventRow(submission_id=row.id, state=state, message=message, worker=worker, at=utcnow()))
