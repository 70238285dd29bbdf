"""Train the two bundled video models from scikit-learn's digits (deterministic; about two minutes on 2 CPU cores).

    python -m baselines.video.train_video_models

1. `digits_pca_generator.safetensors`: per class, the mean of the training digits' 64 pixels and the top
   `PCA_COMPONENTS` principal directions scaled by their standard deviations.
2. `digit_motion_net.safetensors`: `DigitMotionNet` trained with Adam on freshly drawn moving-digit clips of
   the training digits, with three losses: digit class (cross-entropy), velocity (MSE, on unshuffled clips)
   and "were the frames shuffled" (binary cross-entropy; half the clips have their frames permuted).

It prints held-out scores on clips of the reference digits, which docs/video.md reports.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file

from harness.features.digit_motion_net import WEIGHTS_PATH as NET_PATH, DigitMotionNet
from baselines.video.digits_generator import WEIGHTS_PATH as GENERATOR_PATH
from harness.datasets.moving_digits import NUM_CLASSES, digit_sprites, sample_clips

PCA_COMPONENTS = 8
STEPS = 1000
BATCH = 48
LEARNING_RATE = 2e-3


def fit_pca_generator() -> dict[str, np.ndarray]:
    sprites, labels = digit_sprites("train")
    flat = sprites.reshape(len(sprites), -1).astype(np.float64)
    means, bases = [], []
    for c in range(NUM_CLASSES):
        x = flat[labels == c]
        mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        std = s[:PCA_COMPONENTS] / np.sqrt(len(x) - 1)
        means.append(mean)
        bases.append(vt[:PCA_COMPONENTS] * std[:, None])
    return {"mean": np.stack(means).astype(np.float32), "basis": np.stack(bases).astype(np.float32)}


def training_batch(step: int, split: str = "train", size: int = BATCH):
    rng = np.random.default_rng([1234, step])
    labels = rng.integers(0, NUM_CLASSES, size)
    clips, velocity = sample_clips(split, labels, seed=10_000 + step)
    shuffled = rng.random(size) < 0.5
    for i in np.flatnonzero(shuffled):
        clips[i] = clips[i][rng.permutation(clips.shape[1])]
    return (torch.from_numpy(clips), torch.from_numpy(labels), torch.from_numpy(velocity),
            torch.from_numpy(shuffled.astype(np.float32)))


def losses(model: DigitMotionNet, batch) -> tuple[torch.Tensor, dict[str, float]]:
    clips, labels, velocity, shuffled = batch
    out = model(clips)
    class_loss = F.cross_entropy(out["class_logits"], labels)
    keep = shuffled == 0
    velocity_loss = F.mse_loss(out["velocity"][keep], velocity[keep])
    shuffle_loss = F.binary_cross_entropy_with_logits(out["shuffled_logit"], shuffled)
    metrics = {
        "class_acc": float((out["class_logits"].argmax(1) == labels).float().mean()),
        "velocity_mae": float((out["velocity"][keep] - velocity[keep]).abs().mean().detach()),
        "shuffle_acc": float(((out["shuffled_logit"] > 0).float() == shuffled).float().mean()),
    }
    return class_loss + velocity_loss + shuffle_loss, metrics


def train_feature_net() -> DigitMotionNet:
    torch.manual_seed(0)
    model = DigitMotionNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, STEPS)
    start = time.perf_counter()
    for step in range(STEPS):
        loss, metrics = losses(model, training_batch(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == STEPS - 1:
            print(f"step {step:4d} loss {loss.item():.3f} {metrics} ({time.perf_counter() - start:.0f} s)")
    return model.eval()


@torch.no_grad()
def held_out_scores(model: DigitMotionNet) -> dict[str, float]:
    parts = [losses(model, training_batch(100_000 + k, split="reference", size=200))[1] for k in range(5)]
    return {k: float(np.mean([p[k] for p in parts])) for k in parts[0]}


def main() -> None:
    torch.set_num_threads(1)  # faster than 2 threads on a shared 2-core machine
    save_numpy(fit_pca_generator(), str(GENERATOR_PATH))
    model = train_feature_net()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(NET_PATH))
    print("held-out (reference digits, 1000 clips):", held_out_scores(model))
    print(f"wrote {GENERATOR_PATH} and {NET_PATH}")


if __name__ == "__main__":
    main()
