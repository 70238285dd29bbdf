"""The nat-mini table: BLEU, chrF++, legacy tokenized BLEU, batch-1 latency and max-batch throughput of the
bundled AR and NAT translators, each timed against the AR greedy baseline in the same process.

    python benchmarks/translation_nat_mini.py [--out table.md] [--only METHOD ...]

Runs through the normal runner into a throw-away SQLite database and prints a Markdown table with the
machine and date; the numbers in docs/translation.md come from this script.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
from pathlib import Path

import torch

from harness.runner import RunOptions, Runner
from harness.store import Store

SYSTEMS = [
    ("ar-transformer", {}),
    ("ar-transformer", {"beam": 4}),
    ("vanilla-nat", {}),
    ("vanilla-nat", {"length_beam": 3}),
    ("ctc-nat", {}),
    ("nmla-ctc", {}),
    ("cmlm", {"iterations": 4, "length_beam": 3}),
    ("cmlm", {"iterations": 10, "length_beam": 3}),
    ("da-transformer", {"decode_strategy": "greedy"}),
    ("da-transformer", {"decode_strategy": "lookahead"}),
    ("da-transformer", {"decode_strategy": "beamsearch"}),
]
COLUMNS = ["bleu", "bleu_delta_vs_baseline", "chrf_pp", "legacy_tok_bleu", "latency_b1_ms", "speedup_b1", "throughput_sent_s",
           "speedup_max_batch"]


def _cell(metric) -> str:
    if metric is None:
        return ""
    text = f"{metric.value:.2f}"
    if metric.ci_low is not None and metric.name != "bleu" and metric.name != "chrf_pp":
        text += f" [{metric.ci_low:.2f}, {metric.ci_high:.2f}]"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--latency-sentences", type=int, default=100)
    parser.add_argument("--only", nargs="*", default=None, help="run only these methods' rows")
    args = parser.parse_args()
    rows = ["| method | settings | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 2)]
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(Store(f"sqlite:///{tmp}/bench.db"), RunOptions(progress=False, batch_size=64))
        for method, settings in SYSTEMS:
            if args.only is not None and method not in args.only:
                continue
            result = runner.run("nat-mini", method, {**settings, "latency_sentences": args.latency_sentences})
            values = {m.name: m for m in result.metrics}
            label = ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults"
            rows.append(f"| {method} | {label} | " + " | ".join(_cell(values.get(c)) for c in COLUMNS) + " |")
    header = (f"nat-mini, {datetime.date.today()}, {platform.machine()} CPU ({os.cpu_count()} cores), "
              f"torch {torch.__version__}, 1 torch thread (the task's `threads` setting), latency over "
              f"{args.latency_sentences} sentences, throughput over the 500-sentence test set")
    text = header + "\n\n" + "\n".join(rows) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
