"""Seeded weights that upstream's network and ARBench's re-implementation can both build from names alone.

The golden scripts (`make_*.py`) fill upstream's module with `seeded_fill`; the tests fill ARBench's module the
same way after checking that the two have the same parameter names and shapes (the released checkpoint layout),
so the weights need not be stored. Every tensor is drawn from its own generator seeded by (seed, name), so the
order of `state_dict()` does not matter and no default initialisation survives (upstream zero-initialises
output heads and gates, which would let a network ignore its input).

Rule: floating tensors with 2+ dims ~ N(0, 1 / fan_in) (fan_in = product of all but the first dim); 1-D
tensors named like scales (`weight`, `gamma`, `scale`, `running_var`) = 1 + U(-0.1, 0.1); other 1-D
tensors (biases, `running_mean`) = U(-0.1, 0.1); 0-d floats = 1 + U(-0.1, 0.1); integer tensors are kept, and
so are buffers other than BatchNorm statistics (`seeded_module_state`): VAR's attention mask and level index are
part of the architecture, not weights.
"""

from __future__ import annotations

import zlib
from typing import Iterable, Mapping

import torch

SCALE_SUFFIXES = ("weight", "gamma", "scale", "running_var")


def seeded_tensor(name: str, shape: Iterable[int], seed: int) -> torch.Tensor:
    shape = tuple(shape)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    if len(shape) >= 2:
        fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
        return torch.randn(shape, generator=gen, dtype=torch.float64).float() / fan_in ** 0.5
    u = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1).float() * 0.1
    return 1 + u if len(shape) == 0 or name.rsplit(".", 1)[-1].endswith(SCALE_SUFFIXES) else u


def seeded_state(reference: Mapping[str, torch.Tensor], seed: int, keep: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """A state dict with the names, shapes and dtypes of `reference`, floats drawn by the rule above (names in
    `keep` copied as they are)."""
    keep = set(keep)
    return {name: seeded_tensor(name, t.shape, seed).to(t.dtype) if t.is_floating_point() and name not in keep
            else t.clone() for name, t in reference.items()}


def seeded_module_state(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """`seeded_state` of a module's state dict, keeping its buffers except BatchNorm running statistics."""
    keep = {name for name, _ in module.named_buffers() if not name.endswith(("running_mean", "running_var"))}
    return seeded_state(module.state_dict(), seed, keep)


@torch.no_grad()
def seeded_fill(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Load `seeded_module_state` into the module (strictly) and return it in eval mode."""
    module.load_state_dict(seeded_module_state(module, seed), strict=True)
    return module.eval()


@torch.no_grad()
def damp(module: torch.nn.Module, prefixes: Iterable[str], factor: float) -> torch.nn.Module:
    """Multiply the parameters whose names start with one of `prefixes` by `factor` (after `seeded_fill`: keeps a
    random network's output heads from saturating, e.g. an image clamped to 0..1 everywhere)."""
    prefixes = tuple(prefixes)
    for name, p in module.named_parameters():
        if name.startswith(prefixes):
            p.mul_(factor)
    return module


def layout(module: torch.nn.Module) -> str:
    """The module's state-dict names and shapes as JSON (stored beside golden outputs: the released layout)."""
    import json

    return json.dumps({name: list(t.shape) for name, t in module.state_dict().items()})


def save_golden(folder, upstream: str, arrays: dict) -> None:
    """Write `folder/golden.npz` with the upstream repo@commit that produced the arrays."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "golden.npz", upstream=np.array(upstream), **arrays)
    print(f"wrote {folder}")
