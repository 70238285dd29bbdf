"""The small models and prompts that ship with the project, and name/path resolution for user models.

`tiny-kjv-target` / `tiny-kjv-draft`: byte-level GPTs trained by `train_tiny_kjv.py` on the King
James Bible (public domain); see `models/training.json` for settings and scores.
"""

from __future__ import annotations

import json
import re
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
#: The prompt suite of `decoding-speedup-mini` (Spec-Bench style: prompts by category), built from
#: `prompts-kjv.jsonl` by `build_suite` (tests/test_decoding_suite.py checks the file is its output).
BUNDLED_SUITE = MODELS_DIR / "suite-kjv.jsonl"
GENRES = ("poetry", "wisdom", "prophecy", "narrative")
#: A category becomes part of a metric name (`speedup_<category>`).
CATEGORY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")


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
    """A prompt suite as [{id, category, ids}] from JSONL rows with `id`, `category` (Spec-Bench style,
    e.g. mt_bench, translation, summarization, qa, math_reasoning, rag) and either `prompt_ids`
    (token ids) or `prompt` (text: bytes for the bundled GPTs, else the HF model folder's tokenizer).
    A row without a category, with an empty or blank prompt, or with an id used before is refused,
    naming its line."""
    if not path.is_file():
        raise InputError(f"no prompts file at {path}: give a JSONL file with one {{\"id\", \"category\", "
                         f"\"prompt\" or \"prompt_ids\"}} object per line.")
    tokenizer = None
    rows: list[dict] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(read_text(path, "prompts").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number} is not JSON ({exc}); write one JSON object per line.") from exc
        if not isinstance(row, dict):
            raise InputError(f"{path}:{number} is not a JSON object; write {{\"id\", \"category\", \"prompt\"}}.")
        category = row.get("category")
        if not isinstance(category, str) or not CATEGORY_PATTERN.match(category):
            raise InputError(f"{path}:{number} has {'no' if category is None else 'an invalid'} \"category\" "
                             f"({category!r}): every prompt of a suite needs one, letters, digits, _ or - "
                             f"(e.g. \"qa\", \"math_reasoning\"); the board breaks speedups down by it.")
        if "prompt_ids" in row:
            ids = row["prompt_ids"]
            if not isinstance(ids, list) or not ids or not all(isinstance(t, int) and t >= 0 for t in ids):
                raise InputError(f"{path}:{number}: prompt_ids must be a non-empty list of token ids.")
        elif isinstance(row.get("prompt"), str) and row["prompt"].strip():
            if model_path is not None and Path(model_path).is_dir():
                if tokenizer is None:
                    from transformers import AutoTokenizer

                    tokenizer = AutoTokenizer.from_pretrained(model_path)
                ids = tokenizer(row["prompt"])["input_ids"]
            else:
                ids = encode(row["prompt"])
        else:
            raise InputError(f"{path}:{number} has an empty prompt (neither a non-blank \"prompt\" nor "
                             f"\"prompt_ids\"); remove the line or fill it in.")
        if not ids:
            raise InputError(f"{path}:{number}: the prompt encodes to no tokens.")
        row_id = str(row.get("id", number))
        if row_id in seen:
            raise InputError(f"{path}:{number} repeats id {row_id!r} of line {seen[row_id]}; ids must be unique.")
        seen[row_id] = number
        rows.append({"id": row_id, "category": category, "ids": ids})
    if not rows:
        raise InputError(f"{path} has no prompts.")
    return rows


def build_suite(rows: list[dict], per_genre: int = 2, retrieval: int = 2) -> list[dict]:
    """The bundled suite from the held-out prompts (`prompts-kjv.jsonl` rows with text `prompt`):
    `per_genre` chapter openings of each genre, and `retrieval` prompts in the manner of Spec-Bench's
    RAG category -- three openings of other genres as context, then the first half of the last one
    again, so that its continuation is in the prompt. Categories interleave, so that a run cut to the
    first k prompts still covers several categories."""
    by_genre = {g: [r for r in rows if r["category"] == g] for g in GENRES}
    suite = []
    for i in range(max(per_genre, retrieval)):
        if i < per_genre:
            suite += [{"id": by_genre[g][i]["id"], "category": g, "prompt": by_genre[g][i]["prompt"]} for g in GENRES]
        if i < retrieval:
            context = [by_genre[g][per_genre + i]["prompt"] for g in GENRES[i % 2::2] + GENRES[(i + 1) % 2::2]][:3]
            last = context[-1]
            suite.append({"id": f"retrieval-{i}", "category": "retrieval",
                          "prompt": "\n".join(context) + "\n" + last[:len(last) // 2]})
    return suite
