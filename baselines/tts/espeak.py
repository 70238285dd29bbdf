"""espeak-ng as a TTS method.

It cannot clone a voice: it ignores the prompt and speaks every request with one configured voice.
Its output is deterministic for a given espeak-ng version, so `Request.seed` is not needed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from harness.api import Method, Request
from harness.datasets.espeak import EspeakConfig, espeak_version, synthesize
from harness.registry import register_method


@register_method("espeak-ng")
class EspeakNG(Method):
    description = "espeak-ng formant synthesiser (one fixed voice, no cloning)"
    modality = "tts"
    family = "formant"
    Config = EspeakConfig

    def settings(self) -> dict:
        return {**super().settings(), "espeak_version": espeak_version()}

    def generate(self, requests: Sequence[Request]) -> list[tuple[np.ndarray, int]]:
        return [synthesize(r.condition["text"], self.config) for r in requests]
