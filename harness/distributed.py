"""torch.distributed helpers: ranks under `torchrun` (gloo on CPU, NCCL on GPU), one process otherwise."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import torch
import torch.distributed as dist

from harness.errors import ArbenchError


def world() -> tuple[int, int]:
    """(rank, world_size) from the torchrun environment; (0, 1) in a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_if_needed(device: str) -> bool:
    """Join the torchrun process group; True when this call created it (and so must tear it down)."""
    _, size = world()
    if size > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend, timeout=dt.timedelta(minutes=60))
        return True
    return False


def shutdown() -> None:
    """Tear the process group down before the interpreter exits.

    A rank that leaves with a live gloo group aborts in the group's C++ destructor ("terminate called without an
    active exception"), which turns a finished run into a failed torchrun exit code.
    """
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's value of `obj` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_ok(ok: bool) -> bool:
    """True only if `ok` is true on every rank (so one rank's failure stops them all cleanly)."""
    if not dist.is_initialized():
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def resolve_device(device: str) -> str:
    if device == "auto":
        if torch.cuda.is_available():
            rank = int(os.environ.get("LOCAL_RANK", 0))
            return f"cuda:{rank}"
        return "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError:
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise ArbenchError(f"unknown device {device!r}: use --device cpu, cuda, cuda:N or auto.")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ArbenchError(f"device {device!r} was asked for, but no CUDA device is available. Use --device cpu.")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ArbenchError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} "
                           f"CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}.")
    return device
