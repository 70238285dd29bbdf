"""Alembic migrations of the result store, run programmatically (no alembic.ini needed).

Opening a store checks its revision against the newest migration file without importing Alembic (a quarter
of a second of every `arbench show`/`export`); Alembic is imported only where there is something to migrate.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent
_REVISION = re.compile(r'^revision\s*=\s*"([^"]+)"\s*$', re.M)
_DOWN_REVISION = re.compile(r'^down_revision\s*=\s*(None|"[^"]+")\s*$', re.M)


def alembic_config(engine: Engine) -> "Config":
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade_to_head(engine: Engine) -> None:
    """Apply every pending migration in a transaction (a no-op on an up-to-date database)."""
    head = _head_from_files()
    if head is not None and _stored_revision(engine) == head:
        return
    if current_revision(engine) == head_revision():
        return
    from alembic import command

    command.upgrade(alembic_config(engine), "head")


def upgrade_to(engine: Engine, revision: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def _head_from_files() -> str | None:
    """The one revision no migration file names as its `down_revision`; None (ask Alembic) when a file is not
    written in the plain `revision = "..."` / `down_revision = ...` form or the history branches."""
    revisions, downs = set(), set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        rev, down = _REVISION.findall(source), _DOWN_REVISION.findall(source)
        if len(rev) != 1 or len(down) != 1:
            return None
        revisions.add(rev[0])
        if down[0] != "None":
            downs.add(down[0].strip('"'))
    heads = revisions - downs
    return heads.pop() if len(heads) == 1 else None


def _stored_revision(engine: Engine) -> str | None:
    """The database's revision read with one query (what Alembic's MigrationContext reads)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return rows[0] if len(rows) == 1 else None
