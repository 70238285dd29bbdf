"""Feature pipeline throughput vs the bare Inception forward, at the same batch size.

    .venv/bin/python benchmarks/image_features_bench.py [--batch-size 32] [--batches 4] [--rounds 3]

"bare": the FID Inception's forward (TF1 resize to 299 + network) on a uint8 batch already in memory.
"pipeline": what `imagenet256-c2i` does: stream an ADM-format .npz of 256x256 images from disk, batch,
convert, forward, collect pool/spatial/logits. Rounds alternate bare and pipeline so load changes on
a shared machine hit both; the medians are compared. Weights are random (speed does not depend on
them). Target (issue #3): pipeline >= 90% of bare images/s.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from harness.features.inception import FIDInceptionV3, extract_inception_features
from tasks._image_samples import load_image_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    count = args.batch_size * args.batches
    model = FIDInceptionV3().to(args.device)
    images = np.random.default_rng(0).integers(0, 256, (count, 256, 256, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "samples.npz"
        np.savez(path, arr_0=images)
        samples = load_image_samples(path, count, 256, 1000)
        batch = torch.from_numpy(images[:args.batch_size]).permute(0, 3, 1, 2).contiguous().to(args.device)

        def sync():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()

        def bare() -> float:
            start = time.perf_counter()
            with torch.inference_mode():
                for _ in range(args.batches):
                    model(batch)
            sync()
            return count / (time.perf_counter() - start)

        def pipeline() -> float:
            start = time.perf_counter()
            extract_inception_features(model, samples.chunks(args.batch_size), args.batch_size, args.device)
            sync()
            return count / (time.perf_counter() - start)

        bare()  # warm-up (allocator, kernels)
        bare_rates, pipe_rates = [], []
        for _ in range(args.rounds):
            bare_rates.append(bare())
            pipe_rates.append(pipeline())
    b, p = statistics.median(bare_rates), statistics.median(pipe_rates)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"device {device}, {torch.get_num_threads()} threads, batch {args.batch_size}, {count} images x {args.rounds} rounds")
    print(f"bare forward {b:.2f} img/s, pipeline {p:.2f} img/s, ratio {p / b:.3f}")
    print(f"rounds bare {[round(r, 2) for r in bare_rates]} pipeline {[round(r, 2) for r in pipe_rates]}")


if __name__ == "__main__":
    main()
