"""Speaker-embedding networks for speaker similarity (SIM): pluggable by name, each named in the signature.

* ``wavlm-large-ecapa``: the protocol model of Seed-TTS-eval / F5-TTS: WavLM-Large with UniSpeech's ECAPA-TDNN
  speaker-verification head (`wavlm_large_finetune.pth`). See `harness.features.wavlm_ecapa`.
* ``espeak-speaker-tdnn``: a small TDNN x-vector-style network the project trains on espeak-ng voices
  (`baselines/tts/train_speaker_net.py`), for the offline smoke test only. It separates espeak-ng voice
  variants; it says nothing about human voices.

An encoder maps 16 kHz mono float32 audio to one embedding; `similarity` is the cosine of two embeddings
(against the mean of unit-normalised embeddings when the reference is several clips).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from harness.errors import ArbenchError
from harness.metrics.speech import cosine_similarity

ESPEAK_TDNN_PATH = Path(__file__).resolve().parents[2] / "baselines" / "tts" / "espeak_speaker_tdnn.safetensors"


class SpeakerEncoder:
    """Wraps a network mapping (1, T) 16 kHz audio to a (1, D) embedding."""

    def __init__(self, name: str, network: nn.Module, weights_sha256: str, device: str = "cpu"):
        self.name = name
        self.network = network.eval().to(device)
        self.weights_sha256 = weights_sha256
        self.device = device
        self._reference_cache: dict[int, tuple[object, torch.Tensor]] = {}

    @torch.no_grad()
    def embed(self, audio: np.ndarray) -> torch.Tensor:
        wave = torch.as_tensor(np.asarray(audio, dtype=np.float32), device=self.device)[None]
        return self.network(wave).double().cpu()

    def _reference(self, reference: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        if isinstance(reference, np.ndarray):
            return self.embed(reference)
        key = id(reference)  # the cache holds the object too, so its id cannot be reused while cached
        if key not in self._reference_cache:
            unit = [torch.nn.functional.normalize(self.embed(clip), dim=1) for clip in reference]
            self._reference_cache[key] = (reference, torch.cat(unit).mean(0, keepdim=True))
        return self._reference_cache[key][1]

    def similarity(self, audio: np.ndarray, reference: np.ndarray | Sequence[np.ndarray]) -> float:
        return float(cosine_similarity(self.embed(audio), self._reference(reference))[0])


# -- the project's offline network -------------------------------------------------------------------
@dataclass(frozen=True)
class TDNNSpeakerConfig:
    """Log-mel front end and a 4-layer TDNN with mean+std pooling (x-vector style, small)."""

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 40
    channels: int = 128
    embedding_dim: int = 128


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 20.0,
                   f_max: float | None = None) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale from `f_min` to `f_max` (default: half
    the sample rate); torchaudio is unavailable here."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)

    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    top = sample_rate / 2 if f_max is None else f_max
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(top), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    weights = np.maximum(0.0, np.minimum((bins - lower) / (centre - lower), (upper - bins) / (upper - centre)))
    return torch.tensor(weights, dtype=torch.float32)


class LogMel(nn.Module):
    """(B, T) waveform -> (B, n_mels, frames) log-mel with per-utterance mean removed."""

    def __init__(self, cfg: TDNNSpeakerConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)
        self.register_buffer("filters", mel_filterbank(cfg.n_fft, cfg.n_mels, cfg.sample_rate), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        spec = torch.stft(wave, c.n_fft, c.hop_length, c.win_length, self.window, return_complex=True).abs() ** 2
        mel = torch.log(self.filters @ spec + 1e-6)
        return mel - mel.mean(dim=-1, keepdim=True)


class TDNNSpeakerNet(nn.Module):
    """Log-mel -> TDNN (dilated 1-D convolutions) -> mean+std pooling -> linear embedding."""

    def __init__(self, cfg: TDNNSpeakerConfig = TDNNSpeakerConfig()):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.features = LogMel(cfg)
        layers: list[nn.Module] = []
        for cin, cout, kernel, dilation in ((cfg.n_mels, c, 5, 1), (c, c, 3, 2), (c, c, 3, 3), (c, 2 * c, 1, 1)):
            layers += [nn.Conv1d(cin, cout, kernel, dilation=dilation), nn.ReLU(), nn.BatchNorm1d(cout)]
        self.tdnn = nn.Sequential(*layers)
        self.embedding = nn.Linear(4 * c, cfg.embedding_dim)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        frames = self.tdnn(self.features(wave))
        stats = torch.cat([frames.mean(-1), frames.std(-1, unbiased=False)], dim=1)
        return self.embedding(stats)


def load_espeak_tdnn(path: Path = ESPEAK_TDNN_PATH) -> TDNNSpeakerNet:
    """The committed network, with strict key checking (its config is stored in the file's metadata)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise ArbenchError(f"the offline speaker network {path} is missing; retrain it with "
                           f"`.venv/bin/python -m baselines.tts.train_speaker_net`.")
    with safe_open(str(path), "pt") as f:
        cfg = TDNNSpeakerConfig(**json.loads(f.metadata()["config"]))
    model = TDNNSpeakerNet(cfg)
    model.load_state_dict(load_file(str(path)), strict=True)
    return model


# -- registry ----------------------------------------------------------------------------------------
def _espeak_tdnn(device: str) -> SpeakerEncoder:
    from harness.provenance import sha256_file

    return SpeakerEncoder("espeak-speaker-tdnn", load_espeak_tdnn(), sha256_file(ESPEAK_TDNN_PATH), device)


def _wavlm_ecapa(device: str) -> SpeakerEncoder:
    from harness.features.wavlm_ecapa import WAVLM_ECAPA, load_wavlm_ecapa

    path = WAVLM_ECAPA.resolve()
    return SpeakerEncoder("wavlm-large-ecapa", load_wavlm_ecapa(path), WAVLM_ECAPA.verify(path), device)


SPEAKER_ENCODERS: dict[str, Callable[[str], SpeakerEncoder]] = {
    "wavlm-large-ecapa": _wavlm_ecapa,
    "espeak-speaker-tdnn": _espeak_tdnn,
}


def _check_name(name: str) -> None:
    if name not in SPEAKER_ENCODERS:
        raise ArbenchError(f"unknown speaker model {name!r}; choose one of {', '.join(SPEAKER_ENCODERS)}.")


def speaker_signature(name: str) -> dict[str, object]:
    """The speaker model's name and weights sha256 (resolving the weights, so a missing file fails early)."""
    _check_name(name)
    if name == "espeak-speaker-tdnn":
        from harness.provenance import sha256_file

        if not ESPEAK_TDNN_PATH.is_file():
            load_espeak_tdnn()  # raises the retrain message
        return {"model": name, "sha256": sha256_file(ESPEAK_TDNN_PATH), **asdict(TDNNSpeakerConfig())}
    from harness.features.wavlm_ecapa import WAVLM_ECAPA

    return {"model": name, "sha256": WAVLM_ECAPA.verify(WAVLM_ECAPA.resolve(verify=False)), "compute": "float32"}


def load_speaker_encoder(name: str, device: str = "cpu") -> SpeakerEncoder:
    _check_name(name)
    return SPEAKER_ENCODERS[name](device)
