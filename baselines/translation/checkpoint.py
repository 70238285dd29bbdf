"""Bundled translator checkpoints: safetensors weights plus JSON metadata (no pickle anywhere).

The metadata holds the model kind, its `TransformerConfig`, the vocabulary, the language pair and how
the model was trained (data, distillation, steps, checkpoint averaging), so that a method can put
every setting that changes its outputs into the signature.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from baselines.translation.layers import TransformerConfig
from baselines.translation.vocab import Vocabulary, vocabulary_from
from harness.errors import ArbenchError

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"


def save_checkpoint(model: nn.Module, path: Path, kind: str, config: TransformerConfig, vocab: Vocabulary,
                    langpair: str, training: dict[str, Any], model_settings: dict[str, Any]) -> None:
    metadata = {
        **({} if getattr(vocab, "layout", "arbench") == "arbench" else {  # absent for our own layout
            "arbench.vocab_layout": json.dumps({"layout": vocab.layout, "seg_tokens": vocab.seg_tokens})}),
        "arbench.kind": kind,
        "arbench.config": json.dumps(asdict(config)),
        "arbench.model": json.dumps(model_settings),
        "arbench.vocab": json.dumps(vocab.tokens, ensure_ascii=False),
        "arbench.langpair": langpair,
        "arbench.training": json.dumps(training),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path), metadata=metadata)


def read_metadata(path: Path) -> dict[str, Any]:
    """The checkpoint's metadata, decoded; raises a clear error for a file that is not one of ours."""
    if not path.is_file():
        raise ArbenchError(f"no translator checkpoint at {path}: train one with "
                           f"`python -m baselines.translation.train` or give the path of an existing file.")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for non-safetensors files
        raise ArbenchError(f"{path} is not a safetensors file ({exc}).") from exc
    if "arbench.kind" not in raw:
        raise ArbenchError(f"{path} is a safetensors file without ARBench translator metadata; "
                           f"it was not written by baselines.translation.checkpoint.save_checkpoint.")
    return {
        "kind": raw["arbench.kind"],
        "config": TransformerConfig(**json.loads(raw["arbench.config"])),
        "model": json.loads(raw["arbench.model"]),
        "vocab": vocabulary_from(json.loads(raw["arbench.vocab"]),
                                 **json.loads(raw.get("arbench.vocab_layout", '{"layout": "arbench"}'))),
        "langpair": raw["arbench.langpair"],
        "training": json.loads(raw["arbench.training"]),
    }


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load weights strictly (every name and shape must match) and switch to eval mode."""
    missing, unexpected = load_model(model, str(path), strict=True)
    if missing or unexpected:
        raise ArbenchError(f"{path} does not match the model: missing {missing}, unexpected {unexpected}")
    return model.eval()
