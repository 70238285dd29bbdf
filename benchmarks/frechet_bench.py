"""Fréchet distance at 2048 dimensions: `harness.metrics.frechet_distance` vs ADM's scipy `sqrtm` formula.

    .venv/bin/python benchmarks/frechet_bench.py [--dims 2048] [--repeats 3]

Both run in this process on the same statistics (Inception-like: mean and unbiased covariance of
correlated non-negative features, N = 2 x dims rows). Prints times, the speed ratio and the relative
difference of the two results. Target (issue #3): ratio >= 10, relative difference <= 1e-6.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import scipy.linalg
import torch

from harness.metrics import feature_statistics, frechet_distance


def adm_frechet(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """guided-diffusion evaluations/evaluator.py `frechet_distance` (sqrtm of the product)."""
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real))


def inception_like_statistics(dims: int, seed: int):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dims // 4, dims)) / np.sqrt(dims // 4)
    feats = np.maximum(rng.normal(size=(2 * dims, dims // 4)) @ mixing + 0.3 * rng.normal(size=(2 * dims, dims)), 0)
    return feature_statistics(feats)


def timed(fn, repeats: int) -> tuple[float, float, float]:
    """(median wall seconds, median process CPU seconds, value); CPU time is steadier on a shared machine."""
    walls, cpus, value = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        value = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dims", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    s1, s2 = inception_like_statistics(args.dims, 0), inception_like_statistics(args.dims, 1)
    ours_s, ours_cpu, ours = timed(lambda: frechet_distance(*s1, *s2, device="cpu"), args.repeats)
    scipy_s, scipy_cpu, ref = timed(lambda: adm_frechet(*s1, *s2), max(1, args.repeats // 2))
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads")
    print(f"dims {args.dims}: scipy sqrtm (ADM) {scipy_s:.2f} s wall / {scipy_cpu:.2f} s CPU, frechet_distance "
          f"{ours_s:.3f} s wall / {ours_cpu:.3f} s CPU; speed-up {scipy_s / ours_s:.1f}x wall, "
          f"{scipy_cpu / ours_cpu:.1f}x CPU")
    print(f"FD ours {ours:.10f}  ADM {ref:.10f}  relative difference {abs(ours - ref) / abs(ref):.2e}")
    if torch.cuda.is_available():
        gpu_s, _, gpu = timed(lambda: frechet_distance(*s1, *s2, device="cuda"), args.repeats)
        print(f"GPU ({torch.cuda.get_device_name()}): {gpu_s:.3f} s, relative difference {abs(gpu - ref) / abs(ref):.2e}")


if __name__ == "__main__":
    main()
