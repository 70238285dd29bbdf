"""TalkNet 2 (Beliaev & Ginsburg 2021, arXiv 2104.08189): non-autoregressive duration, pitch and mel networks.

Re-implemented from NVIDIA/NeMo@77be763 (tag v1.8.2, the last release with TalkNet; Apache-2.0) with NeMo's
parameter names, so the released `.nemo` state dicts load as they are:
`nemo/collections/tts/models/talknet.py` (`TalkNetDursModel`, `TalkNetPitchModel`, `TalkNetSpectModel`),
`nemo/collections/tts/modules/talknet.py` (`GaussianEmbedding`, `MaskedInstanceNorm1d`, `StyleResidual`) and the
QuartzNet-style encoder they share, `nemo/collections/asr/modules/conv_asr.py` (`ConvASREncoder`) of
`nemo/collections/asr/parts/submodules/jasper.py` blocks (`JasperBlock`, `MaskedConv1d`, `SqueezeExcite`).
Written here rather than importing NeMo, which would pull in PyTorch Lightning, Hydra and its whole ASR stack
for a few hundred lines of convolutions.

Only what the TalkNet configs use is supported (stride 1, dilation 1, 'same' padding, batch norm, ReLU, global
squeeze-and-excitation, 'add' residuals, masked convolutions); `EncoderLayer.from_config` refuses anything else
by name. Dropout layers keep their slots (NeMo's `mconv` indices) but inference never drops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """[B, T] bool, True on the first `lengths[b]` frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


# -- the QuartzNet-style encoder (jasper.py / conv_asr.py) -------------------------------------------------------
class MaskedConv1d(nn.Module):
    """A Conv1d whose input is zeroed past each sequence's length (`conv` holds NeMo's weight)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2, groups=groups,
                              bias=False)

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        return self.conv(x * length_mask(lens, x.shape[-1]).unsqueeze(1).to(x.dtype))


class SqueezeExcite(nn.Module):
    """Global squeeze-and-excitation over the valid frames: x * sigmoid(fc(mean_t x)), padding zeroed."""

    def __init__(self, channels: int, reduction_ratio: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction_ratio, bias=False), nn.ReLU(),
                                nn.Linear(channels // reduction_ratio, channels, bias=False))

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        mask = length_mask(lens, x.shape[-1]).unsqueeze(1)
        x = x.float().masked_fill(~mask, 0.0)
        y = x.sum(dim=-1, keepdim=True) / mask.sum(dim=-1, keepdim=True).to(x.dtype)
        y = self.fc(y.transpose(1, -1)).transpose(1, -1)
        return x * torch.sigmoid(y)


@dataclass(frozen=True)
class EncoderLayer:
    """One entry of a `ConvASREncoder`'s `jasper:` list, restricted to what TalkNet uses."""

    filters: int
    repeat: int
    kernel: int
    residual: bool = True
    separable: bool = False
    se: bool = False
    se_reduction_ratio: int = 8

    SUPPORTED = {"filters", "repeat", "kernel", "stride", "dilation", "dropout", "residual", "separable", "se",
                 "se_reduction_ratio"}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "EncoderLayer":
        unsupported = sorted(set(cfg) - cls.SUPPORTED)
        if unsupported:
            raise ValueError(f"encoder layer options {unsupported} are not supported (TalkNet uses none of them)")
        if list(cfg.get("stride", [1])) != [1] or list(cfg.get("dilation", [1])) != [1]:
            raise ValueError(f"only stride 1 and dilation 1 are supported, got {dict(cfg)}")
        kernel = cfg["kernel"]
        kernel = int(kernel[0] if isinstance(kernel, (list, tuple)) else kernel)
        if kernel % 2 == 0:
            kernel += 1  # jasper.py's compute_new_kernel_size rounds even kernels up to odd
        return cls(int(cfg["filters"]), int(cfg["repeat"]), kernel, bool(cfg.get("residual", True)),
                   bool(cfg.get("separable", False)), bool(cfg.get("se", False)),
                   int(cfg.get("se_reduction_ratio", 8)))


class JasperBlock(nn.Module):
    """`repeat` sub-blocks of (depthwise + pointwise or plain) masked conv, BatchNorm (eps 1e-3), ReLU, dropout,
    the last without ReLU/dropout and followed by squeeze-and-excitation; plus a 1x1 conv + BatchNorm residual
    added before the final ReLU. `mconv` keeps NeMo's flat layout (activation and dropout slots included)."""

    def __init__(self, inplanes: int, layer: EncoderLayer):
        super().__init__()
        mconv: list[nn.Module] = []
        channels = inplanes
        for i in range(layer.repeat):
            if layer.separable:
                mconv += [MaskedConv1d(channels, channels, layer.kernel, groups=channels),
                          MaskedConv1d(channels, layer.filters, 1)]
            else:
                mconv += [MaskedConv1d(channels, layer.filters, layer.kernel)]
            mconv.append(nn.BatchNorm1d(layer.filters, eps=1e-3, momentum=0.1))
            if i < layer.repeat - 1:
                mconv += [nn.ReLU(), nn.Dropout()]
            channels = layer.filters
        if layer.se:
            mconv.append(SqueezeExcite(layer.filters, layer.se_reduction_ratio))
        self.mconv = nn.ModuleList(mconv)
        self.res = (nn.ModuleList([nn.ModuleList([MaskedConv1d(inplanes, layer.filters, 1),
                                                  nn.BatchNorm1d(layer.filters, eps=1e-3, momentum=0.1)])])
                    if layer.residual else None)
        self.mout = nn.Sequential(nn.ReLU(), nn.Dropout())

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        out = x
        for module in self.mconv:
            out = module(out, lens) if isinstance(module, (MaskedConv1d, SqueezeExcite)) else module(out)
        if self.res is not None:
            conv, norm = self.res[0]
            out = out + norm(conv(x, lens))
        return self.mout(out)


class ConvASREncoder(nn.Module):
    """NeMo's `ConvASREncoder` (its `encoder` Sequential of `JasperBlock`s), input [B, feat_in, T] + lengths."""

    def __init__(self, feat_in: int, layers: Sequence[EncoderLayer]):
        super().__init__()
        blocks = []
        for layer in layers:
            blocks.append(JasperBlock(feat_in, layer))
            feat_in = layer.filters
        self.encoder = nn.Sequential(*blocks)
        self.feat_out = feat_in

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        for block in self.encoder:
            x = block(x, lens)
        return x


# -- TalkNet's own modules (modules/talknet.py) ------------------------------------------------------------------
def repeat_merge(x: torch.Tensor, reps: torch.Tensor, pad: int) -> torch.Tensor:
    """Each row of `x` with its values repeated `reps` times, rows right-padded with `pad` to one length."""
    rows = [torch.repeat_interleave(a, r) for a, r in zip(x, reps)]
    width = max(len(r) for r in rows)
    return torch.stack([F.pad(r, [0, width - len(r)], value=pad) for r in rows]).to(x.dtype)


class GaussianEmbedding(nn.Module):
    """Token embeddings spread over frames: frame t takes a normalised Gaussian-weighted mix of the token
    embeddings, token n centred in its duration span with sigma = duration / sigma_c."""

    EPS = 1e-6

    def __init__(self, n_vocab: int, d_emb: int, pad: int, sigma_c: float = 2.0):
        super().__init__()
        self.embed = nn.Embedding(n_vocab, d_emb)
        self.pad = pad
        self.sigma_c = sigma_c

    def forward(self, text: torch.Tensor, durs: torch.Tensor) -> torch.Tensor:
        text = F.pad(text, [0, 2, 0, 0], value=self.pad)  # upstream's "fake padding"
        durs = F.pad(durs, [0, 2, 0, 0], value=0)
        repeats = repeat_merge(text, durs, self.pad)
        total_time = repeats.shape[-1]
        c = (durs / 2.0) + F.pad(torch.cumsum(durs, dim=-1)[:, :-1], [1, 0, 0, 0], value=0)
        c = c.unsqueeze(1).repeat(1, total_time, 1)
        sigmas = (durs.float() / self.sigma_c).unsqueeze(1).repeat(1, total_time, 1) + self.EPS
        t = torch.arange(total_time, device=c.device).view(1, -1, 1).repeat(durs.shape[0], 1, durs.shape[-1]).float()
        t = t + 0.5
        w = torch.distributions.normal.Normal(c, sigmas).log_prob(t).exp()  # [B, T, N]
        w = w.masked_fill((text == self.pad).unsqueeze(1).repeat(1, total_time, 1), 0.0)
        w = w / (w.sum(-1, keepdim=True) + self.EPS)
        pad_mask = (repeats == self.pad).unsqueeze(-1).repeat(1, 1, text.size(1))
        w = w.masked_fill(pad_mask, 0.0)
        pad_mask[:, :, :-1] = False
        w = w.masked_fill(pad_mask, 1.0)
        return torch.bmm(w, self.embed(text))  # [B, T, E]


class MaskedInstanceNorm1d(nn.Module):
    """Per-channel normalisation over the masked frames (unbiased variance, no affine: TalkNet's `norm_f0`)."""

    MAX_CNT = 1e5

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        x_mask = x_mask.unsqueeze(1).type_as(x)
        cnt = x_mask.sum(dim=-1, keepdim=True)
        mu = (x * x_mask).sum(dim=-1, keepdim=True) / cnt.clamp(1.0, self.MAX_CNT)
        sigma = ((x - mu) ** 2 * x_mask).sum(dim=-1, keepdim=True) / (cnt - 1).clamp(1.0, self.MAX_CNT)
        return (x - mu) / (sigma + 1e-8).sqrt()


class StyleResidual(nn.Module):
    def __init__(self, d_channel: int, d_style: int, kernel_size: int = 1):
        super().__init__()
        self.rs = nn.Conv1d(d_style, d_channel, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return x + self.rs(s)


# -- the three networks (models/talknet.py) ----------------------------------------------------------------------
class TalkNetDurs(nn.Module):
    """`TalkNetDursModel`: log(1 + duration) per (blank-interleaved) token."""

    def __init__(self, n_vocab: int, d_char: int, layers: Sequence[EncoderLayer]):
        super().__init__()
        self.embed = nn.Embedding(n_vocab, d_char)
        self.encoder = ConvASREncoder(d_char, layers)
        self.proj = nn.Conv1d(self.encoder.feat_out, 1, kernel_size=1)

    def forward(self, text: torch.Tensor, text_len: torch.Tensor) -> torch.Tensor:
        return self.proj(self.encoder(self.embed(text).transpose(1, 2), text_len)).squeeze(1)


class TalkNetPitch(nn.Module):
    """`TalkNetPitchModel`: per frame a silence logit and F0 normalised by (f0_mean, f0_std)."""

    def __init__(self, n_vocab: int, d_char: int, pad: int, layers: Sequence[EncoderLayer], f0_mean: float,
                 f0_std: float):
        super().__init__()
        self.embed = GaussianEmbedding(n_vocab, d_char, pad)
        self.encoder = ConvASREncoder(d_char, layers)
        self.sil_proj = nn.Conv1d(self.encoder.feat_out, 1, kernel_size=1)
        self.body_proj = nn.Conv1d(self.encoder.feat_out, 1, kernel_size=1)
        self.f0_mean, self.f0_std = float(f0_mean), float(f0_std)

    def forward(self, text: torch.Tensor, durs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.encoder(self.embed(text, durs).transpose(1, 2), durs.sum(-1))
        return self.sil_proj(y).squeeze(1), self.body_proj(y).squeeze(1)


class TalkNetSpect(nn.Module):
    """`TalkNetSpectModel`: the log-mel spectrogram from tokens, durations and F0 (Hz, 0 where silent)."""

    def __init__(self, n_vocab: int, d_char: int, pad: int, layers: Sequence[EncoderLayer], n_mels: int):
        super().__init__()
        self.embed = GaussianEmbedding(n_vocab, d_char, pad)
        self.norm_f0 = MaskedInstanceNorm1d()
        self.res_f0 = StyleResidual(d_char, 1, kernel_size=3)
        self.encoder = ConvASREncoder(d_char, layers)
        self.proj = nn.Conv1d(self.encoder.feat_out, n_mels, kernel_size=1)

    def forward(self, text: torch.Tensor, durs: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
        x = self.embed(text, durs).transpose(1, 2)
        f0_mask = f0 > 0.0
        f0 = self.norm_f0(f0.unsqueeze(1), f0_mask)
        f0 = f0.masked_fill(~f0_mask.unsqueeze(1), 0.0)
        return self.proj(self.encoder(self.res_f0(x, f0), durs.sum(-1)))


def interleave_blanks(tokens: Sequence[int], blank: int) -> list[int]:
    """`AudioToCharWithDursF0Dataset.interleave` as `generate_spectrogram` applies it (`blanking: true`): a blank
    before every token and one at the end."""
    out = []
    for token in tokens:
        out += [blank, int(token)]
    return out + [blank]


@torch.no_grad()
def generate_mel(durs_model: TalkNetDurs, pitch_model: TalkNetPitch, spect_model: TalkNetSpect,
                 tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """`TalkNetSpectModel.generate_spectrogram` for one blank-interleaved token row [1, N]: durations
    (exp - 1, clamped at 0, rounded), F0 (0 where sigmoid(silence logit) > 0.5), then the mel [1, n_mels, T]."""
    text_len = torch.tensor([tokens.shape[-1]], dtype=torch.long, device=tokens.device)
    durs = durs_model(tokens, text_len)
    durs = (durs.exp() - 1).clamp(min=0.0).round().long()
    f0_sil, f0_body = pitch_model(tokens, durs)
    f0 = ((~(f0_sil.sigmoid() > 0.5)) * (f0_body * pitch_model.f0_std + pitch_model.f0_mean)).float()
    return {"durs": durs, "f0": f0, "mel": spect_model(tokens, durs, f0)}
