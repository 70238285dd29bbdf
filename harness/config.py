"""Defaults in one place: paths, environment variables and run-wide settings."""

from __future__ import annotations

import os
from pathlib import Path

DB_URL_ENV = "ARBENCH_DB_URL"
HOME_ENV = "ARBENCH_HOME"
RESULTS_ENV = "ARBENCH_RESULTS"

DEFAULT_SHARD_SIZE = 64
DEFAULT_BATCH_SIZE = 16


def results_dir() -> Path:
    """Where the default SQLite database and run artifacts live (`results/` in the working directory)."""
    return Path(os.environ.get(RESULTS_ENV, "results")).resolve()


def artifacts_dir() -> Path:
    return results_dir() / "artifacts"


def default_db_url() -> str:
    return os.environ.get(DB_URL_ENV) or f"sqlite:///{results_dir() / 'arbench.db'}"


def arbench_home() -> Path:
    """Local cache of downloaded weights and reference data (`ARBENCH_HOME`, default `~/.cache/arbench`)."""
    return Path(os.environ.get(HOME_ENV, Path.home() / ".cache" / "arbench")).expanduser()
