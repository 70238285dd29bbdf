"""The layer contract of docs/architecture.md, enforced with import-linter (`[tool.importlinter]` in pyproject)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _lint_imports() -> str:
    beside = Path(sys.executable).with_name("lint-imports")
    exe = str(beside) if beside.is_file() else shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[test]' (import-linter is in the test extra)")
    return exe


def test_layers_contract_is_kept():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([_lint_imports(), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def test_the_contract_catches_a_harness_module_importing_a_task(tmp_path):
    """The same contract on a copy of the tree with one forbidden import added fails and names it."""
    for package in ("harness", "tasks", "baselines", "leaderboard"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.safetensors", "*.npz",
                                                                                          "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "harness" / "errors.py").open("a") as f:
        f.write("\nimport tasks.tts  # noqa: E402,F401\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([_lint_imports(), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0
    assert "harness.errors -> tasks.tts" in done.stdout


def test_only_the_store_opens_database_sessions():
    """One write path: outside `harness/store.py` no module opens an ORM session (the store's own methods write
    runs, reported rows, synthetic stores and the submission queue; readers such as the board query read-only)."""
    import ast

    offenders = []
    for package in ("harness", "tasks", "baselines", "leaderboard"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "harness/store.py" or rel.startswith("harness/migrations/"):
                continue
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if isinstance(node, ast.Attribute) and node.attr in ("session", "sessionmaker", "begin"):
                    offenders.append(f"{rel}:{node.lineno} .{node.attr}")
    assert not offenders, offenders
