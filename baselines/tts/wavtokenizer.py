"""WavTokenizer's decoder (Ji et al. 2024, jishengpeng/WavTokenizer, MIT; the copy LLMVoX vendors): codebook
lookup, Vocos backbone with WavTokenizer's attention "pos_net", and the ISTFT head. Speech tokens -> 24 kHz audio.

Written here, with upstream's parameter names (`feature_extractor.encodec.quantizer.vq.layers.0._codebook.embed`,
`backbone.*`, `head.out.*`), because no kept library ships it: the `vocos` package has the ConvNeXt backbone and
the ISTFT head but not WavTokenizer's ResNet/attention `pos_net`, and upstream is a training repository (Lightning,
encodec, torchaudio) that is not installable. Only the decoder is here: LLMVoX never encodes audio at inference.

Upstream: `decoder/pretrained.py` (`WavTokenizer.codes_to_features`, `decode`), `decoder/models.py`
(`VocosBackbone`, `ResnetBlock`, `AttnBlock`, `Normalize`), `decoder/modules.py` (`ConvNeXtBlock`,
`AdaLayerNorm`), `decoder/heads.py` (`ISTFTHead`), `decoder/spectral_ops.py` (`ISTFT`, "same" padding), with the
configuration `wavtokenizer_smalldata_frame75_3s_nq1_code4096_dim512_kmeans200_attn.yaml` (75 tokens/s, one
4096-entry codebook of width 512, backbone width 768, 12 ConvNeXt blocks, n_fft 1280, hop 320).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

CODEBOOK_KEY = "feature_extractor.encodec.quantizer.vq.layers.0._codebook.embed"


@dataclass(frozen=True)
class WavTokenizerConfig:
    """The decoder's shape; the defaults are the `..._frame75_3s_nq1_code4096_dim512_kmeans200_attn` release that
    LLMVoX uses (`wavtokenizer_large_speech_320_24k.ckpt`)."""

    codebook_size: int = 4096
    input_channels: int = 512
    dim: int = 768
    intermediate_dim: int = 2304
    num_layers: int = 12
    adanorm_num_embeddings: int = 4
    n_fft: int = 1280
    hop_length: int = 320
    sample_rate: int = 24000
    groups: int = 32  # GroupNorm groups of the pos_net (upstream's `Normalize`)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """Upstream's `ResnetBlock` with temb_channels=0 and equal in/out channels (the only form pos_net uses)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm1 = group_norm(channels, groups)
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.norm2 = group_norm(channels, groups)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class AttnBlock(nn.Module):
    """Single-head self-attention over time with 1x1-conv projections (upstream's `AttnBlock`)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.q, self.k, self.v, self.proj_out = (nn.Conv1d(channels, channels, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        w = torch.softmax(torch.bmm(q.transpose(1, 2), k) * q.shape[1] ** -0.5, dim=2)  # (b, query, key)
        return x + self.proj_out(torch.bmm(v, w.transpose(1, 2)))


class AdaLayerNorm(nn.Module):
    """LayerNorm whose scale and shift are looked up by a condition id (WavTokenizer's `bandwidth_id`)."""

    def __init__(self, num_embeddings: int, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps, self.dim = eps, dim
        self.scale = nn.Embedding(num_embeddings, dim)
        self.shift = nn.Embedding(num_embeddings, dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.dim,), eps=self.eps) * self.scale(cond) + self.shift(cond)


class ConvNeXtBlock(nn.Module):
    def __init__(self, cfg: WavTokenizerConfig):
        super().__init__()
        self.dwconv = nn.Conv1d(cfg.dim, cfg.dim, 7, padding=3, groups=cfg.dim)
        self.norm = AdaLayerNorm(cfg.adanorm_num_embeddings, cfg.dim)
        self.pwconv1 = nn.Linear(cfg.dim, cfg.intermediate_dim)
        self.pwconv2 = nn.Linear(cfg.intermediate_dim, cfg.dim)
        self.gamma = nn.Parameter(torch.full((cfg.dim,), 1.0 / cfg.num_layers))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.dwconv(x).transpose(1, 2), cond)
        h = self.gamma * self.pwconv2(F.gelu(self.pwconv1(h)))
        return x + h.transpose(1, 2)


class VocosBackbone(nn.Module):
    """Conv embed -> pos_net (2 ResNet blocks, attention, 2 ResNet blocks, GroupNorm) -> AdaLayerNorm ->
    ConvNeXt blocks -> LayerNorm; (B, C, T) in, (B, T, dim) out."""

    def __init__(self, cfg: WavTokenizerConfig):
        super().__init__()
        self.embed = nn.Conv1d(cfg.input_channels, cfg.dim, 7, padding=3)
        self.pos_net = nn.Sequential(ResnetBlock(cfg.dim, cfg.groups), ResnetBlock(cfg.dim, cfg.groups),
                                     AttnBlock(cfg.dim, cfg.groups), ResnetBlock(cfg.dim, cfg.groups),
                                     ResnetBlock(cfg.dim, cfg.groups), group_norm(cfg.dim, cfg.groups))
        self.norm = AdaLayerNorm(cfg.adanorm_num_embeddings, cfg.dim)
        self.convnext = nn.ModuleList(ConvNeXtBlock(cfg) for _ in range(cfg.num_layers))
        self.final_layer_norm = nn.LayerNorm(cfg.dim, eps=1e-6)

    def forward(self, x: torch.Tensor, bandwidth_id: torch.Tensor) -> torch.Tensor:
        x = self.pos_net(self.embed(x))
        x = self.norm(x.transpose(1, 2), bandwidth_id).transpose(1, 2)
        for block in self.convnext:
            x = block(x, bandwidth_id)
        return self.final_layer_norm(x.transpose(1, 2))


class ISTFTHead(nn.Module):
    """Linear -> log-magnitude and phase -> inverse STFT with "same" padding (T frames -> T * hop samples)."""

    def __init__(self, cfg: WavTokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.out = nn.Linear(cfg.dim, cfg.n_fft + 2)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mag, phase = self.out(x).transpose(1, 2).chunk(2, dim=1)
        spec = torch.clip(torch.exp(mag), max=1e2) * (torch.cos(phase) + 1j * torch.sin(phase))
        return self.istft(spec)

    def istft(self, spec: torch.Tensor) -> torch.Tensor:
        # upstream's own overlap-add: torch.istft refuses "same" padding (its NOLA check fails at the edges)
        n_fft, hop = self.cfg.n_fft, self.cfg.hop_length
        pad = (n_fft - hop) // 2
        frames = spec.shape[-1]
        ifft = torch.fft.irfft(spec, n_fft, dim=1, norm="backward") * self.window[None, :, None]
        size = (frames - 1) * hop + n_fft
        y = F.fold(ifft, output_size=(1, size), kernel_size=(1, n_fft), stride=(1, hop))[:, 0, 0, pad:-pad]
        envelope = F.fold(self.window.square().expand(1, frames, -1).transpose(1, 2), output_size=(1, size),
                          kernel_size=(1, n_fft), stride=(1, hop)).squeeze()[pad:-pad]
        return y / envelope


class Quantizer(nn.Module):
    """Holds the codebook under upstream's state-dict path (feature_extractor.encodec.quantizer.vq.layers.0)."""

    def __init__(self, cfg: WavTokenizerConfig):
        super().__init__()
        codebook = nn.Module()
        codebook.register_buffer("embed", torch.zeros(cfg.codebook_size, cfg.input_channels))
        layer = nn.Module()
        layer._codebook = codebook
        self.vq = nn.Module()
        self.vq.layers = nn.ModuleList([layer])


class WavTokenizerDecoder(nn.Module):
    def __init__(self, cfg: WavTokenizerConfig = WavTokenizerConfig()):
        super().__init__()
        self.cfg = cfg
        self.feature_extractor = nn.Module()
        self.feature_extractor.encodec = nn.Module()
        self.feature_extractor.encodec.quantizer = Quantizer(cfg)
        self.backbone = VocosBackbone(cfg)
        self.head = ISTFTHead(cfg)

    @property
    def codebook(self) -> torch.Tensor:
        return self.feature_extractor.encodec.quantizer.vq.layers[0]._codebook.embed

    def codes_to_features(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, C, L) codebook vectors (upstream's `codes_to_features` for one quantizer)."""
        return F.embedding(codes, self.codebook).transpose(1, 2)

    def decode(self, features: torch.Tensor, bandwidth_id: int = 0) -> torch.Tensor:
        """(B, C, L) features -> (B, L * hop) audio."""
        cond = torch.tensor([bandwidth_id], device=features.device)
        return self.head(self.backbone(features, cond))
