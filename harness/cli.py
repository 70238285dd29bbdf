"""The `arbench` command line."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from harness.errors import ArbenchError

LEADERBOARD_APP = Path(__file__).resolve().parent.parent / "leaderboard" / "app.py"


def parse_set(pairs: Sequence[str] | None) -> dict[str, str]:
    """`key=value` pairs, values kept as text: each is parsed strictly by the type its setting declares
    (`harness.settings`), so `12.5` for an integer setting is refused rather than guessed at."""
    values: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ArbenchError(f"malformed --set {pair!r}: write it as key=value, e.g. --set cfg=2.0")
        values[key] = raw  # the last of repeated keys wins
    return values


def _runner(args: argparse.Namespace):
    from harness.runner import RunOptions, Runner

    options = RunOptions(batch_size=args.batch_size, shard_size=args.shard_size, device=args.device,
                         label=getattr(args, "label", None), source=getattr(args, "source", None),
                         progress=not args.no_progress, repeat=args.repeat)
    if options.batch_size < 1 or options.shard_size < 1:
        raise ArbenchError("--batch-size and --shard-size must be positive integers")
    return Runner(options=options, db_url=args.db)


def cmd_tasks(args: argparse.Namespace) -> int:
    from harness.registry import TASKS

    for info in TASKS.entries():  # the registry's index: no plugin is imported
        flag = " [offline]" if info.get("offline") else ""
        print(f"{info['name']:32s} v{info.get('version', ''):<4s} {info.get('modality', ''):16s} "
              f"{info.get('description', '')}{flag}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from harness.registry import METHODS

    for info in METHODS.entries():
        print(f"{info['name']:28s} {info.get('modality', ''):16s} {info.get('family', ''):14s} "
              f"{info.get('description', '')}")
    return 0


def _check_names(task: str, method: str | None = None) -> None:
    """Refuse a misspelt task or method before the runner (torch, metrics) is imported."""
    from harness.registry import METHODS, TASKS

    TASKS.check(task)
    if method is not None:
        METHODS.check(method)


def cmd_run(args: argparse.Namespace) -> int:
    _check_names(args.task, args.method)
    from harness import distributed

    runner = _runner(args)
    result = runner.run(args.task, args.method, parse_set(args.set))
    if distributed.world()[0] == 0:
        _print_result(result, runner.store.url)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    _check_names(args.task)
    runner = _runner(args)
    result = runner.score(args.task, args.path, parse_set(args.set))
    _print_result(result, runner.store.url)
    return 0


def _print_result(result, db_url: str) -> None:
    from harness.store import mask_url

    if result.stored:
        print(f"run {result.run_id}: {result.status} (stored before: an identical request, same full signature, "
              "finished already, so nothing was run or stored now; add --repeat to record a repeat)")
    else:
        extra = f" (repeat of run {result.repeat_of})" if result.repeat_of else " (resumed)" if result.resumed else ""
        print(f"run {result.run_id}: {result.status}{extra}")
    print(f"  database: {mask_url(db_url)}")
    for m in result.metrics:
        arrow = "↑" if m.higher_is_better else "↓"
        ci = f"  [{m.ci_low:.4g}, {m.ci_high:.4g}]" if m.ci_low is not None else ""
        value = "—" if m.value is None else f"{m.value:.6g}"  # a metric may have no value (e.g. nothing to time)
        print(f"  {m.name:28s} {arrow} {value} {m.unit}{ci}")


SHOWN_METRICS = 8


def _headline_order(names: list[str], rows: list[dict[str, Any]], primary: str | None) -> list[str]:
    """The primary metric first, then quality metrics (unitless or a quality unit), then the rest."""
    units = {n: next(r["metrics"][n].get("unit") or "" for r in rows if n in r["metrics"]) for n in names}
    cost = ("x", "s", "ms", "tokens/s", "img/s", "passes", "tokens", "MB", "files", "samples")
    return sorted(names, key=lambda n: (n != primary, units[n] in cost))


def format_table(records: list[dict[str, Any]], metrics: Sequence[str] | None = None, group: bool = False) -> str:
    """A plain-text table of runs: one row per run, one column per metric (the primary metric first).

    `metrics` picks the columns (["all"] for every one; default: the first 8); `group` splits each task by
    evaluation signature (the rows a board ranks together) and adds the settings that tell rows apart."""
    from harness.diff import distinguishing_settings

    if not records:
        return "no runs stored yet: try `arbench demo`."
    out = io.StringIO()
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    for task, rows in by_task.items():
        every = _headline_order(list(dict.fromkeys(n for r in rows for n in r["metrics"])), rows,
                                _primary_metric(task))
        if metrics and list(metrics) != ["all"]:
            names = [n for n in metrics if n in every]
        else:
            names = every if metrics else every[:SHOWN_METRICS]
        out.write(f"\n== {task} (v{rows[0]['task_version']})\n")
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault(r["eval_signature_hash"] if group else "", []).append(r)
        for index, (sig_hash, members) in enumerate(groups.items(), start=1):
            settings = distinguishing_settings([r["signature"] for r in members]) if group else None
            if group:
                out.write(f"-- protocol group P{index}: evaluation signature {sig_hash} ({len(members)} runs)\n")
            out.write(_table_lines(members, names, settings))
        hidden = [n for n in every if n not in names]
        if hidden:
            out.write(f"  ({len(hidden)} more metrics: {', '.join(hidden)}; --metrics NAME ... or --metrics all)\n")
    return out.getvalue()


def _primary_metric(task: str) -> str | None:
    from harness.registry import TASKS

    # from the registry's index, not the task's class: importing every task module (and torch) cost `show` 6 s
    entry = next((e for e in TASKS.entries() if e["name"] == task), None)  # None: a task only the store knows
    return entry.get("primary_metric") if entry else None


def _table_lines(rows: list[dict[str, Any]], names: list[str], settings: list[str] | None) -> str:
    header = ["run", "label", "source", "status"] + (["settings"] if settings is not None else [])
    arrows = {n: ("↑" if next(r["metrics"][n]["higher_is_better"] for r in rows if n in r["metrics"]) else "↓")
              for n in names if any(n in r["metrics"] for r in rows)}
    lines = [header + [f"{n} {arrows[n]}" for n in names if n in arrows]]
    for i, r in enumerate(rows):
        cells = [r["run_id"][:8], (r["label"] or r["method"] or "")[:28], r["source"], r["status"]]
        if settings is not None:
            cells.append(settings[i][:60])
        for n in names:
            if n in arrows:
                m = r["metrics"].get(n)
                cells.append("" if m is None or m["value"] is None else f"{m['value']:.4g}")
        lines.append(cells)
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(lines[0]))]
    return "".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() + "\n" for line in lines)


def cmd_show(args: argparse.Namespace) -> int:
    from harness.store import Store

    records = Store(args.db).records(task=args.task)
    if args.task and not records:
        print(f"no runs of task {args.task!r} stored; `arbench show` lists every task that has runs.")
        return 0
    print(format_table(records, metrics=args.metrics, group=args.group))
    return 0


EXPORT_COLUMNS = ["run_id", "task", "task_version", "method", "label", "source", "status", "metric", "value",
                  "ci_low", "ci_high", "higher_is_better", "unit", "metric_version", "eval_signature_hash",
                  "eval_signature", "signature_hash", "signature", "settings", "provenance", "created_at"]


def cmd_export(args: argparse.Namespace) -> int:
    from harness.store import Store

    records = Store(args.db).records(task=args.task)
    if args.format == "json":
        text = json.dumps(records, indent=2, ensure_ascii=False)
    else:  # one row per (run, metric); settings and provenance as JSON text in their cells
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(EXPORT_COLUMNS)
        for r in records:
            settings = json.dumps(r["settings"], sort_keys=True, ensure_ascii=False, default=str)
            prov = json.dumps(r["provenance"], sort_keys=True, ensure_ascii=False, default=str)
            for name, m in (r["metrics"] or {"": {}}).items():
                writer.writerow([r["run_id"], r["task"], r["task_version"], r["method"], r["label"], r["source"],
                                 r["status"], name, m.get("value"), m.get("ci_low"), m.get("ci_high"),
                                 m.get("higher_is_better"), m.get("unit"), m.get("version"),
                                 r["eval_signature_hash"], r["eval_signature"], r["signature_hash"], r["signature"],
                                 settings, prov, r["created_at"]])
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


def cmd_diff(args: argparse.Namespace) -> int:
    """What differs between two runs and whether their numbers compare (harness.diff)."""
    from harness.diff import diff_runs, resolve_run
    from harness.store import Store

    store = Store(args.db)
    result = diff_runs(resolve_run(store, args.a), resolve_run(store, args.b))
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, ensure_ascii=False, default=str))
    else:
        sys.stdout.write(result.to_text())
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


def port_in_use(address: str, port: int) -> str | None:
    """Why `address:port` cannot be listened on (None when it can): bound the way the server binds it."""
    import socket

    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"the address {address!r} does not resolve ({exc.strerror})"
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Tornado does
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                return f"{sockaddr[0]}:{port} is taken ({exc.strerror})"
    return None


def cmd_leaderboard(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.db:
        env["ARBENCH_DB_URL"] = args.db
    taken = port_in_use(args.address, args.port)
    if taken:
        raise ArbenchError(f"cannot serve the leaderboard: {taken}. Another leaderboard may already run there; "
                           f"open it, stop it, or pick a free port with --port {args.port + 1}.")
    # client.toolbarMode=viewer: visitors get no "Deploy" button or developer menu.
    cmd = [sys.executable, "-m", "streamlit", "run", str(LEADERBOARD_APP), "--server.headless", "true",
           "--server.address", args.address, "--server.port", str(args.port),
           "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"]
    print(f"starting the leaderboard on {args.address}:{args.port}; Streamlit prints its URL once it listens "
          f"(Ctrl-C stops it)", file=sys.stderr, flush=True)
    # Streamlit replaces this process, so a signal to `arbench leaderboard` (SIGTERM from a service manager
    # or `kill`) reaches the server itself instead of orphaning a child that keeps the port.
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


def cmd_reported(args: argparse.Namespace) -> int:
    """Load the curated paper-reported results into the store (idempotent)."""
    from harness.store import Store
    from harness.reported import DEFAULT_FILE, load_reported

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
    for info in TASKS.entries():
        if not info.get("offline"):
            continue
        name = info["name"]
        for method in info.get("demo_methods", ()):
            print(f"\n>>> arbench run {name} {method}", file=sys.stderr)
            runner.options.label = None
            try:
                result = runner.run(name, method, {})
                _print_result(result, runner.store.url)
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
    parser.add_argument("--db", default=None, help="database URL (default: $ARBENCH_DB_URL, else arbench.db in the "
                                                   "user's results folder: $ARBENCH_RESULTS, $ARBENCH_HOME/results or "
                                                   "~/.local/share/arbench)")
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
        p.add_argument("--repeat", action="store_true",
                       help="run again even if an identical request finished before, stored as a repeat linked to "
                            "the first run (for timing studies); without it the stored run is reported")

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

    p = sub.add_parser("show", help="a terminal table of stored results",
                       description="Stored runs per task, the primary metric first. --group splits each task "
                                   "into protocol groups (one evaluation signature each: the rows the board "
                                   "ranks together) and shows the settings that tell a group's rows apart.")
    p.add_argument("task", nargs="?")
    p.add_argument("--metrics", nargs="+", metavar="NAME",
                   help=f"these metric columns (`all` for every one; default: the first {SHOWN_METRICS})")
    p.add_argument("--group", action="store_true", help="group by evaluation signature, with differing settings")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("diff", help="what differs between two runs, and whether their numbers compare",
                       description="Signature, settings, provenance (hardware, packages, seeds, batch size) and "
                                   "metrics (values and versions) of run A against run B, with the verdict: "
                                   "comparable or not, and why. Ids may be shortened to an unambiguous prefix.")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--json", action="store_true", help="the diff as JSON")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("export", help="every run as a JSON or CSV record",
                       description="JSON: the full records. CSV: one row per run and metric, with the "
                                   "evaluation signature (the comparability key), full signature, settings and "
                                   "provenance (JSON text).")
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
                       description="Store the figures of harness/reported_results.toml as 'reported' rows. "
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

    p = sub.add_parser("demo", help="run every offline task on the bundled models and fill the database")
    runner_options(p)
    p.set_defaults(func=cmd_demo)

    # --db is accepted after the command too (`arbench run T M --db URL`); SUPPRESS keeps the value given
    # before the command when it is not repeated after it.
    for name, command in sub.choices.items():
        if name not in ("tasks", "methods", "weights"):
            command.add_argument("--db", default=argparse.SUPPRESS, help="database URL (as before the command)")
    return parser


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    if getattr(args, "no_progress", False):
        # The bars of libraries too (Hugging Face downloads, transformers' checkpoint loading, any tqdm): both
        # read these variables when first imported, which happens after this point.
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        os.environ["TQDM_DISABLE"] = "1"
    if args.db is None and args.command not in ("tasks", "methods", "weights"):
        from harness.config import old_database_note

        note = old_database_note()
        if note:
            print(note, file=sys.stderr)
    previous_handler = None
    if args.command in ("run", "score", "demo") and threading.current_thread() is threading.main_thread():
        # a polite kill (service manager, `kill`, torchrun stopping its ranks) stores the run as failed and
        # resumable, as Ctrl-C does, instead of leaving it `running`
        previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        code = args.func(args)
        if args.command in ("reported", "submit", "cancel", "retry", "worker"):  # run/score/demo say it themselves
            from harness.config import default_db_url
            from harness.store import mask_url

            print(f"database: {mask_url(args.db or default_db_url())}", file=sys.stderr)
        return code
    except ArbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; rerun the same command to resume.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


if __name__ == "__main__":
    sys.exit(main())
