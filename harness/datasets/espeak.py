"""espeak-ng (formant synthesis, Debian package `espeak-ng`) as a TTS method.

It cannot clone a voice: it ignores the prompt and speaks every request with one configured voice.
Its output is deterministic for a given espeak-ng version, so `Request.seed` is not needed.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import soundfile as sf

from harness.api import Method, Request
from harness.errors import ArbenchError
from harness.registry import register_method


@dataclass
class EspeakConfig:
    """espeak-ng voice (`-v`), words per minute (`-s`) and pitch 0-99 (`-p`)."""

    voice: str = "en-us"
    speed: int = 160
    pitch: int = 50


@lru_cache(maxsize=1)
def espeak_version() -> str:
    return _run_espeak(["--version"]).decode("utf-8", "replace").split("Data at")[0].strip()


def _run_espeak(args: list[str], text: str | None = None) -> bytes:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ArbenchError("espeak-ng is not installed: `apt-get install espeak-ng` (or run scripts/setup.sh).")
    done = subprocess.run([exe, *args], input=None if text is None else text.encode("utf-8"),
                          capture_output=True, check=False, timeout=120)
    if done.returncode != 0:
        raise ArbenchError(f"espeak-ng {' '.join(args)} failed: {done.stderr.decode('utf-8', 'replace').strip()}")
    return done.stdout


def synthesize(text: str, config: EspeakConfig = EspeakConfig()) -> tuple[np.ndarray, int]:
    """(float32 mono waveform, sample rate) of `text` spoken by espeak-ng."""
    wav = _run_espeak(["--stdin", "--stdout", "-v", config.voice, "-s", str(config.speed), "-p", str(config.pitch)],
                      text)
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=False)
    return audio, rate


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
