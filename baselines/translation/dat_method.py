"""`da-transformer`: the DA-Transformer translator (`dag.py`) as an ARBench method.

Loads a `dat` checkpoint written by `baselines.translation.train_dat` (default: the bundled nat-mini one) and
decodes with upstream's `decode_strategy` greedy, lookahead (`decode_beta`, upstream's default 1.0) or
beamsearch (upstream's `--decode-*` options and defaults; no n-gram LM: upstream's `decode_gamma` term is 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from baselines.translation.dag import BeamSearchSettings, DATransformer
from baselines.translation.fairseq_dat import PDAT_VOCAB, PDAT_WEIGHTS, import_dat
from baselines.translation.methods import CheckpointTranslator
from baselines.translation.vocab import BertUncasedPieces
from harness.errors import InputError
from harness.registry import register_method

#: Released checkpoints loaded by name (`checkpoint=pdat`): the fairseq weights and dictionary specs, imported
#: in memory by `fairseq_dat.import_dat` with its preset.
NAMED = {"pdat": (PDAT_WEIGHTS, PDAT_VOCAB)}
PDAT_NOTE = ("PDAT is DA-Transformer pre-trained on English Wikipedia + BookCorpus (span infilling: the source "
             "holds [P0] [P1] ... where spans were cut out, the output lists each span after its [Pi]); it is not "
             "a translator, and no task here scores it without fine-tuning. Fine-tune it with upstream's scripts "
             "(examples/DA-Transformer/squad.sh, xsum.sh, ...: --load-pretrained-model model.bin), then import "
             "the fine-tuned checkpoint with `python -m baselines.translation.fairseq_dat` and run it with "
             "--set checkpoint=PATH.")
#: Bumped whenever the DAG decoding code changes outputs (it is in the signature).
DAG_DECODER_VERSION = "1"
#: The beam search options, recorded in the signature only when decode_strategy is beamsearch.
BEAM_OPTIONS = ("decode_beamsize", "decode_max_beam_per_length", "decode_top_cand_n", "decode_top_p",
                "decode_alpha", "decode_dedup")


@dataclass
class DATConfig:
    checkpoint: str = ""
    decode_strategy: Literal["lookahead", "greedy", "beamsearch"] = "lookahead"
    decode_beta: float = 1.0
    # beamsearch only (upstream's names and defaults)
    decode_beamsize: Annotated[int, Field(ge=1, le=1000)] = 100
    decode_max_beam_per_length: Annotated[int, Field(ge=1, le=1000)] = 10
    decode_top_cand_n: Annotated[int, Field(ge=1, le=64)] = 5
    decode_top_p: float = 0.9
    decode_alpha: float = 1.1
    decode_dedup: bool = False


@register_method("da-transformer")
class DATranslator(CheckpointTranslator):
    description = ("DA-Transformer (Huang et al. 2022): DAG decoder, one parallel pass, then a greedy or lookahead "
                   "path or DAG beam search")
    family = "nat"
    kind = "dat"
    Config = DATConfig

    def build(self, meta):
        return DATransformer(meta["config"], **meta["model"])

    def load(self):
        """`checkpoint=pdat` (a name in `NAMED`): the released fairseq files from the weights cache, imported
        in memory (nothing unpickled outside the importer's allow-list); otherwise an ARBench checkpoint."""
        if self.config.checkpoint not in NAMED:
            return super().load()
        weights, vocab_spec = NAMED[self.config.checkpoint]
        self.path, digest = weights.locate()
        model, vocab, settings = import_dat(self.path, vocab_spec.resolve(), preset=self.config.checkpoint)
        meta = {"kind": self.kind, "config": model.cfg, "model": settings, "vocab": vocab, "langpair": "en-en",
                "training": {"corpus": "PDAT pre-training (Wikipedia + BookCorpus, 16 GB)", "distilled": False,
                             "tokenizer": "bert-uncased", "named": self.config.checkpoint}}
        return meta, model, digest

    def check_task(self, task, langpair):
        if self.meta["training"].get("named") == "pdat":
            raise InputError(f"checkpoint=pdat cannot run {task}: {PDAT_NOTE}")
        super().check_task(task, langpair)

    @property
    def pieces(self) -> BertUncasedPieces | None:
        if self.meta["training"].get("tokenizer") != "bert-uncased":
            return None
        if not hasattr(self, "_pieces"):
            self._pieces = BertUncasedPieces(self.vocab.tokens)
        return self._pieces

    def tokenize(self, text, lang):
        return super().tokenize(text, lang) if self.pieces is None else self.pieces.tokenize(text)

    def detokenize(self, tokens, lang):
        return super().detokenize(tokens, lang) if self.pieces is None else self.pieces.detokenize(tokens)

    def beam_settings(self) -> BeamSearchSettings:
        c = self.config
        return BeamSearchSettings(beam_size=c.decode_beamsize, max_beam_per_length=c.decode_max_beam_per_length,
                                  top_cand_n=c.decode_top_cand_n, top_p=c.decode_top_p, alpha=c.decode_alpha,
                                  beta=c.decode_beta, dedup=c.decode_dedup)

    def decode(self, src):
        return self.model.translate(src, self.config.decode_strategy, self.config.decode_beta, self.beam_settings(),
                                    getattr(self.vocab, "special_ids", None))

    def settings(self):
        settings = super().settings()
        if self.config.decode_strategy != "beamsearch":
            settings = {k: v for k, v in settings.items() if k not in BEAM_OPTIONS}
        tokenizer = self.meta["training"].get("tokenizer", "words")
        if tokenizer != "words":
            settings["tokenizer"] = tokenizer
        return {**settings, "dag_decoder_version": DAG_DECODER_VERSION, "iterations": 1,
                "reranking": "none", "glancing": self.meta["training"].get("glancing", "none")}
