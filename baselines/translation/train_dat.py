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
from baselines.translation.layers import TransformerConfig, parameter_count
from baselines.translation.train import LANGPAIR, TrainConfig, corpus_bleu, train, translate_all
from baselines.translation.vocab import Vocabulary, tokenize
from harness.datasets.en_de_corpus import build_splits


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the bundled nat-mini DA-Transformer.")
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR)
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--upsample", type=int, default=DEFAULT_UPSAMPLE)
    parser.add_argument("--work", type=Path, default=Path("results/nat-mini-train"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig(steps=args.steps)
    splits = build_splits()
    tokenized = {k: [(tokenize(en, "en"), tokenize(de, "de")) for en, de in v] for k, v in splits.items()}
    vocab = Vocabulary.build([s for en, de in tokenized["train"] for s in (en, de)])
    model_cfg = TransformerConfig(vocab_size=len(vocab))
    train_pairs = [(vocab.encode(en), vocab.encode(de)) for en, de in tokenized["train"]]
    distilled_path = args.work / "distilled.json"
    if not distilled_path.is_file():
        ar = load_weights(ARTransformer(model_cfg), CHECKPOINT_DIR / "ar.safetensors")
        start = time.perf_counter()
        distilled = translate_all(ar.greedy, [src for src, _ in train_pairs], vocab)
        print(f"distilled {len(distilled)} targets in {time.perf_counter() - start:.0f} s", flush=True)
        args.work.mkdir(parents=True, exist_ok=True)
        distilled_path.write_text(json.dumps(distilled))
    distilled = json.loads(distilled_path.read_text())
    kd_pairs = [(src, tgt if tgt else ref) for (src, ref), tgt in zip(train_pairs, distilled)]

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
