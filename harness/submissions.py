"""Submissions: TOML manifests, validated by a schema, and a queue in the store that many workers share.

A manifest (`arbench submit manifest.toml`):

    task = "digits-c2i"
    method = "digits-pca-gaussian"       # a registered method, or "module:Class" from adapter_path
    adapter_path = "adapter"             # folder (or .whl) inside the manifest's folder; only with module:Class
    label = "PCA-Gauss (ours)"
    license = "MIT"
    [submitter]
    name = "Jane Doe"
    contact = "jane@example.org"         # kept private: never exported, never shown
    [checkpoint]                         # optional; safetensors preferred
    path = "model.safetensors"           # inside the manifest's folder; or url = "https://..." (https only)
    sha256 = "<64 hex digits>"
    [settings]                           # the method's sampler/decoder settings (in the signature)
    temperature = 1.0

States: pending -> validating -> running -> finished | failed | cancelled, every change kept with its
reason. Workers claim the oldest pending job with a compare-and-set update (PostgreSQL: `FOR UPDATE
SKIP LOCKED` first, so workers do not queue on each other's rows) and hold a lease they renew; a job
whose lease ran out (its worker died) goes back to pending, at most `max_attempts` times.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import sys
import uuid
from dataclasses import fields
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema

from harness.config import arbench_home, results_dir
from harness.errors import ArbenchError
from harness.inputs import read_text
from harness.isolation import inside
from harness.registry import METHODS, TASKS
from harness.settings import build_settings
from harness.store import Store

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ADAPTER_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
PUBLIC_FIELDS = ("task", "method", "label", "license", "description", "paper_url", "code_url", "settings",
                 "task_settings", "checkpoint", "adapter_path")
DEFAULT_MAX_ATTEMPTS = 3

MANIFEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["submitter", "task", "method", "license"],
    "additionalProperties": False,
    "properties": {
        "submitter": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 200},
                           "contact": {"type": "string", "maxLength": 200},
                           "affiliation": {"type": "string", "maxLength": 200}},
        },
        "task": {"type": "string", "minLength": 1},
        "method": {"type": "string", "minLength": 1},
        "adapter_path": {"type": "string", "minLength": 1},
        "label": {"type": "string", "minLength": 1, "maxLength": 200},
        "license": {"type": "string", "minLength": 1, "maxLength": 100},
        "description": {"type": "string", "maxLength": 2000},
        "paper_url": {"type": "string", "maxLength": 500},
        "code_url": {"type": "string", "maxLength": 500},
        "checkpoint": {
            "type": "object", "required": ["sha256"], "additionalProperties": False,
            "properties": {"path": {"type": "string", "minLength": 1}, "url": {"type": "string", "minLength": 1},
                           "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
        },
        "settings": {"type": "object"},
        "task_settings": {"type": "object"},
    },
}


def _schema_messages(manifest: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)
    messages = []
    for error in sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in error.absolute_path)
        if error.validator == "additionalProperties":
            allowed = list(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - set(allowed)):
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                full = f"{where}.{key}" if where else key
                messages.append(f"key {full!r} is not a manifest key{hint}; allowed here: {', '.join(allowed)}")
        elif error.validator == "required":
            missing = error.message.split("'")[1]
            full = f"{where}.{missing}" if where else missing
            messages.append(f"key {full!r} is missing ({_expected(full)})")
        elif error.validator == "pattern" and where.endswith("sha256"):
            messages.append(f"key {where!r} must be 64 lower-case hex digits (the output of `sha256sum FILE`)")
        else:
            messages.append(f"key {where or '(top level)'!r}: {error.message}")
    return messages


def _expected(key: str) -> str:
    return {
        "submitter": "a [submitter] table with at least name = \"...\"",
        "submitter.name": "the submitter's name as a string",
        "task": "a registered task name, see `arbench tasks`",
        "method": "a registered method name (see `arbench methods`) or module:Class of your adapter",
        "license": "the licence of the checkpoint, e.g. \"MIT\"",
        "checkpoint.sha256": "the checkpoint's sha256 as 64 hex digits",
    }.get(key, "see the manifest format in the README")


def load_manifest(path: str | Path) -> tuple[dict[str, Any], Path]:
    """Read and validate a manifest; returns it and the folder its relative paths refer to."""
    path = Path(path)
    if not path.is_file():
        raise ArbenchError(f"no manifest at {path}: give the path of a TOML file (see the README, 'Submitting').")
    try:
        manifest = tomllib.loads(read_text(path, "manifest"))  # a regular file under the text cap
    except tomllib.TOMLDecodeError as exc:
        raise ArbenchError(f"{path} is not valid TOML: {exc}") from exc
    validate_manifest(manifest, path.parent)
    return manifest, path.parent


def validate_manifest(manifest: dict[str, Any], base: Path) -> None:
    """Every problem at once, each naming its key and what is expected; raises ArbenchError."""
    problems = _schema_messages(manifest)
    if not problems:
        problems += _semantic_problems(manifest, base)
    if problems:
        raise ArbenchError("the manifest is not valid:\n  - " + "\n  - ".join(problems))


def _semantic_problems(manifest: dict[str, Any], base: Path) -> list[str]:
    problems = []
    task_name, method = manifest["task"], manifest["method"]
    if task_name not in TASKS.names():
        close = difflib.get_close_matches(task_name, TASKS.names(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        problems.append(f"key 'task': {task_name!r} is not a registered task{hint}; see `arbench tasks`")
    else:
        task_cls = TASKS.get(task_name)
        if task_cls.submission is None:  # declared on the task class (harness.api.SubmissionSpec)
            problems.append(f"key 'task': {task_name!r} declares no submission interface, so it takes none")
        elif method in METHODS.names() and METHODS.get(method).modality != task_cls.submission.modality:
            problems.append(f"key 'method': {method!r} produces {METHODS.get(method).modality!r}, but a submission "
                            f"to {task_name!r} produces {task_cls.submission.modality!r}")
        problems += _unknown_settings("task_settings", manifest.get("task_settings", {}), task_cls.Config)
        home = arbench_home().resolve()
        for key, value in manifest.get("task_settings", {}).items():
            looks_like_path = isinstance(value, str) and (os.sep in value or "\\" in value or value.startswith("~"))
            if looks_like_path and not inside(Path(value).expanduser().resolve(), home):
                problems.append(f"key 'task_settings.{key}': {value!r} is a path outside the operator's data folder "
                                f"{home} ($ARBENCH_HOME); a submission may name only files the operator put there")
    is_adapter = ":" in method
    if is_adapter:
        if not ADAPTER_PATTERN.match(method):
            problems.append(f"key 'method': {method!r} is neither a registered name nor module:Class")
        if "adapter_path" not in manifest:
            problems.append("key 'adapter_path' is missing (an adapter module:Class needs the folder or .whl "
                            "that contains it, next to the manifest)")
    elif method not in METHODS.names():
        close = difflib.get_close_matches(method, METHODS.names(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        problems.append(f"key 'method': {method!r} is not a registered method{hint}; see `arbench methods`, "
                        "or give module:Class with adapter_path")
    else:
        method_cls = METHODS.get(method)
        problems += _unknown_settings("settings", manifest.get("settings", {}), method_cls.Config)
        if "checkpoint" in manifest and "checkpoint" not in {f.name for f in fields(method_cls.Config)}:
            problems.append(f"key 'checkpoint': method {method!r} does not load a checkpoint; drop the key or "
                            "submit an adapter")
    if "adapter_path" in manifest:
        problems += confinement_problems("adapter_path", manifest["adapter_path"], base, folder_ok=True)
    checkpoint = manifest.get("checkpoint")
    if checkpoint is not None:
        if ("path" in checkpoint) == ("url" in checkpoint):
            problems.append("key 'checkpoint': give exactly one of path or url")
        elif "path" in checkpoint:
            problems += confinement_problems("checkpoint.path", checkpoint["path"], base, folder_ok=False)
        elif not checkpoint["url"].startswith("https://"):
            problems.append(f"key 'checkpoint.url': {checkpoint['url']!r} is not an https:// address; only https "
                            "is downloaded (or ship the file and give checkpoint.path)")
    return problems


def confinement_problems(key: str, rel: str, base: Path, folder_ok: bool) -> list[str]:
    """A manifest path must stay inside the manifest's folder: relative, no `..`, no symlink that leaves
    it (checked for every entry of a folder too), and only regular files and folders."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or "\\" in rel or ".." in pure.parts or not pure.parts or pure.parts == (".",):
        return [f"key {key!r}: {rel!r} must be a relative path inside the manifest's folder (no absolute path, "
                "no '..')"]
    root = base.resolve()
    path = base / pure
    if not path.exists() and not path.is_symlink():
        return [f"key {key!r}: {path} does not exist"]
    entries = [path]
    if path.is_dir() and not path.is_symlink():
        if not folder_ok:
            return [f"key {key!r}: {path} is a folder; give a file"]
        entries += sorted(path.rglob("*"))
    for entry in entries:
        where = entry.relative_to(base) if entry != path else rel
        if entry.is_symlink():
            if not inside(entry.resolve(), root):
                return [f"key {key!r}: {where} is a symbolic link that leaves the manifest's folder"]
        elif not (entry.is_file() or entry.is_dir()):
            return [f"key {key!r}: {where} is not a regular file or folder"]
    if not inside(path.resolve(), root):
        return [f"key {key!r}: {rel!r} leaves the manifest's folder"]
    return []


def _unknown_settings(key: str, values: dict[str, Any], config_cls: type) -> list[str]:
    known = [f.name for f in fields(config_cls)]
    problems = []
    for name in values:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"key '{key}.{name}' is not a setting{hint}; known: {', '.join(known) or '(none)'}")
    if not problems:  # each value against its declared domain (harness/settings.py)
        try:
            build_settings(config_cls, values, f"key '{key}'")
        except ArbenchError as exc:
            problems.append(str(exc))
    return problems


# -- the queue --------------------------------------------------------------------------------------
def submissions_dir() -> Path:
    return results_dir() / "submissions"


def submit(store: Store, manifest_path: str | Path, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> str:
    """Validate a manifest, keep a copy of its files, and queue it; returns the submission id."""
    manifest, base = load_manifest(manifest_path)
    sub_id = uuid.uuid4().hex
    bundle = submissions_dir() / sub_id
    bundle.mkdir(parents=True)
    shutil.copy2(manifest_path, bundle / "manifest.toml")
    for rel in filter(None, [manifest.get("adapter_path"), manifest.get("checkpoint", {}).get("path")]):
        source, target = base / rel, bundle / rel  # both confined by validate_manifest above
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)  # links inside the folder stay links
        else:
            shutil.copyfile(source, target)
    public = {k: manifest[k] for k in PUBLIC_FIELDS if k in manifest}
    public["submitter"] = manifest["submitter"]["name"]
    store.add_submission(
        id=sub_id, task=manifest["task"], method=manifest["method"],
        label=manifest.get("label", manifest["method"]), submitter=manifest["submitter"]["name"],
        contact=manifest["submitter"].get("contact"), license=manifest["license"], manifest=public,
        bundle_path=str(bundle), max_attempts=max_attempts,
    )
    return sub_id


# The queue's rows are written by `Store` only (one write path); these are the queue's names for its methods.
def list_submissions(store: Store, state: str | None = None) -> list[dict[str, Any]]:
    return store.list_submissions(state)


def get_submission(store: Store, sub_id: str) -> dict[str, Any]:
    return store.get_submission(sub_id)


def reap_expired(store: Store) -> int:
    """Return jobs whose worker's lease ran out to pending (or fail them after max_attempts)."""
    return store.reap_expired_submissions()


def claim(store: Store, worker: str, tasks: list[str] | None = None, lease_seconds: float = 60.0) -> str | None:
    """Atomically take the oldest pending job (of the given tasks); returns its id or None."""
    return store.claim_submission(worker, tasks, lease_seconds)


def renew(store: Store, sub_id: str, worker: str, lease_seconds: float) -> bool:
    """Extend the lease; False means the job is no longer this worker's (cancelled, or reaped)."""
    return store.renew_submission(sub_id, worker, lease_seconds)


def advance(store: Store, sub_id: str, worker: str, state: str, message: str, **values: Any) -> bool:
    """A worker moves its job to the next state; False if the job is no longer its own."""
    return store.advance_submission(sub_id, worker, state, message, **values)


def cancel(store: Store, sub_id: str) -> None:
    store.cancel_submission(sub_id)


def retry(store: Store, sub_id: str) -> None:
    store.retry_submission(sub_id)
