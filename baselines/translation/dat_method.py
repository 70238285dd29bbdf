"""`da-transformer`: the DA-Transformer translator (`dag.py`) as an ARBench method.

Loads a `dat` checkpoint written by `baselines.translation.train_dat` (default: the bundled nat-mini one) and
decodes with upstream's `decode_strategy` greedy or lookahead (`decode_beta`, upstream's default 1.0). Beam
search is not offered: upstream's is a C++ extension (`dag_search`) with an n-gram LM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from baselines.translation.dag import DATransformer
from baselines.translation.methods import CheckpointTranslator
from harness.registry import register_method

#: Bumped whenever the DAG decoding code changes outputs (it is in the signature).
DAG_DECODER_VERSION = "1"


@dataclass
class DATConfig:
    checkpoint: str = ""
    decode_strategy: Literal["lookahead", "greedy"] = "lookahead"
    decode_beta: float = 1.0


@register_method("da-transformer")
class DATranslator(CheckpointTranslator):
    description = "DA-Transformer (Huang et al. 2022): DAG decoder, greedy or lookahead path, one parallel pass"
    family = "nat"
    kind = "dat"
    Config = DATConfig

    def build(self, meta):
        return DATransformer(meta["config"], upsample=meta["model"]["upsample"])

    def decode(self, src):
        return self.model.translate(src, self.config.decode_strategy, self.config.decode_beta)

    def settings(self):
        return {**super().settings(), "dag_decoder_version": DAG_DECODER_VERSION, "iterations": 1,
                "reranking": "none", "glancing": self.meta["training"].get("glancing", "none")}
