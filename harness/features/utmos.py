"""UTMOS22 "strong learner" naturalness predictor (Saeki et al. 2022), as distributed by SpeechMOS v1.2.0.

The checkpoint `utmos22_strong_step7459_v1.pt` (SpeechMOS's transfer of the sarulab-speech/UTMOS22 MIT
checkpoint) is a plain state dict: `wav2vec2.*` is a fairseq wav2vec 2.0 Base (group-norm feature encoder,
post-LayerNorm Transformer), then fixed data-domain and judge embeddings (128 + 128) are appended to every
frame, a BLSTM (512 per direction) and an MLP (2048) give per-frame scores, and the utterance score is
`2 * mean(frame scores) + 3`. Written here (SpeechMOS is torch.hub code needing torchaudio, which does not
load beside this torch) with strict key checking. One utterance per call: a padded batch would change the
frame mean. Input: 16 kHz mono float32 (the task's resampler replaces SpeechMOS's torchaudio resampling).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ArbenchError
from harness.features.wavlm_ecapa import WeightNormConv1d, _SamePad, read_checkpoint
from harness.weights import WeightSpec, register_weights

UTMOS22_STRONG = register_weights(WeightSpec(
    name="utmos22-strong",
    filename="utmos22_strong_step7459_v1.pt",
    url="https://github.com/tarepan/SpeechMOS/releases/download/v1.0.0/utmos22_strong_step7459_v1.pt",
    sha256=None,  # not published by SpeechMOS; the signature records the hash of the file actually used
    license="MIT",
    description="UTMOS22 strong learner (SpeechMOS v1.2.0 transfer of sarulab-speech/UTMOS22), naturalness MOS",
))


@dataclass(frozen=True)
class UTMOSConfig:
    """wav2vec 2.0 Base plus the UTMOS22 strong head."""

    conv_layers: tuple[tuple[int, int, int], ...] = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
    embed_dim: int = 768
    ffn_dim: int = 3072
    layers: int = 12
    heads: int = 12
    conv_pos: int = 128
    conv_pos_groups: int = 16
    domain_dim: int = 128
    judge_dim: int = 128
    lstm_hidden: int = 512
    projection_hidden: int = 2048


def _conv_block(n_in: int, n_out: int, kernel: int, stride: int, group_norm: bool) -> nn.Sequential:
    # indices match fairseq's "default" extractor: (conv, dropout, [group norm], GELU)
    norm = [nn.GroupNorm(n_out, n_out, affine=True)] if group_norm else []
    return nn.Sequential(nn.Conv1d(n_in, n_out, kernel, stride=stride, bias=False), nn.Identity(), *norm, nn.GELU())


class PostNormLayer(nn.Module):
    """Post-LayerNorm Transformer layer of wav2vec 2.0 Base."""

    def __init__(self, cfg: UTMOSConfig):
        super().__init__()
        self.self_attn = nn.Module()
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self.self_attn, name, nn.Linear(cfg.embed_dim, cfg.embed_dim))
        self.heads = cfg.heads
        self.self_attn_layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.embed_dim)
        self.final_layer_norm = nn.LayerNorm(cfg.embed_dim)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        a = self.self_attn
        batch, length, dim = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(a.q_proj(x)), split(a.k_proj(x)), split(a.v_proj(x)))
        return a.out_proj(out.transpose(1, 2).reshape(batch, length, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.self_attn_layer_norm(x + self.attention(x))
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


class Wav2Vec2Base(nn.Module):
    """fairseq wav2vec 2.0 Base encoder (inference only; `mask_emb` is kept because the checkpoint has it)."""

    def __init__(self, cfg: UTMOSConfig):
        super().__init__()
        dims = [1] + [d for d, _, _ in cfg.conv_layers]
        self.feature_extractor = nn.Module()
        self.feature_extractor.conv_layers = nn.ModuleList(
            _conv_block(dims[i], d, k, s, group_norm=i == 0) for i, (d, k, s) in enumerate(cfg.conv_layers))
        self.layer_norm = nn.LayerNorm(dims[-1])
        self.post_extract_proj = nn.Linear(dims[-1], cfg.embed_dim)
        self.mask_emb = nn.Parameter(torch.zeros(cfg.embed_dim))
        self.encoder = nn.Module()
        self.encoder.pos_conv = nn.Sequential(WeightNormConv1d(cfg.embed_dim, cfg.conv_pos, cfg.conv_pos_groups),
                                              _SamePad(cfg.conv_pos), nn.GELU())
        self.encoder.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.encoder.layers = nn.ModuleList(PostNormLayer(cfg) for _ in range(cfg.layers))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = wave.unsqueeze(1)
        for block in self.feature_extractor.conv_layers:
            x = block(x)
        x = self.post_extract_proj(self.layer_norm(x.transpose(1, 2)))
        x = self.encoder.layer_norm(x + self.encoder.pos_conv(x.transpose(1, 2)).transpose(1, 2))
        for layer in self.encoder.layers:
            x = layer(x)
        return x


class UTMOS22Strong(nn.Module):
    """(1, T) 16 kHz waveform -> (1,) predicted MOS."""

    def __init__(self, cfg: UTMOSConfig = UTMOSConfig()):
        super().__init__()
        self.wav2vec2 = Wav2Vec2Base(cfg)
        self.domain_emb = nn.Parameter(torch.zeros(1, cfg.domain_dim), requires_grad=False)
        self.judge_emb = nn.Parameter(torch.zeros(1, cfg.judge_dim), requires_grad=False)
        self.blstm = nn.LSTM(cfg.embed_dim + cfg.domain_dim + cfg.judge_dim, cfg.lstm_hidden, batch_first=True,
                             bidirectional=True)
        self.projection = nn.Sequential(nn.Linear(2 * cfg.lstm_hidden, cfg.projection_hidden), nn.ReLU(),
                                        nn.Linear(cfg.projection_hidden, 1))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        frames = self.wav2vec2(wave)
        batch, length, _ = frames.shape
        extra = [e.unsqueeze(1).expand(batch, length, -1) for e in (self.domain_emb, self.judge_emb)]
        scores = self.projection(self.blstm(torch.cat([frames, *extra], dim=2))[0])
        return scores.mean(dim=1).squeeze(1) * 2 + 3


def load_utmos(path: str | Path, cfg: UTMOSConfig = UTMOSConfig()) -> UTMOS22Strong:
    """The SpeechMOS checkpoint (a plain state dict), loaded with strict key and shape checking."""
    state = read_checkpoint(path)
    if not isinstance(state, dict):
        raise ArbenchError(f"{path} is not a state dict; it must be SpeechMOS's utmos22_strong_step7459_v1.pt.")
    model = UTMOS22Strong(cfg)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        raise ArbenchError(f"{path} does not match UTMOS22 strong: missing keys {missing[:4]}, unexpected keys "
                           f"{unexpected[:4]}, wrong shapes {wrong[:4]}. It must be SpeechMOS's "
                           f"utmos22_strong_step7459_v1.pt.")
    model.load_state_dict(state, strict=True)
    return model.eval()


class UTMOSPredictor:
    """Scores one 16 kHz utterance per call (no padding, so the frame mean is exact)."""

    name = "utmos22-strong"

    def __init__(self, device: str = "cpu", path: str | Path | None = None):
        resolved = UTMOS22_STRONG.resolve(path)
        self.weights_sha256 = UTMOS22_STRONG.verify(resolved)
        self.device = device
        self.model = load_utmos(resolved).to(device)

    @torch.no_grad()
    def score(self, audio: np.ndarray) -> float:
        wave = torch.as_tensor(np.asarray(audio, dtype=np.float32), device=self.device)[None]
        return float(self.model(wave)[0])
