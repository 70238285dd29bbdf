"""Trained add-ons of a frozen target model (Medusa heads, RecycleGPT's recyclable module): one safetensors
file per add-on that names the target it was trained for, the strategy side that loads and identifies it, and
the training loop the bundled add-ons were trained with.

A file holds float16 tensors under the add-on's parameter names, and metadata: `config` (JSON, the add-on's
shape), `target_sha256` (the target's checkpoint digest; refused with any other target) and whatever the
trainer records (`training`). Bundled add-ons live in `baselines/decoding/weights/`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from harness.errors import ArbenchError
from harness.protocols.decoding.interface import ARModel
from harness.protocols.decoding.strategy import DecodingStrategy, Models

WEIGHTS = Path(__file__).resolve().parent / "weights"


def save_addon(module: nn.Module, path: str | Path, config: dict[str, Any], target_sha256: str | None,
               extra: dict[str, Any] | None = None) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in module.state_dict().items()}
    meta = {"config": json.dumps(config), "target_sha256": target_sha256 or "",
            **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)


def read_tensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, float32 tensors) of a safetensors file (never a pickle), refused when unreadable."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata() or {}, {k: fh.get_tensor(k).float() for k in fh.keys()}
    except SafetensorError as exc:
        raise ArbenchError(f"{path} is not a readable safetensors file ({exc}).") from exc


def read_addon(path: str | Path, target: ARModel, what: str, train_command: str) -> tuple[dict, dict]:
    """(config, float32 state) of an add-on file, refused when missing, unreadable or trained for another
    target (by checkpoint sha256)."""
    path = Path(path)
    if not path.is_file():
        raise ArbenchError(f"no {what} at {path}. For the bundled target run `{train_command}`; for another "
                           f"target give the file of one trained for it.")
    meta, state = read_tensors(path)
    if "config" not in meta:
        raise ArbenchError(f"{path} has no {what} config in its metadata; it was not saved by ARBench's trainer.")
    expected, actual = meta.get("target_sha256") or None, target.checkpoint_sha256()
    if expected and actual and expected != actual:
        raise ArbenchError(f"the {what} in {path} was trained for a target with sha256 {expected[:16]}..., not "
                           f"{target.name!r} ({actual[:16]}...); it only works with the model it was trained on.")
    return json.loads(meta["config"]), state


def load_state(module: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str) -> nn.Module:
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ArbenchError(f"{path} does not hold {what}: missing {missing[:4]}, unexpected {unexpected[:4]}.")
    return module.eval()


class AddonStrategy(DecodingStrategy):
    """A strategy that drives its target with a trained add-on file: the setting `addon_setting` names the file
    (empty: `bundled`), the file's sha256 enters the signature, and the add-on is loaded (and checked against
    the target) when the strategy is bound to its models."""

    bundled: Path
    addon_setting: str

    def __init__(self, config: Any = None, device: str = "cpu"):
        super().__init__(config, device)
        self.addon: nn.Module | None = None

    def addon_path(self) -> Path:
        given = getattr(self.config, self.addon_setting)
        return Path(given).expanduser() if given else self.bundled

    def load_addon(self, target: ARModel) -> nn.Module:
        raise NotImplementedError

    def check(self, models: Models) -> None:
        super().check(models)
        self.addon = self.load_addon(models.target)

    def describe(self) -> dict[str, Any]:
        from harness.provenance import sha256_file

        path = self.addon_path()
        return {**super().describe(), f"{self.addon_setting}_sha256": sha256_file(path) if path.is_file() else None}

    def bound_addon(self, models: Models) -> nn.Module:
        if self.addon is None:
            self.check(models)
        assert self.addon is not None
        return self.addon


def train_on_frozen_target(addon: nn.Module, loss_fn: Callable[[nn.Module, Any, torch.Tensor], torch.Tensor],
                           net, steps: int, batch: int, length: int, lr: float, seed: int) -> dict[str, Any]:
    """AdamW with the bundled models' warm-up + cosine schedule on the target's training text; returns the
    training record (settings, seconds, loss history). `loss_fn(addon, net, x)` gives the loss of a batch."""
    from harness.protocols.decoding.train_tiny_kjv import TRAIN_RANGES, batches, corpus, lr_at

    data = corpus(TRAIN_RANGES)
    optimiser = torch.optim.AdamW(addon.parameters(), lr=lr, weight_decay=0.0)
    start, history = time.time(), []
    for step, (x, _) in enumerate(batches(data, steps, batch, length, seed)):
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step, steps, lr)
        loss = loss_fn(addon, net, x)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 50 == 0 or step == steps - 1:
            history.append({"step": step, "loss": round(loss.item(), 4)})
            print(f"step {step}/{steps} loss {loss.item():.3f} ({time.time() - start:.0f}s)", flush=True)
    addon.eval()
    return {"steps": steps, "batch": batch, "length": length, "lr": lr, "seconds": round(time.time() - start, 1),
            "history": history}


def frozen_bundled_target():
    """The bundled target (`tiny-kjv-target`) as a frozen float32 network, and its adapter."""
    from harness.protocols.decoding.bundled import load_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    target = load_model("tiny-kjv-target")
    net = target.net.float().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return target, net
