"""The small models and prompts that ship with the project, and name/path resolution for user models.

`tiny-kjv-target` / `tiny-kjv-draft`: byte-level GPTs trained by `train_tiny_kjv.py` on the King
James Bible (public domain); see `models/training.json` for settings and scores.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.protocols.decoding.gpt import GPTModel, encode
from harness.protocols.decoding.interface import ARModel
from harness.errors import ArbenchError, InputError
from harness.inputs import read_text

MODELS_DIR = Path(__file__).resolve().parent / "models"
BUNDLED_MODELS = {
    "tiny-kjv-target": MODELS_DIR / "tiny-kjv-target.safetensors",
    "tiny-kjv-draft": MODELS_DIR / "tiny-kjv-draft.safetensors",
}
BUNDLED_PROMPTS = MODELS_DIR / "prompts-kjv.jsonl"


def load_model(spec: str, device: str = "cpu") -> ARModel:
    """A bundled model by name, a GPT `.safetensors` file, or a Hugging Face model folder."""
    if spec in BUNDLED_MODELS:
        path = BUNDLED_MODELS[spec]
        if not path.is_file():
            raise ArbenchError(f"bundled model {spec} is missing at {path}; run "
                               f"`python -m harness.protocols.decoding.train_tiny_kjv` to recreate it.")
        return GPTModel.load(path, spec, device)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".safetensors":
        return GPTModel.load(path, device=device)
    if path.is_dir():
        from harness.protocols.decoding.hf import HFCausalLM

        return HFCausalLM.load(path, device)
    raise ArbenchError(f"model {spec!r} is neither a bundled model ({', '.join(BUNDLED_MODELS)}), a GPT "
                       f".safetensors file, nor a Hugging Face model folder.")


def read_prompts(path: Path, model_path: str | None = None) -> list[dict]:
    """Prompts as [{id, category, ids}] from JSONL rows with `id`, optional `category`, and either
    `prompt_ids` (token ids) or `prompt` (text: bytes for the bundled GPTs, else the HF model
    folder's tokenizer)."""
    if not path.is_file():
        raise InputError(f"no prompts file at {path}: give a JSONL file with one {{\"id\", \"category\", "
                         f"\"prompt\" or \"prompt_ids\"}} object per line.")
    tokenizer = None
    rows = []
    for number, line in enumerate(read_text(path, "prompts").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number} is not JSON ({exc}); write one JSON object per line.") from exc
        if "prompt_ids" in row:
            ids = row["prompt_ids"]
            if not isinstance(ids, list) or not ids or not all(isinstance(t, int) and t >= 0 for t in ids):
                raise InputError(f"{path}:{number}: prompt_ids must be a non-empty list of token ids.")
        elif isinstance(row.get("prompt"), str) and row["prompt"]:
            if model_path is not None and Path(model_path).is_dir():
                if tokenizer is None:
                    from transformers import AutoTokenizer

                    tokenizer = AutoTokenizer.from_pretrained(model_path)
                ids = tokenizer(row["prompt"])["input_ids"]
            else:
                ids = encode(row["prompt"])
        else:
            raise InputError(f"{path}:{number} has neither a non-empty \"prompt\" nor \"prompt_ids\".")
        rows.append({"id": str(row.get("id", number)), "category": str(row.get("category", "all")), "ids": ids})
    if not rows:
        raise InputError(f"{path} has no prompts.")
    return rows
