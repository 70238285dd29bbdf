"""GenEval scoring cost per image: the Mask2Former Swin-S detector at mmdet's input size (512² -> 800²) and the
CLIP ViT-L/14 colour check of one crop, with random weights (speed does not depend on the weights' values).

Reports median seconds per image over `--images` detections after one warm-up, and the projected time for the
2,212 images of a full GenEval run on this device. With `--batch N` it also times `detect_batch` on N equal-size
images in the same process (the task's `--set detect_batch_size=N`) and prints the per-image speed-up over one image
at a time, a ratio within one run. No target: this tells users whether to score on a GPU and how to batch there.

    .venv/bin/python benchmarks/geneval_cost.py [--images 3] [--device cpu] [--size 512] [--batch 8]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.features import clip_color, geneval_detector  # noqa: E402
from harness.metrics.geneval import Detection  # noqa: E402


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=1, help="also time detect_batch on this many images")
    args = parser.parse_args()
    torch.manual_seed(0)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
    detector = geneval_detector.GenEvalDetector(geneval_detector.Mask2Former(), args.device)
    detect = timed(lambda: detector.detect(image), args.images)
    batched = timed(lambda: detector.detect_batch([image] * args.batch), args.images) / args.batch \
        if args.batch > 1 else None

    import open_clip

    model = open_clip.create_model("ViT-L-14-quickgelu", pretrained=None)
    colors = clip_color.ColorClassifier(model, open_clip.get_tokenizer("ViT-L-14"),
                                        clip_color.clip_val_transform(model), args.device)
    crop = [Detection((50.0, 60.0, 300.0, 400.0), 0.9, np.ones((args.size, args.size), bool))]
    colors.text_weights("car")  # built once per class and cached, as in a full run
    classify = timed(lambda: colors.classify(image, crop, "car"), args.images)

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"device: {device}, torch threads: {torch.get_num_threads()}, image {args.size}x{args.size}")
    print(f"detector: {detect:.2f} s/image; colour check: {classify:.2f} s/crop")
    print(f"projected full run (2212 images, detector only): {2212 * detect / 3600:.2f} h")
    if batched is not None:
        print(f"detector at batch {args.batch}: {batched:.2f} s/image, {detect / batched:.2f}x one at a time; "
              f"projected full run {2212 * batched / 3600:.2f} h")


if __name__ == "__main__":
    main()
