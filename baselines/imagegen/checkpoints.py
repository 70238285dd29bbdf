"""Reading released checkpoints safely and matching them to the project's modules by name and shape.

`.pt`/`.pth` files are read with `torch.load(weights_only=True)` (tensors and plain containers, never
arbitrary pickles) with one allow-listed class, `argparse.Namespace`: upstream training scripts (LlamaGen's
`train_c2i.py`, MAR's `main_mar.py`) save their command-line `args` beside the weights, and a Namespace is
plain attribute storage that runs no code when rebuilt. `.safetensors` files are read with safetensors. A checkpoint whose names or shapes do not match the chosen
architecture is refused with one message listing the first mismatches.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn as nn
from safetensors.torch import load_file

from harness.errors import ArbenchError

#: Where upstream training scripts nest the weights inside the saved dict (LlamaGen: "model").
WRAPPER_KEYS = ("model", "module", "state_dict")
MAX_LISTED = 8
#: The only non-container classes a .pt/.pth checkpoint may hold (see the module docstring).
ALLOWED_CLASSES = (argparse.Namespace,)


def load_checkpoint_file(path: str | Path, what: str = "a checkpoint") -> object:
    """The object saved in a checkpoint file, unpickled with `weights_only=True` and `ALLOWED_CLASSES` only."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        with torch.serialization.safe_globals(list(ALLOWED_CLASSES)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means the same thing to the user
        raise ArbenchError(f"{path} could not be read as {what} ({type(exc).__name__}: {exc}). "
                           "Give a .pt/.pth saved with torch.save of tensors (an argparse.Namespace of training "
                           "arguments beside them is accepted), or a .safetensors file.") from exc


def read_state_dict(path: str | Path, derived: Sequence[str] = (), what: str = "a checkpoint") -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, unwrapped from a training wrapper where there is one.

    Other entries of the wrapper (LlamaGen's `"args"`, `"optimizer"`, `"steps"`) are not read. `derived` names
    entries upstream's own loader skips because the network recomputes them (LlamaGen's `freqs_cis` rotary
    table: an attribute, not a parameter, so upstream's `load_state_dict(strict=False)` never loads it); they
    are dropped here so the strict name check of `load_into` still sees every other entry.
    """
    path = Path(path)
    state = load_checkpoint_file(path, what)
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArbenchError(f"{path} holds no flat name -> tensor state dict (looked inside {', '.join(WRAPPER_KEYS)}).")
    return {name: tensor for name, tensor in state.items() if name not in derived}


def mismatches(expected: Mapping[str, Sequence[int]], state: Mapping[str, torch.Tensor],
               ignore_prefixes: Sequence[str] = ()) -> list[str]:
    """Human-readable differences between expected name -> shape and a state dict."""
    problems = []
    for name, shape in expected.items():
        if name not in state:
            problems.append(f"missing {name} {tuple(shape)}")
        elif tuple(state[name].shape) != tuple(shape):
            problems.append(f"{name} has shape {tuple(state[name].shape)}, expected {tuple(shape)}")
    for name in state:
        if name not in expected and not name.startswith(tuple(ignore_prefixes)):
            problems.append(f"unexpected {name} {tuple(state[name].shape)}")
    return problems


def load_into(module: nn.Module, state: Mapping[str, torch.Tensor], what: str,
              ignore_prefixes: Sequence[str] = (), assign: bool = False) -> None:
    """Load `state` into `module` after checking every name and shape; refuse with the first mismatches.

    With `assign`, the checkpoint's tensors replace the module's own, so a module built on the meta device
    allocates and initialises nothing before the check (and a refused checkpoint costs no memory)."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    problems = mismatches(expected, state, ignore_prefixes)
    if problems:
        listed = "; ".join(problems[:MAX_LISTED])
        more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        raise ArbenchError(f"{what}: the checkpoint does not match this architecture: {listed}{more}. "
                           "Check that the file is the one this method names (`arbench weights list`).")
    module.load_state_dict({k: state[k] for k in expected}, strict=True, assign=assign)


def combined_sha256(digests: Iterable[str]) -> str:
    """One digest for a method that loads several files (a generator and its tokenizer)."""
    return hashlib.sha256(":".join(digests).encode()).hexdigest()
