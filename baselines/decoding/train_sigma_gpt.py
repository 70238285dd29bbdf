"""Train the bundled sigma-GPT (`baselines/decoding/weights/sigma-gpt-kjv.safetensors`) on the King James text the
bundled models are trained on (`apt-get install bible-kjv`; held-out books never seen): byte-level, d=128,
4 layers, 256 positions, next-token cross-entropy along each sequence's order (baselines/decoding/sigma_gpt.py).

Orders (a curriculum, as the paper uses one from left-to-right to random): a sequence is left-to-right with
probability falling linearly from 1 to 1/2 over the first half of training, otherwise a left-to-right prefix of
uniform random length followed by either a random order of the rest or a random order of the next 8 positions
and then the rest left to right (the conditionals a burst of 8 drafts and verifies). Deterministic seeds, one
CPU thread. Records the settings, seconds, loss history and held-out bits per byte (left to right, and along
such shuffled orders: `..._prefix_then_random`) in the file's metadata.

    python -m baselines.decoding.train_sigma_gpt [--steps 600]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from baselines.decoding.sigma_gpt import BUNDLED, SigmaConfig, SigmaGPT
from harness.protocols.decoding.train_tiny_kjv import HELD_OUT, TRAIN_RANGES, batches, corpus, lr_at


def orders(batch: int, length: int, l2r_share: float, gen: torch.Generator, local: int = 8) -> torch.Tensor:
    """(batch, length) permutations: left-to-right; or a left-to-right prefix of random length, then either a
    random order of everything after it or a random order of the next `local` positions followed by the rest
    left to right (half each)."""
    rows = []
    for _ in range(batch):
        if float(torch.rand((), generator=gen)) < l2r_share:
            rows.append(torch.arange(length))
            continue
        k = int(torch.randint(1, length, (), generator=gen))
        if float(torch.rand((), generator=gen)) < 0.5:
            rest = k + torch.randperm(length - k, generator=gen)
        else:
            w = min(local, length - k)
            rest = torch.cat([k + torch.randperm(w, generator=gen), torch.arange(k + w, length)])
        rows.append(torch.cat([torch.arange(k), rest]))
    return torch.stack(rows)


def order_loss(net: SigmaGPT, x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    logits, targets = net.forward_order(x, order)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@torch.no_grad()
def held_out_bits(net: SigmaGPT, data: torch.Tensor, length: int, random_order: bool) -> float:
    net.eval()
    n = min(64, len(data) // length)
    x = data[:n * length].view(n, length)
    gen = torch.Generator().manual_seed(7)
    order = orders(n, length, 0.0 if random_order else 1.0, gen)
    return float(order_loss(net, x, order)) / math.log(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--out", default=str(BUNDLED))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = SigmaConfig()
    net = SigmaGPT(config)
    length = config.max_len
    data = corpus(TRAIN_RANGES)
    held_out = torch.cat([corpus([ref])[:16384] for ref in HELD_OUT.values()])
    optimiser = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(5)
    start, history = time.time(), []
    net.train()
    for step, (x, _) in enumerate(batches(data, args.steps, args.batch, length, seed=4)):
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr)
        share = max(0.5, 1.0 - step / args.steps)
        loss = order_loss(net, x, orders(args.batch, length, share, gen))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimiser.step()
        if step % 50 == 0 or step == args.steps - 1:
            history.append({"step": step, "loss": round(loss.item(), 4)})
            print(f"step {step}/{args.steps} loss {loss.item():.3f} ({time.time() - start:.0f}s)", flush=True)
    record = {"steps": args.steps, "batch": args.batch, "length": length, "lr": args.lr,
              "seconds": round(time.time() - start, 1), "threads": 1, "history": history,
              "data": "King James Bible (public domain), Debian bible-kjv-text via `bible -f`",
              "train_ranges": list(TRAIN_RANGES),
              "held_out_bits_per_byte_l2r": round(held_out_bits(net, held_out, length, False), 4),
              "held_out_bits_per_byte_prefix_then_random": round(held_out_bits(net, held_out, length, True), 4)}
    print(record)
    net.save(args.out, {"training": record})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
