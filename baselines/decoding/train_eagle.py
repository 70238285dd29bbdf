"""Train an EAGLE-1 draft head for the bundled `tiny-kjv-target` (frozen), as upstream's `eagle/train/main.py`
(SafeAILab/EAGLE@4a9cf3a, v1): from the target's features f_0..f_{T-2} (uniform noise added, upstream's
`AddUniformNoise` with std 0.2) and the tokens x_1..x_{T-1}, the head predicts f_1..f_{T-1}; the loss is
SmoothL1 between predicted and true features (`v_w` = 1.0) plus 0.1 (`p_w`) times the cross-entropy of the
target's LM head on the predicted features against the target's own next-token distribution (soft labels).
The head has the target's width and heads and a Llama MLP of 4x width (the target's MLP ratio).

Data: the target's own training text (King James Bible ranges of `train_tiny_kjv.py`, read through Debian's
`bible` program: `apt-get install bible-kjv`); the held-out books measure the head's top-1 accuracy on the next
token (teacher-forced features, as upstream's `acc`) and the loss (recorded in the file's metadata).
Deterministic seeds, one CPU thread. Writes `baselines/decoding/weights/eagle-tiny-kjv-target.safetensors`
(float16, the target's sha256 and the training record in its metadata).

    python -m baselines.decoding.train_eagle [--steps 300]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from baselines.decoding.addons import frozen_bundled_target, train_on_frozen_target
from baselines.decoding.eagle import BUNDLED_HEAD, EagleHead
from harness.protocols.decoding.bundled import BUNDLED_MODELS
from harness.protocols.decoding.train_tiny_kjv import HELD_OUT, corpus

P_W, V_W, NOISE_STD = 0.1, 1.0, 0.2


def eagle_losses(head: EagleHead, net, x: torch.Tensor, noise: bool) -> tuple[torch.Tensor, torch.Tensor,
                                                                                 torch.Tensor]:
    """(feature SmoothL1, token cross-entropy, top-1 agreement with the target) on a batch of ids (B, T)."""
    with torch.no_grad():
        hidden = net.forward_train(x)[-1]
        target_p = torch.softmax(net.logits(hidden[:, 1:]), -1)
    feats = hidden[:, :-1]
    if noise:  # upstream's AddUniformNoise: U(-0.5, 0.5) * std * 512 / sequence length
        feats = feats + (torch.rand_like(feats) - 0.5) * NOISE_STD * 512 / feats.shape[1]
    predict, _ = head(feats, net.tok_emb(x[:, 1:]), torch.arange(feats.shape[1]))
    vloss = F.smooth_l1_loss(predict, hidden[:, 1:])
    logp = torch.log_softmax(net.logits(predict), -1)
    ploss = -(target_p * logp).sum(-1).mean()
    agree = (logp.argmax(-1) == target_p.argmax(-1)).float().mean()
    return vloss, ploss, agree


@torch.no_grad()
def held_out(head: EagleHead, net, data: torch.Tensor, length: int = 256, rows: int = 32) -> dict[str, float]:
    n = min(rows, data.numel() // length)
    vloss, ploss, agree = eagle_losses(head, net, data[:n * length].view(n, length), noise=False)
    return {"vloss": round(vloss.item(), 4), "ploss": round(ploss.item(), 4), "top1_vs_target": round(agree.item(), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args()
    target, net = frozen_bundled_target()
    c = net.config
    head = EagleHead(c.d_model, c.n_heads, c.n_heads, c.mlp_ratio * c.d_model)

    def loss(head, net, x):
        vloss, ploss, _ = eagle_losses(head, net, x, noise=True)
        return V_W * vloss + P_W * ploss

    record = train_on_frozen_target(head, loss, net, args.steps, args.batch, args.length, args.lr, seed=2)
    text = torch.cat([corpus([ref])[:16384] for ref in HELD_OUT.values()])
    record.update(p_w=P_W, v_w=V_W, noise_std=NOISE_STD, held_out=held_out(head, net, text),
                  target=BUNDLED_MODELS["tiny-kjv-target"].name)
    print(f"held-out: {record['held_out']}")
    head.save(BUNDLED_HEAD, target.checkpoint_sha256(), {"training": record})
    print(f"wrote {BUNDLED_HEAD}")


if __name__ == "__main__":
    main()
