"""Submissions: TOML manifests, validated by a schema, and a queue in the store that many workers share.

A manifest (`arbench submit manifest.toml`):

    task = "digits-c2i"
    method = "digits-pca-gaussian"       # a registered method, or "module:Class" from adapter_path
    adapter_path = "adapter"             # folder (or .whl) next to the manifest; only with module:Class
    label = "PCA-Gauss (ours)"
    license = "MIT"
    [submitter]
    name = "Jane Doe"
    contact = "jane@example.org"         # kept private: never exported, never shown
    [checkpoint]                         # optional; safetensors preferred
    path = "model.safetensors"           # or url = "https://..."
    sha256 = "<64 hex digits>"
    [settings]                           # the method's sampler/decoder settings (in the signature)
    temperature = 1.0

States: pending -> validating -> running -> finished | failed | cancelled, every change kept with its
reason. Workers claim the oldest pending job with a compare-and-set update (PostgreSQL: `FOR UPDATE
SKIP LOCKED` first, so workers do not queue on each other's rows) and hold a lease they renew; a job
whose lease ran out (its worker died) goes back to pending, at most `max_attempts` times.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import shutil
import sys
import uuid
from dataclasses import fields
from pathlib import Path
from typing import Any

import jsonschema
from sqlalchemy import select, update

from harness.config import results_dir
from harness.errors import ArbenchError
from harness.inputs import read_text
from harness.registry import METHODS, TASKS
from harness.settings import build_settings
from harness.store import Store, SubmissionEventRow, SubmissionRow, utcnow

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
        from harness.api import Task

        if TASKS.get(task_name).run is not Task.run:
            problems.append(f"key 'task': {task_name!r} is a timing study, which does not take submissions")
        task_cls = TASKS.get(task_name)
        problems += _unknown_settings("task_settings", manifest.get("task_settings", {}), task_cls.Config)
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
    if "adapter_path" in manifest and not (base / manifest["adapter_path"]).exists():
        problems.append(f"key 'adapter_path': {base / manifest['adapter_path']} does not exist")
    checkpoint = manifest.get("checkpoint")
    if checkpoint is not None:
        if ("path" in checkpoint) == ("url" in checkpoint):
            problems.append("key 'checkpoint': give exactly one of path or url")
        elif "path" in checkpoint and not (base / checkpoint["path"]).is_file():
            problems.append(f"key 'checkpoint.path': {base / checkpoint['path']} is not a file")
    return problems


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
        source, target = base / rel, bundle / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    public = {k: manifest[k] for k in PUBLIC_FIELDS if k in manifest}
    public["submitter"] = manifest["submitter"]["name"]
    with store.session() as s:
        row = SubmissionRow(
            id=sub_id, task=manifest["task"], method=manifest["method"],
            label=manifest.get("label", manifest["method"]), submitter=manifest["submitter"]["name"],
            contact=manifest["submitter"].get("contact"), license=manifest["license"], manifest=public,
            bundle_path=str(bundle), state="pending", max_attempts=max_attempts,
        )
        row.events.append(SubmissionEventRow(state="pending", message="submitted"))
        s.add(row)
    return sub_id


def record(row: SubmissionRow, private: bool = False) -> dict[str, Any]:
    """A submission as a plain dict; the contact is included only when `private` is asked for."""
    out = {
        "id": row.id, "task": row.task, "method": row.method, "label": row.label, "submitter": row.submitter,
        "license": row.license, "state": row.state, "attempts": row.attempts, "max_attempts": row.max_attempts,
        "lease_owner": row.lease_owner, "run_id": row.run_id, "error": row.error, "manifest": row.manifest,
        "bundle_path": row.bundle_path,
        "created_at": row.created_at.isoformat(timespec="seconds") + "Z",
        "updated_at": row.updated_at.isoformat(timespec="seconds") + "Z",
        "history": [{"at": e.at.isoformat(timespec="seconds") + "Z", "state": e.state, "message": e.message,
                     "worker": e.worker} for e in row.events],
    }
    if private:
        out["contact"] = row.contact
    return out


def list_submissions(store: Store, state: str | None = None) -> list[dict[str, Any]]:
    with store.session() as s:
        query = select(SubmissionRow).order_by(SubmissionRow.created_at, SubmissionRow.id)
        if state:
            query = query.where(SubmissionRow.state == state)
        return [record(r) for r in s.scalars(query)]


def get_submission(store: Store, sub_id: str) -> dict[str, Any]:
    with store.session() as s:
        row = s.get(SubmissionRow, sub_id)
        if row is None:
            raise ArbenchError(f"no submission {sub_id!r}; see `arbench submissions`")
        return record(row)


def _event(s, row: SubmissionRow, state: str, message: str, worker: str | None) -> None:
    row.state, row.updated_at = state, utcnow()
    s.add(SubmissionEventRow(submission_id=row.id, state=state, message=message, worker=worker, at=utcnow()))


def _lock(query, store: Store):
    return query if store.is_sqlite else query.with_for_update(skip_locked=True)


def reap_expired(store: Store) -> int:
    """Return jobs whose worker's lease ran out to pending (or fail them after max_attempts)."""
    now = utcnow()
    reaped = 0
    with store.session() as s:
        rows = s.scalars(_lock(select(SubmissionRow).where(
            SubmissionRow.state.in_(("validating", "running")), SubmissionRow.lease_expires_at < now), store)).all()
        for row in rows:
            who = row.lease_owner
            row.lease_owner, row.lease_expires_at = None, None
            if row.attempts >= row.max_attempts:
                row.error = f"the worker's lease expired {row.attempts} times; giving up"
                _event(s, row, "failed", row.error, who)
            else:
                _event(s, row, "pending", f"lease of worker {who} expired (worker presumed dead); back in the "
                                          f"queue (attempt {row.attempts} of {row.max_attempts} used)", who)
            reaped += 1
    return reaped


def claim(store: Store, worker: str, tasks: list[str] | None = None, lease_seconds: float = 60.0) -> str | None:
    """Atomically take the oldest pending job (of the given tasks); returns its id or None."""
    reap_expired(store)
    for _ in range(20):  # a few rounds: another worker may win the compare-and-set for the same row
        with store.session() as s:
            query = select(SubmissionRow.id).where(SubmissionRow.state == "pending")
            if tasks:
                query = query.where(SubmissionRow.task.in_(tasks))
            sub_id = s.scalar(_lock(query.order_by(SubmissionRow.created_at, SubmissionRow.id).limit(1), store))
            if sub_id is None:
                return None
            now = utcnow()
            taken = s.execute(
                update(SubmissionRow)
                .where(SubmissionRow.id == sub_id, SubmissionRow.state == "pending")
                .values(state="validating", lease_owner=worker, attempts=SubmissionRow.attempts + 1,
                        lease_expires_at=now + dt.timedelta(seconds=lease_seconds), updated_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount
            if taken == 1:
                s.add(SubmissionEventRow(submission_id=sub_id, state="validating", message="claimed",
                                         worker=worker, at=now))
                return sub_id
    return None


def renew(store: Store, sub_id: str, worker: str, lease_seconds: float) -> bool:
    """Extend the lease; False means the job is no longer this worker's (cancelled, or reaped)."""
    now = utcnow()
    with store.session() as s:
        return s.execute(
            update(SubmissionRow)
            .where(SubmissionRow.id == sub_id, SubmissionRow.lease_owner == worker,
                   SubmissionRow.state.in_(("validating", "running")))
            .values(lease_expires_at=now + dt.timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False)
        ).rowcount == 1


def advance(store: Store, sub_id: str, worker: str, state: str, message: str, **values: Any) -> bool:
    """A worker moves its job to the next state; False if the job is no longer its own."""
    with store.session() as s:
        row = s.get(SubmissionRow, sub_id, with_for_update=not store.is_sqlite)
        if row is None or row.lease_owner != worker or row.state not in ("validating", "running"):
            return False
        for key, value in values.items():
            setattr(row, key, value)
        if state in ("finished", "failed"):
            row.lease_owner, row.lease_expires_at = None, None
        _event(s, row, state, message, worker)
        return True


def cancel(store: Store, sub_id: str) -> None:
    with store.session() as s:
        row = s.get(SubmissionRow, sub_id, with_for_update=not store.is_sqlite)
        if row is None:
            raise ArbenchError(f"no submission {sub_id!r}; see `arbench submissions`")
        if row.state in ("finished", "failed", "cancelled"):
            raise ArbenchError(f"submission {sub_id} is already {row.state}; nothing to cancel")
        row.lease_owner, row.lease_expires_at = None, None
        _event(s, row, "cancelled", "cancelled by request", None)


def retry(store: Store, sub_id: str) -> None:
    with store.session() as s:
        row = s.get(SubmissionRow, sub_id, with_for_update=not store.is_sqlite)
        if row is None:
            raise ArbenchError(f"no submission {sub_id!r}; see `arbench submissions`")
        if row.state not in ("failed", "cancelled"):
            raise ArbenchError(f"submission {sub_id} is {row.state}; only failed or cancelled ones can be retried")
        row.attempts, row.error, row.run_id = 0, None, None
        _event(s, row, "pending", "retry requested", None)
