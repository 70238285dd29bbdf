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
from baselines.translation.methods import CheckpointTranslator
from harness.registry import register_method

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
        return {**settings, "dag_decoder_version": DAG_DECODER_VERSION, "iterations": 1,
                "reranking": "none", "glancing": self.meta["training"].get("glancing", "none")}
