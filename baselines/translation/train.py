"""Train the bundled nat-mini translators on the CPU: the AR teacher, then three NATs on its distilled data.

    python -m baselines.translation.train            # writes baselines/translation/checkpoints/*.safetensors

1. Build the nat-mini corpus (`corpus.build_splits`, 20,000 training pairs) and a joint word vocabulary.
2. Train the AR Transformer on the original targets.
3. Sequence-level knowledge distillation (Kim & Rush, 2016): translate the training sources with the AR
   model (greedy) and use its outputs as targets for the NAT models, as NAT papers do.
4. Train the vanilla NAT, the CTC NAT and the CMLM on the distilled targets.

Every run is seeded (torch, data order, masks) and single-threaded (one BLAS thread: oversubscribed
threads slow a shared CPU down many times). `--only nat ctc cmlm` trains the NATs alone, from the
distilled targets the AR stage left in `--work`; the three can run as parallel processes.
Checkpoint averaging is not used (recorded as such in each checkpoint).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from baselines.translation.ar import ARTransformer
from baselines.translation.checkpoint import CHECKPOINT_DIR, save_checkpoint
from baselines.translation.cmlm import CMLM
from harness.datasets.en_de_corpus import build_splits
from baselines.translation.ctc import CTCNAT
from baselines.translation.layers import TransformerConfig, parameter_count
from baselines.translation.nat import VanillaNAT
from baselines.translation.vocab import Vocabulary, detokenize, tokenize
from harness.metrics.text import bleu_score

LANGPAIR = "en-de"


@dataclass
class TrainConfig:
    """Optimisation settings shared by the four models."""

    steps: int = 1200
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 150
    epsilon: float = 0.1
    seed: int = 1


def batches(pairs: list[tuple[list[int], list[int]]], batch_size: int, rng: random.Random):
    """Endless shuffled batches of similar source length (less padding)."""
    while True:
        order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]), rng.random()))
        chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        rng.shuffle(chunks)
        yield from chunks


def train(model: torch.nn.Module, loss_fn: Callable, pairs, vocab: Vocabulary, cfg: TrainConfig,
          target_eos: bool, name: str) -> None:
    """Adam with linear warm-up and linear decay to zero over `cfg.steps`."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-9)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / cfg.warmup, max(0.0, (cfg.steps - s) / (cfg.steps - cfg.warmup))))
    model.train()
    start = time.perf_counter()
    stream = batches(pairs, cfg.batch_size, rng)
    for step in range(1, cfg.steps + 1):
        chunk = next(stream)
        src = vocab.batch([pairs[i][0] for i in chunk])
        tgt = vocab.batch([pairs[i][1] for i in chunk], eos=target_eos)
        loss = loss_fn(model, src, tgt)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 250 == 0 or step == 1:
            print(f"[{name}] step {step}/{cfg.steps} loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    model.eval()


def translate_all(translate: Callable[[torch.Tensor], list[list[int]]], sources: list[list[int]], vocab: Vocabulary,
                  batch_size: int = 256) -> list[list[int]]:
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[list[int]] = [[] for _ in sources]
    for i in range(0, len(order), batch_size):
        chunk = order[i:i + batch_size]
        for j, ids in zip(chunk, translate(vocab.batch([sources[j] for j in chunk]))):
            out[j] = ids
    return out


def corpus_bleu(translate, pairs_text, vocab: Vocabulary) -> float:
    sources = [vocab.encode(tokenize(en, "en")) for en, _ in pairs_text]
    hyps = [detokenize(vocab.decode(ids), "de") for ids in translate_all(translate, sources, vocab)]
    return bleu_score(hyps, [de for _, de in pairs_text]).score


def distilled_pairs(ar: ARTransformer, train_pairs, vocab: Vocabulary, work: Path, refresh: bool = False):
    """(source, AR greedy output) training pairs, read from `work`/distilled.json or distilled now (and saved);
    an empty AR output falls back to the original target."""
    distilled_path = work / "distilled.json"
    if refresh or not distilled_path.is_file():
        start = time.perf_counter()
        distilled = translate_all(ar.greedy, [src for src, _ in train_pairs], vocab)
        print(f"distilled {len(distilled)} targets in {time.perf_counter() - start:.0f} s", flush=True)
        work.mkdir(parents=True, exist_ok=True)
        distilled_path.write_text(json.dumps(distilled))
    distilled = json.loads(distilled_path.read_text())
    return [(src, tgt if tgt else ref) for (src, ref), tgt in zip(train_pairs, distilled)]


def nat_mini_data():
    """nat-mini's splits, the vocabulary built on its training side, the model config for that vocabulary and
    the encoded training pairs (what every nat-mini training script starts from)."""
    splits = build_splits()
    tokenized = {k: [(tokenize(en, "en"), tokenize(de, "de")) for en, de in v] for k, v in splits.items()}
    vocab = Vocabulary.build([s for en, de in tokenized["train"] for s in (en, de)])
    train_pairs = [(vocab.encode(en), vocab.encode(de)) for en, de in tokenized["train"]]
    return splits, vocab, TransformerConfig(vocab_size=len(vocab)), train_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the bundled nat-mini translators.")
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR)
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--work", type=Path, default=Path("results/nat-mini-train"),
                        help="folder for the distilled training targets")
    parser.add_argument("--only", nargs="*", default=["ar", "nat", "ctc", "cmlm"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = TrainConfig(steps=args.steps)
    splits, vocab, model_cfg, train_pairs = nat_mini_data()
    report: dict[str, dict] = {}
    common = {"corpus": "nat-mini (harness/datasets/en_de_corpus.py)", "train_pairs": len(train_pairs),
              "steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr, "warmup": cfg.warmup,
              "label_smoothing": cfg.epsilon, "seed": cfg.seed, "checkpoint_averaging": "none"}

    def finish(kind: str, model, translate, training: dict, settings: dict) -> None:
        valid = corpus_bleu(translate, splits["valid"], vocab)
        save_checkpoint(model, args.out / f"{kind}.safetensors", kind, model_cfg, vocab, LANGPAIR,
                        {**common, **training}, settings)
        report[kind] = {"parameters": parameter_count(model), "valid_bleu": round(valid, 2), **training}
        print(f"[{kind}] valid BLEU {valid:.2f}, {parameter_count(model)} parameters", flush=True)

    ar = ARTransformer(model_cfg)
    ar_path = args.out / "ar.safetensors"
    if "ar" in args.only:
        train(ar, lambda m, s, t: m.loss(s, t, vocab, cfg.epsilon), train_pairs, vocab, cfg, True, "ar")
        finish("ar", ar, ar.greedy, {"data": "original", "distilled": False}, {})
    else:
        from baselines.translation.checkpoint import load_weights

        load_weights(ar, ar_path)
    kd_pairs = distilled_pairs(ar, train_pairs, vocab, args.work, refresh="ar" in args.only)
    nat_kinds = [k for k in ("nat", "ctc", "cmlm") if k in args.only]
    kd = {"data": "distilled", "distilled": True, "teacher": "ar (greedy)"}
    if "nat" in nat_kinds:
        nat = VanillaNAT(model_cfg)
        train(nat, lambda m, s, t: m.loss(s, t, vocab, cfg.epsilon), kd_pairs, vocab, cfg, False, "nat")
        finish("nat", nat, nat.translate, kd, {})
    if "ctc" in nat_kinds:
        ctc = CTCNAT(model_cfg, upsample=2)
        train(ctc, lambda m, s, t: m.loss(s, t, vocab), kd_pairs, vocab, cfg, False, "ctc")
        finish("ctc", ctc, ctc.translate, kd, {"upsample": 2})
    if "cmlm" in nat_kinds:
        cmlm = CMLM(model_cfg)
        generator = torch.Generator().manual_seed(cfg.seed)
        train(cmlm, lambda m, s, t: m.loss(s, t, vocab, cfg.epsilon, generator), kd_pairs, vocab, cfg, False, "cmlm")
        finish("cmlm", cmlm, cmlm.translate, kd, {})
    for kind, entry in report.items():
        (args.out / f"{kind}.report.json").write_text(json.dumps(entry, indent=2) + "\n")


if __name__ == "__main__":
    main()
