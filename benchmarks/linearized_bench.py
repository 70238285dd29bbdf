"""Linearized LLaMA against its original: per-token decoding cost and state memory as the context grows, and the
`linearized-llm` strategy through the decoding-speedup task (speed beside quality under the original model).

    python benchmarks/linearized_bench.py                        # seeded random LLaMA pair (CPU, minutes)
    python benchmarks/linearized_bench.py --device cuda --original /models/Llama-2-7b-hf \\
        --linearized /models/llama-2-7b-aug-linear --prompts-file suite.jsonl --max-new 256 --length 4096

Without weights it builds a seeded random LLaMA (4 layers, d=256, 8 heads, vocab 1,000) and the same network with
augmented linear attention (seeded conv taps, global factor 1), saved in the released layout: the timings show the
mechanism (a KV cache that grows against a state that does not), not the released model's speed or quality, and the
quality numbers of a random pair mean nothing. Prints one JSON object (also written to --out).
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

from baselines.decoding.linearized import LinearizedLlama, conv_mask  # noqa: E402
from harness.protocols.decoding.hf import HFCausalLM  # noqa: E402
from harness.provenance import hardware_fingerprint  # noqa: E402
from harness.runner import RunOptions, Runner  # noqa: E402
from harness.store import Store  # noqa: E402
from harness.timing import synchronize  # noqa: E402


def random_pair(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A seeded random LLaMA and its linearized twin (same weights + conv taps and global factor)."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=8192,
                         eos_token_id=None, bos_token_id=1, pad_token_id=0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder / "original")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(seed + 1)
    for i in range(config.num_hidden_layers):
        prefix = f"model.layers.{i}.self_attn."
        state[prefix + "dwconv.weight"] = torch.randn(8, 1, 63, 1, generator=gen) * 0.05
        state[prefix + "conv_mask"] = conv_mask(63)
        state[prefix + "global_factor"] = torch.ones(1)
    (folder / "linearized").mkdir()
    config.save_pretrained(folder / "linearized")
    save_file(state, str(folder / "linearized" / "model.safetensors"))
    return folder / "original", folder / "linearized"


def state_bytes(cache) -> int:
    if hasattr(cache, "layers") and cache.layers and hasattr(cache.layers[0], "kv"):  # LinearState
        return sum(t.numel() * t.element_size() for s in cache.layers for t in (s.kv, s.keys, s.values, s.tail)
                   if t is not None)
    return sum(l.keys.numel() * l.keys.element_size() + l.values.numel() * l.values.element_size()
               for l in cache.layers)


@torch.inference_mode()
def step_costs(model, length: int, device: str, repeats: int = 3) -> dict:
    """Median decoding-step time near token 16 and near token `length`, and the state size at `length`."""
    early, late, size = [], [], 0
    for _ in range(repeats):
        cache = model.new_cache(1, length + 8)
        token = model.forward(torch.tensor([[1, 5, 9, 2]], device=device), cache).logits[:, -1].argmax(-1)
        for i in range(length):
            synchronize(device)
            start = time.perf_counter()
            token = model.forward(token[:, None], cache).logits[:, -1].argmax(-1)
            synchronize(device)
            if 8 <= i < 24:
                early.append(time.perf_counter() - start)
            elif i >= length - 16:
                late.append(time.perf_counter() - start)
        size = state_bytes(cache)
    e, l = statistics.median(early), statistics.median(late)
    return {"ms_per_token_at_16": 1e3 * e, f"ms_per_token_at_{length}": 1e3 * l, "ratio": l / e,
            f"state_mb_at_{length}": size / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original", help="the original LLaMA's HF folder (default: a seeded random one)")
    parser.add_argument("--linearized", help="the linearized model's folder (released layout)")
    parser.add_argument("--prompts-file", help="a category suite (JSONL) for the task run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--length", type=int, default=1024, help="context length of the step-cost measurement")
    parser.add_argument("--max-new", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/linearized.json"))
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        original, linearized = (Path(args.original), Path(args.linearized)) if args.original else random_pair(tmp)
        report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "hardware": hardware_fingerprint(args.device), "random_pair": not args.original}
        ar = HFCausalLM.load(original, args.device)
        report["ar_steps"] = step_costs(ar, args.length, args.device)
        del ar
        lin = LinearizedLlama.load(linearized, device=args.device)
        report["linearized_steps"] = step_costs(lin, args.length, args.device)
        del lin
        print(json.dumps(report), flush=True)
        prompts = Path(args.prompts_file) if args.prompts_file else tmp / "prompts.jsonl"
        if not args.prompts_file:
            gen = torch.Generator().manual_seed(0)
            prompts.write_text("".join(json.dumps({"id": f"p{i}", "category": ["qa", "math_reasoning"][i % 2],
                                                   "prompt_ids": torch.randint(2, 1000, (24,), generator=gen).tolist()})
                                       + "\n" for i in range(4)))
        runner = Runner(Store(f"sqlite:///{tmp}/bench.db"), RunOptions(progress=False, device=args.device))
        result = runner.run("decoding-speedup", "linearized-llm",
                            {"model": str(original), "linearized_model": str(linearized), "prompts": str(prompts),
                             "max_new_tokens": args.max_new, "batch_sizes": [1], "rounds": args.rounds,
                             "warmup": 1})
        report["task"] = {m.name: [m.value, m.ci_low, m.ci_high] for m in result.metrics}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
