"""Medusa on a linearized LLaMA (You et al., ICML 2024, "When Linear Attention Meets Autoregressive Decoding",
Table 8; GATECH-EIC/Linearized-LLM `experiments/medusa/`, Apache-2.0): the released linearized LLaMA-2-7B
(`LinearizedLLM/llama-2-7b-aug-linear`) decoded with Medusa-1 heads trained for it
(`LinearizedLLM/llama-2-7b-medusa-head-aug-linear`), greedy, upstream's `mc_sim_7b_63` tree by default
(`gen_model_answer_medusa.py`: temperature 0, `--medusa-choices mc_sim_7b_63`).

Each step verifies the heads' candidate tree in one pass over the linearized model's recurrent state
(`LinearizedLlama.forward_tree`: every node sees the committed state and its root path, with the training-time
formula) and commits the accepted path (`keep`), with `baselines/decoding/medusa.py`'s tree and acceptance
(golden against FasterDecoding/Medusa). Exactness, two ways: against the task's target (the original LLaMA)
the strategy is lossy, like `linearized-llm` (quality is reported under the original model); against the
linearized model's own greedy decoding it is lossless (tests/test_decoding_linearized.py checks token equality).

Heads: a Medusa head folder as upstream releases it (`config.json` with `medusa_num_heads`, `medusa_num_layers`,
`base_model_name_or_path`, and `medusa_lm_head.pt`, the `state_dict` of the heads' `ModuleList`:
`{k}.0.linear.weight`, `{k}.0.linear.bias`, `{k}.1.weight`), or `medusa_lm_head.safetensors` with the same names.
The `.pt` is read with `torch.load(weights_only=True)` (plain tensors only); nothing else is unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from baselines.decoding.linearized import LinearizedConfig, LinearizedLlama, LinearizedLLM
from baselines.decoding.medusa import TREES, MedusaHeads, medusa_decode
from harness.errors import ArbenchError
from harness.protocols.decoding.generation import GenerationResult
from harness.protocols.decoding.strategy import Models
from harness.registry import register_method
from harness.settings import Literal

#: The released heads (Medusa-1, trained by upstream on the linearized LLaMA-2-7B). Their file list and hashes
#: could not be read here (no network): the file's own sha256 enters the run's signature instead.
HEAD_WEIGHTS = {
    "llama-2-7b-medusa-head-aug-linear": {
        "url": "https://huggingface.co/LinearizedLLM/llama-2-7b-medusa-head-aug-linear",
        "licence": "Llama 2 Community License (trained on LLaMA-2-7B outputs); code Apache-2.0",
        "sha256": None,
        "download": "huggingface-cli download LinearizedLLM/llama-2-7b-medusa-head-aug-linear "
                    "--local-dir llama-2-7b-medusa-head-aug-linear",
        "base": "LinearizedLLM/llama-2-7b-aug-linear",
    },
}
HEAD_FILES = ("medusa_lm_head.safetensors", "medusa_lm_head.pt")


def heads_file(path: str | Path) -> Path:
    """The weights file of a head folder (or the file itself)."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    for name in HEAD_FILES:
        if (path / name).is_file():
            return path / name
    raise ArbenchError(f"{path} holds no Medusa heads ({' or '.join(HEAD_FILES)}). Download the released heads with "
                       f"`{HEAD_WEIGHTS['llama-2-7b-medusa-head-aug-linear']['download']}` and pass that folder.")


def load_released_heads(path: str | Path, model: LinearizedLlama) -> MedusaHeads:
    """Medusa-1 heads in upstream's layout, checked against the linearized model they decode."""
    file = heads_file(path)
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(file))
    else:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # the restricted unpickler refuses anything but tensors and plain containers
            raise ArbenchError(f"{file} could not be read as plain tensors ({exc}); convert it to safetensors.") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArbenchError(f"{file} is not a state dict of tensors (upstream saves `medusa_head.state_dict()`).")
    state = {k.removeprefix("medusa_head."): v.float() for k, v in state.items()}
    config_file = file.parent / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    layers = int(config.get("medusa_num_layers", 1))
    if layers != 1:
        raise ArbenchError(f"{file}: heads with medusa_num_layers={layers} (one ResBlock applied {layers} times) "
                           f"are not implemented; the released Medusa-1 heads have 1.")
    count = 1 + max((int(k.split(".")[0]) for k in state if k.split(".")[0].isdigit()), default=-1)
    if "medusa_num_heads" in config and int(config["medusa_num_heads"]) != count:
        raise ArbenchError(f"{file} holds {count} heads, its config.json says medusa_num_heads="
                           f"{config['medusa_num_heads']}.")
    out = state.get("0.1.weight")
    if count == 0 or out is None:
        raise ArbenchError(f"{file} is not in upstream's Medusa head layout (expected names such as "
                           f"0.0.linear.weight and 0.1.weight); found {sorted(state)[:4]}.")
    vocab, hidden = out.shape
    lm_head = model.model.lm_head.weight
    if (vocab, hidden) != tuple(lm_head.shape):
        raise ArbenchError(f"the Medusa heads in {file} map {hidden} features to {vocab} tokens; the linearized "
                           f"model {model.name!r} has {lm_head.shape[1]} and {lm_head.shape[0]}: they were trained "
                           f"for another model.")
    heads = MedusaHeads(hidden, vocab, count)
    missing, unexpected = heads.medusa_head.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ArbenchError(f"{file} does not hold Medusa-1 heads (one ResBlock each): missing {missing[:4]}, "
                           f"unexpected {unexpected[:4]}.")
    return heads.eval()


@dataclass
class LinearizedMedusaConfig(LinearizedConfig):
    #: folder of the Medusa heads trained for the linearized model (upstream's layout, e.g. the released
    #: llama-2-7b-medusa-head-aug-linear)
    medusa_heads: str = ""
    tree: Literal["mc_sim_7b_63", "kjv-31"] = "mc_sim_7b_63"


@register_method("linearized-medusa")
class LinearizedMedusa(LinearizedLLM):
    description = ("Medusa-1 heads on a linearized LLaMA (augmented linear attention): a tree of the heads' top-k "
                   "candidates verified in one pass over the recurrent state, timed against AR decoding of the "
                   "original model; lossy vs the original, equal to the linearized model's own greedy output")
    paper = ("You et al., ICML 2024, When Linear Attention Meets Autoregressive Decoding (arXiv 2406.07368), "
             "Table 8; Medusa: Cai et al., ICML 2024")
    Config = LinearizedMedusaConfig

    def __init__(self, config: Any = None, device: str = "cpu"):
        super().__init__(config, device)
        self.heads: MedusaHeads | None = None
        self.heads_sha256: str | None = None  # hashed once (the released heads are about 1 GB)

    def check(self, models: Models) -> None:
        if not self.config.medusa_heads:
            raise ArbenchError(f"{self.name} needs the Medusa heads trained for the linearized model: give their "
                               f"folder with medusa_heads=<path> (e.g. "
                               f"`{HEAD_WEIGHTS['llama-2-7b-medusa-head-aug-linear']['download']}`).")
        heads_file(self.config.medusa_heads)  # refused before the (large) model is loaded
        super().check(models)
        assert self.linearized is not None
        if self.heads is None:
            self.heads = load_released_heads(self.config.medusa_heads, self.linearized)
        depth = max(len(p) for p in TREES[self.config.tree])
        if depth > self.heads.num_heads:
            raise ArbenchError(f"tree {self.config.tree!r} is {depth} heads deep; {self.config.medusa_heads} has "
                               f"{self.heads.num_heads} heads.")

    def describe(self) -> dict[str, Any]:
        from harness.provenance import sha256_file

        info = super().describe()
        if self.config.medusa_heads:
            if self.heads_sha256 is None:
                self.heads_sha256 = sha256_file(heads_file(self.config.medusa_heads))
            info["medusa_heads_sha256"] = self.heads_sha256
        return info

    def decode(self, models: Models, prompt, max_new_tokens, seeds: Sequence[int]) -> GenerationResult:
        if self.linearized is None or self.heads is None:
            self.check(models)
        return medusa_decode(self.linearized, self.heads, prompt, max_new_tokens, TREES[self.config.tree],
                             self.device)
