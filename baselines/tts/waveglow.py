"""WaveGlow (Prenger et al. 2019, arXiv 1811.00002): a flow from Gaussian noise to a 22.05 kHz waveform.

Re-implemented from NVIDIA/waveglow@2fd4e63 (`glow.py`, BSD-3-Clause; the commit Flowtron's tacotron2
submodule pins) with upstream's parameter names. Audio is folded into groups of `n_group` samples; each of
`n_flows` steps is an invertible 1x1 conv (`convinv.k`) and an affine coupling whose (log s, b) come from a
WaveNet-like stack (`WN.k`: dilated convs gated by tanh * sigmoid, conditioned on the upsampled mel through
`cond_layer`). Every `n_early_every` steps `n_early_size` channels leave the flow early.

Inference draws z ~ N(0, sigma^2) for the remaining channels and, going backwards, for every early output,
in upstream's order, from the caller's `torch.Generator` (one per request, so a waveform never depends on
its batch). Weight-normalised layers are folded into plain weights when loaded (`fold_weight_norm`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class WaveGlowConfig:
    """`waveglow_config` of upstream's config.json (the released 256-channel LJSpeech model)."""

    n_mel_channels: int = 80
    n_flows: int = 12
    n_group: int = 8
    n_early_every: int = 4
    n_early_size: int = 2
    n_layers: int = 8
    n_channels: int = 256
    kernel_size: int = 3
    upsample_kernel: int = 1024
    hop_length: int = 256


class Invertible1x1Conv(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 1, bias=False)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training direction: W z and log|det W| summed over every group position."""
        weight = self.conv.weight.squeeze(-1)
        return self.conv(z), z.size(0) * z.size(2) * torch.logdet(weight)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        inverse = self.conv.weight.squeeze(-1).float().inverse()  # upstream inverts in float32, then casts
        return F.conv1d(z, inverse[..., None].to(z.dtype))


class WN(nn.Module):
    """The coupling network: `start` 1x1 conv, `n_layers` dilated gated convs (dilation 2^i) with residual and
    skip outputs (`res_skip_layers`; the last has skip only), the mel condition added per layer, `end` 1x1 conv."""

    def __init__(self, n_in: int, n_cond: int, cfg: WaveGlowConfig):
        super().__init__()
        c = cfg.n_channels
        self.n_channels = c
        self.start = nn.Conv1d(n_in, c, 1)
        self.end = nn.Conv1d(c, 2 * n_in, 1)
        self.cond_layer = nn.Conv1d(n_cond, 2 * c * cfg.n_layers, 1)
        self.in_layers = nn.ModuleList(
            nn.Conv1d(c, 2 * c, cfg.kernel_size, dilation=2 ** i, padding=(cfg.kernel_size - 1) * 2 ** i // 2)
            for i in range(cfg.n_layers))
        self.res_skip_layers = nn.ModuleList(
            nn.Conv1d(c, 2 * c if i < cfg.n_layers - 1 else c, 1) for i in range(cfg.n_layers))

    def forward(self, audio: torch.Tensor, spect: torch.Tensor) -> torch.Tensor:
        audio = self.start(audio)
        output = torch.zeros_like(audio)
        spect = self.cond_layer(spect)
        c, last = self.n_channels, len(self.in_layers) - 1
        for i, (in_layer, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            act = in_layer(audio) + spect[:, 2 * c * i:2 * c * (i + 1)]
            acts = res_skip(torch.tanh(act[:, :c]) * torch.sigmoid(act[:, c:]))
            if i < last:
                audio = audio + acts[:, :c]
                output = output + acts[:, c:]
            else:
                output = output + acts
        return self.end(output)


class WaveGlow(nn.Module):
    def __init__(self, cfg: WaveGlowConfig = WaveGlowConfig()):
        super().__init__()
        self.cfg = cfg
        self.upsample = nn.ConvTranspose1d(cfg.n_mel_channels, cfg.n_mel_channels, cfg.upsample_kernel,
                                           stride=cfg.hop_length)
        self.WN = nn.ModuleList()
        self.convinv = nn.ModuleList()
        n_half, remaining = cfg.n_group // 2, cfg.n_group
        for k in range(cfg.n_flows):
            if k % cfg.n_early_every == 0 and k > 0:
                n_half -= cfg.n_early_size // 2
                remaining -= cfg.n_early_size
            self.convinv.append(Invertible1x1Conv(remaining))
            self.WN.append(WN(n_half, cfg.n_mel_channels * cfg.n_group, cfg))
        self.n_remaining_channels = remaining

    def grouped_condition(self, spect: torch.Tensor) -> torch.Tensor:
        """Mel (B, n_mel, T) upsampled to samples, trimmed of the transposed conv's tail, folded into groups:
        (B, n_mel * n_group, T * hop / n_group)."""
        cfg = self.cfg
        spect = self.upsample(spect)[:, :, :-(cfg.upsample_kernel - cfg.hop_length)]
        spect = spect.unfold(2, cfg.n_group, cfg.n_group).permute(0, 2, 1, 3)
        return spect.contiguous().view(spect.size(0), spect.size(1), -1).permute(0, 2, 1)

    @torch.no_grad()
    def infer(self, spect: torch.Tensor, sigma: float = 1.0,
              generator: torch.Generator | None = None) -> torch.Tensor:
        """Waveform (B, T * hop) for mel (B, n_mel, T); every noise draw comes from `generator`."""
        cfg = self.cfg
        spect = self.grouped_condition(spect)

        def noise(channels: int) -> torch.Tensor:
            z = torch.randn(spect.size(0), channels, spect.size(2), generator=generator, device=spect.device)
            return sigma * z.to(spect.dtype)

        audio = noise(self.n_remaining_channels)
        for k in reversed(range(cfg.n_flows)):
            n_half = audio.size(1) // 2
            audio_0, audio_1 = audio[:, :n_half], audio[:, n_half:]
            out = self.WN[k](audio_0, spect)
            log_s, b = out[:, n_half:], out[:, :n_half]
            audio = self.convinv[k].inverse(torch.cat([audio_0, (audio_1 - b) / torch.exp(log_s)], 1))
            if k % cfg.n_early_every == 0 and k > 0:
                audio = torch.cat([noise(cfg.n_early_size), audio], 1)
        return audio.permute(0, 2, 1).reshape(audio.size(0), -1)


def fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace every `<name>_g`, `<name>_v` pair (torch's weight norm over dim 0, as upstream trains WN) by
    `<name>` = g * v / ||v||; other entries pass unchanged. Released WaveGlow files keep the pairs."""
    out = {}
    for name, tensor in state.items():
        if name.endswith("weight_v") and name[:-1] + "g" in state:
            g = state[name[:-1] + "g"]
            out[name[:-2]] = torch._weight_norm(tensor, g, 0)
        elif not (name.endswith("weight_g") and name[:-1] + "v" in state):
            out[name] = tensor
    return out
