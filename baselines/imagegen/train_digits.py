"""Train the bundled mini generators: `python -m baselines.imagegen.train_digits` (a few minutes on 2 CPU cores).

Two LlamaGen-architecture GPTs (`digits_mini.MINI_CONFIG`) on scikit-learn's digits quantised to 4
grey levels: one teacher-forced in raster order, one in PAR order (2x2 regions, transition tokens,
block-causal mask). Every 10th image is held out; the held-out negative log-likelihood (bits per
token, class-conditional) is written into each file's metadata. Seeds are fixed; results are
deterministic on a given machine and torch build.
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
from sklearn.datasets import load_digits

from harness.datasets.digits import held_out_mask
from baselines.imagegen.digits_mini import FILES, LEVELS, MINI_CONFIG, MINI_PAR, build, quantise
from baselines.imagegen.par import PARGPT

STEPS = 400
BATCH = 64
LR = 3e-3
SEED = 0


def split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    digits = load_digits()
    tokens = torch.from_numpy(quantise(digits.images))
    labels = torch.from_numpy(digits.target.astype(np.int64))
    held = torch.from_numpy(held_out_mask(len(labels)))
    return tokens[~held], labels[~held], tokens[held], labels[held]


def targets_for(model, tokens: torch.Tensor) -> torch.Tensor:
    return tokens[:, model.order] if isinstance(model, PARGPT) else tokens


def bits_per_token(model, tokens: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        logits = model.training_logits(labels, tokens)
        nll = F.cross_entropy(logits.reshape(-1, LEVELS), targets_for(model, tokens).reshape(-1))
    return float(nll) / math.log(2)


def train(order: str, steps: int) -> dict:
    torch.manual_seed(SEED)
    train_tokens, train_labels, test_tokens, test_labels = split()
    model = build(order)
    if isinstance(model, PARGPT):
        torch.nn.init.normal_(model.transition_tokens, std=0.02)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(SEED)
    start = time.perf_counter()
    for step in range(steps):
        model.train()
        idx = torch.randint(len(train_labels), (BATCH,), generator=gen)
        labels = train_labels[idx].clone()
        drop = torch.rand(BATCH, generator=gen) < MINI_CONFIG.class_dropout_prob  # CFG: learn the null class
        labels[drop] = MINI_CONFIG.num_classes
        tokens = train_tokens[idx]
        logits = model.training_logits(labels, tokens)
        loss = F.cross_entropy(logits.reshape(-1, LEVELS), targets_for(model, tokens).reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"[{order}] step {step} loss {loss.item():.4f}", flush=True)
    report = {
        "order": order, "steps": steps, "batch": BATCH, "lr": LR, "seed": SEED,
        "train_seconds": round(time.perf_counter() - start, 1),
        "heldout_bits_per_token": round(bits_per_token(model, test_tokens, test_labels), 4),
        "train_bits_per_token": round(bits_per_token(model, train_tokens, train_labels), 4),
        "data": "sklearn load_digits, every 10th image held out, 4 grey levels",
    }
    meta = {"config": json.dumps(MINI_CONFIG.__dict__), "training": json.dumps(report)}
    if isinstance(model, PARGPT):
        meta["par"] = json.dumps(MINI_PAR.__dict__)
    FILES[order].parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(FILES[order]), metadata=meta)
    print(json.dumps(report))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--order", choices=["raster", "par", "both"], default="both")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a model this small runs fastest on one thread (and shares the machine)
    for order in (["raster", "par"] if args.order == "both" else [args.order]):
        train(order, args.steps)


if __name__ == "__main__":
    main()
