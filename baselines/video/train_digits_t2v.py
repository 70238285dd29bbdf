"""Train the bundled `digits-t2v-mini` (minutes on an idle CPU core). The bundled weights were made in three stages:

    python -m baselines.video.train_digits_t2v                                  # 350 steps, lr 3e-3
    python -m baselines.video.train_digits_t2v --resume --steps 300 --lr 2e-3   # twice: 950 steps in all

(2026-12-05, this shared 2-core CPU, one thread: 1204 s at a load average of about 12, 732 s at about 9, 329 s at
about 2; held-out 0.758, 0.602, then 0.530 bits per token; every stage's report is in the file's metadata).

Data: every step draws a fresh batch of prompts from the 50 of the suite (`harness.datasets.digits_t2v`), each with
a training-split digit of its class (scikit-learn digits with `i % 5 != 0`; the task's ground-truth clips in the
tests use the held-out ones), rendered as the suite renders them and quantised to 4 grey levels. Loss: cross-entropy
of every patch token, teacher-forced through the model's own block-causal mask. AdamW, one-cycle schedule, fixed
seeds. Held-out loss (reference digits) and the run's seconds go into the file's metadata.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from baselines.video.digits_t2v import (WEIGHTS_PATH, FrameARTransformer, T2VConfig, config_metadata,
                                        encode_prompt, videos_to_tokens)
from harness.datasets import digits_t2v as suite
from harness.datasets.moving_digits import digit_sprites

STEPS = 350
BATCH = 32
LR = 3e-3
SEED = 0


def batch(step: int, split: str = "train", size: int = BATCH, config: T2VConfig = T2VConfig()):
    """(word ids [B, max_words], patch codes [B, frames, 64]) of freshly drawn clips."""
    rng = np.random.default_rng([SEED, step])
    records = suite.prompt_suite()
    chosen = [records[i] for i in rng.integers(0, len(records), size)]
    sprites, labels = digit_sprites(split)
    by_class = [np.flatnonzero(labels == d) for d in range(10)]
    picks = [rng.choice(by_class[r["auxiliary_info"]["digit"]]) for r in chosen]
    clips = suite.render_prompt_clips(sprites[picks], [r["auxiliary_info"]["motion"] for r in chosen], rng)
    words = torch.tensor([encode_prompt(r["prompt_en"], config.max_words) for r in chosen])
    return words, torch.from_numpy(videos_to_tokens(clips))


def loss_of(model: FrameARTransformer, words: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    logits = model.training_logits(words, tokens)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--resume", action="store_true",
                        help="continue from the bundled weights (a new one-cycle schedule; steps and seconds add up)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a model this small runs fastest on one thread (and shares the machine)
    torch.manual_seed(SEED)
    config = T2VConfig()
    model = FrameARTransformer(config)
    history: list = []
    if args.resume:
        from safetensors import safe_open
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(WEIGHTS_PATH)))
        with safe_open(str(WEIGHTS_PATH), framework="pt") as f:
            earlier = json.loads(f.metadata()["training"])
        history = earlier.pop("stages", []) + [earlier]
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    start, load = time.perf_counter(), os.getloadavg()[0]
    for step in range(args.steps):
        model.train()
        loss = loss_of(model, *batch(step + sum(h["steps"] for h in history)))  # fresh clips when resuming
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    model.eval()
    with torch.no_grad():
        held = float(np.mean([loss_of(model, *batch(10_000 + k, "reference", 64)).item() for k in range(4)]))
    report = {"steps": args.steps, "batch": BATCH, "lr": args.lr, "seed": SEED,
              "train_seconds": round(time.perf_counter() - start, 1), "load_average_at_start": round(load, 2),
              "heldout_bits_per_token": round(held / math.log(2), 4),
              "data": "digits_t2v suite prompts, sklearn digits i%5!=0 (reference digits held out), 4 grey levels"}
    if history:
        report["stages"] = history  # the earlier runs this one continued
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(WEIGHTS_PATH),
              metadata={"config": config_metadata(config), "training": json.dumps(report)})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
