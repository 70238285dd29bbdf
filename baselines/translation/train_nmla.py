"""Fine-tune the bundled CTC NAT with NMLA's bag-of-bigrams objective (Shao & Feng, 2022) on nat-mini.

    python -m baselines.translation.train_nmla --steps 300      # writes checkpoints/nmla.safetensors

As upstream's README does (ictnlp/NMLA-NAT@62c4d87): start from a CTC model trained with the CTC loss
(here `checkpoints/ctc.safetensors`, written by `python -m baselines.translation.train --only ctc`),
reset the optimiser and train on the same distilled data with the NMLA loss alone (`--use-ngram
--ngram-size 2`, no CTC term). Upstream fine-tunes WMT14 for 6,000 updates of ~32k tokens at lr 3e-4
(inverse square root, 500 warm-up updates, dropout 0.1); here the project's schedule (linear warm-up, linear
decay), batches of 64 sentences, dropout 0.1 (the model's), one CPU thread, for `--steps` updates.
The distilled targets are those of `train.py` (`--work`; re-distilled with the AR checkpoint if absent).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from baselines.translation.ar import ARTransformer
from baselines.translation.checkpoint import CHECKPOINT_DIR, load_weights, read_metadata, save_checkpoint
from baselines.translation.ctc import CTCNAT
from baselines.translation.layers import parameter_count
from baselines.translation.nmla import nmla_loss
from baselines.translation.train import LANGPAIR, TrainConfig, corpus_bleu, distilled_pairs, train
from baselines.translation.vocab import tokenize
from harness.datasets.en_de_corpus import build_splits
from harness.errors import ArbenchError
from harness.provenance import sha256_file


def main() -> None:
    parser = argparse.ArgumentParser(description="Fine-tune the nat-mini CTC NAT with the NMLA bigram objective.")
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR)
    parser.add_argument("--init", type=Path, default=CHECKPOINT_DIR / "ctc.safetensors", help="the CTC model to start from")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--work", type=Path, default=Path("results/nat-mini-train"),
                        help="folder with (or for) the distilled training targets")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig(steps=args.steps, lr=args.lr, warmup=args.warmup)
    meta = read_metadata(args.init)
    if meta["kind"] != "ctc":
        raise ArbenchError(f"{args.init} holds a {meta['kind']!r} model; NMLA fine-tunes a 'ctc' checkpoint.")
    vocab = meta["vocab"]
    splits = build_splits()
    train_pairs = [(vocab.encode(tokenize(en, "en")), vocab.encode(tokenize(de, "de"))) for en, de in splits["train"]]
    ar = load_weights(ARTransformer(read_metadata(CHECKPOINT_DIR / "ar.safetensors")["config"]),
                      CHECKPOINT_DIR / "ar.safetensors")
    kd_pairs = distilled_pairs(ar, train_pairs, vocab, args.work)

    model = load_weights(CTCNAT(meta["config"], upsample=meta["model"]["upsample"]), args.init)
    before = corpus_bleu(model.translate, splits["valid"], vocab)
    start = time.perf_counter()
    train(model, lambda m, s, t: nmla_loss(m, s, t, vocab, ngram=2), kd_pairs, vocab, cfg, False, "nmla")
    seconds = time.perf_counter() - start
    valid = corpus_bleu(model.translate, splits["valid"], vocab)
    training = {**meta["training"], "pretraining": {k: meta["training"].get(k) for k in ("steps", "lr", "warmup")},
                "init": args.init.name, "init_sha256": sha256_file(args.init), "objective": "nmla bag-of-bigrams",
                "steps": cfg.steps, "lr": cfg.lr, "warmup": cfg.warmup, "batch_size": cfg.batch_size,
                "seed": cfg.seed, "optimizer": "adam, reset", "label_smoothing": 0.0}
    save_checkpoint(model, args.out / "nmla.safetensors", "nmla", meta["config"], vocab, LANGPAIR, training,
                    meta["model"])
    report = {"parameters": parameter_count(model), "valid_bleu": round(valid, 2),
              "valid_bleu_init": round(before, 2), "train_seconds": round(seconds), **training}
    (args.out / "nmla.report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"[nmla] valid BLEU {before:.2f} (ctc) -> {valid:.2f} after {cfg.steps} steps, {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
