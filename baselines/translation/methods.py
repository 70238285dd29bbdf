"""The reference translators as ARBench methods (modality "translation": sentences in, sentences out).

Each loads a checkpoint written by `baselines.translation.train` (default: the bundled nat-mini one)
and refuses requests for another language pair. `settings()` carries every decoding setting and how
the checkpoint was trained (distillation, teacher, checkpoint averaging), so they enter the signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch

from baselines.translation.ar import ARTransformer
from baselines.translation.checkpoint import CHECKPOINT_DIR, load_weights, read_metadata
from baselines.translation.cmlm import CMLM
from baselines.translation.ctc import CTCNAT
from baselines.translation.nat import VanillaNAT
from baselines.translation.vocab import detokenize, tokenize
from harness.api import Method, Request
from harness.errors import InputError
from harness.provenance import sha256_file
from harness.registry import register_method
from harness.settings import Annotated, Field

MODALITY = "translation"
#: Bumped whenever decoding code changes outputs (it is in the signature, so stale shards are not resumed).
DECODER_VERSION = "2"


class CheckpointTranslator(Method):
    """Shared loading, tokenisation and batching; subclasses build the model and decode id batches."""

    modality = MODALITY
    kind: ClassVar[str] = ""

    def __init__(self, config: Any = None, device: str = "cpu"):
        super().__init__(config, device)
        for key in ("beam", "length_beam", "iterations"):
            if getattr(self.config, key, 1) < 1:
                raise InputError(f"{self.name}: {key} must be at least 1, got {getattr(self.config, key)}.")
        self.meta, self.model, self._sha256 = self.load()
        self.vocab = self.meta["vocab"]
        self.model = self.model.to(device)

    def load(self) -> tuple[dict, torch.nn.Module, str]:
        """(metadata, model, checkpoint sha256) of the ARBench checkpoint `checkpoint` names."""
        self.path = Path(self.config.checkpoint) if self.config.checkpoint else CHECKPOINT_DIR / f"{self.kind}.safetensors"
        meta = read_metadata(self.path)
        if meta["kind"] != self.kind:
            raise InputError(f"{self.path} holds a {meta['kind']!r} model, but method {self.name!r} needs "
                             f"a {self.kind!r} checkpoint.")
        return meta, load_weights(self.build(meta), self.path), sha256_file(self.path)

    def build(self, meta: dict) -> torch.nn.Module:
        raise NotImplementedError

    def decode(self, src: torch.Tensor) -> list[list[int]]:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        training = self.meta["training"]
        decoding = {k: v for k, v in super().settings().items() if k != "checkpoint"}
        return {**decoding, "decoder_version": DECODER_VERSION, "langpair": self.meta["langpair"], "distilled": training.get("distilled", False),
                "teacher": training.get("teacher", "none"),
                "checkpoint_averaging": training.get("checkpoint_averaging", "none"), **self.meta["model"]}

    def checkpoint_sha256(self) -> str:
        return self._sha256

    def tokenize(self, text: str, lang: str) -> list[str]:
        return tokenize(text, lang)

    def detokenize(self, tokens: list[str], lang: str) -> str:
        return detokenize(tokens, lang)

    def translate(self, sentences: Sequence[str]) -> list[str]:
        src_lang, tgt_lang = self.meta["langpair"].split("-")
        ids = [self.vocab.encode(self.tokenize(s, src_lang))[: self.model.cfg.max_positions - 2] for s in sentences]
        with torch.inference_mode():
            out = self.decode(self.vocab.batch(ids).to(self.device))
        return [self.detokenize(self.vocab.decode(o), tgt_lang) for o in out]

    def check_task(self, task: str, langpair: str) -> None:
        """Refuse, before anything runs, a test set this checkpoint was not trained for."""
        if langpair != self.meta["langpair"]:
            raise InputError(f"{self.path.name} translates {self.meta['langpair']}, but the task asks for {langpair}. "
                             f"Give a checkpoint for {langpair} with --set checkpoint=PATH, or score your own "
                             f"translator through the `sentences-translator` adapter.")
        if str(self.meta["training"].get("corpus", "")).startswith("nat-mini") and task != "nat-mini":
            raise InputError(f"{self.path.name} was trained on the nat-mini controlled language only; it cannot "
                             f"translate {task}. Give a checkpoint trained for it with --set checkpoint=PATH, "
                             f"or use the `sentences-translator` adapter.")

    def generate(self, requests: Sequence[Request]) -> list[str]:
        if requests:
            condition = requests[0].condition
            self.check_task(condition.get("task", ""), f"{condition.get('src_lang')}-{condition.get('tgt_lang')}")
        return self.translate([r.condition["source"] for r in requests])


@dataclass
class ARConfig:
    checkpoint: str = ""
    beam: Annotated[int, Field(ge=1, le=128)] = 1
    length_penalty: float = 1.0


@register_method("ar-transformer")
class ARTranslator(CheckpointTranslator):
    description = "autoregressive Transformer, KV-cached greedy (beam=1) or beam search"
    family = "ar"
    kind = "ar"
    Config = ARConfig

    def build(self, meta):
        return ARTransformer(meta["config"])

    def decode(self, src):
        return self.model.beam_search(src, self.config.beam, self.config.length_penalty)


@dataclass
class NATConfig:
    checkpoint: str = ""
    length_beam: Annotated[int, Field(ge=1, le=128)] = 1


@register_method("vanilla-nat")
class VanillaNATTranslator(CheckpointTranslator):
    description = "vanilla NAT (Gu et al. 2018): length prediction, source copy, one parallel pass"
    family = "nat"
    kind = "nat"
    Config = NATConfig

    def build(self, meta):
        return VanillaNAT(meta["config"])

    def decode(self, src):
        return self.model.translate(src, self.config.length_beam)

    def settings(self):
        return {**super().settings(), "iterations": 1, "reranking": "none"}


@dataclass
class CTCConfig:
    checkpoint: str = ""


@register_method("ctc-nat")
class CTCTranslator(CheckpointTranslator):
    description = "CTC NAT (Libovický & Helcl 2018): upsampled states, best-path CTC collapse"
    family = "nat"
    kind = "ctc"
    Config = CTCConfig

    def build(self, meta):
        return CTCNAT(meta["config"], upsample=meta["model"]["upsample"])

    def decode(self, src):
        return self.model.translate(src)

    def settings(self):
        return {**super().settings(), "iterations": 1, "reranking": "none", "ctc_decoding": "best-path"}


@dataclass
class CMLMConfig:
    checkpoint: str = ""
    iterations: Annotated[int, Field(ge=1, le=1000)] = 10
    length_beam: Annotated[int, Field(ge=1, le=128)] = 3


@register_method("cmlm")
class CMLMTranslator(CheckpointTranslator):
    description = "CMLM with iterative Mask-Predict decoding (Ghazvininejad et al. 2019)"
    family = "nat"
    kind = "cmlm"
    Config = CMLMConfig

    def build(self, meta):
        return CMLM(meta["config"])

    def decode(self, src):
        return self.model.translate(src, self.config.iterations, self.config.length_beam)

    def settings(self):
        return {**super().settings(), "reranking": "none"}
