"""Paper-reported results: the curated data file and its idempotent loader (`arbench reported load`).

The data file (`harness/reported_results.toml`, versioned with `data_version`) lists each figure
with its paper, the table or README it comes from, the sampler settings and the evaluation protocol
it was measured under. Each entry becomes one run with kind="reported", source="reported":

- its evaluation signature is the task plus the named protocol's settings (evaluator, reference set,
  sample count...), so paper numbers measured under different protocols are never ranked together;
- its full signature adds the method, its sampler settings and the source;
- its id is derived from (task, label, protocol), so loading twice adds nothing, and a corrected
  figure replaces the old row instead of adding a second one;
- marks from the shared notes ([2nd], [unv], [abs]) stay on the row as a `verification` note;
- `availability` says why a figure cannot be reproduced here (no official code or weights, API only); a row
  whose `method` names a registered ARBench method can be (`arbench run <task> <method>`); a link to a name that
  is not registered claims nothing. Both end up in the
  row's `reproducible` note, which the board shows.
"""

from __future__ import annotations

import hashlib
import json
import math
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.registry import METHODS, TASKS
from harness.signature import Signature
from harness.store import ReportedRun, Store

DEFAULT_FILE = Path(__file__).resolve().parent / "reported_results.toml"
SCHEMA_VERSION = 1
MARKS = {
    "2nd": "taken from a third-party transcription of the paper's table",
    "unv": "not verified against the paper",
    "abs": "from the paper's abstract",
}
#: Why a reported figure cannot be reproduced with ARBench; checked facts about the system's releases, kept
#: per row in the data file (the issues' "keep their reported rows, marked not reproducible").
AVAILABILITY = {
    "no-code-or-weights": "no official code or weights were released",
    "no-weights": "official code, but no released weights",
    "api-only": "a closed system, served through an API only",
}
ENTRY_KEYS = {"task", "method", "label", "family", "params", "paper", "url", "where", "protocol", "settings",
              "metrics", "marks", "note", "hardware", "availability"}
REQUIRED_KEYS = ("task", "label", "paper", "where", "protocol", "metrics")


@dataclass
class LoadSummary:
    data_version: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0

    def __str__(self) -> str:
        return (f"reported results {self.data_version}: {self.added} added, {self.updated} updated, "
                f"{self.unchanged} unchanged, {self.removed} removed")


@dataclass
class ReportedEntry:
    """One validated figure set of the data file, ready to store."""

    run_id: str
    task: str
    method: str | None
    family: str
    label: str
    eval_signature: Signature
    signature: Signature
    settings: dict[str, Any]
    provenance: dict[str, Any]
    metrics: dict[str, float]
    marks: dict[str, str]
    content_sha256: str


def read_data_file(path: Path = DEFAULT_FILE) -> tuple[dict[str, Any], list[ReportedEntry]]:
    """Parse and validate the data file; raises InputError naming the entry and the fix."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"no reported-results file at {path}; pass --file with the path of one.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path} is not valid TOML ({exc}); fix the line it names.") from exc
    if data.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{path}: schema_version must be {SCHEMA_VERSION}, found {data.get('schema_version')!r}.")
    if not isinstance(data.get("data_version"), str):
        raise InputError(f"{path}: set data_version (e.g. \"2026-11-25\") so loaded rows say which file they "
                         "came from.")
    metric_meta = data.get("metrics", {})
    protocols = data.get("protocols", {})
    entries = [_entry(path, i, raw, metric_meta, protocols, data) for i, raw in enumerate(data.get("result", []))]
    seen: dict[str, str] = {}
    for e in entries:
        if e.run_id in seen:
            raise InputError(f"{path}: two results for task {e.task!r} are both labelled {e.label!r} under the same "
                             "protocol; give them distinct labels.")
        seen[e.run_id] = e.label
    return data, entries


def _entry(path: Path, index: int, raw: dict[str, Any], metric_meta: dict[str, Any], protocols: dict[str, Any],
           data: dict[str, Any]) -> ReportedEntry:
    where = f"{path}, result #{index + 1} ({raw.get('label', 'no label')!r})"
    unknown = set(raw) - ENTRY_KEYS
    if unknown:
        raise InputError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(ENTRY_KEYS)}.")
    missing = [k for k in REQUIRED_KEYS if not raw.get(k)]
    if missing:
        raise InputError(f"{where}: missing {', '.join(missing)}.")
    protocol_name = raw["protocol"]
    if protocol_name not in protocols:
        raise InputError(f"{where}: protocol {protocol_name!r} is not defined; add a [protocols.{protocol_name}] "
                         "table.")
    protocol = protocols[protocol_name]
    if protocol.get("task") != raw["task"]:
        raise InputError(f"{where}: protocol {protocol_name!r} belongs to task {protocol.get('task')!r}, "
                         f"not {raw['task']!r}.")
    metrics: dict[str, float] = {}
    for name, value in raw["metrics"].items():
        if name not in metric_meta:
            raise InputError(f"{where}: metric {name!r} has no [metrics.{name}] table (direction and unit).")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"{where}: metric {name!r} must be a finite number, got {value!r}.")
        metrics[name] = float(value)
    marks = raw.get("marks", {})
    if isinstance(marks, list):  # marks on the whole row
        marks = {"*": m for m in marks}
    for target, mark in marks.items():
        if mark not in MARKS:
            raise InputError(f"{where}: mark {mark!r} is not one of {sorted(MARKS)}.")
        if target != "*" and target not in metrics:
            raise InputError(f"{where}: mark on {target!r}, which is not one of this row's metrics.")
    availability = raw.get("availability")
    if availability is not None and availability not in AVAILABILITY:
        raise InputError(f"{where}: availability {availability!r} is not one of {sorted(AVAILABILITY)}.")
    if availability is not None and raw.get("method"):
        raise InputError(f"{where}: a row linked to ARBench method {raw['method']!r} can be reproduced; drop "
                         f"either `method` or `availability` {availability!r}.")
    settings = dict(raw.get("settings", {}))
    eval_sig = Signature().add("task", raw["task"]).add("reported_protocol", protocol_name)
    eval_sig.update("protocol", {k: v for k, v in protocol.items() if k != "task"})
    sig = Signature(dict(eval_sig.entries)).add("kind", "reported").add("method", raw.get("method") or raw["label"])
    sig.update("method", settings).add("source", f"{raw['paper']}; {raw['where']}")
    provenance = {
        "paper": raw["paper"], "url": raw.get("url", ""), "where": raw["where"], "note": raw.get("note", ""),
        "params": raw.get("params"), "hardware": raw.get("hardware"), "family": raw.get("family"),
        "marks": marks, "verification": _verification(marks),
        "reproducible": _reproducible(raw["task"], raw.get("method"), availability),
        "data_file": Path(path).name, "data_version": data["data_version"],
    }
    provenance = {k: v for k, v in provenance.items() if v not in (None, "", {})}
    content = json.dumps([raw, protocol, {n: metric_meta[n] for n in metrics}], sort_keys=True, default=str)
    run_id = hashlib.sha256(f"reported|{raw['task']}|{protocol_name}|{raw['label']}".encode()).hexdigest()[:32]
    return ReportedEntry(
        run_id=run_id, task=raw["task"], method=raw.get("method"), family=raw.get("family", ""), label=raw["label"],
        eval_signature=eval_sig, signature=sig, settings={"task": None, "method": settings}, provenance=provenance,
        metrics=metrics, marks=marks, content_sha256=hashlib.sha256(content.encode()).hexdigest(),
    )


def _reproducible(task: str, method: str | None, availability: str | None) -> str:
    if availability:
        return f"no: {AVAILABILITY[availability]}"
    if method and method in METHODS.names() and task in TASKS.names():
        return f"yes: arbench run {task} {method}"
    return ""  # not assessed, or linked to a method name ARBench does not register (yet): no claim either way


def _verification(marks: dict[str, str]) -> str:
    if not marks:
        return ""
    parts = [f"{'row' if target == '*' else target}: {MARKS[mark]} [{mark}]" for target, mark in marks.items()]
    return "unverified — " + "; ".join(parts)


def load_reported(store: Store, path: Path = DEFAULT_FILE) -> LoadSummary:
    """Store every entry of the data file as a reported run, in one transaction (all or nothing).

    Task and method rows that the store already has are used as they are; missing ones are created from
    the data file (a later `arbench run` of the real task or method refreshes them from the registry).
    """
    data, entries = read_data_file(path)
    tasks_meta = data.get("tasks", {})
    metric_meta = data.get("metrics", {})
    runs = []
    for e in entries:
        meta = tasks_meta.get(e.task)
        task_fields = None if meta is None else {
            "version": str(meta.get("version", "1")), "modality": meta["modality"],
            "description": meta.get("description", ""), "primary_metric": meta.get("primary_metric")}
        metrics = []
        for name, value in e.metrics.items():
            unit_meta = metric_meta[name]
            mark = e.marks.get(name) or e.marks.get("*")
            metrics.append(dict(
                name=name, value=value, higher_is_better=bool(unit_meta["higher_is_better"]),
                unit=unit_meta.get("unit", ""), version="reported",
                description=unit_meta.get("description", "") + (f" [{mark}: {MARKS[mark]}]" if mark else ""),
            ))
        runs.append(ReportedRun(
            run_id=e.run_id, task=e.task, task_fields=task_fields, method=e.method, method_family=e.family,
            method_description=e.provenance["paper"], label=e.label, signature=str(e.signature),
            signature_hash=e.signature.hash, eval_signature=str(e.eval_signature),
            eval_signature_hash=e.eval_signature.hash, settings=e.settings, provenance=e.provenance,
            content_sha256=e.content_sha256, metrics=metrics,
        ))
    return LoadSummary(data["data_version"], **store.sync_reported(runs, data_file=Path(path).name))
