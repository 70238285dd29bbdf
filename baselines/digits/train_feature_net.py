"""Train the bundled DigitsNet: `python -m baselines.digits.train_feature_net` (about a minute on 2 CPU cores).

Data: scikit-learn's digits, every 10th image held out (`data.held_out_mask`), rendered in the task's
image format at 8x8 so that training sees exactly what scoring sees. Augmentation: random shifts of
up to one pixel. Deterministic: torch and NumPy seeded, one thread.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from harness.datasets.digits import digits_to_images, held_out_mask, load_digits_arrays
from harness.features.digits_net import WEIGHTS_PATH, DigitsNet, config_metadata


def shifted(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=generator))
    return torch.roll(x, shifts=(dy, dx), dims=(1, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(WEIGHTS_PATH))
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(args.seed)

    values, labels = load_digits_arrays()
    images = torch.from_numpy(digits_to_images(values, 8))
    targets = torch.from_numpy(labels)
    test = torch.from_numpy(held_out_mask(len(labels)))
    train_x, train_y, test_x, test_y = images[~test], targets[~test], images[test], targets[test]

    model = DigitsNet()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, args.epochs)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        for start in range(0, len(order), 64):
            idx = order[start:start + 64]
            _, logits = model(shifted(train_x[idx], generator))
            loss = F.cross_entropy(logits, train_y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(test_x)[1].argmax(1) == test_y).double().mean())
    metadata = {**config_metadata(model.config), "held_out_accuracy": f"{accuracy:.4f}", "epochs": str(args.epochs),
                "seed": str(args.seed), "data": "sklearn load_digits, every 10th image held out"}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out, metadata=metadata)
    print(json.dumps(metadata, indent=1))


if __name__ == "__main__":
    main()
