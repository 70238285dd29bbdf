"""The `arbench` command line."""

from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from harness.errors import ArbenchError

LEADERBOARD_APP = Path(__file__).resolve().parent.parent / "leaderboard" / "app.py"


def parse_set(pairs: Sequence[str] | None) -> dict[str, Any]:
    """`key=value` pairs; values are Python literals where they parse as one, else strings."""
    values: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ArbenchError(f"malformed --set {pair!r}: write it as key=value, e.g. --set cfg=2.0")
        try:
            values[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            values[key] = raw
    return values


def _runner(args: argparse.Namespace):
    from harness.runner import RunOptions, Runner

    options = RunOptions(batch_size=args.batch_size, shard_size=args.shard_size, device=args.device,
                         label=getattr(args, "label", None), source=getattr(args, "source", None),
                         progress=not args.no_progress)
    if options.batch_size < 1 or options.shard_size < 1:
        raise ArbenchError("--batch-size and --shard-size must be positive integers")
    return Runner(options=options, db_url=args.db)


def cmd_tasks(args: argparse.Namespace) -> int:
    from harness.registry import TASKS

    for name, cls in TASKS.items():
        flag = " [offline]" if cls.offline else ""
        print(f"{name:32s} v{cls.version:<4s} {cls.modality:16s} {cls.description}{flag}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from harness.registry import METHODS

    for name, cls in METHODS.items():
        print(f"{name:28s} {cls.modality:16s} {cls.family:14s} {cls.description}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from harness import distributed

    result = _runner(args).run(args.task, args.method, parse_set(args.set))
    if distributed.world()[0] == 0:
        _print_result(result)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    result = _runner(args).score(args.task, args.path, parse_set(args.set))
    _print_result(result)
    return 0


def _print_result(result) -> None:
    print(f"run {result.run_id}: {result.status}")
    for m in result.metrics:
        arrow = "↑" if m.higher_is_better else "↓"
        ci = f"  [{m.ci_low:.4g}, {m.ci_high:.4g}]" if m.ci_low is not None else ""
        value = "—" if m.value is None else f"{m.value:.6g}"  # a metric may have no value (e.g. nothing to time)
        print(f"  {m.name:28s} {arrow} {value} {m.unit}{ci}")


def format_table(records: list[dict[str, Any]]) -> str:
    """A plain-text table of runs: one row per run, one column per metric."""
    if not records:
        return "no runs stored yet: try `arbench demo`."
    out = io.StringIO()
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    for task, rows in by_task.items():
        metric_names = list(dict.fromkeys(n for r in rows for n in r["metrics"]))[:8]
        header = ["run", "label", "source", "status", *metric_names]
        lines = [header]
        for r in rows:
            cells = [r["run_id"][:8], (r["label"] or r["method"] or "")[:28], r["source"], r["status"]]
            for n in metric_names:
                m = r["metrics"].get(n)
                cells.append("" if m is None or m["value"] is None else f"{m['value']:.4g}")
            lines.append(cells)
        arrows = {n: ("↑" if next(r["metrics"][n]["higher_is_better"] for r in rows if n in r["metrics"]) else "↓")
                  for n in metric_names}
        lines[0] = header[:4] + [f"{n} {arrows[n]}" for n in metric_names]
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
        out.write(f"\n== {task} (v{rows[0]['task_version']})\n")
        for line in lines:
            out.write("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() + "\n")
    return out.getvalue()


def cmd_show(args: argparse.Namespace) -> int:
    from harness.store import Store

    records = Store(args.db).records(task=args.task)
    if args.task and not records:
        print(f"no runs of task {args.task!r} stored; `arbench show` lists every task that has runs.")
        return 0
    print(format_table(records))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from harness.store import Store

    records = Store(args.db).records(task=args.task)
    if args.format == "json":
        text = json.dumps(records, indent=2, ensure_ascii=False)
    else:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["run_id", "task", "task_version", "method", "label", "source", "status", "metric",
                         "value", "ci_low", "ci_high", "higher_is_better", "unit", "signature", "created_at"])
        for r in records:
            for name, m in (r["metrics"] or {"": {}}).items():
                writer.writerow([r["run_id"], r["task"], r["task_version"], r["method"], r["label"], r["source"],
                                 r["status"], name, m.get("value"), m.get("ci_low"), m.get("ci_high"),
                                 m.get("higher_is_better"), m.get("unit"), r["signature"], r["created_at"]])
        text = buf.getvalue()
    if args.out:
        try:
            Path(args.out).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ArbenchError(f"cannot write {args.out} ({exc.strerror}): give --out a path in an existing, "
                               f"writable folder.") from exc
        print(f"wrote {len(records)} runs to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from harness.registry import load_plugins
    from harness.weights import WEIGHTS

    load_plugins()
    names = args.names or sorted(WEIGHTS)
    unknown = [n for n in names if n not in WEIGHTS]
    if unknown:
        raise ArbenchError(f"unknown weights {', '.join(unknown)}. Known: {', '.join(sorted(WEIGHTS)) or '(none)'}")
    failed = 0
    for name in names:
        spec = WEIGHTS[name]
        if args.action == "list":
            state = "present" if spec.cache_path.is_file() else "missing"
            print(f"{name:34s} {state:8s} {spec.license:14s} {spec.cache_path}\n{'':34s} {spec.url}")
            continue
        try:
            path = spec.fetch() if args.action == "fetch" and not spec.cache_path.is_file() else spec.resolve()
            print(f"{name}: ok ({path})")
        except ArbenchError as exc:
            failed += 1
            print(f"{name}: {exc}", file=sys.stderr)
    return 1 if failed else 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.db:
        env["ARBENCH_DB_URL"] = args.db
    cmd = [sys.executable, "-m", "streamlit", "run", str(LEADERBOARD_APP), "--server.headless", "true",
           "--server.address", args.address, "--server.port", str(args.port),
           "--browser.gatherUsageStats", "false"]
    print(f"leaderboard on http://{args.address}:{args.port} (Ctrl-C stops it)", file=sys.stderr, flush=True)
    # Streamlit replaces this process, so a signal to `arbench leaderboard` (SIGTERM from a service manager
    # or `kill`) reaches the server itself instead of orphaning a child that keeps the port.
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


def cmd_reported(args: argparse.Namespace) -> int:
    """Load the curated paper-reported results into the store (idempotent)."""
    from harness.store import Store
    from leaderboard.reported import DEFAULT_FILE, load_reported

    path = Path(args.file) if args.file else DEFAULT_FILE
    summary = load_reported(Store(args.db), path)
    print(f"{summary} (from {path})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run every offline task on its bundled methods, then print the table."""
    from harness.registry import TASKS

    runner = _runner(args)
    started = time.perf_counter()
    failures = []
    for name, cls in TASKS.items():
        if not cls.offline:
            continue
        for method in cls.demo_methods:
            print(f"\n>>> arbench run {name} {method}", file=sys.stderr)
            runner.options.label = None
            try:
                result = runner.run(name, method, {})
                _print_result(result)
            except ArbenchError as exc:
                failures.append(f"{name} / {method}: {exc}")
                print(f"error: {exc}", file=sys.stderr)
    print(format_table(runner.store.records()))
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; results in {runner.store.url}")
    print("see them in a browser: arbench leaderboard   (then open http://localhost:8501)")
    if failures:
        print("\nfailed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from harness.store import Store
    from harness.submissions import submit

    sub_id = submit(Store(args.db), args.manifest, max_attempts=args.max_attempts)
    print(sub_id)
    print("queued; follow it with `arbench submissions` (a worker runs it: `arbench worker --once`)",
          file=sys.stderr)
    return 0


def cmd_submissions(args: argparse.Namespace) -> int:
    from harness.store import Store
    from harness.submissions import get_submission, list_submissions

    store = Store(args.db)
    if args.id:
        print(json.dumps(get_submission(store, args.id), indent=2, ensure_ascii=False))
        return 0
    rows = list_submissions(store, args.state)
    if not rows:
        print("no submissions" + (f" in state {args.state}" if args.state else ""))
    for r in rows:
        last = r["history"][-1]["message"].splitlines()[0][:70] if r["history"] else ""
        print(f"{r['id']}  {r['state']:10s} {r['task']:20s} {r['label'][:28]:28s} {r['created_at']}  {last}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from harness.store import Store
    from harness.submissions import cancel

    cancel(Store(args.db), args.id)
    print(f"cancelled {args.id}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from harness.store import Store
    from harness.submissions import retry

    retry(Store(args.db), args.id)
    print(f"{args.id} is pending again")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from harness.store import Store
    from harness.worker import Limits, Worker

    limits = Limits(memory_mb=args.memory_mb, wall_seconds=args.time_limit, processes=args.max_processes)
    worker = Worker(Store(args.db), tasks=args.task, lease_seconds=args.lease_seconds, limits=limits,
                    batch_size=args.batch_size, shard_size=args.shard_size, allow_unsandboxed=args.allow_unsandboxed)
    print(f"worker {worker.worker_id} started; {worker.isolation.summary(limits)}", file=sys.stderr)
    done = worker.run(once=args.once, max_jobs=args.max_jobs, report=lambda outcome: print(outcome.line(), flush=True))
    print(f"worker {worker.worker_id}: {done} job(s) processed", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arbench",
        description="ARBench: evaluation harness and leaderboard for autoregressive generative models.",
    )
    parser.add_argument("--db", default=None, help="database URL (default: $ARBENCH_DB_URL or results/arbench.db)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def runner_options(p: argparse.ArgumentParser) -> None:
        from harness.config import DEFAULT_BATCH_SIZE, DEFAULT_SHARD_SIZE

        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="a task or method setting (repeatable); prefix with task. or method. if ambiguous")
        p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="requests per forward call")
        p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                       help="requests per resumable shard")
        p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
        p.add_argument("--label", default=None, help="display name of this run on the board")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("tasks", help="list registered tasks")
    p.set_defaults(func=cmd_tasks)
    p = sub.add_parser("methods", help="list registered methods")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("run", help="generate with a method, score and record",
                       description="Generate the task's requests with METHOD, score them, store the result. "
                                   "Under torchrun, generation is sharded across ranks.")
    p.add_argument("task")
    p.add_argument("method")
    runner_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("score", help="score samples you already have",
                       description="Validate and score existing samples (file or folder) under TASK's protocol.")
    p.add_argument("task")
    p.add_argument("path")
    runner_options(p)
    p.add_argument("--source", choices=["submitted", "reproduced"], default=None,
                   help="who produced the samples (default: submitted)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("show", help="a terminal table of stored results")
    p.add_argument("task", nargs="?")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("export", help="every run as a JSON or CSV record")
    p.add_argument("--format", choices=["json", "csv"], default="json")
    p.add_argument("--out", default=None, help="write to this file instead of standard output")
    p.add_argument("--task", default=None, help="only this task")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("weights", help="list, fetch or verify pretrained weights and reference files")
    p.add_argument("action", choices=["list", "fetch", "verify"])
    p.add_argument("names", nargs="*")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("leaderboard", help="start the Streamlit leaderboard (headless, localhost)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default="localhost")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("reported", help="load the paper-reported results into the store",
                       description="Store the figures of leaderboard/reported_results.toml as 'reported' rows. "
                                   "Loading twice adds nothing; corrected figures replace their old rows.")
    p.add_argument("action", choices=["load"])
    p.add_argument("--file", default=None, help="another reported-results TOML file")
    p.set_defaults(func=cmd_reported)

    p = sub.add_parser("submit", help="queue a submission from a TOML manifest; prints its id")
    p.add_argument("manifest")
    p.add_argument("--max-attempts", type=int, default=3, help="how often a job whose worker died is retried")
    p.set_defaults(func=cmd_submit)
    p = sub.add_parser("submissions", help="the submission queue (or one submission's history)")
    p.add_argument("id", nargs="?", help="show this submission with its full history")
    p.add_argument("--state", choices=["pending", "validating", "running", "finished", "failed", "cancelled"])
    p.set_defaults(func=cmd_submissions)
    p = sub.add_parser("cancel", help="cancel a pending or running submission")
    p.add_argument("id")
    p.set_defaults(func=cmd_cancel)
    p = sub.add_parser("retry", help="put a failed or cancelled submission back in the queue")
    p.add_argument("id")
    p.set_defaults(func=cmd_retry)
    p = sub.add_parser("worker", help="run submissions from the queue, each in a limited child process")
    p.add_argument("--once", action="store_true", help="process every pending job, then exit")
    p.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs")
    p.add_argument("--max-processes", type=int, default=256, help="processes and threads a job may run at once")
    p.add_argument("--allow-unsandboxed", action="store_true",
                   help="where bubblewrap is unavailable, run submitted adapters anyway (resource limits only; "
                        "logged and written in each job's history)")
    p.add_argument("--task", action="append", help="only jobs of this task (repeatable)")
    p.add_argument("--lease-seconds", type=float, default=30.0)
    p.add_argument("--memory-mb", type=int, default=8192, help="address-space limit of the child")
    p.add_argument("--time-limit", type=float, default=3600.0, help="wall-clock limit of the child, seconds")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--shard-size", type=int, default=64)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("demo", help="run every offline task on the bundled models and fill results/arbench.db")
    runner_options(p)
    p.set_defaults(func=cmd_demo)

    # --db is accepted after the command too (`arbench run T M --db URL`); SUPPRESS keeps the value given
    # before the command when it is not repeated after it.
    for name, command in sub.choices.items():
        if name not in ("tasks", "methods", "weights"):
            command.add_argument("--db", default=argparse.SUPPRESS, help="database URL (as before the command)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ArbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; rerun the same command to resume.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
