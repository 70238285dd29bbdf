"""Feature-extraction throughput of the FVD networks, on whatever device is given.

    .venv/bin/python benchmarks/video_fvd_throughput.py [--device cpu] [--clips 4]

I3D runs with random weights of the released architecture (same FLOPs as the real network, which is
not downloadable offline); the moving-digits network runs with its bundled weights. Prints clips per
second for each and the projected time of the real + generated sets of the 2048 and 10k protocols.
Results are written down in docs/video.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from harness.features.digit_motion_net import load_digit_motion_net
from harness.features.i3d import I3DFeatures, InceptionI3d


def clips_per_second(fn, clips: np.ndarray, repeats: int) -> float:
    fn(clips[:1])  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn(clips)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return repeats * len(clips) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    i3d = I3DFeatures(InceptionI3d().to(args.device), batch_size=args.clips)
    ucf = rng.integers(0, 256, (args.clips, 16, 128, 128, 3), dtype=np.uint8)
    rate = clips_per_second(i3d, ucf, args.repeats)
    print(f"I3D 16x128px -> 224px clips/s on {args.device}: {rate:.2f}")
    print(f"  projected 2048 + 2048 clips: {4096 / rate / 60:.1f} min; 4 x (10k + 10k): {80_000 / rate / 3600:.1f} h")
    digits_net = load_digit_motion_net().to(args.device)
    digits = rng.integers(0, 256, (512, 16, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        rate = clips_per_second(digits_net.features, digits, args.repeats)
    print(f"DigitMotionNet 16x32px clips/s on {args.device}: {rate:.0f}")


if __name__ == "__main__":
    main()
