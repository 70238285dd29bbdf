"""espeak-ng (formant synthesis, Debian package `espeak-ng`): the synthesiser behind the offline TTS data.

`espeak-tts-mini` speaks its prompts with it, the project's speaker network is trained on its voices, and the
`espeak-ng` method (baselines/tts/espeak.py) wraps it. Its output is deterministic for a given espeak-ng version.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import soundfile as sf

from harness.errors import ArbenchError
from harness.settings import Annotated, Field


@dataclass
class EspeakConfig:
    """espeak-ng voice (`-v`), words per minute (`-s`) and pitch 0-99 (`-p`)."""

    voice: str = "en-us"
    speed: Annotated[int, Field(ge=80, le=450)] = 160  # espeak-ng's useful range of -s
    pitch: Annotated[int, Field(ge=0, le=99)] = 50


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


def phonemes(text: str, config: EspeakConfig = EspeakConfig()) -> str:
    """espeak-ng's phoneme mnemonics of `text` (`-q -x`: ASCII, one line per clause), as its voice reads them."""
    return _run_espeak(["-q", "-x", "--stdin", "-v", config.voice], text).decode("utf-8", "replace")
