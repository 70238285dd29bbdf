"""The result store: round trips on SQLite and PostgreSQL, migrations, and bad database input."""

from __future__ import annotations

import os
import stat

import pytest
import sqlalchemy as sa

from harness import store as store_module
from harness.errors import ArbenchError
from harness.metrics.base import MetricValue
from harness.migrations import head_revision, upgrade_to
from harness.store import Store

TASK = dict(name="toy-gauss", version="1", modality="vector", description="d", primary_metric="mean_value")
METHOD = dict(name="toy-sampler", family="test", description="m")


def _create(store: Store, **over) -> str:
    fields = dict(task=TASK, method=METHOD, kind="run", source="reproduced", label="toy",
                  signature="task:toy-gauss|n:3", signature_hash="abc", eval_signature="task:toy-gauss",
                  eval_signature_hash="def", settings={"task": {"n": 3}}, provenance={"world_size": 1})
    fields.update(over)
    return store.create_run(**fields)


def _round_trip(store: Store) -> None:
    run_id = _create(store)
    store.finish_run(run_id, [
        MetricValue("fid", 12.5, False, "", "2", description="Fréchet"),
        MetricValue("speedup", 2.0, True, "x", ci_low=1.8, ci_high=2.2),
    ], {"wall_seconds": 1.5})
    (record,) = store.records(run_id=run_id)
    assert record["status"] == "finished"
    assert record["task"] == "toy-gauss" and record["method"] == "toy-sampler"
    assert record["provenance"] == {"world_size": 1, "wall_seconds": 1.5}
    assert record["settings"] == {"task": {"n": 3}}
    assert record["metrics"]["fid"] == {"value": 12.5, "higher_is_better": False, "unit": "", "version": "2",
                                        "description": "Fréchet"}
    assert record["metrics"]["speedup"]["ci_low"] == 1.8 and record["metrics"]["speedup"]["ci_high"] == 2.2
    failed = _create(store, signature_hash="xyz", run_key="xyz")
    store.fail_run(failed, "boom: out of memory")
    (rec,) = store.records(run_id=failed)
    assert rec["status"] == "failed" and rec["error"] == "boom: out of memory" and rec["metrics"] == {}
    assert store.records(task="toy-gauss", status="finished")[0]["run_id"] == run_id
    assert store.run_for_key("xyz")["id"] == failed and store.run_for_key("xyz")["status"] == "failed"
    assert store.run_for_key("abc") is None  # created without a key: not idempotent by signature


def test_sqlite_round_trip(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    _round_trip(store)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


@pytest.mark.postgres
def test_postgres_round_trip(pg_url):
    store = Store(pg_url)
    assert store.engine.dialect.name == "postgresql"
    _round_trip(store)
    store.dispose()


def test_reopening_keeps_data_and_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    run_id = _create(Store(url))
    again = Store(url)
    assert again.schema_revision() == head_revision()
    assert [r["run_id"] for r in again.records()] == [run_id]


def _old_schema_db(url: str) -> None:
    """A database as the first released schema (revision 0001) left it, with one finished score run."""
    engine = sa.create_engine(url)
    upgrade_to(engine, "0001")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO tasks (id, name, version, modality, description, created_at) "
                             "VALUES (1, 'toy-gauss', '1', 'vector', '', '2026-01-01 00:00:00')")
        conn.exec_driver_sql("INSERT INTO runs (id, task_id, task_version, method_id, kind, status, signature, "
                             "signature_hash, settings, provenance, created_at) VALUES ('r1', 1, '1', NULL, 'score', "
                             "'finished', 'task:toy-gauss', 'h1', '{}', '{}', '2026-01-01 00:00:00')")
        conn.exec_driver_sql("INSERT INTO metrics (run_id, name, value, higher_is_better, unit, version, "
                             "description) VALUES ('r1', 'mean_value', 0.25, true, '', '1', '')")
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migration_from_older_schema_keeps_data(backend, tmp_path, request):
    url = f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    _old_schema_db(url)
    store = Store(url)  # opening upgrades in place
    assert store.schema_revision() == head_revision()
    (record,) = store.records()
    assert record["run_id"] == "r1" and record["metrics"]["mean_value"]["value"] == 0.25
    assert record["source"] == "submitted"  # backfilled from kind=score
    assert record["eval_signature_hash"] == "h1"
    store.dispose()


def test_read_only_store_refuses_writes(tmp_path):
    path = tmp_path / "a.db"
    _create(Store(f"sqlite:///{path}"))
    reader = Store(f"sqlite:///{path}", read_only=True)
    assert len(reader.records()) == 1
    with pytest.raises(sa.exc.OperationalError):
        _create(reader, signature_hash="other")
    assert len(Store(f"sqlite:///{path}").records()) == 1


def test_read_only_store_on_missing_database_says_how_to_fill_it(tmp_path):
    with pytest.raises(ArbenchError, match="arbench demo"):
        Store(f"sqlite:///{tmp_path / 'none.db'}", read_only=True)


def test_unreachable_database_gives_one_clear_message():
    with pytest.raises(ArbenchError, match="cannot reach the database.*ARBENCH_DB_URL") as info:
        Store("postgresql://nobody:secret@127.0.0.1:1/nothing")
    assert "secret" not in str(info.value)


def test_malformed_database_url():
    with pytest.raises(ArbenchError, match="not a valid SQLAlchemy URL"):
        Store("not a url at all")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_unwritable_results_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(ArbenchError, match="not writable"):
            Store(f"sqlite:///{folder / 'a.db'}")
    finally:
        folder.chmod(stat.S_IRWXU)


def test_results_path_that_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ArbenchError, match="cannot create the results folder"):
        Store(f"sqlite:///{blocker / 'sub' / 'a.db'}")


def test_the_fast_revision_check_agrees_with_alembic(tmp_path):
    """`Store` skips Alembic when the database is at the newest migration; both readings must agree."""
    from harness.migrations import _head_from_files, _stored_revision, current_revision

    from sqlalchemy import create_engine

    assert _head_from_files() == head_revision()
    url = f"sqlite:///{tmp_path / 'fast.db'}"
    engine = create_engine(url)
    assert _stored_revision(engine) is None and current_revision(engine) is None
    upgrade_to(engine, "0001")
    assert _stored_revision(engine) == current_revision(engine) == "0001"
    engine.dispose()
    store = Store(url)  # opening it migrates the rest of the way
    assert _stored_revision(store.engine) == current_revision(store.engine) == head_revision()

@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migration_gives_old_duplicates_keys_without_losing_a_row(backend, tmp_path, request):
    """Runs stored before requests were idempotent: per signature the finished one keeps the plain key, the other
    copies become its repeats; a submission's run and a score run get no key; every metric value stays."""
    url = f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    engine = sa.create_engine(url)
    upgrade_to(engine, "0003")
    rows = [("a", "failed", "run", "h1"), ("b", "finished", "run", "h1"), ("c", "finished", "run", "h1"),
            ("s", "finished", "run", "h1"), ("d", "finished", "score", "h2")]
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO tasks (id, name, version, modality, description, created_at) "
                             "VALUES (1, 'toy-gauss', '1', 'vector', '', '2026-01-01 00:00:00')")
        for n, (run_id, status, kind, sig) in enumerate(rows):
            conn.exec_driver_sql(
                "INSERT INTO runs (id, task_id, task_version, kind, source, label, status, signature, signature_hash, "
                "eval_signature, eval_signature_hash, settings, provenance, created_at) VALUES "
                f"('{run_id}', 1, '1', '{kind}', 'reproduced', '', '{status}', 's', '{sig}', 's', '{sig}', '{{}}', "
                f"'{{}}', '2026-01-01 00:00:0{n}')")
            conn.exec_driver_sql("INSERT INTO metrics (run_id, name, value, higher_is_better, unit, version, "
                                 f"description) VALUES ('{run_id}', 'm', {n}, true, '', '1', '')")
        conn.exec_driver_sql("INSERT INTO submissions (id, task, method, label, submitter, license, manifest, "
                             "bundle_path, state, attempts, max_attempts, run_id, created_at, updated_at) VALUES "
                             "('sub', 'toy-gauss', 'x', '', 'me', '', '{}', '/x', 'finished', 1, 3, 's', "
                             "'2026-01-01 00:00:00', '2026-01-01 00:00:00')")
    engine.dispose()
    store = Store(url)
    with store.session() as s:
        keys = {r.id: (r.run_key, r.repeat_of) for r in s.scalars(sa.select(store_module.RunRow))}
    assert keys == {"b": ("h1", None), "a": ("h1.r1", "b"), "c": ("h1.r2", "b"), "s": (None, None),
                    "d": (None, None)}
    assert {r["run_id"]: r["metrics"]["m"]["value"] for r in store.records()} == {
        "a": 0, "b": 1, "c": 2, "s": 3, "d": 4}
    assert store.run_for_key("h1")["id"] == "b"
    store.dispose()

