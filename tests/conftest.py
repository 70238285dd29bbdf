"""Test-wide settings: offline, the user-side toy plugin registered, results in temporary folders."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["ARBENCH_PLUGINS"] = ",".join(filter(None, [os.environ.get("ARBENCH_PLUGINS"), "plugins.toy"]))
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
# child processes (torchrun ranks, submission sandboxes) must find the test plugin too
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="session", autouse=True)
def _no_writes_to_the_users_results(tmp_path_factory):
    """A test that stores results without choosing where gets a throw-away folder, never the user's own
    (~/.local/share/arbench) database."""
    if os.environ.get("ARBENCH_RESULTS"):
        yield
        return
    os.environ["ARBENCH_RESULTS"] = str(tmp_path_factory.mktemp("default-results"))
    yield
    os.environ.pop("ARBENCH_RESULTS", None)


@pytest.fixture
def results_dir(tmp_path, monkeypatch) -> Path:
    """A fresh results folder (database + artifacts) for one test."""
    path = tmp_path / "results"
    monkeypatch.setenv("ARBENCH_RESULTS", str(path))
    monkeypatch.delenv("ARBENCH_DB_URL", raising=False)
    return path


@pytest.fixture
def pg_url():
    """A fresh, empty PostgreSQL database on the test server; dropped afterwards."""
    base = os.environ.get("ARBENCH_TEST_PG_URL")
    if not base:
        pytest.skip('no PostgreSQL server: run `eval "$(scripts/postgres.sh start)"` (or set ARBENCH_TEST_PG_URL) '
                    "to run the PostgreSQL tests; `make test` does this")
    import sqlalchemy as sa

    name = f"arbench_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {base} is not reachable: {exc.orig}")
    url = sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
    admin.dispose()
