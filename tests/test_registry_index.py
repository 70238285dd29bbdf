"""The registry's index: names and metadata without importing plugins, one module imported per lookup, and a
fresh index after any change to a plugin's source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import registry

TOY = "plugins.toy"


@pytest.fixture
def toy_only(tmp_path, monkeypatch):
    """A registry whose only plugin is the test plugin, with its own index folder, as a fresh process sees it."""
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(registry, "plugin_modules", lambda: [TOY])
    monkeypatch.setattr(registry, "_index_cache", None)
    monkeypatch.setattr(registry, "_index_key", None)
    monkeypatch.setattr(registry, "_loaded", False)
    import plugins.toy  # noqa: F401 - make sure it is importable before taking it away

    saved = {kind: dict(reg._items) for kind, reg in (("task", registry.TASKS), ("method", registry.METHODS))}

    def forget_toy():
        """What a new process starts with: the toy module not imported, its classes not registered."""
        sys.modules.pop(TOY, None)
        for reg in (registry.TASKS, registry.METHODS):
            for name in [n for n, c in reg._items.items() if c.__module__ == TOY]:
                del reg._items[name]
        registry._index_cache = registry._index_key = None
        registry._loaded = False

    yield forget_toy
    forget_toy()
    import plugins.toy  # noqa: F401,F811 - the other tests use it as before

    for kind, reg in (("task", registry.TASKS), ("method", registry.METHODS)):
        reg._items.update(saved[kind])


def test_names_and_metadata_come_from_the_index_without_importing(toy_only, tmp_path):
    toy_only()
    assert "toy-gauss" in registry.TASKS.names()  # first use: imports the plugin and writes the index
    files = list((tmp_path / "home" / "registry").glob("*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())
    assert stored["task"]["toy-gauss"]["module"] == TOY
    assert stored["method"]["toy-sampler"]["settings"] == {"shift": 0.5, "crash_after_calls": -1,
                                                           "sleep_per_call": 0.0}

    toy_only()  # a new process
    info = {e["name"]: e for e in registry.TASKS.entries()}["toy-gauss"]
    assert info["modality"] == "vector" and info["description"] == "test task: mean of generated Gaussian vectors"
    assert info["primary_metric"] == "mean_value" and info["offline"] is False
    assert "toy-sampler" in registry.METHODS.names()
    with pytest.raises(registry.UnknownNameError, match="Did you mean: toy-gauss"):
        registry.TASKS.check("toy-gaus")
    assert TOY not in sys.modules  # none of that imported the plugin

    cls = registry.TASKS.get("toy-gauss")  # a lookup imports the one module that registers the name
    assert cls.name == "toy-gauss" and TOY in sys.modules and not registry._loaded


def test_an_edited_plugin_file_rebuilds_the_index(toy_only, tmp_path):
    toy_only()
    registry.TASKS.names()
    path = Path(sys.modules[TOY].__file__)
    index_file = next((tmp_path / "home" / "registry").glob("*.json"))
    before = json.loads(index_file.read_text())["fingerprint"]
    stat = path.stat()
    try:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        toy_only()
        registry.TASKS.names()
        assert TOY in sys.modules  # stale index: everything imported again
        assert json.loads(index_file.read_text())["fingerprint"] != before
    finally:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_an_index_with_a_failed_plugin_is_not_trusted(toy_only, tmp_path):
    toy_only()
    registry.TASKS.names()
    index_file = next((tmp_path / "home" / "registry").glob("*.json"))
    stored = json.loads(index_file.read_text())
    del stored["task"]["toy-gauss"]
    stored["errors"] = {TOY: "ImportError: a package that has been installed since"}
    index_file.write_text(json.dumps(stored))
    toy_only()
    assert "toy-gauss" in registry.TASKS.names()  # rebuilt from the plugins, not read from the broken index


def test_the_cli_lists_tasks_without_importing_torch(tmp_path):
    """With the index current (written here, where every plugin is imported), `arbench tasks` in a new process
    imports neither the plugins nor torch."""
    registry.index()
    code = ("import sys; from harness.cli import main; main(['tasks']); main(['methods']); "
            "bad = [m for m in ('torch', 'tasks.imagenet256', 'baselines.imagegen.methods') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "imagenet256-c2i" in done.stdout and "toy-gauss" in done.stdout and "speculative" in done.stdout


def test_show_puts_the_registered_primary_metric_first_without_importing_torch(tmp_path):
    """`arbench show` reads each task's primary metric from the index: importing the task modules (and torch) for
    it made `show` take 6 s instead of 0.4 s."""
    from harness.metrics.base import MetricValue
    from harness.store import Store
    from leaderboard_fixtures import add_run

    registry.index()
    url = f"sqlite:///{tmp_path / 'show.db'}"
    store = Store(url)
    add_run(store, task="digits-c2i", method="digits-ar-raster", primary="fd_digits",
            metrics=[MetricValue("is_digits", 6.5, True, "", "1"), MetricValue("fd_digits", 2.75, False, "", "1")])
    store.dispose()
    code = (f"import sys; from harness.cli import main; main(['--db', {url!r}, 'show']); "
            "bad = [m for m in ('torch', 'tasks.digits_c2i') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if line.startswith("run "))
    assert header.index("fd_digits") < header.index("is_digits")  # primary first, though stored second
