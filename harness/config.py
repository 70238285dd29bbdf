"""Defaults in one place: paths, environment variables and run-wide settings."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

DB_URL_ENV = "ARBENCH_DB_URL"
HOME_ENV = "ARBENCH_HOME"
RESULTS_ENV = "ARBENCH_RESULTS"

DEFAULT_SHARD_SIZE = 64
DEFAULT_BATCH_SIZE = 16

#: where results went before they had one folder per user (relative to the working directory)
OLD_DB_PATH = Path("results") / "arbench.db"
_OLD_DB_NOTED = ".old-databases-noted"


def results_dir() -> Path:
    """Where the default SQLite database, run artifacts and submission files live, whatever the working directory:
    `ARBENCH_RESULTS` if set, else `$ARBENCH_HOME/results` if `ARBENCH_HOME` is set, else the user's data folder
    (`$XDG_DATA_HOME/arbench`, by default `~/.local/share/arbench` on Linux and
    `~/Library/Application Support/arbench` on macOS)."""
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV]).expanduser().resolve()
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser().resolve() / "results"
    return Path(platformdirs.user_data_dir("arbench", appauthor=False)).resolve()


def artifacts_dir() -> Path:
    return results_dir() / "artifacts"


def default_db_path() -> Path:
    return results_dir() / "arbench.db"


def default_db_url() -> str:
    return os.environ.get(DB_URL_ENV) or f"sqlite:///{default_db_path()}"


def old_database_note() -> str | None:
    """A one-time note when `./results/arbench.db` (the default of older versions) exists here but is not the
    database in use; None when there is nothing to say, or it was said before for this file."""
    if os.environ.get(DB_URL_ENV) or os.environ.get(RESULTS_ENV):  # the user chose where results go
        return None
    old, new = OLD_DB_PATH.resolve(), default_db_path()
    if old == new or not old.is_file():
        return None
    marker = results_dir() / _OLD_DB_NOTED
    try:
        noted = set(marker.read_text(encoding="utf-8").splitlines()) if marker.is_file() else set()
        if str(old) in noted:
            return None
        marker.parent.mkdir(parents=True, exist_ok=True)
        with marker.open("a", encoding="utf-8") as fh:
            fh.write(f"{old}\n")
    except OSError:
        pass  # cannot remember it: the note is shown again next time, which is harmless
    move = (f" or move it there (`mv {old} {new}`, while no arbench command runs)" if not new.exists() else "")
    return (f"note: ARBench keeps results in one database per user, {new}, whatever the working directory. "
            f"An older database was found at {old}; its runs are not in the new one. Use it with "
            f"`--db sqlite:///{old}` (or ARBENCH_DB_URL){move}. This note is shown once.")


def arbench_home() -> Path:
    """Local cache of downloaded weights and reference data (`ARBENCH_HOME`, default `~/.cache/arbench`)."""
    return Path(os.environ.get(HOME_ENV, Path.home() / ".cache" / "arbench")).expanduser()
