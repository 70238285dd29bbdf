"""The child process that runs a submission's method, away from the database: `python -m harness.sandbox SPEC`.

The worker starts it with resource limits, in its own working folder, with a scrubbed environment and,
where the machine allows, in its own network and mount namespaces (no database server reachable, the
results folder hidden, everything but its working folder read-only). It writes the generated shards
with the task's own writer and a `result.json`; the worker (harness code) reads them back, scores them
and writes the results.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from harness.api import Method, build_config
from harness.errors import ArbenchError
from harness.registry import METHODS, TASKS
from harness.runner import RunContext, RunOptions, Runner


def load_method_class(method: str, adapter_dir: str | None) -> type[Method]:
    if ":" not in method:
        return METHODS.get(method)
    if adapter_dir:
        path = Path(adapter_dir)
        sys.path.insert(0, str(path if path.is_dir() else path))  # a folder, or a .whl (zip import)
    module_name, _, class_name = method.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ArbenchError(f"{method} is not a subclass of harness.api.Method")
    return cls


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    method_cls = load_method_class(spec["method"], spec.get("adapter_dir"))
    values = dict(spec.get("settings") or {})
    if spec.get("checkpoint"):
        values["checkpoint"] = spec["checkpoint"]
    method = method_cls(build_config(method_cls.Config, values, f"method {spec['method']!r}"), device="cpu")
    task_cls = TASKS.get(spec["task"])
    task = task_cls(build_config(task_cls.Config, spec.get("task_settings") or {}, f"task {spec['task']!r}"))
    task.check_method(method)
    info = dict(name=spec["method"], family=method.family, description=method.description, version=method.version)
    plan = Runner._plan(task, info, "run", method.settings(), None, method)
    options = RunOptions(batch_size=spec["batch_size"], shard_size=spec["shard_size"], progress=False)
    out = Path(spec["out_dir"])
    ctx = RunContext(plan, options, "sandbox", out, "cpu")
    shard_dirs = ctx.generate_sharded(method, task.requests(), task.write_shard)
    settings = {k: v for k, v in method.settings().items() if k != "checkpoint"}
    (out / "result.json").write_text(json.dumps({
        "shards": [str(p.relative_to(out)) for p in shard_dirs],
        "method_settings": settings, "family": method.family, "description": method.description,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
