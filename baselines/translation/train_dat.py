"""Train the bundled nat-mini DA-Transformer on the AR model's distilled targets (CPU, one thread).

    python -m baselines.translation.train_dat [--steps 1200] [--upsample 4]

Same corpus, vocabulary, optimiser, schedule, batching and seed as `baselines.translation.train` (whose
`train`, `translate_all` and `corpus_bleu` it reuses); the distilled targets are those of the bundled AR
checkpoint (greedy), regenerated into `--work` if missing. Loss: the DAG loss of `dag.py` (no glancing, no
label smoothing). Writes `checkpoints/dat.safetensors` and `dat.report.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from baselines.translation.ar import ARTransformer
from baselines.translation.checkpoint import CHECKPOINT_DIR, load_weights, save_checkpoint
from baselines.translation.dag import DEFAULT_UPSAMPLE, DATransformer
from baselines.translation.layers import parameter_count
from baselines.translation.train import LANGPAIR, TrainConfig, corpus_bleu, distilled_pairs, nat_mini_data, train


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the bundled nat-mini DA-Transformer.")
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR)
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--upsample", type=int, default=DEFAULT_UPSAMPLE)
    parser.add_argument("--work", type=Path, default=Path("results/nat-mini-train"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig(steps=args.steps)
    splits, vocab, model_cfg, train_pairs = nat_mini_data()
    ar = load_weights(ARTransformer(model_cfg), CHECKPOINT_DIR / "ar.safetensors")
    kd_pairs = distilled_pairs(ar, train_pairs, vocab, args.work)

    model = DATransformer(model_cfg, upsample=args.upsample)
    start = time.perf_counter()
    train(model, lambda m, s, t: m.loss(s, t, vocab), kd_pairs, vocab, cfg, False, "dat")
    seconds = time.perf_counter() - start
    valid = {s: round(corpus_bleu(lambda src, s=s: model.translate(src, s), splits["valid"], vocab), 2)
             for s in ("greedy", "lookahead")}
    training = {"corpus": "nat-mini (harness/datasets/en_de_corpus.py)", "train_pairs": len(train_pairs),
                "steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr, "warmup": cfg.warmup,
                "label_smoothing": 0.0, "glancing": "none", "seed": cfg.seed, "checkpoint_averaging": "none",
                "data": "distilled", "distilled": True, "teacher": "ar (greedy)"}
    save_checkpoint(model, args.out / "dat.safetensors", "dat", model_cfg, vocab, LANGPAIR, training,
                    {"upsample": args.upsample})
    report = {"parameters": parameter_count(model), "valid_bleu": valid, "train_seconds": round(seconds),
              "upsample": args.upsample, "steps": cfg.steps}
    (args.out / "dat.report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"[dat] valid BLEU {valid}, {parameter_count(model)} parameters, {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
