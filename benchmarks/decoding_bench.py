"""Decoding benchmark on the bundled tiny-kjv models (CPU): the KV-cache flatness check and every
strategy's speedup over AR decoding, run through the `decoding-speedup-mini` task protocol.

    python benchmarks/decoding_bench.py [--prompts 16] [--max-new 96] [--rounds 3] [--out FILE]

Targets (issue #4): AR cost per token at most 1.2x between token 16 and token 512; speculative
decoding >= 1.8x at batch size 1 with 100% exact match to greedy. Prints a Markdown table and
writes the raw numbers as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.protocols.decoding.bundled import BUNDLED_PROMPTS, load_model, read_prompts  # noqa: E402
from harness.provenance import device_info, hardware_fingerprint  # noqa: E402
from harness.runner import RunOptions, Runner  # noqa: E402
from harness.store import Store  # noqa: E402
from harness.timing import synchronize  # noqa: E402

STRATEGIES = [
    ("ar", {}),
    ("speculative", {"k": 4}),
    ("speculative", {"k": 6}),
    ("blockwise", {"block": 4}),
    ("blockwise", {"block": 4, "method.top_k": 3}),
    ("jacobi", {"window": 4}),
    ("early-exit", {"max_layers": 8, "min_layers": 4, "full_depth_tokens": 4, "decay_tokens": 64}),
]


def kv_flatness(repeats: int = 5, length: int = 520) -> dict:
    """Per-token AR step cost around token 16 and token 512 (median of steps 8-24 and 504-520)."""
    model = load_model("tiny-kjv-target")
    prompt = torch.tensor([read_prompts(BUNDLED_PROMPTS)[0]["ids"]])
    early, late = [], []
    for _ in range(repeats):
        cache = model.new_cache(1, prompt.shape[1] + length + 1)
        token = model.forward(prompt, cache).logits[:, -1].argmax(-1)
        for i in range(length):
            synchronize("cpu")
            start = time.perf_counter()
            token = model.forward(token[:, None], cache).logits[:, -1].argmax(-1)
            seconds = time.perf_counter() - start
            if 8 <= i < 24:
                early.append(seconds)
            elif 504 <= i < 520:
                late.append(seconds)
    e, l = statistics.median(early), statistics.median(late)
    return {"ms_per_token_at_16": 1e3 * e, "ms_per_token_at_512": 1e3 * l, "ratio_512_over_16": l / e}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,4,16")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/decoding.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "hardware": hardware_fingerprint("cpu"), "device": device_info("cpu"),
              "kv_flatness": kv_flatness(), "strategies": []}
    print(f"KV cache flatness: {report['kv_flatness']}", flush=True)
    base = {"max_prompts": args.prompts, "max_new_tokens": args.max_new, "rounds": args.rounds, "warmup": 2,
            "batch_sizes": [int(b) for b in args.batch_sizes.split(",")]}
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(Store(f"sqlite:///{tmp}/bench.db"), RunOptions(progress=False, device="cpu"))
        for name, settings in STRATEGIES:
            result = runner.run("decoding-speedup-mini", name, {**base, **settings})
            row = {"strategy": name, "settings": settings,
                   "metrics": {m.name: [m.value, m.ci_low, m.ci_high] for m in result.metrics}}
            report["strategies"].append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))


def table(report: dict) -> str:
    def fmt(m, key, digits=2):
        value = m.get(key, [None])[0]
        return "-" if value is None else f"{value:.{digits}f}"

    lines = ["| strategy | settings | speedup bs1 [95% CI] | bs4 | bs16 | exact match | passes/token | "
             "accepted/step | tokens/s | TTFT ms | TPOT ms |", "|" + "---|" * 11]
    for row in report["strategies"]:
        m = row["metrics"]
        s = m["speedup"]
        settings = ", ".join(f"{k.removeprefix('method.')}={v}" for k, v in row["settings"].items()) or "greedy"
        lines.append(f"| {row['strategy']} | {settings} | {s[0]:.2f} [{s[1]:.2f}, {s[2]:.2f}] | "
                     f"{fmt(m, 'speedup_bs4')} | {fmt(m, 'speedup_bs16')} | {fmt(m, 'exact_match_rate')} | "
                     f"{fmt(m, 'forward_passes_per_token')} | {fmt(m, 'mean_accepted_tokens')} | "
                     f"{fmt(m, 'tokens_per_s', 0)} | {fmt(m, 'ttft_ms')} | {fmt(m, 'tpot_ms')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
