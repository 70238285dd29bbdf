"""Train Medusa-1 heads for the bundled `tiny-kjv-target` (frozen), as upstream's `medusa/train/train.py`:
head k (0-based) learns the token k + 2 positions after each position from the target's last hidden state,
with cross-entropy weighted 0.8^k (upstream's `medusa_decay_coefficient`), each head's linear map started
from the target's LM head (the tied embedding here) and its ResBlock at the identity.

Data: the target's own training text (King James Bible ranges of `train_tiny_kjv.py`, read through Debian's
`bible` program: `apt-get install bible-kjv`); the held-out books measure each head's top-1 / top-10 accuracy
(recorded in the file's metadata). Deterministic seeds, one CPU thread. Writes
`baselines/decoding/weights/medusa-tiny-kjv-target.safetensors` (float16, the target's sha256 and the
training record in its metadata).

    python -m baselines.decoding.train_medusa [--steps 400] [--heads 4]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from baselines.decoding.addons import frozen_bundled_target, train_on_frozen_target
from baselines.decoding.medusa import BUNDLED_HEADS, MedusaHeads
from harness.protocols.decoding.bundled import BUNDLED_MODELS
from harness.protocols.decoding.train_tiny_kjv import HELD_OUT, corpus

DECAY = 0.8


def head_losses(heads: MedusaHeads, hidden: torch.Tensor, ids: torch.Tensor) -> list[torch.Tensor]:
    """Cross-entropy of head k on the tokens k + 2 ahead of each position of `ids` (B, T)."""
    logits = heads(hidden)  # (K, B, T, V)
    losses = []
    for k in range(heads.num_heads):
        shift = k + 2
        pred = logits[k, :, :-shift]
        losses.append(F.cross_entropy(pred.reshape(-1, pred.shape[-1]), ids[:, shift:].reshape(-1)))
    return losses


@torch.no_grad()
def accuracy(heads: MedusaHeads, net, data: torch.Tensor, length: int = 256, rows: int = 32) -> dict[str, list]:
    """Top-1 and top-10 accuracy of each head on held-out text."""
    n = min(rows, data.numel() // length)
    x = data[:n * length].view(n, length)
    hidden = net.forward_train(x)[-1]
    logits = heads(hidden)
    top1, top10 = [], []
    for k in range(heads.num_heads):
        shift = k + 2
        target = x[:, shift:]
        ranked = torch.topk(logits[k, :, :-shift], 10, dim=-1).indices
        top1.append(round(float((ranked[..., 0] == target).float().mean()), 4))
        top10.append(round(float((ranked == target[..., None]).any(-1).float().mean()), 4))
    return {"top1": top1, "top10": top10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    target, net = frozen_bundled_target()
    heads = MedusaHeads(net.config.d_model, net.config.vocab_size, args.heads)
    for head in heads.medusa_head:
        head[-1].weight.data.copy_(net.tok_emb.weight.data)  # upstream: start from the base LM head

    def loss(heads, net, x):
        with torch.no_grad():
            hidden = net.forward_train(x)[-1]
        return sum(DECAY ** k * loss for k, loss in enumerate(head_losses(heads, hidden, x)))

    record = train_on_frozen_target(heads, loss, net, args.steps, args.batch, args.length, args.lr, seed=1)
    held_out = torch.cat([corpus([ref])[:16384] for ref in HELD_OUT.values()])
    record.update(decay=DECAY, held_out_accuracy=accuracy(heads, net, held_out),
                  target=BUNDLED_MODELS["tiny-kjv-target"].name)
    print(f"held-out accuracy (top-1, top-10 per head): {record['held_out_accuracy']}")
    heads.save(BUNDLED_HEADS, target.checkpoint_sha256(), {"training": record})
    print(f"wrote {BUNDLED_HEADS}")


if __name__ == "__main__":
    main()
