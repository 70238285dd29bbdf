"""Provenance: what code, software and hardware produced a number."""

from __future__ import annotations

import hashlib
import platform
import resource
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import harness

TRACKED_PACKAGES = (
    "torch", "torchvision", "numpy", "scipy", "torchmetrics", "torch-fidelity", "clean-fid", "open-clip-torch",
    "transformers", "jiwer", "sacrebleu", "sqlalchemy", "safetensors", "pillow",
)


def git_state(path: Path | None = None) -> dict[str, Any]:
    """The git sha of the harness source tree and whether it had uncommitted changes."""
    root = path or Path(harness.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if sha.returncode != 0:
            return {"git_sha": None, "git_dirty": None}
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return {"git_sha": sha.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}


def package_versions() -> dict[str, str]:
    found = {}
    for name in TRACKED_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def device_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": _cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info.update(
            gpu_name=torch.cuda.get_device_name(0),
            gpu_count=torch.cuda.device_count(),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            driver=_nvidia_driver(),
        )
    else:
        info.update(gpu_name=None, gpu_count=0)
    info["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
    info["tf32_cudnn"] = bool(torch.backends.cudnn.allow_tf32)
    return info


def hardware_fingerprint(device: str, threads: int | None = None) -> str:
    """A short id of the hardware a timing ran on; speedups compare only within one fingerprint.

    `threads` is the torch thread count the timing runs with, where that differs from the current one.
    """
    info = device_info(device)
    threads = threads if threads is not None else info["torch_threads"]
    key = f"{info.get('gpu_name') or info['cpu']}|{info['cpu_count']}|{threads}|{device}"
    return f"{(info.get('gpu_name') or info['cpu'] or 'cpu').replace(' ', '-')}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def _cpu_count() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def peak_memory() -> dict[str, Any]:
    import torch

    peak = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        peak["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def collect(device: str, world_size: int, batch_size: int, dtype: str) -> dict[str, Any]:
    """Everything about the environment of a run, recorded when it starts."""
    return {
        "harness_version": harness.__version__,
        **git_state(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        **device_info(device),
        "world_size": world_size,
        "batch_size": batch_size,
        "dtype": dtype,
    }


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
