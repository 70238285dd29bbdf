"""`melle-mini`: a toy-scale re-implementation of MELLE's method (Meng et al. 2024, "Autoregressive Speech
Synthesis without Vector Quantization", arXiv 2407.08551), trained here on espeak-ng speech. It is not MELLE:
no released MELLE weights exist, the network has 1.4 M parameters (3 blocks of width 160, where the paper has 12
of width 1024), the text is espeak-ng phonemes, the training data is one espeak-ng voice (no speech prompt, so
no zero-shot cloning), and the vocoder is Griffin-Lim, a non-neural phase reconstruction, where the paper uses
HiFi-GAN.

What follows the paper (section 3 and appendix A):
* a decoder-only Transformer over [text tokens + <EOS>; mel frames]: causal attention over the concatenation,
  the mel frames projected by a 3-layer pre-net with dropout 0.5 that stays on at inference (as Tacotron);
* reduction factor r: each step predicts r frames (MELLE-R2 when r = 2);
* the latent sampling module: a linear layer predicts the mean and log-variance of a diagonal Gaussian
  (dimension = r x mel bins), z = mu + sigma * eps, then a 3-layer MLP gives a residual, y' = z + MLP(z);
* a linear stop-prediction layer on the LM output (BCE, positive frames weighted 100);
* a 5-block convolutional post-net (kernel 5) that refines y' into y'' after the AR loop ends;
* losses (training script): L1 + L2 on y' and y'', KL(N(mu, sigma^2) || N(y, I)), spectrogram flux
  -|mu_t - y_{t-1}|_1, with lambda = 0.1 (0 during warm-up), beta = 0.5, gamma = 1;
* features: 16 kHz audio, 1024-point STFT, Hann window 1024, hop 256 (62.5 Hz), 80 mel bins 80-7600 Hz,
  base-10 log of the magnitude mel spectrogram.

Sampling: one request at a time with its own `torch.Generator` seeded from `Request.seed` (the pre-net dropout
masks, the latent noise and Griffin-Lim's initial phase all draw from it), so batching never changes a waveform.
The latent noise is scaled by `temperature` (1 = the paper's sampling, 0 = the mean).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.api import Method, Request
from harness.errors import ArbenchError
from harness.features.speaker import mel_filterbank
from harness.registry import register_method
from harness.settings import Field, PositiveInt, Probability, Temperature

WEIGHTS_PATH = Path(__file__).resolve().parent / "melle_mini.safetensors"
TRAINING_RECORD = Path(__file__).resolve().parent / "melle_mini_training.json"

#: Token ids: 0 padding, 1 <EOS> closing the text, 2.. the printable ASCII of espeak-ng's `-x` phoneme mnemonics
#: (clause breaks are written `_`).
PAD, EOS, FIRST_CHAR = 0, 1, 2
VOCAB = FIRST_CHAR + 95


def tokenize(phonemes: str) -> list[int]:
    """espeak-ng `-x` output (ASCII mnemonics, one clause per line) -> token ids, ending with <EOS>."""
    text = " _ ".join(line.strip() for line in phonemes.splitlines() if line.strip())
    text = re.sub(r"\s+", " ", text)
    return [FIRST_CHAR + ord(c) - 32 for c in text if 32 <= ord(c) < 127] + [EOS]


@dataclass(frozen=True)
class MelleMiniNetConfig:
    """Network shape and features (stored in the weights' metadata)."""

    d_model: int = 160
    n_layers: int = 3
    n_heads: int = 4
    d_ff: int = 640
    n_mels: int = 80
    reduction: int = 2
    postnet_channels: int = 96
    postnet_blocks: int = 5
    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    f_min: float = 80.0
    f_max: float = 7600.0
    log_floor: float = 1e-5

    @property
    def frame_dim(self) -> int:
        return self.n_mels * self.reduction


# -- features and vocoder ------------------------------------------------------------------------------
class MelFeatures:
    """log10 magnitude mel spectrogram (MELLE appendix A.2) and its Griffin-Lim inversion."""

    def __init__(self, cfg: MelleMiniNetConfig):
        self.cfg = cfg
        self.window = torch.hann_window(cfg.n_fft)
        self.filters = mel_filterbank(cfg.n_fft, cfg.n_mels, cfg.sample_rate, cfg.f_min, cfg.f_max)
        self.inverse = torch.linalg.pinv(self.filters)

    def __call__(self, wave: np.ndarray) -> torch.Tensor:
        """16 kHz mono -> (frames, n_mels)."""
        c = self.cfg
        spec = torch.stft(torch.as_tensor(wave, dtype=torch.float32), c.n_fft, c.hop_length, c.n_fft,
                          self.window, return_complex=True).abs()
        return torch.log10(torch.clamp(self.filters @ spec, min=c.log_floor)).T

    def griffin_lim(self, mel: torch.Tensor, iterations: int, generator: torch.Generator,
                    momentum: float = 0.99) -> np.ndarray:
        """(frames, n_mels) log10 mel -> waveform: least-squares linear magnitude, then fast Griffin-Lim
        (Perraudin et al. 2013, the momentum form torchaudio.transforms.GriffinLim uses; torchaudio and librosa
        are not installed here, and the algorithm is ten lines)."""
        c = self.cfg
        magnitude = torch.clamp(self.inverse @ (10.0 ** mel.T.double()).float(), min=0.0)
        angles = torch.exp(2j * math.pi * torch.rand(magnitude.shape, generator=generator))
        length = (magnitude.shape[1] - 1) * c.hop_length
        previous = torch.zeros_like(angles)
        for _ in range(iterations):
            wave = torch.istft(magnitude * angles, c.n_fft, c.hop_length, c.n_fft, self.window, length=length)
            rebuilt = torch.stft(wave, c.n_fft, c.hop_length, c.n_fft, self.window, return_complex=True)
            angles = rebuilt - (momentum / (1 + momentum)) * previous
            angles = angles / (angles.abs() + 1e-16)
            previous = rebuilt
        wave = torch.istft(magnitude * angles, c.n_fft, c.hop_length, c.n_fft, self.window, length=length)
        return wave.numpy().astype(np.float32)


# -- the network -------------------------------------------------------------------------------------
def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sinusoidal encoding of integer positions, (..., dim)."""
    freqs = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = positions.float()[..., None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def dropout(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Dropout with an explicit generator (F.dropout draws from the global one, which a request cannot own)."""
    if p <= 0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep / (1 - p)


class Block(nn.Module):
    """Pre-LayerNorm Transformer decoder block with an optional key/value cache."""

    def __init__(self, cfg: MelleMiniNetConfig):
        super().__init__()
        self.heads = cfg.n_heads
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.ff = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model))

    def forward(self, x: torch.Tensor, cache: list | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None and cache:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        if cache is not None:
            cache[:] = [k, v]
        # queries are the last t positions; each sees every earlier key (the cache) and itself
        past = k.shape[2] - t
        mask = torch.ones(t, k.shape[2], dtype=torch.bool, device=x.device).tril(diagonal=past)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.ff(self.norm2(x))


class MelleMini(nn.Module):
    """Text tokens + mel frames -> (mu, logvar, y', stop logit) per step; `postnet` refines y'."""

    def __init__(self, cfg: MelleMiniNetConfig = MelleMiniNetConfig()):
        super().__init__()
        self.cfg = cfg
        d, f = cfg.d_model, cfg.frame_dim
        self.text_embedding = nn.Embedding(VOCAB, d, padding_idx=PAD)
        self.audio_start = nn.Parameter(torch.zeros(d))
        self.prenet = nn.ModuleList([nn.Linear(f, d), nn.Linear(d, d), nn.Linear(d, d)])
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.norm = nn.LayerNorm(d)
        self.latent = nn.Linear(d, 2 * f)  # [mu, log sigma^2]
        self.latent_mlp = nn.Sequential(nn.Linear(f, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, f))
        self.stop = nn.Linear(d, 1)
        c = cfg.postnet_channels
        layers: list[nn.Module] = []
        for i in range(cfg.postnet_blocks):
            cin, cout = (cfg.n_mels if i == 0 else c), (cfg.n_mels if i == cfg.postnet_blocks - 1 else c)
            layers += [nn.Conv1d(cin, cout, 5, padding=2), nn.BatchNorm1d(cout)]
            if i < cfg.postnet_blocks - 1:
                layers += [nn.Tanh(), nn.Dropout(0.1)]
        self.postnet_layers = nn.Sequential(*layers)

    def embed_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, L, d): embeddings plus text positions 0.. (text and audio count positions separately)."""
        return self.text_embedding(tokens) + sinusoid(torch.arange(tokens.shape[1]), self.cfg.d_model)

    def embed_audio(self, frames: torch.Tensor, start: int, p: float, generator: torch.Generator | None
                    ) -> torch.Tensor:
        """(B, N, r*n_mels) previous frame groups -> pre-net embeddings at audio positions start + 1 ..
        (audio position 0 is the learned start vector)."""
        x = frames
        for layer in self.prenet:
            x = dropout(F.relu(layer(x)), p, generator)
        positions = torch.arange(start + 1, start + 1 + frames.shape[1])
        return x + sinusoid(positions, self.cfg.d_model)

    def start_vector(self, batch: int) -> torch.Tensor:
        return (self.audio_start + sinusoid(torch.zeros(1), self.cfg.d_model)[0]).expand(batch, 1, -1)

    def run_blocks(self, x: torch.Tensor, caches: list | None = None) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])
        return self.norm(x)

    def heads(self, e: torch.Tensor, eps: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """LM output -> latent distribution, sample (eps: standard normal noise, None = mean), y', stop."""
        mu, logvar = self.latent(e).chunk(2, dim=-1)
        z = mu if eps is None else mu + torch.exp(0.5 * logvar) * eps
        return {"mu": mu, "logvar": logvar, "coarse": z + self.latent_mlp(z), "stop": self.stop(e)[..., 0]}

    def postnet(self, coarse: torch.Tensor) -> torch.Tensor:
        """(B, N, r*n_mels) y' -> y'' (post-net residual over the whole frame sequence)."""
        b, n, _ = coarse.shape
        mel = coarse.reshape(b, n * self.cfg.reduction, self.cfg.n_mels).transpose(1, 2)
        return (mel + self.postnet_layers(mel)).transpose(1, 2).reshape(b, n, -1)

    def forward(self, tokens: Sequence[torch.Tensor], groups: Sequence[torch.Tensor], p: float = 0.0,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: per utterance its tokens (L_i,) and target frame groups (N_i, r*n_mels). Each utterance
        is one contiguous sequence [text; start; pre-net(groups[:-1])], right-padded (causal attention never sees
        the padding). Returns the LM outputs at the audio steps, (B, max N_i, d) (step t has seen the text and
        groups < t), and their validity mask (B, max N_i); `heads` turns them into predictions."""
        padded = nn.utils.rnn.pad_sequence(list(groups), batch_first=True)
        prenet = self.embed_audio(padded[:, :-1], 0, p, generator)
        start = self.start_vector(1)[0]
        seqs = [torch.cat([self.embed_text(t[None])[0], start, prenet[i, :len(g) - 1]])
                for i, (t, g) in enumerate(zip(tokens, groups))]
        h = self.run_blocks(nn.utils.rnn.pad_sequence(seqs, batch_first=True))
        e = nn.utils.rnn.pad_sequence([h[i, len(t):len(t) + len(g)] for i, (t, g) in enumerate(zip(tokens, groups))],
                                      batch_first=True)
        lengths = torch.tensor([len(g) for g in groups])
        return e, torch.arange(e.shape[1])[None] < lengths[:, None]

    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, max_steps: int, temperature: float, stop_threshold: float,
                 p: float, generator: torch.Generator, min_steps: int = 1) -> tuple[torch.Tensor, bool]:
        """One utterance, cached step-wise decoding: tokens (1, L) -> (coarse y' groups (1, N, r*n_mels),
        whether the stop layer fired). The step's noise is temperature * N(0, I) from `generator`."""
        caches: list[list] = [[] for _ in self.blocks]
        e = self.run_blocks(torch.cat([self.embed_text(tokens), self.start_vector(1)], dim=1), caches)[:, -1:]
        groups, stopped = [], False
        for step in range(max_steps):
            eps = temperature * torch.randn(1, 1, self.cfg.frame_dim, generator=generator)
            out = self.heads(e, eps if temperature > 0 else None)
            groups.append(out["coarse"])
            if step + 1 >= min_steps and torch.sigmoid(out["stop"]).item() > stop_threshold:
                stopped = True
                break
            e = self.run_blocks(self.embed_audio(out["coarse"], step, p, generator), caches)
        return torch.cat(groups, dim=1), stopped


# -- loading -----------------------------------------------------------------------------------------
def load_melle_mini(path: Path = WEIGHTS_PATH) -> tuple[MelleMini, dict[str, str]]:
    """The committed network (config in the safetensors metadata, strict keys), float32, in eval mode."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise ArbenchError(f"melle-mini's weights {path} are missing; retrain them with "
                           f"`python -m baselines.tts.train_melle_mini` (about 25 minutes on 1 CPU thread).")
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    model = MelleMini(MelleMiniNetConfig(**json.loads(metadata["config"])))
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    model.load_state_dict(state, strict=True)
    return model.eval(), metadata


# -- the method --------------------------------------------------------------------------------------
@dataclass
class MelleMiniConfig:
    """Sampling settings. `temperature` scales the latent sampler's noise (1: sample N(mu, sigma^2) as the paper,
    0: the mean); `prenet_dropout` is the pre-net dropout kept on at inference (the paper's 0.5);
    `max_seconds` caps the length (the loop stops there if the stop layer never fires); `stop_threshold` is the
    stop probability that ends the utterance; `griffin_lim_iters` are the vocoder's iterations; `voice` is the
    espeak-ng voice whose phonemiser turns text into tokens (the model was trained on en-us)."""

    temperature: Temperature = 1.0
    prenet_dropout: Probability = 0.5
    max_seconds: Annotated[float, Field(gt=0, le=60)] = 12.0
    stop_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    griffin_lim_iters: Annotated[PositiveInt, Field(le=1000)] = 48
    voice: str = "en-us"


@register_method("melle-mini")
class MelleMiniTTS(Method):
    description = ("toy-scale re-implementation of MELLE's method (continuous mel frames, latent sampling, "
                   "flux loss), 1.4 M parameters trained on espeak-ng speech, Griffin-Lim vocoder; not MELLE")
    modality = "tts"
    family = "continuous-ar"
    Config = MelleMiniConfig

    def __init__(self, config=None, device: str = "cpu"):
        super().__init__(config, device)
        self.model, self.metadata = load_melle_mini()
        self.features = MelFeatures(self.model.cfg)

    def settings(self) -> dict:
        from harness.datasets.espeak import espeak_version

        return {**asdict(self.config), "espeak_version": espeak_version()}

    def checkpoint_sha256(self) -> str:
        from harness import provenance

        return provenance.sha256_file(WEIGHTS_PATH)

    def synthesize(self, text: str, seed: int) -> tuple[np.ndarray, int]:
        from harness.datasets.espeak import EspeakConfig, phonemes

        c, cfg = self.config, self.model.cfg
        generator = torch.Generator().manual_seed(int(seed))
        tokens = torch.tensor([tokenize(phonemes(text, EspeakConfig(voice=c.voice)))])
        max_steps = max(1, int(c.max_seconds * cfg.sample_rate / cfg.hop_length / cfg.reduction))
        coarse, _ = self.model.generate(tokens, max_steps, c.temperature, c.stop_threshold, c.prenet_dropout,
                                        generator)
        with torch.no_grad():
            mel = self.model.postnet(coarse)[0].reshape(-1, cfg.n_mels)
        return self.features.griffin_lim(mel, c.griffin_lim_iters, generator), cfg.sample_rate

    def generate(self, requests: Sequence[Request]) -> list[tuple[np.ndarray, int]]:
        # a 1.4 M-parameter network stepping one frame pair at a time: on the CPU, handing its small ops to more
        # threads costs more than it saves (RTF 0.06 on one thread, 0.7-4.4 on two loaded ones)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return [self.synthesize(r.condition["text"], r.seed) for r in requests]
        finally:
            torch.set_num_threads(threads)
