"""How long the light `arbench` commands take, start to exit, each in a fresh Python process.

    python benchmarks/cli_startup_bench.py [--repeat 5] [--cold] [--out FILE]

Target (issue #17): `arbench tasks`, `methods`, `show`, `export` and a refused typo in a task or method name
under 1 s. They read the registry's index (harness/registry.py) and the store, and import no plugin, so no
torch. `--cold` also times `arbench tasks` once with an empty index folder (what the first command after an
install or an edit of a plugin file costs: every plugin is imported and the index written). The store is a
temporary SQLite file holding the paper-reported rows (`arbench reported load`). Prints a Markdown table
(median and range over the repeats) and the load average, and writes the raw times as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

COMMANDS = [
    ("python -c pass (interpreter alone)", None),
    ("arbench --help", ["--help"]),
    ("arbench tasks", ["tasks"]),
    ("arbench methods", ["methods"]),
    ("arbench show", ["show"]),
    ("arbench export --format json", ["export", "--format", "json"]),
    ("arbench export --format csv", ["export", "--format", "csv"]),
    ("arbench run imagenet-256 ar (typo: refused)", ["run", "imagenet-256", "ar"]),
    ("arbench run imagenet256-c2i llamagen-bb (typo: refused)", ["run", "imagenet256-c2i", "llamagen-bb"]),
]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return time.perf_counter() - start, done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="also time one `arbench tasks` with no index")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cli_startup.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="arbench-cli-bench-") as tmp:
        env = {**os.environ, "ARBENCH_DB_URL": f"sqlite:///{tmp}/bench.db",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        cli = [sys.executable, "-m", "harness"]
        subprocess.run([*cli, "reported", "load"], env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        results: dict[str, dict] = {}
        if args.cold:
            cold_env = {**env, "ARBENCH_HOME": f"{tmp}/home"}
            seconds, rc = timed([*cli, "tasks"], cold_env)
            results["arbench tasks, no index yet (imports every plugin)"] = {"times": [seconds], "rc": rc}
        timed([*cli, "tasks"], env)  # make sure the index exists and matches the files
        load_before = os.getloadavg()
        for label, command in COMMANDS:
            argv = [sys.executable, "-c", "pass"] if command is None else [*cli, *command]
            times, rc = [], 0
            for _ in range(args.repeat):
                seconds, rc = timed(argv, env)
                times.append(seconds)
            results[label] = {"times": times, "rc": rc}
        load_after = os.getloadavg()

    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"CLI start-to-exit times, {when}, {machine}; load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after\n")
    print("| command | median s | min-max s | exit |")
    print("|---|---|---|---|")
    for label, r in results.items():
        t = r["times"]
        print(f"| {label} | {statistics.median(t):.2f} | {min(t):.2f}-{max(t):.2f} | {r['rc']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"when": when, "machine": machine, "load_before": load_before,
                                    "load_after": load_after, "results": results}, indent=2) + "\n")
    light = [r for label, r in results.items() if label.startswith("arbench") and "no index" not in label]
    return 0 if all(statistics.median(r["times"]) < 1.0 for r in light) else 1


if __name__ == "__main__":
    sys.exit(main())
