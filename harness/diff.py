"""What differs between two runs, and whether (and why) their numbers are comparable.

`diff_runs(a, b)` is a pure function over two exported run records (the `arbench export` / `Store.records`
format). It sorts every difference into four sections:

- **signature**: keys of the full signature whose values differ; those that are part of the *evaluation*
  signature (protocol and scoring) make the two numbers incomparable, the others are the method's settings;
- **settings**: the stored task and method settings (flattened to `task.x`, `method.y`);
- **provenance**: what produced the numbers but is not in the signature: hardware, package versions, seeds,
  batch size, git state... Per-run measurements (wall time, peak memory, the log) always differ and are
  counted apart, not listed;
- **metrics**: values, and the version, unit and direction of each metric. Two values of one metric computed
  by different metric versions are not comparable even under one evaluation signature.

The verdict names every reason. `arbench diff A B` prints it and the board shows it at `?compare=A,B`.

>>> a = {"run_id": "a1", "task": "t", "task_version": "1", "eval_signature": "task:t|n:10",
...      "eval_signature_hash": "e", "signature": "task:t|n:10|method:m|method.cfg:2.0", "signature_hash": "s1",
...      "settings": {"method": {"cfg": 2.0}}, "provenance": {"packages": {"torch": "2.5"}},
...      "metrics": {"fid": {"value": 5.0, "version": "1", "unit": "", "higher_is_better": False}}}
>>> b = {**a, "run_id": "b2", "signature": "task:t|n:10|method:m|method.cfg:4.0", "signature_hash": "s2",
...      "settings": {"method": {"cfg": 4.0}}}
>>> d = diff_runs(a, b)
>>> [x.key for x in d.signature], [x.key for x in d.settings], d.comparable
(['method.cfg'], ['method.cfg'], True)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from harness.signature import Signature

#: Provenance keys that are measurements of the run itself (they differ between any two runs).
MEASUREMENT_KEYS = ("wall_seconds", "log", "peak_rss_mb", "peak_gpu_mb")
MEASUREMENT_SUFFIXES = ("_seconds", "_mb")
#: Provenance keys that describe the machine: speed metrics are comparable only where these agree.
HARDWARE_KEYS = ("hardware", "hardware_fingerprint", "gpu_name", "gpu_count", "cpu", "cpu_count", "torch_threads",
                 "device", "cuda", "cudnn", "driver", "world_size")
SPEED_UNITS = ("x", "s", "ms", "tokens/s", "img/s")
_MISSING = object()


@dataclass(frozen=True)
class Difference:
    """One item that differs: `a` and `b` are None where the item is absent from that run."""

    key: str
    a: Any
    b: Any
    note: str = ""


@dataclass(frozen=True)
class MetricDifference:
    """A metric present in either run whose value, version, unit or direction differs."""

    name: str
    a: dict[str, Any] | None
    b: dict[str, Any] | None
    changed: tuple[str, ...]  # among "value", "version", "unit", "direction", "missing"

    @property
    def comparable(self) -> bool:
        return not {"version", "unit", "direction", "missing"} & set(self.changed)


@dataclass
class RunDiff:
    """Two runs side by side: what differs, and whether their numbers can be compared."""

    a_id: str
    b_id: str
    a_label: str
    b_label: str
    signature: list[Difference] = field(default_factory=list)
    settings: list[Difference] = field(default_factory=list)
    provenance: list[Difference] = field(default_factory=list)
    metrics: list[MetricDifference] = field(default_factory=list)
    measurements: list[str] = field(default_factory=list)  # provenance measurements that differ (not listed)
    comparable: bool = True
    reasons: list[str] = field(default_factory=list)

    @property
    def eval_signature(self) -> list[Difference]:
        """The differing keys of the evaluation signature (what makes the numbers incomparable)."""
        return [d for d in self.signature if d.note == "evaluation"]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["eval_signature"] = [asdict(d) for d in self.eval_signature]
        return out

    def to_text(self) -> str:
        """The diff as plain text (what `arbench diff` prints)."""
        lines = [f"A {self.a_id}  {self.a_label}", f"B {self.b_id}  {self.b_label}", ""]
        verdict = "comparable" if self.comparable else "NOT comparable"
        lines.append(f"verdict: {verdict}")
        lines += [f"  - {r}" for r in self.reasons]
        sections = (("signature", self.signature), ("settings", self.settings), ("provenance", self.provenance))
        for title, items in sections:
            lines.append("")
            if not items:
                lines.append(f"{title}: same")
                continue
            lines.append(f"{title}: {len(items)} differ")
            width = max(len(d.key) for d in items)
            for d in items:
                note = f"  [{d.note}]" if d.note else ""
                lines.append(f"  {d.key:{width}s}  A={_text(d.a)}  B={_text(d.b)}{note}")
        lines.append("")
        if not self.metrics:
            lines.append("metrics: same")
        else:
            lines.append(f"metrics: {len(self.metrics)} differ")
            width = max(len(m.name) for m in self.metrics)
            for m in self.metrics:
                lines.append(f"  {m.name:{width}s}  A={_metric_text(m.a)}  B={_metric_text(m.b)}"
                             f"  ({', '.join(m.changed)} differ)")
        if self.measurements:
            lines += ["", f"measurements of the runs themselves (always differ): {', '.join(self.measurements)}"]
        return "\n".join(lines) + "\n"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys; lists and scalars are leaves.

    >>> flatten({"method": {"cfg": 2.0, "sampler": {"top_k": 3}}, "task": None})
    {'method.cfg': 2.0, 'method.sampler.top_k': 3, 'task': None}
    """
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(inner, Mapping) and inner:
                out.update(flatten(inner, name))
            else:
                out[name] = inner
        return out
    return {prefix: value} if prefix else {}


def _differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Difference]:
    keys = list(dict.fromkeys([*a, *b]))
    return [Difference(k, a.get(k), b.get(k)) for k in keys
            if _canonical(a.get(k, _MISSING)) != _canonical(b.get(k, _MISSING))]


def _canonical(value: Any) -> str:
    if value is _MISSING:
        return "\0missing"
    return json.dumps(value, sort_keys=True, default=str)


def is_measurement(key: str) -> bool:
    top = key.split(".", 1)[0]
    return top in MEASUREMENT_KEYS or top.endswith(MEASUREMENT_SUFFIXES)


def _metric_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[MetricDifference]:
    out = []
    for name in dict.fromkeys([*a, *b]):
        ma, mb = a.get(name), b.get(name)
        if ma is None or mb is None:
            out.append(MetricDifference(name, ma, mb, ("missing",)))
            continue
        changed = []
        if _canonical(ma.get("value")) != _canonical(mb.get("value")):
            changed.append("value")
        for part, key in (("version", "version"), ("unit", "unit"), ("direction", "higher_is_better")):
            if str(ma.get(key, "")) != str(mb.get(key, "")):
                changed.append(part)
        if changed:
            out.append(MetricDifference(name, ma, mb, tuple(changed)))
    return out


def diff_runs(a: Mapping[str, Any], b: Mapping[str, Any]) -> RunDiff:
    """Compare two run records (`Store.records` format); see the module docstring."""
    result = RunDiff(str(a.get("run_id", "")), str(b.get("run_id", "")), _label(a), _label(b))
    eval_a, eval_b = Signature.parse(a.get("eval_signature") or ""), Signature.parse(b.get("eval_signature") or "")
    eval_keys = set(eval_a.entries) | set(eval_b.entries)
    full_a, full_b = Signature.parse(a.get("signature") or ""), Signature.parse(b.get("signature") or "")
    for key, (va, vb) in full_a.diff(full_b).items():
        result.signature.append(Difference(key, va, vb, "evaluation" if key in eval_keys else "method"))
    for key, (va, vb) in eval_a.diff(eval_b).items():  # an evaluation key the full signature does not repeat
        if key not in {d.key for d in result.signature}:
            result.signature.append(Difference(key, va, vb, "evaluation"))
    result.settings = _differences(flatten(a.get("settings") or {}), flatten(b.get("settings") or {}))
    prov = _differences(flatten(a.get("provenance") or {}), flatten(b.get("provenance") or {}))
    result.measurements = [d.key for d in prov if is_measurement(d.key)]
    result.provenance = [Difference(d.key, d.a, d.b, _provenance_note(d.key)) for d in prov
                         if not is_measurement(d.key)]
    result.metrics = _metric_differences(a.get("metrics") or {}, b.get("metrics") or {})
    _verdict(result, a, b)
    return result


def _provenance_note(key: str) -> str:
    top = key.split(".", 1)[0]
    if top in HARDWARE_KEYS:
        return "hardware"
    if top == "packages" or top in ("python", "harness_version", "platform"):
        return "software"
    if "seed" in top:
        return "seeds"
    if top in ("git_sha", "git_dirty"):
        return "code"
    return ""


def _verdict(result: RunDiff, a: Mapping[str, Any], b: Mapping[str, Any]) -> None:
    reasons = result.reasons
    if a.get("task") != b.get("task"):
        result.comparable = False
        reasons.append(f"different tasks ({a.get('task')} vs {b.get('task')}): numbers of two tasks never compare")
        return
    if a.get("task_version") != b.get("task_version"):
        result.comparable = False
        reasons.append(f"task versions differ ({a.get('task_version')} vs {b.get('task_version')})")
    evaluation = result.eval_signature
    if evaluation or a.get("eval_signature_hash") != b.get("eval_signature_hash"):
        result.comparable = False
        keys = ", ".join(d.key for d in evaluation) or "their text"
        reasons.append(f"the evaluation signatures differ (in {keys}): the numbers were measured under different "
                       f"protocols or scoring, so they are in different groups of the board and never ranked "
                       f"together")
    incomparable = [m for m in result.metrics if not m.comparable and "missing" not in m.changed]
    for m in incomparable:
        result.comparable = False
        parts = [p for p in m.changed if p != "value"]
        reasons.append(f"{m.name}: the metric's {', '.join(parts)} differ, so its two values were not computed "
                       f"the same way")
    missing = [m.name for m in result.metrics if "missing" in m.changed]
    if missing:
        reasons.append(f"only one run has {', '.join(missing)}")
    hardware = [d.key for d in result.provenance if d.note == "hardware"]
    speed = [name for name, m in {**(a.get("metrics") or {}), **(b.get("metrics") or {})}.items()
             if m.get("unit") in SPEED_UNITS]
    if hardware and speed:
        reasons.append(f"the hardware differs ({', '.join(hardware)}): timing metrics ({', '.join(speed)}) compare "
                       f"only on one machine")
    software = [d.key for d in result.provenance if d.note == "software"]
    if software:
        reasons.append(f"software differs outside the signature ({', '.join(software)}): numbers may shift "
                       f"slightly")
    if result.comparable:
        method = [d.key for d in result.signature if d.note == "method"]
        if method:
            reasons.insert(0, f"same evaluation signature: one protocol; the runs differ in the method or its "
                              f"settings ({', '.join(method)}), which is what the comparison measures")
        elif not result.metrics:
            reasons.insert(0, "same signature and same numbers: a rerun of one configuration")
        else:
            reasons.insert(0, "same signature: a rerun of one configuration; the values differ only by the "
                              "run-to-run variation the provenance below may explain")


def _label(record: Mapping[str, Any]) -> str:
    return str(record.get("label") or record.get("method") or record.get("run_id") or "")


def _text(value: Any) -> str:
    if value is None:
        return "(absent)"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _metric_text(m: Mapping[str, Any] | None) -> str:
    if m is None:
        return "(absent)"
    value = m.get("value")
    shown = "" if value is None else f"{value:.6g}"
    return f"{shown} {m.get('unit') or ''}".strip() + f" v{m.get('version', '')}"


def resolve_run(store, ident: str) -> dict[str, Any]:
    """The record of the run whose id is `ident` or starts with it (at least 4 characters, unambiguous)."""
    from sqlalchemy import select

    from harness.errors import ArbenchError
    from harness.store import RunRow, mask_url

    ident = ident.strip()
    records = store.records(run_id=ident) if ident else []
    if records:
        return records[0]
    if len(ident) < 4:
        raise ArbenchError(f"run id {ident!r} is too short: give at least its first 4 characters "
                           f"(`arbench show` lists the ids).")
    pattern = ident.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    with store.engine.connect() as conn:
        ids = conn.execute(select(RunRow.id).where(RunRow.id.like(pattern, escape="\\")).limit(3)).scalars().all()
    if not ids:
        raise ArbenchError(f"no run {ident!r} in {mask_url(store.url)}: `arbench show` lists the stored runs with their ids.")
    if len(ids) > 1:
        raise ArbenchError(f"run id {ident!r} is ambiguous ({', '.join(ids)}, ...): give more of it.")
    return store.records(run_id=ids[0])[0]


#: Signature keys never shown as a row's distinguishing settings: the method has its own column, the source
#: of a reported figure is on its run page.
NOT_SETTINGS = ("method", "source")


def distinguishing_settings(signatures: Sequence[str], limit: int = 28) -> list[str]:
    """For rows of one comparability group, each row's settings that differ from another row of its method.

    Rows are taken per method (the `method` entry of each full signature): a key is shown where its value
    varies among that method's rows (a key a row lacks counts as a value). Keys lose their `method.` prefix
    and long values are shortened to `limit` characters, so the text fits a table cell. A method with one
    row, or rows that differ in nothing, shows an empty text.

    >>> distinguishing_settings(["task:t|method:a|method.cfg:2.0|method.top_k:1",
    ...                          "task:t|method:a|method.cfg:4.0|method.top_k:1",
    ...                          "task:t|method:b|method.block:4"])
    ['cfg=2.0', 'cfg=4.0', '']
    """
    parsed = [Signature.parse(s or "").entries for s in signatures]
    by_method: dict[str, list[int]] = {}
    for i, entries in enumerate(parsed):
        by_method.setdefault(entries.get("method", ""), []).append(i)
    out = [""] * len(parsed)
    for rows in by_method.values():
        if len(rows) < 2:
            continue
        keys = list(dict.fromkeys(k for i in rows for k in parsed[i] if k not in NOT_SETTINGS))
        varying = [k for k in keys if len({parsed[i].get(k, "\0") for i in rows}) > 1]
        for i in rows:
            out[i] = ", ".join(f"{_short_key(k)}={_short_value(parsed[i][k], limit)}"
                               for k in varying if k in parsed[i])
    return out


def _short_key(key: str) -> str:
    return key[len("method."):] if key.startswith("method.") else key


def _short_value(value: str, limit: int) -> str:
    if len(value) == 64 and all(c in "0123456789abcdef" for c in value):  # a sha256
        return value[:10]
    return value if len(value) <= limit else value[:limit - 1] + "…"
