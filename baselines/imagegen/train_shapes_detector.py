"""Train the bundled shapes detector: `python -m baselines.imagegen.train_shapes_detector` (minutes on 2 CPU cores).

ShapesNet (`harness/features/shapes_detector.py`) learns per-pixel shape and colour classes on scenes rendered from
the whole shapes grammar (`harness.datasets.shapes.grammar_records`, fresh random scenes every step). Half of each
batch is perturbed (per-image colour shift, per-pixel noise, a few random specks of palette colours) so the network
also sees imperfect images, as a generator's are. The training report (steps, seconds, pixel accuracy on 512
held-out clean scenes drawn from another seed) is stored in the file's metadata.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from harness.datasets.shapes import COLOR_NAMES, PALETTE, SHAPES, grammar_records, render_scene
from harness.features.shapes_detector import WEIGHTS_PATH, ShapesNet

STEPS = 2000
BATCH = 32
LR = 3e-3
SEED = 0


def batch(rng: np.random.Generator, n: int, perturb: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images uint8 (n, H, W, 3), shape targets (n, H, W), colour targets (n, H, W))."""
    records = grammar_records()
    images, shapes, colors = [], [], []
    for i in range(n):
        scene = render_scene(records[int(rng.integers(len(records)))], rng)
        image = scene.image.astype(np.int64)
        shape_t = np.zeros(image.shape[:2], dtype=np.int64)
        color_t = np.zeros(image.shape[:2], dtype=np.int64)
        for obj in scene.objects:
            shape_t[obj.mask] = SHAPES.index(obj.shape) + 1
            color_t[obj.mask] = COLOR_NAMES.index(obj.color) + 1
        if perturb and i % 2:
            for _ in range(int(rng.integers(0, 4))):  # a speck: background-labelled, the detector must not count it
                y, x = rng.integers(0, image.shape[0] - 1, 2)
                if shape_t[y:y + 2, x:x + 2].any():
                    continue
                image[y:y + 2, x:x + 2] = PALETTE[int(rng.integers(1, len(PALETTE)))]
            image = image + rng.integers(-25, 26, 3) + rng.integers(-12, 13, image.shape)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
        shapes.append(shape_t)
        colors.append(color_t)
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(shapes)), torch.from_numpy(np.stack(colors))


def pixel_accuracy(model: ShapesNet, data) -> tuple[float, float]:
    images, shape_t, color_t = data
    with torch.no_grad():
        shape_l, color_l = model(model.preprocess(images))
    fg = shape_t > 0
    return float((shape_l.argmax(1) == shape_t).float().mean()), float((color_l.argmax(1) == color_t)[fg].float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a network this small trains fastest on one thread (and shares the machine)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    held_out = batch(np.random.default_rng(SEED + 1000), 512, perturb=False)
    model = ShapesNet()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=args.steps, pct_start=0.05)
    start = time.perf_counter()
    for step in range(args.steps):
        images, shape_t, color_t = batch(rng, BATCH, perturb=True)
        shape_l, color_l = model(model.preprocess(images))
        # the colour head is trained on object pixels and background only (the colour of what the shape head finds)
        loss = F.cross_entropy(shape_l, shape_t) + F.cross_entropy(color_l, color_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
    model.eval()
    shape_acc, color_acc = pixel_accuracy(model, held_out)
    report = {"steps": args.steps, "batch": BATCH, "lr": LR, "seed": SEED,
              "train_seconds": round(time.perf_counter() - start, 1),
              "heldout_shape_pixel_accuracy": round(shape_acc, 5),
              "heldout_color_pixel_accuracy_on_objects": round(color_acc, 5),
              "data": "harness.datasets.shapes grammar_records, fresh scenes per step; held out: 512 scenes, seed 1000"}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(WEIGHTS_PATH),
              metadata={"training": json.dumps(report)})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
