"""The child process that runs a submission's method, away from the database: `python -m harness.sandbox SPEC`.

The worker starts it inside the job's sandbox (`harness.isolation`: bubblewrap, resource limits, a scrubbed
environment). It reads `spec.json` (paths relative to the spec's folder), builds the method (a registered
one, or the adapter's `module:Class`) and the task, and writes into `out/`:

* a task that is scored from samples: the generated shards for the worker's requests (`requests.json`: the
  worker builds them from the operator's data, which the child does not see; the files they name, `Task.input_keys`,
  are copies under `inputs/` in the job folder), written by the task's own writer, and
  `result.json` (shard names and the method's settings). The worker copies back regular files only and
  scores them with the task's own loader; nothing the child computes is taken as a number.
* a timing study (`Task.submission.timing_study`): the task's whole `run()` (method and baseline timed
  in this one process, as the protocol requires) and `metrics.json`, which the worker checks as data and
  records as measured inside the sandbox.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from pathlib import Path

from harness.api import Method, Request, Task, build_config
from harness.errors import ArbenchError
from harness.registry import METHODS, TASKS
from harness.runner import Plan, RunContext, RunOptions
from harness.signature import Signature


def load_method_class(method: str, adapter_dir: str | None) -> type[Method]:
    if ":" not in method:
        return METHODS.get(method)
    if adapter_dir:
        path = Path(adapter_dir)
        sys.path.insert(0, str(path))  # a folder, or a .whl (zip import)
    module_name, _, class_name = method.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ArbenchError(f"{method} is not a subclass of harness.api.Method")
    return cls


def build(spec: dict, job: Path) -> tuple[Task, Method]:
    """The method and the task of a spec, the method checked against the task (what the child does first)."""
    adapter = job / spec["adapter"] if spec.get("adapter") else None
    method_cls = load_method_class(spec["method"], str(adapter) if adapter else None)
    values = dict(spec.get("settings") or {})
    if spec.get("checkpoint"):
        values["checkpoint"] = str(job / spec["checkpoint"])
    method = method_cls(build_config(method_cls.Config, values, f"method {spec['method']!r}"), device="cpu")
    task_cls = TASKS.get(spec["task"])
    task = task_cls(build_config(task_cls.Config, spec.get("task_settings") or {}, f"task {spec['task']!r}"))
    task.check_method(method)
    return task, method


def main(spec_path: str) -> int:
    spec_file = Path(spec_path).resolve()
    job = spec_file.parent
    spec = json.loads(spec_file.read_text())
    task, method = build(spec, job)
    info = dict(name=spec["method"], family=method.family, description=method.description, version=method.version)
    # no evaluation signature here: the worker computes it and records the run; a signature may read data the
    # requests do not need (UCF-101's split lists beside its videos), which the sandbox does not show
    plan = Plan(task, method, "run", Signature(), Signature(), {"task": task.settings(), "method": method.settings()},
                info)
    options = RunOptions(batch_size=spec["batch_size"], shard_size=spec["shard_size"], progress=False)
    out = job / "out"
    ctx = RunContext(plan, options, "sandbox", out, "cpu")
    settings = {k: v for k, v in method.settings().items() if k != "checkpoint"}
    result: dict = {"method_settings": settings, "family": method.family, "description": method.description}
    if spec.get("timing_study"):
        metrics = task.run(method, ctx)
        result["metrics"] = [dataclasses.asdict(m) for m in metrics]
        result["log"] = ctx.notes[-50:]
    else:
        # the worker's requests (built from the operator's data, which the child need not see); the task's own
        # list when run by hand
        requests = ([Request(**row) for row in json.loads((job / spec["requests"]).read_text())]
                    if spec.get("requests") else task.requests())
        shard_dirs = ctx.generate_sharded(method, requests, task.write_shard)
        result["shards"] = [str(p.relative_to(out)) for p in shard_dirs]
    (out / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
