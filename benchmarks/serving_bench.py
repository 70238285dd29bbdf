"""Serving benchmark: Flover's temporal fusion against request-level (static) batching on the same Poisson
arrival traces, with the bundled tiny-kjv target on the slot engine (harness/protocols/decoding/serving.py).

    python benchmarks/serving_bench.py [--requests 32] [--rates 4,8,16] [--max-batch 8] [--rounds 3]
                                       [--device cpu|cuda] [--out FILE]

Each request is a bundled prompt with its own output length (seeded, 16..96 tokens: the mix of short and long
requests is what static batching handles badly). For every arrival rate, both policies serve the same trace,
alternating which goes first over `--rounds` rounds; the clock is real while the engine computes and jumps
over idle time. Reports per policy the median over rounds of mean / p90 latency, mean time to first token and
throughput, and the ratios (fusion over static) within each round. Every output is checked against greedy
decoding of its request alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from baselines.decoding.ar import ar_decode  # noqa: E402
from baselines.decoding.flover import TemporalFusion  # noqa: E402
from harness.protocols.decoding.bundled import BUNDLED_PROMPTS, load_model, read_prompts  # noqa: E402
from harness.protocols.decoding.serving import (Clock, RequestBatching, ServingRequest, SlotEngine,  # noqa: E402
                                                poisson_arrivals, serve, summarize)
from harness.provenance import hardware_fingerprint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--rates", default="4,8,16", help="arrival rates, requests per second")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serving.json"))
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    target = load_model("tiny-kjv-target", args.device)
    prompts = [r["ids"] for r in read_prompts(BUNDLED_PROMPTS)]
    rng = np.random.default_rng(0)
    lengths = rng.integers(16, 97, size=args.requests).tolist()
    chosen = [prompts[i % len(prompts)] for i in range(args.requests)]
    greedy = {}
    for i, (p, n) in enumerate(zip(chosen, lengths)):
        greedy[str(i)] = ar_decode(target, torch.tensor([p]), n, device=args.device).tokens[0]
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "hardware": hardware_fingerprint(args.device), "requests": args.requests, "max_batch": args.max_batch,
              "rounds": args.rounds, "rates": []}
    policies = [RequestBatching(args.max_batch), TemporalFusion(args.max_batch)]
    for rate in [float(r) for r in args.rates.split(",")]:
        arrivals = poisson_arrivals(args.requests, rate, seed=1)
        trace = [ServingRequest(str(i), a, tuple(p), n) for i, (p, n, a) in enumerate(zip(chosen, lengths, arrivals))]
        runs: dict[str, list[dict]] = {p.name: [] for p in policies}
        for r in range(args.rounds):
            for policy in (policies if r % 2 == 0 else policies[::-1]):
                clock = Clock()
                served = serve(policy, SlotEngine(target, args.max_batch, 512), trace, clock)
                bad = [s.request.id for s in served if s.tokens != greedy[s.request.id]]
                if bad:
                    raise SystemExit(f"{policy.name}: requests {bad[:5]} differ from greedy decoding alone")
                runs[policy.name].append(summarize(served, clock))
        static, fused = (runs[p.name] for p in policies)
        row = {"rate": rate, "policies": {name: {k: statistics.median(x[k] for x in rs) for k in rs[0]}
                                          for name, rs in runs.items()},
               "latency_ratio": statistics.median(f["latency_mean_s"] / s["latency_mean_s"]
                                                  for s, f in zip(static, fused)),
               "throughput_ratio": statistics.median(f["tokens_per_s"] / s["tokens_per_s"]
                                                     for s, f in zip(static, fused))}
        report["rates"].append(row)
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))


def table(report: dict) -> str:
    lines = ["| rate (req/s) | policy | mean latency s | p90 latency s | mean TTFT s | tokens/s | busy | "
             "fusion/static latency | fusion/static throughput |", "|" + "---|" * 9]
    for row in report["rates"]:
        for i, (name, m) in enumerate(row["policies"].items()):
            ratios = (f"{row['latency_ratio']:.2f} | {row['throughput_ratio']:.2f}" if i == 1 else " | ")
            lines.append(f"| {row['rate']:g} | {name} | {m['latency_mean_s']:.2f} | {m['latency_p90_s']:.2f} | "
                         f"{m['ttft_mean_s']:.2f} | {m['tokens_per_s']:.0f} | {m['busy_fraction']:.2f} | {ratios} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
