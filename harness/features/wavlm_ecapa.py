"""WavLM-Large + ECAPA-TDNN speaker verification (UniSpeech `wavlm_large_finetune.pth`), the SIM model of
Seed-TTS-eval and F5-TTS, written here so that it loads the released checkpoint without s3prl's torch.hub
code and with strict key checking (the upstream scripts load it with `strict=False`, so a mismatch passes
silently).

Parameter names follow the checkpoint: `feature_extract.model.*` is the WavLM upstream as s3prl wraps it
(`feature_extractor.conv_layers.*`, `encoder.pos_conv.0.weight_g/_v`, `encoder.layers.N.self_attn.grep_*`,
...), and the rest is UniSpeech's `ECAPA_TDNN_SMALL(feat_dim=1024, emb_dim=256)` (`feature_weight`,
`layer1..4`, `conv`, `pooling`, `bn`, `linear`).

The forward pass follows the reference: waveform layer-normalised over the utterance, the conv feature
encoder, the Transformer with gated relative position bias, and the 25 hidden states s3prl exposes (the
input of each of the 24 layers and the final layer-normed output), mixed with softmax(`feature_weight`),
instance-normalised, then ECAPA-TDNN to a 256-d embedding. fp32, one utterance per call (no padding).

Checked against Seed-TTS-eval's own SIM code (its UniSpeech `verification`, WavLM from s3prl's `wavlm_large` hub
entry) at the released size on seeded weights: `tests/golden/make_wavlm_ecapa.py`, docs/golden.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ArbenchError
from harness.weights import WeightSpec, register_weights

WAVLM_ECAPA = register_weights(WeightSpec(
    name="wavlm-large-ecapa",
    filename="wavlm_large_finetune.pth",
    url="https://drive.google.com/file/d/1-aE1NfzpRCLxA4GUxX9ITI3F9LlbtEGP/view",
    sha256=None,  # not published by UniSpeech; the signature records the hash of the file actually used
    license="CC-BY-SA-3.0",
    description="UniSpeech WavLM-Large + ECAPA-TDNN speaker verification (Vox1-O EER 0.431%), SIM of Seed-TTS-eval",
))


@dataclass(frozen=True)
class WavLMConfig:
    """WavLM-Large as released (`extractor_mode=layer_norm`, `layer_norm_first`, gated relative position bias)."""

    conv_layers: tuple[tuple[int, int, int], ...] = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
    embed_dim: int = 1024
    ffn_dim: int = 4096
    layers: int = 24
    heads: int = 16
    conv_pos: int = 128
    conv_pos_groups: int = 16
    num_buckets: int = 320
    max_distance: int = 800


@dataclass(frozen=True)
class ECAPAConfig:
    """UniSpeech `ECAPA_TDNN_SMALL`: 512 channels, 1536-channel aggregation, 256-d embedding."""

    channels: int = 512
    aggregation_channels: int = 1536
    embedding_dim: int = 256
    res2_scale: int = 8
    se_bottleneck: int = 128
    attention_channels: int = 128
    wavlm: WavLMConfig = field(default_factory=WavLMConfig)


# -- WavLM ------------------------------------------------------------------------------------------
class _TransposeLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(-2, -1)


def _conv_block(n_in: int, n_out: int, kernel: int, stride: int) -> nn.Sequential:
    # indices match fairseq's block (conv, dropout, [transpose, layer norm, transpose], GELU)
    return nn.Sequential(nn.Conv1d(n_in, n_out, kernel, stride=stride, bias=False), nn.Identity(),
                         nn.Sequential(_TransposeLast(), nn.LayerNorm(n_out), _TransposeLast()), nn.GELU())


class ConvFeatureExtractor(nn.Module):
    def __init__(self, layers: tuple[tuple[int, int, int], ...]):
        super().__init__()
        dims = [1] + [d for d, _, _ in layers]
        self.conv_layers = nn.ModuleList(_conv_block(dims[i], d, k, s) for i, (d, k, s) in enumerate(layers))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = wave.unsqueeze(1)
        for block in self.conv_layers:
            x = block(x)
        return x


class WeightNormConv1d(nn.Module):
    """Conv1d with the weight stored as `weight_g` / `weight_v` (old-style `weight_norm(dim=2)` names)."""

    def __init__(self, channels: int, kernel: int, groups: int):
        super().__init__()
        self.groups, self.padding = groups, kernel // 2
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.randn(channels, channels // groups, kernel) * 0.02)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class _SamePad(nn.Module):
    """Drops the last frame that an even-kernel 'same' convolution adds."""

    def __init__(self, kernel: int):
        super().__init__()
        self.remove = 1 if kernel % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :-self.remove] if self.remove else x


class GatedRelativeAttention(nn.Module):
    """WavLM self-attention: a bucketed relative position bias (computed in layer 0 and shared) scaled per
    head and frame by a gate computed from the layer input."""

    def __init__(self, cfg: WavLMConfig, has_bias: bool):
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.embed_dim // cfg.heads
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_distance
        for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
            setattr(self, name, nn.Linear(cfg.embed_dim, cfg.embed_dim))
        self.grep_linear = nn.Linear(self.head_dim, 8)
        self.grep_a = nn.Parameter(torch.ones(1, cfg.heads, 1, 1))
        if has_bias:
            self.relative_attention_bias = nn.Embedding(cfg.num_buckets, cfg.heads)

    def _buckets(self, relative: torch.Tensor) -> torch.Tensor:
        half = self.num_buckets // 2
        buckets = (relative > 0).long() * half
        distance = relative.abs()
        max_exact = half // 2
        large = max_exact + (torch.log(distance.float() / max_exact) / math.log(self.max_distance / max_exact)
                             * (half - max_exact)).long()
        large = large.clamp(max=half - 1)
        return buckets + torch.where(distance < max_exact, distance, large)

    def position_bias(self, length: int, device: torch.device) -> torch.Tensor:
        positions = torch.arange(length, device=device)
        relative = positions[None, :] - positions[:, None]
        return self.relative_attention_bias(self._buckets(relative)).permute(2, 0, 1)  # (heads, T, T)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, self.head_dim).transpose(1, 2)

        gates = torch.sigmoid(self.grep_linear(split(x)).view(batch, self.heads, length, 2, 4).sum(-1))
        gate_a, gate_b = gates.chunk(2, dim=-1)
        gate = gate_a * (gate_b * self.grep_a - 1.0) + 2.0  # (B, H, T, 1)
        q = split(self.q_proj(x)) * self.head_dim ** -0.5
        scores = q @ split(self.k_proj(x)).transpose(-1, -2) + gate * bias[None]
        out = scores.softmax(-1) @ split(self.v_proj(x))
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))


class EncoderLayer(nn.Module):
    """Pre-LayerNorm Transformer layer (`layer_norm_first`)."""

    def __init__(self, cfg: WavLMConfig, has_bias: bool):
        super().__init__()
        self.self_attn = GatedRelativeAttention(cfg, has_bias)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.embed_dim)
        self.final_layer_norm = nn.LayerNorm(cfg.embed_dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), bias)
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: WavLMConfig):
        super().__init__()
        self.pos_conv = nn.Sequential(WeightNormConv1d(cfg.embed_dim, cfg.conv_pos, cfg.conv_pos_groups),
                                      _SamePad(cfg.conv_pos), nn.GELU())
        self.layers = nn.ModuleList(EncoderLayer(cfg, has_bias=i == 0) for i in range(cfg.layers))
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All hidden states as s3prl's WavLM expert exposes them: each layer's input, then the output."""
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        bias = self.layers[0].self_attn.position_bias(x.shape[1], x.device)
        hidden = []
        for layer in self.layers:
            hidden.append(x)
            x = layer(x, bias)
        hidden.append(self.layer_norm(x))
        return hidden


class WavLM(nn.Module):
    """WavLM (inference only; `mask_emb` is kept because the checkpoint carries it)."""

    def __init__(self, cfg: WavLMConfig = WavLMConfig()):
        super().__init__()
        self.cfg = cfg
        conv_dim = cfg.conv_layers[-1][0]
        self.feature_extractor = ConvFeatureExtractor(cfg.conv_layers)
        self.layer_norm = nn.LayerNorm(conv_dim)
        self.post_extract_proj = nn.Linear(conv_dim, cfg.embed_dim)
        self.mask_emb = nn.Parameter(torch.zeros(cfg.embed_dim))
        self.encoder = TransformerEncoder(cfg)

    def forward(self, wave: torch.Tensor) -> list[torch.Tensor]:
        wave = F.layer_norm(wave, wave.shape[-1:])  # the Large model's `normalize=True`
        features = self.layer_norm(self.feature_extractor(wave).transpose(1, 2))
        return self.encoder(self.post_extract_proj(features))


class _Upstream(nn.Module):
    """Holds WavLM under `.model`, as s3prl's upstream expert does (so the keys match)."""

    def __init__(self, cfg: WavLMConfig):
        super().__init__()
        self.model = WavLM(cfg)


# -- ECAPA-TDNN ---------------------------------------------------------------------------------------
class Conv1dReluBn(nn.Module):
    def __init__(self, n_in: int, n_out: int, kernel: int = 1, padding: int = 0, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(n_in, n_out, kernel, padding=padding, dilation=dilation)
        self.bn = nn.BatchNorm1d(n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class Res2Conv1dReluBn(nn.Module):
    """Res2Net block: channel groups processed in a chain, the last group passed through."""

    def __init__(self, channels: int, kernel: int, padding: int, dilation: int, scale: int):
        super().__init__()
        self.width = channels // scale
        self.convs = nn.ModuleList(nn.Conv1d(self.width, self.width, kernel, padding=padding, dilation=dilation)
                                   for _ in range(scale - 1))
        self.bns = nn.ModuleList(nn.BatchNorm1d(self.width) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(x, self.width, dim=1)
        out, carry = [], None
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            carry = pieces[i] if carry is None else carry + pieces[i]
            carry = bn(F.relu(conv(carry)))
            out.append(carry)
        out.append(pieces[len(self.convs)])
        return torch.cat(out, dim=1)


class SEConnect(nn.Module):
    def __init__(self, channels: int, bottleneck: int):
        super().__init__()
        self.linear1 = nn.Linear(channels, bottleneck)
        self.linear2 = nn.Linear(bottleneck, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.linear2(F.relu(self.linear1(x.mean(dim=2))))).unsqueeze(2)


class SERes2Block(nn.Module):
    def __init__(self, channels: int, dilation: int, cfg: ECAPAConfig):
        super().__init__()
        self.Conv1dReluBn1 = Conv1dReluBn(channels, channels)
        self.Res2Conv1dReluBn = Res2Conv1dReluBn(channels, 3, dilation, dilation, cfg.res2_scale)
        self.Conv1dReluBn2 = Conv1dReluBn(channels, channels)
        self.SE_Connect = SEConnect(channels, cfg.se_bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.SE_Connect(self.Conv1dReluBn2(self.Res2Conv1dReluBn(self.Conv1dReluBn1(x))))


class AttentiveStatsPool(nn.Module):
    def __init__(self, channels: int, attention_channels: int):
        super().__init__()
        self.linear1 = nn.Conv1d(channels, attention_channels, kernel_size=1)
        self.linear2 = nn.Conv1d(attention_channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.softmax(self.linear2(torch.tanh(self.linear1(x))), dim=2)
        mean = (alpha * x).sum(dim=2)
        std = ((alpha * x ** 2).sum(dim=2) - mean ** 2).clamp(min=1e-9).sqrt()
        return torch.cat([mean, std], dim=1)


class WavLMECAPA(nn.Module):
    """(1, T) 16 kHz waveform -> (1, 256) speaker embedding."""

    def __init__(self, cfg: ECAPAConfig = ECAPAConfig()):
        super().__init__()
        c, w = cfg.channels, cfg.wavlm
        self.feature_extract = _Upstream(w)
        self.feature_weight = nn.Parameter(torch.zeros(w.layers + 1))
        self.instance_norm = nn.InstanceNorm1d(w.embed_dim)
        self.layer1 = Conv1dReluBn(w.embed_dim, c, kernel=5, padding=2)
        self.layer2 = SERes2Block(c, 2, cfg)
        self.layer3 = SERes2Block(c, 3, cfg)
        self.layer4 = SERes2Block(c, 4, cfg)
        self.conv = nn.Conv1d(3 * c, cfg.aggregation_channels, kernel_size=1)
        self.pooling = AttentiveStatsPool(cfg.aggregation_channels, cfg.attention_channels)
        self.bn = nn.BatchNorm1d(2 * cfg.aggregation_channels)
        self.linear = nn.Linear(2 * cfg.aggregation_channels, cfg.embedding_dim)

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        hidden = torch.stack(self.feature_extract.model(wave))  # (layers + 1, B, T, C)
        weights = self.feature_weight.softmax(-1)[:, None, None, None]
        mixed = (weights * hidden).sum(0).transpose(1, 2) + 1e-6
        return self.instance_norm(mixed)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        out1 = self.layer1(self.features(wave))
        out2 = self.layer2(out1)
        out3 = self.layer3(out2)
        out4 = self.layer4(out3)
        out = F.relu(self.conv(torch.cat([out2, out3, out4], dim=1)))
        return self.linear(self.bn(self.pooling(out)))


def read_checkpoint(path: str | Path) -> object:
    """`torch.load(weights_only=True)`, with a clear message for a file that is not a checkpoint."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only errors all mean the same thing here
        raise ArbenchError(f"{path} is not a loadable PyTorch checkpoint ({type(exc).__name__}). A download link "
                           f"that returns a web page (Google Drive does for large files) leaves HTML behind: "
                           f"delete the file and download it by hand in a browser.") from exc


#: Keys of the released checkpoint that belong to training only (the AAM-softmax head); they are dropped by
#: name, every other key must match exactly.
TRAINING_ONLY_KEYS = frozenset({"loss_calculator.projection.weight"})


def load_wavlm_ecapa(path: str | Path, cfg: ECAPAConfig = ECAPAConfig()) -> WavLMECAPA:
    """The UniSpeech checkpoint (`{"model": state_dict, ...}`), loaded with strict key and shape checking."""
    checkpoint = read_checkpoint(path)
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ArbenchError(f"{path} is not a UniSpeech speaker-verification checkpoint (a dict with 'model').")
    state = {k: v for k, v in state.items() if k not in TRAINING_ONLY_KEYS}
    model = WavLMECAPA(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        def show(keys: list[str]) -> str:
            return f"{len(keys)} ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})"

        raise ArbenchError(f"{path} does not match WavLM-Large + ECAPA-TDNN: missing keys {show(missing)}, "
                           f"unexpected keys {show(unexpected)}, wrong shapes {show(wrong)}. It must be UniSpeech's "
                           f"wavlm_large_finetune.pth.")
    model.load_state_dict(state, strict=True)
    return model.eval()
