"""One registry for tasks and methods, with helpful errors, that imports a plugin only when it is used.

Tasks and methods register themselves with the `register_task` / `register_method` decorators when
their module is imported. The harness never imports them by name: the plugins are the modules
declared under the `arbench.plugins` entry-point group (this project declares the packages `tasks`
and `baselines`, every module below a package counts; a user's own package declares its own), plus
any module named in `ARBENCH_PLUGINS` (comma-separated), so a user's method in their own file plugs in
without editing the project.

Importing every plugin costs seconds (torch, torchvision, transformers...), so listing names,
descriptions, modalities, settings and offline flags does not: the first full import writes an index
of that metadata (`ARBENCH_HOME/registry/*.json`, one per plugin set), keyed by the size and
modification time of every source file of the plugins and of the harness. While the index matches
the files, `names()` and `entries()` read it, and `get(name)` imports only the module that registers
`name`; any change to a file makes the next use import everything again and rewrite the index.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import importlib.util
import json
import os
import pkgutil
import sys
import tempfile
import threading
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from harness.config import arbench_home
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
        """The class registered as `name`, importing only its module where the index knows it."""
        with self._lock:
            if name in self._items:
                return self._items[name]
        entry = index().get(self.kind, {}).get(name)
        if entry is not None:
            try:
                importlib.import_module(entry["module"])  # registers it (and whatever else that module holds)
            except Exception as exc:  # noqa: BLE001 - reported as a plugin failure, as in a full import
                _plugin_failed(entry["module"], exc)
            if name not in self._items:  # not where the index said: import everything
                load_plugins()
        elif not index().get(self.kind) and not _loaded:  # a registry the index does not cover
            load_plugins()
        with self._lock:
            if name in self._items:
                return self._items[name]
        raise self._unknown(name)

    def check(self, name: str) -> None:
        """Refuse an unregistered name (with close matches) without importing any plugin where the index is
        current: how the CLI refuses a typo before it loads the runner."""
        if name not in self.names():
            raise self._unknown(name)

    def _unknown(self, name: str) -> UnknownNameError:
        close = difflib.get_close_matches(name, self.names(), n=5, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        broken = f" (these plugin modules failed to import: {', '.join(PLUGIN_ERRORS)})" if PLUGIN_ERRORS else ""
        return UnknownNameError(
            f"unknown {self.kind} {name!r}.{hint} Run `arbench {self.kind}s` to list the registered ones.{broken}"
        )

    def names(self) -> list[str]:
        """Every registered name (from the index, without importing the plugins, where it is current)."""
        listed = index().get(self.kind, {})
        with self._lock:
            return sorted(set(listed) | set(self._items))

    def entries(self) -> list[dict[str, Any]]:
        """The light metadata of every registered name (see `describe`), sorted by name, without imports."""
        listed = index().get(self.kind, {})
        with self._lock:
            extra = {n: describe(c) for n, c in self._items.items() if n not in listed}
        return [{**listed, **extra}[n] for n in sorted({**listed, **extra})]

    def items(self) -> list[tuple[str, type[T]]]:
        """Every (name, class): imports every plugin."""
        load_plugins()
        with self._lock:
            return sorted(self._items.items())


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
    """Import a package and every module below it (how the `tasks` and `baselines` plugins register all
    their files).

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


def plugin_modules() -> list[str]:
    """The plugin modules: the `arbench.plugins` entry points, then `ARBENCH_PLUGINS`."""
    modules = [ep.value for ep in entry_points(group=PLUGIN_GROUP)]
    modules += [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    return list(dict.fromkeys(modules))


def load_plugins() -> None:
    """Import every plugin module once (a package with every module below it)."""
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if _loaded:
            return
        for module in plugin_modules():
            try:
                spec = importlib.util.find_spec(module)
            except (ImportError, ValueError) as exc:
                spec, error = None, exc
            else:
                error = None
            if spec is None:
                raise ArbenchError(
                    f"plugin module {module!r} could not be imported ({error or 'no such module'}). "
                    f"Install it in this environment or remove it from {PLUGINS_ENV}."
                )
            try:
                if spec.submodule_search_locations is not None:
                    import_package_tree(module)
                else:
                    importlib.import_module(module)
            except ImportError as exc:
                raise ArbenchError(
                    f"plugin module {module!r} could not be imported ({exc}). "
                    f"Install it in this environment or remove it from {PLUGINS_ENV}."
                ) from exc
        _loaded = True


# -- the index: what `arbench tasks` / `methods` and name lookups need, without importing the plugins ----
INDEX_VERSION = 1
#: Class attributes the index keeps (JSON-able values of plain types; others are left out).
_SKIP_ATTRIBUTES = {"name", "Config"}
_index_cache: dict[str, Any] | None = None
_index_key: tuple | None = None


def describe(cls: type) -> dict[str, Any]:
    """A registered class as light metadata: name, module, its public plain class attributes (description,
    modality, version, offline, family...) and its settings (the `Config` dataclass fields and defaults)."""
    info: dict[str, Any] = {"name": cls.name, "module": cls.__module__, "qualname": cls.__qualname__}
    for klass in reversed(cls.__mro__):
        for key, value in vars(klass).items():
            if key.startswith("_") or key in _SKIP_ATTRIBUTES or callable(value) or isinstance(value, property):
                continue
            plain = _plain(value)
            if plain is not _NOT_PLAIN:
                info[key] = plain
    info["settings"] = _settings(getattr(cls, "Config", None))
    return info


_NOT_PLAIN = object()


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        items = [_plain(v) for v in value]
        return _NOT_PLAIN if any(v is _NOT_PLAIN for v in items) else items
    return _NOT_PLAIN


def _settings(config: Any) -> dict[str, Any]:
    if config is None or not dataclasses.is_dataclass(config):
        return {}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        plain = _plain(default)
        out[f.name] = plain if plain is not _NOT_PLAIN else repr(default)
    return out


def _source_files(modules: list[str]) -> list[str]:
    """The source files whose change can change a registered class: the plugins' and the harness's."""
    files: list[str] = []
    for module in ["harness", *modules]:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            files.append(f"missing:{module}")
            continue
        if spec.submodule_search_locations is not None:
            for location in spec.submodule_search_locations:
                for folder, dirs, names in os.walk(location):
                    dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
                    files.extend(os.path.join(folder, n) for n in sorted(names) if n.endswith(".py"))
        elif spec.origin:
            files.append(spec.origin)
    return files


def _fingerprint(files: list[str]) -> str:
    digest = hashlib.sha256(f"{INDEX_VERSION}|{sys.version}".encode())
    for path in files:
        try:
            st = os.stat(path)
            digest.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}|gone\n".encode())
    return digest.hexdigest()


def index_path(modules: list[str]) -> Path:
    where = [str(getattr(importlib.util.find_spec("harness"), "origin", ""))]
    key = hashlib.sha256(json.dumps([modules, where, sys.executable]).encode()).hexdigest()[:16]
    return arbench_home() / "registry" / f"{key}.json"


def index() -> dict[str, Any]:
    """The metadata of every registered task and method: {"task": {name: describe(cls)}, "method": {...}}.

    Read from the index file when it matches the source files; otherwise every plugin is imported and the
    file rewritten (an unwritable cache folder only costs the speed).
    """
    global _index_cache, _index_key
    modules = plugin_modules()
    if _index_cache is not None and _index_key is not None and _index_key[0] == tuple(modules):
        return _index_cache  # one look at the files per process: the modules it imported stay as they were
    key = (tuple(modules), _fingerprint(_source_files(modules)))
    path = index_path(modules)
    data = None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        # an index written while a plugin failed to import is not trusted: the failure may be gone (a missing
        # package installed since), and the names it would have registered are missing from it
        if stored.get("fingerprint") == key[1] and stored.get("modules") == modules and not stored.get("errors"):
            data = stored
    except (OSError, ValueError, AttributeError):
        pass
    if data is None:
        load_plugins()
        roots = tuple(modules)
        with TASKS._lock, METHODS._lock:
            data = {"version": INDEX_VERSION, "fingerprint": key[1], "modules": modules,
                    "task": {n: describe(c) for n, c in TASKS._items.items() if _from_plugin(c, roots)},
                    "method": {n: describe(c) for n, c in METHODS._items.items() if _from_plugin(c, roots)},
                    "errors": dict(PLUGIN_ERRORS)}
        _write_index(path, data)
    for module, reason in data.get("errors", {}).items():
        PLUGIN_ERRORS.setdefault(module, reason)
    _index_cache, _index_key = data, key
    return data


def _from_plugin(cls: type, roots: tuple[str, ...]) -> bool:
    module = cls.__module__
    return any(module == r or module.startswith(r + ".") for r in roots)


def _write_index(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass
