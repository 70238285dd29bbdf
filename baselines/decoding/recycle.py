"""RecycleGPT decoding (Jiang et al. 2023, "RecycleGPT: An Autoregressive Language Model with Recyclable
Module", arXiv 2308.03421), greedy and lossy.

A small recyclable module reuses the language model's last hidden state: from h_t (the model's state at
position t) and the embedding of x_{t+1} (the token the model just chose) it predicts x_{t+2} without running
the model. Decoding alternates the two: one model pass over two tokens [x_{t+1}, x_{t+2}] gives their hidden
states and x_{t+3}; one module pass gives x_{t+4}; so every model pass yields two tokens. Nothing verifies
the module's tokens: the output differs from greedy AR decoding wherever the module is wrong, and the task
reports its quality (target NLL, exact match) beside the speed.

Written from the paper (no reference code is published). The module, as the paper describes it: the
concatenation [h_t; e(x_{t+1})] projected to the model width, one Transformer decoder layer (causal attention
over the sequence of such inputs, with its own KV cache), a LayerNorm, and the model's own (tied) LM head.
Deviation, on purpose: the paper trains the module jointly with its 1.3B model; the project cannot retrain
its target, so the module is trained afterwards on the frozen bundled target (`python -m
baselines.decoding.train_recycle`), as one would add it to an existing model. For the bundled GPT, h_t is the
last block's output before the final LayerNorm (`ModelOutput.hidden`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from baselines.decoding.addons import WEIGHTS, AddonStrategy, load_state, read_addon, save_addon
from harness.errors import ArbenchError
from harness.protocols.decoding.generation import GenerationResult, Lockstep
from harness.protocols.decoding.gpt import Block, GPTConfig, GPTModel, rope_tables
from harness.protocols.decoding.strategy import LossyStrategy, Models
from harness.registry import register_method

BUNDLED_MODULE = WEIGHTS / "recycle-tiny-kjv-target.safetensors"


class RecyclableModule(nn.Module):
    """[h_t; e(x_{t+1})] -> Linear -> one decoder layer -> LayerNorm; logits by the target's tied LM head."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.config = GPTConfig(d_model=d_model, n_layers=1, n_heads=n_heads, exit_layers=())
        self.in_proj = nn.Linear(2 * d_model, d_model)
        self.block = Block(self.config)
        self.norm = nn.LayerNorm(d_model)

    def inputs(self, hidden: torch.Tensor, next_emb: torch.Tensor) -> torch.Tensor:
        return self.in_proj(torch.cat([hidden, next_emb], dim=-1))

    def forward_train(self, z: torch.Tensor) -> torch.Tensor:
        cos, sin = rope_tables(self.config.head_dim, torch.arange(z.shape[1], device=z.device), self.config.rope_base)
        return self.norm(self.block(z, cos, sin))

    def step(self, z: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor], start: int) -> torch.Tensor:
        """Outputs for new inputs z (B, t, D) after `start` cached positions (the cache grows by t)."""
        t = z.shape[1]
        cos, sin = rope_tables(self.config.head_dim, torch.arange(start, start + t, device=z.device),
                               self.config.rope_base)
        return self.norm(self.block(z, cos, sin, (*cache, start)))

    def new_cache(self, batch: int, max_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (batch, self.config.n_heads, max_len, self.config.head_dim)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def save(self, path: str | Path, target_sha256: str | None, extra: dict[str, Any] | None = None) -> None:
        save_addon(self, path, {"d_model": self.config.d_model, "n_heads": self.config.n_heads}, target_sha256, extra)

    @classmethod
    def load(cls, path: str | Path, target: GPTModel) -> "RecyclableModule":
        config, state = read_addon(path, target, "recyclable module", "python -m baselines.decoding.train_recycle")
        if config.get("d_model") != target.net.config.d_model:
            raise ArbenchError(f"the recyclable module in {path} has width {config.get('d_model')}, the target "
                               f"{target.name!r} {target.net.config.d_model}.")
        return load_state(cls(config["d_model"], config["n_heads"]), state, path, "a recyclable module")


@torch.inference_mode()
def recycle_decode(model: GPTModel, module: RecyclableModule, prompt: torch.Tensor, max_new_tokens: int,
                   device: str = "cpu") -> GenerationResult:
    """Alternate one model pass (two tokens) and one module pass, greedy."""
    net = model.net
    module = module.to(device)
    emb, lm_head = net.tok_emb, net.tok_emb.weight
    batch, prompt_len = prompt.shape
    state = Lockstep(prompt, max_new_tokens, model.eos_id, device)
    cache = model.new_cache(batch, prompt_len + max_new_tokens + 2)
    rcache = module.new_cache(batch, prompt_len + max_new_tokens + 2, device)
    out = model.forward(prompt.to(device), cache, want_hidden=True)
    state.target_passes += 1
    token = out.logits[:, -1].argmax(-1)
    state.append(token[:, None].cpu())
    # the module's inputs for positions 1..n: h_t with the token after it (the prompt's, then the model's choice)
    following = torch.cat([prompt[:, 1:].to(device), token[:, None]], 1)
    r = 0
    hidden = out.hidden
    while not state.done():
        z = module.inputs(hidden.float(), emb(following).float())
        guess = (module.step(z, rcache, r)[:, -1] @ lm_head.float().T).argmax(-1)  # the token after `token`
        r += z.shape[1]
        state.append(guess[:, None].cpu())
        if state.done():
            break
        out = model.forward(torch.stack([token, guess], 1), cache, want_hidden=True)
        state.target_passes += 1
        token = out.logits[:, -1].argmax(-1)
        state.append(token[:, None].cpu())
        following, hidden = torch.stack([guess, token], 1), out.hidden
    return state.result()


@dataclass
class RecycleConfig:
    """`module`: a recyclable-module file (default: the bundled module for `tiny-kjv-target`)."""

    module: str = ""


@register_method("recycle-gpt")
class RecycleGPTDecoding(AddonStrategy, LossyStrategy):
    description = ("RecycleGPT: a one-layer recyclable module predicts every second token from the model's last "
                   "hidden state, so each model pass yields two tokens (greedy, lossy)")
    paper = "Jiang et al. 2023, RecycleGPT (arXiv 2308.03421)"
    Config = RecycleConfig
    bundled = BUNDLED_MODULE
    addon_setting = "module"

    def load_addon(self, target) -> RecyclableModule:
        if not isinstance(target, GPTModel):
            raise ArbenchError(f"{self.name} needs a recyclable module trained for its target; modules exist only "
                               f"for the project's GPT models (train one with `python -m "
                               f"baselines.decoding.train_recycle`), not for {type(target).__name__}.")
        return RecyclableModule.load(self.addon_path(), target)

    def decode(self, models: Models, prompt, max_new_tokens, seeds: Sequence[int]) -> GenerationResult:
        return recycle_decode(models.target, self.bound_addon(models), prompt, max_new_tokens, self.device)
