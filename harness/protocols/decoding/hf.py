"""`ARModel` adapter for Hugging Face `transformers` causal LMs (what users bring).

Uses the library's own `DynamicCache` (grow by feeding, `crop` to roll back rejected speculation).
HF models have no blockwise proposal heads or trained intermediate exits, so strategies that need
them refuse such a model up front. Prompts are token ids from the model's own tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import inspect
import os
from pathlib import Path
from typing import Any

import torch

from harness.protocols.decoding.interface import ARModel, FFNGate, ModelOutput
from harness.errors import ArbenchError
from harness.provenance import sha256_file


class HFCausalLM(ARModel):
    """Wrap a loaded `transformers` causal LM (any `AutoModelForCausalLM`)."""

    def __init__(self, model: Any, name: str, eos_id: int | None, device: str = "cpu", revision: str | None = None):
        self.model = model.to(device).eval()
        self.name, self.device, self.revision = name, torch.device(device), revision
        config = model.config
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.eos_id = eos_id
        self.num_layers = int(getattr(config, "num_hidden_layers", getattr(config, "n_layer", 0)))
        # transformers 5.x renamed `past_key_values` to `cache`
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "HFCausalLM":
        """Load from a local folder (offline: nothing is downloaded)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForCausalLM

        path = Path(path)
        if not (path / "config.json").is_file():
            raise ArbenchError(f"{path} is not a Hugging Face model folder (no config.json). Save one with "
                               f"model.save_pretrained(folder) and pass that folder.")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        eos = model.generation_config.eos_token_id if model.generation_config else model.config.eos_token_id
        if isinstance(eos, list):
            eos = eos[0]
        adapter = cls(model, path.name, eos, device, revision=_folder_digest(path))
        adapter.tokenizer_digest = _tokenizer_digest(path)
        return adapter

    def checkpoint_sha256(self) -> str | None:
        return self.revision

    def new_cache(self, batch: int, max_len: int) -> Any:
        from transformers import DynamicCache

        return DynamicCache()

    def cache_length(self, cache: Any) -> int:
        return int(cache.get_seq_length())

    def crop(self, cache: Any, length: int) -> None:
        surplus = self.cache_length(cache) - length
        if surplus > 0:  # a negative argument removes that many positions (transformers 4.x and 5.x)
            cache.crop(-surplus)

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, cache: Any, *, exit_layer: int | None = None,
                want_hidden: bool = False) -> ModelOutput:
        if exit_layer is not None and exit_layer != self.num_layers:
            self.require_exits([exit_layer], "early exit")
        start = self.cache_length(cache)
        positions = torch.arange(start, start + ids.shape[1], device=self.device)
        out = self.model(input_ids=ids.to(self.device), **{self._cache_arg: cache}, use_cache=True,
                         cache_position=positions, output_hidden_states=want_hidden)
        hidden = out.hidden_states[-1] if want_hidden else None
        return ModelOutput(out.logits, hidden)

    supports_tree = True

    @torch.inference_mode()
    def forward_tree(self, ids: torch.Tensor, cache: Any, positions: torch.Tensor,
                     mask: torch.Tensor, want_hidden: bool = False) -> ModelOutput:
        """A custom 4D additive mask and explicit position ids (transformers uses a 4D mask as given)."""
        start, t = self.cache_length(cache), ids.shape[1]
        dtype = self.model.dtype
        allowed = torch.cat([torch.ones(t, start, dtype=torch.bool), mask.cpu()], 1).to(self.device)
        additive = torch.zeros(allowed.shape, dtype=dtype, device=self.device).masked_fill(
            ~allowed, torch.finfo(dtype).min)
        batch = ids.shape[0]
        out = self.model(input_ids=ids.to(self.device), **{self._cache_arg: cache}, use_cache=True,
                         attention_mask=additive[None, None].expand(batch, 1, t, start + t),
                         position_ids=positions.to(self.device)[None].expand(batch, t),
                         cache_position=torch.arange(start, start + t, device=self.device),
                         output_hidden_states=want_hidden)
        return ModelOutput(out.logits, out.hidden_states[-1] if want_hidden else None)

    supports_features = True

    @torch.inference_mode()
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids.to(self.device))

    @torch.inference_mode()
    def hidden_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # transformers' last hidden state already went through the final norm (Llama, Mistral, Qwen2, GPT-2, ...)
        return self.model.get_output_embeddings()(hidden.to(self.device, self.model.dtype))

    @property
    def supports_ffn_skip(self) -> bool:
        return self._decoder_layers() is not None

    def _decoder_layers(self) -> list | None:
        """Decoder layers with the Llama-family layout (`post_attention_layernorm` then `mlp` on the
        residual stream: Llama, Mistral, Qwen2, ...), else None."""
        layers = getattr(getattr(self.model, "model", None), "layers", None)
        if layers is None or not all(hasattr(l, "mlp") and hasattr(l, "post_attention_layernorm") for l in layers):
            return None
        return list(layers)

    @torch.inference_mode()
    def forward_ffn_gated(self, ids: torch.Tensor, cache: Any, gate: FFNGate) -> ModelOutput:
        layers = self._decoder_layers()
        if layers is None:
            self.require_ffn_skip("FFN skipping")
        for i, layer in enumerate(layers):
            if not isinstance(layer.mlp, _GatedMLP):  # installed once; a pass-through while no gate is set
                layer.mlp = _GatedMLP(layer.mlp, i)
                layer.post_attention_layernorm.register_forward_pre_hook(layer.mlp.capture)
            layer.mlp.gate = gate
        try:
            return self.forward(ids, cache)
        finally:
            for layer in layers:
                layer.mlp.gate = None

    def keep(self, cache: Any, start: int, indices: list[list[int]]) -> None:
        idx = torch.tensor(indices, dtype=torch.long, device=self.device) + start  # (B, n)
        layers = getattr(cache, "layers", None)
        if layers is None:
            raise ArbenchError("keep() needs a transformers >= 4.56 cache (DynamicCache with .layers).")
        for layer in layers:
            b, h, _, d = layer.keys.shape
            where = idx[:, None, :, None].expand(b, h, idx.shape[1], d)
            layer.keys = torch.cat([layer.keys[..., :start, :], layer.keys.gather(2, where)], -2)
            layer.values = torch.cat([layer.values[..., :start, :], layer.values.gather(2, where)], -2)


class _GatedMLP(torch.nn.Module):
    """Wraps a decoder layer's MLP: with a gate set, skipped rows get a zero update (the residual stream
    passes unchanged) and the MLP is not run at all when every row skips."""

    def __init__(self, mlp: torch.nn.Module, layer: int):
        super().__init__()
        self.inner, self.layer, self.gate = mlp, layer, None
        self.residual: torch.Tensor | None = None

    def capture(self, module, args):  # pre-hook of post_attention_layernorm: the residual stream
        self.residual = args[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is None:
            return self.inner(x)
        skip = self.gate.skip(self.layer)
        if skip is not None and bool(skip.all()):
            update = torch.zeros_like(x)
        else:
            update = self.inner(x)
            if skip is not None and bool(skip.any()):
                update = update.masked_fill(skip.to(x.device)[:, None, None], 0.0)
        self.gate.observe(self.layer, self.residual, self.residual + update)
        return update


def _folder_digest(path: Path) -> str:
    """SHA-256 over the weight files of a model folder (names and contents)."""
    digest = hashlib.sha256()
    for file in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(file.name.encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def _tokenizer_digest(path: Path) -> str | None:
    """SHA-256 of a model folder's token-to-id mapping (its tokenizer's full vocabulary, added tokens included);
    None when the folder holds no tokenizer."""
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json",
                                                     "tokenizer.model")):
        return None
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(path).get_vocab()
    return hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()
