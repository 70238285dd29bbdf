"""Decoding benchmark: the KV-cache flatness check and every registered strategy's speedup over AR decoding,
run through the decoding-speedup task protocol, on the CPU or a GPU, in one command.

    python benchmarks/decoding_bench.py [--prompts 16] [--max-new 96] [--rounds 3] [--out FILE]
    python benchmarks/decoding_bench.py --device cuda --batch-sizes 1,4,16,64            # bundled pair on a GPU
    python benchmarks/decoding_bench.py --device cuda --model DIR --draft DIR [--prompts-file FILE]  # an HF pair

Without `--model` it runs `decoding-speedup-mini` (the bundled tiny-kjv pair and suite); with it, `decoding-speedup`
on a Hugging Face causal-LM folder (and a draft folder with the same tokenizer). On CUDA every row also has the
speedup by CUDA events and the peak GPU memory of the strategy and of the AR baseline (harness/timing.py).

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
    ("prompt-lookup", {}),
    ("lookahead", {}),
    ("ffn-skip", {}),
]
#: Strategies that need the bundled GPT's internals (layer exits trained for it); skipped on an HF pair.
BUNDLED_ONLY = {"early-exit"}


def kv_flatness(repeats: int = 5, length: int = 520, device: str = "cpu") -> dict:
    """Per-token AR step cost around token 16 and token 512 (median of steps 8-24 and 504-520)."""
    model = load_model("tiny-kjv-target", device)
    prompt = torch.tensor([read_prompts(BUNDLED_PROMPTS)[0]["ids"]], device=device)
    early, late = [], []
    for _ in range(repeats):
        cache = model.new_cache(1, prompt.shape[1] + length + 1)
        token = model.forward(prompt, cache).logits[:, -1].argmax(-1)
        for i in range(length):
            synchronize(device)
            start = time.perf_counter()
            token = model.forward(token[:, None], cache).logits[:, -1].argmax(-1)
            synchronize(device)
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
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON results (default benchmarks/results/decoding[-DEVICE].json)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", help="a Hugging Face causal-LM folder (default: the bundled tiny-kjv pair)")
    parser.add_argument("--draft", help="the draft model's folder for --model (same tokenizer)")
    parser.add_argument("--prompts-file", help="a category suite (JSONL) for --model")
    parser.add_argument("--strategies", help="comma-separated strategy names (default: all in STRATEGIES)")
    args = parser.parse_args()
    device = args.device
    out = args.out or Path(f"benchmarks/results/decoding{'' if device == 'cpu' else '-' + device.split(':')[0]}.json")
    if device == "cpu":
        torch.set_num_threads(1)
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "hardware": hardware_fingerprint(device), "device": device_info(device),
              "kv_flatness": kv_flatness(device=device), "strategies": []}
    print(f"KV cache flatness: {report['kv_flatness']}", flush=True)
    base = {"max_prompts": args.prompts, "max_new_tokens": args.max_new, "rounds": args.rounds, "warmup": 2,
            "batch_sizes": [int(b) for b in args.batch_sizes.split(",")]}
    task = "decoding-speedup-mini"
    if args.model:
        task = "decoding-speedup"
        base.update(model=args.model, **({"draft_model": args.draft} if args.draft else {}),
                    **({"prompts": args.prompts_file} if args.prompts_file else {}))
    wanted = set(args.strategies.split(",")) if args.strategies else None
    chosen = [(n, st) for n, st in STRATEGIES if (wanted is None or n in wanted)
              and not (args.model and n in BUNDLED_ONLY) and not (args.model and not args.draft and n == "speculative")]
    report["task"] = task
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(Store(f"sqlite:///{tmp}/bench.db"), RunOptions(progress=False, device=device))
        for name, settings in chosen:
            result = runner.run(task, name, {**base, **settings})
            row = {"strategy": name, "settings": settings,
                   "metrics": {m.name: [m.value, m.ci_low, m.ci_high] for m in result.metrics}}
            report["strategies"].append(row)
            print(json.dumps(row), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))


def table(report: dict) -> str:
    def fmt(m, key, digits=2):
        value = m.get(key, [None])[0]
        return "-" if value is None else f"{value:.{digits}f}"

    lines = ["| strategy | settings | speedup bs1 [95% CI] | bs4 | bs16 | exact match | passes/token | "
             "accepted/step | tokens/s | TTFT ms | TPOT ms | CUDA-event speedup | peak MB (AR) |", "|" + "---|" * 13]
    for row in report["strategies"]:
        m = row["metrics"]
        s = m["speedup"]
        settings = ", ".join(f"{k.removeprefix('method.')}={v}" for k, v in row["settings"].items()) or "greedy"
        lines.append(f"| {row['strategy']} | {settings} | {s[0]:.2f} [{s[1]:.2f}, {s[2]:.2f}] | "
                     f"{fmt(m, 'speedup_bs4')} | {fmt(m, 'speedup_bs16')} | {fmt(m, 'exact_match_rate')} | "
                     f"{fmt(m, 'forward_passes_per_token')} | {fmt(m, 'mean_accepted_tokens')} | "
                     f"{fmt(m, 'tokens_per_s', 0)} | {fmt(m, 'ttft_ms')} | {fmt(m, 'tpot_ms')} | "
                     f"{fmt(m, 'speedup_cuda_events')} | {fmt(m, 'peak_memory_mb', 0)} "
                     f"({fmt(m, 'baseline_peak_memory_mb', 0)}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
