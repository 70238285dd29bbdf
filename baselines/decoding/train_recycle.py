"""Train RecycleGPT's recyclable module for the bundled `tiny-kjv-target` (frozen): from the target's last
hidden state h_t and the embedding of x_{t+1}, predict x_{t+2} (cross-entropy), on the target's own training
text (the King James ranges of `train_tiny_kjv.py`; `apt-get install bible-kjv`). The paper trains the module
jointly with its model; here the target is fixed, as when adding a module to an existing model. Deterministic
seeds, one CPU thread. Writes `baselines/decoding/weights/recycle-tiny-kjv-target.safetensors` (float16; the
target's sha256, the held-out top-1 accuracy and the training record in its metadata).

    python -m baselines.decoding.train_recycle [--steps 300]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from baselines.decoding.addons import frozen_bundled_target, train_on_frozen_target
from baselines.decoding.recycle import BUNDLED_MODULE, RecyclableModule
from harness.protocols.decoding.train_tiny_kjv import HELD_OUT, corpus


def module_logits(module: RecyclableModule, net, x: torch.Tensor) -> torch.Tensor:
    """Logits (B, T-1, V) for x_{t+2} at every position t with a following token."""
    with torch.no_grad():
        hidden = net.forward_train(x)[-1]
    z = module.inputs(hidden[:, :-1], net.tok_emb(x[:, 1:]))
    return module.forward_train(z) @ net.tok_emb.weight.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    target, net = frozen_bundled_target()
    module = RecyclableModule(net.config.d_model, net.config.n_heads)

    def loss(module, net, x):
        logits = module_logits(module, net, x)
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 2:].reshape(-1))

    record = train_on_frozen_target(module, loss, net, args.steps, args.batch, args.length, args.lr, seed=2)
    held_out = torch.cat([corpus([ref])[:16384] for ref in HELD_OUT.values()])
    x = held_out[:32 * 256].view(32, 256)
    with torch.no_grad():
        top1 = float((module_logits(module, net, x)[:, :-1].argmax(-1) == x[:, 2:]).float().mean())
    record["held_out_top1"] = round(top1, 4)
    print(f"held-out top-1 accuracy of x_(t+2): {top1:.3f}")
    module.save(BUNDLED_MODULE, target.checkpoint_sha256(), {"training": record})
    print(f"wrote {BUNDLED_MODULE}")


if __name__ == "__main__":
    main()
