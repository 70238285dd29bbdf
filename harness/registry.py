"""One registry for tasks and methods, with helpful errors.

Tasks and methods register themselves with the `register_task` / `register_method` decorators when
their module is imported. The harness never imports them by name: on first use it imports every
module declared under the `arbench.plugins` entry-point group (this project declares `tasks` and
`baselines`; a user's own package declares its own), plus any module named in `ARBENCH_PLUGINS`
(comma-separated), so a user's method in their own file plugs in without editing the project.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
import sys
import threading
from importlib.metadata import entry_points
from typing import Callable, Generic, TypeVar

from harness.errors import ArbenchError

T = TypeVar("T")
PLUGIN_GROUP = "arbench.plugins"
PLUGINS_ENV = "ARBENCH_PLUGINS"


class UnknownNameError(ArbenchError, KeyError):
    """A name that is not registered; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class Registry(Generic[T]):
    """A name -> class mapping; names are kebab-case, unique, and looked up with suggestions."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, type[T]] = {}
        self._lock = threading.RLock()

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        if not name or name != name.strip() or "/" in name or name != name.lower() or " " in name:
            raise ValueError(f"{self.kind} name {name!r} must be lower-case kebab-case with no spaces or '/'")

        def decorator(cls: type[T]) -> type[T]:
            with self._lock:
                existing = self._items.get(name)
                if existing is not None and existing is not cls and _qualname(existing) != _qualname(cls):
                    raise ValueError(f"{self.kind} {name!r} is registered twice: {_qualname(existing)} and {_qualname(cls)}")
                self._items[name] = cls
                cls.name = name  # type: ignore[attr-defined]
            return cls

        return decorator

    def get(self, name: str) -> type[T]:
        load_plugins()
        with self._lock:
            if name in self._items:
                return self._items[name]
            close = difflib.get_close_matches(name, list(self._items), n=5, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        broken = f" (these plugin modules failed to import: {', '.join(PLUGIN_ERRORS)})" if PLUGIN_ERRORS else ""
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}.{hint} Run `arbench {self.kind}s` to list the registered ones.{broken}"
        )

    def names(self) -> list[str]:
        load_plugins()
        with self._lock:
            return sorted(self._items)

    def items(self) -> list[tuple[str, type[T]]]:
        return [(n, self._items[n]) for n in self.names()]


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


TASKS: Registry = Registry("task")
METHODS: Registry = Registry("method")
register_task = TASKS.register
register_method = METHODS.register

_loaded = False
_load_lock = threading.Lock()


#: Plugin modules that failed to import, with the reason; named in "unknown name" errors.
PLUGIN_ERRORS: dict[str, str] = {}


def import_package_tree(package_name: str) -> None:
    """Import a package and every module below it (how `tasks` and `baselines` register all their files).

    Modules whose name starts with `_` or `train_` (training scripts) are not imported. A module that
    fails to import is reported on stderr and skipped, so that one broken plugin does not take every
    other task and method down with it.
    """
    package = importlib.import_module(package_name)
    for info in pkgutil.walk_packages(getattr(package, "__path__", []), prefix=package_name + ".",
                                      onerror=lambda name: _plugin_failed(name, sys.exc_info()[1])):
        leaf = info.name.rsplit(".", 1)[-1]
        if leaf.startswith("_") or leaf.startswith("train_"):  # private modules and training scripts
            continue
        try:
            importlib.import_module(info.name)
        except Exception as exc:  # noqa: BLE001 - any import-time failure of a plugin is reported the same way
            _plugin_failed(info.name, exc)


def _plugin_failed(module: str, exc: BaseException | None) -> None:
    reason = f"{type(exc).__name__}: {exc}" if exc else "unknown error"
    if module not in PLUGIN_ERRORS:
        print(f"warning: plugin module {module} failed to import and is skipped ({reason})", file=sys.stderr)
    PLUGIN_ERRORS[module] = reason


def load_plugins() -> None:
    """Import every plugin module once (entry points, then `ARBENCH_PLUGINS`)."""
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if _loaded:
            return
        modules = [ep.value for ep in entry_points(group=PLUGIN_GROUP)]
        modules += [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
        for module in dict.fromkeys(modules):
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ArbenchError(
                    f"plugin module {module!r} could not be imported ({exc}). "
                    f"Install it in this environment or remove it from {PLUGINS_ENV}."
                ) from exc
        _loaded = True
