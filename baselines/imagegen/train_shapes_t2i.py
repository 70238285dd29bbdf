"""Train the bundled toy text-to-image GPT: `python -m baselines.imagegen.train_shapes_t2i` (about 10 min, 1 core).

`shapes_t2i.ShapesT2I` teacher-forced in raster order on scenes rendered from the whole shapes grammar
(`harness.datasets.shapes`): each step draws a tag uniformly, a prompt of that tag uniformly, and a fresh random
scene satisfying it; 10% of captions are replaced by the learned unconditional caption (classifier-free guidance).
The held-out loss (bits per token on 256 scenes from another seed) and the run's steps and seconds are written into
the file's metadata. Seeds are fixed; results are deterministic on a given machine and torch build.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from baselines.imagegen.llamagen_t2i import teacher_forced_logits
from baselines.imagegen.shapes_t2i import CONFIG, WEIGHTS, ShapesT2I, cells_to_tokens
from harness.datasets import shapes

STEPS = 600
BATCH = 32
LR = 3e-3
SEED = 0


def batch(rng: np.random.Generator, n: int) -> tuple[list[str], torch.Tensor]:
    by_tag: dict[str, list[dict]] = {}
    for record in shapes.grammar_records():
        by_tag.setdefault(record["tag"], []).append(record)
    tags = sorted(by_tag)
    prompts, cells = [], []
    for _ in range(n):
        pool = by_tag[tags[int(rng.integers(len(tags)))]]
        record = pool[int(rng.integers(len(pool)))]
        prompts.append(record["prompt"])
        cells.append(shapes.render_scene(record, rng).cells)
    return prompts, torch.from_numpy(cells_to_tokens(np.stack(cells)))


def loss_of(model: ShapesT2I, prompts, tokens, drop: torch.Tensor | None = None) -> torch.Tensor:
    caption, mask = model.encode(prompts)
    if drop is not None:
        caption = torch.where(drop[:, None, None], model.uncond_caption(caption), caption)
    logits = teacher_forced_logits(model, caption, mask, tokens)
    return F.cross_entropy(logits.reshape(-1, CONFIG.vocab_size), tokens.reshape(-1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a network this small trains fastest on one thread (and shares the machine)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    held_prompts, held_tokens = batch(np.random.default_rng(SEED + 1000), 256)
    model = ShapesT2I()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=args.steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(SEED)
    start = time.perf_counter()
    for step in range(args.steps):
        model.train()
        prompts, tokens = batch(rng, BATCH)
        drop = torch.rand(BATCH, generator=gen) < CONFIG.class_dropout_prob
        loss = loss_of(model, prompts, tokens, drop)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    model.eval()
    with torch.no_grad():
        held = float(loss_of(model, held_prompts, held_tokens)) / math.log(2)
    report = {"steps": args.steps, "batch": BATCH, "lr": LR, "seed": SEED,
              "train_seconds": round(time.perf_counter() - start, 1), "heldout_bits_per_token": round(held, 4),
              "parameters": sum(p.numel() for p in model.parameters()),
              "data": "harness.datasets.shapes grammar_records (tag uniform, then prompt), fresh scenes per step"}
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(WEIGHTS),
              metadata={"config": json.dumps(CONFIG.__dict__), "training": json.dumps(report)})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
