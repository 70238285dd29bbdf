"""NeMo's HiFi-GAN generator (the vocoder NeMo pairs with TalkNet 2), in ARBench's code.

Re-implements `Generator`, `ResBlock1` and `ResBlock2` of nemo/collections/tts/modules/hifigan_modules.py at
NVIDIA/NeMo@77be763 (v1.8.2; itself from jik876/hifi-gan, MIT): a 7-tap input convolution, per stage a leaky
ReLU (slope 0.1), a transposed convolution (stride = the stage's upsampling rate, padding (k - u) // 2) and the
mean of the multi-receptive-field residual blocks, then a leaky ReLU with torch's default slope 0.01 (upstream
calls `F.leaky_relu(x)` there), a 7-tap output convolution and tanh. Parameter names are NeMo's (`conv_pre`,
`ups.{i}`, `resblocks.{i}.{j}.convs1/convs2/convs.{k}`, `conv_post`); the convolutions hold plain weights:
the released file's weight-norm pairs (`weight_g`, `weight_v`) are folded at load (`generator_state`), which is
what upstream's `remove_weight_norm` does for export and leaves the function unchanged.

`generator_state` also accepts the layout NeMo saved before its resblocks were nested (v1.0.0rc1, the code the
released `tts_hifigan` file comes from: a flat `resblocks.{i * num_kernels + j}`), renamed by the rule of
v1.8.2's `HifiGanModel.load_state_dict`. Golden: tests/golden/make_hifigan.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines.tts.waveglow import fold_weight_norm

LRELU_SLOPE = 0.1
GENERATOR_TARGETS = ("nemo.collections.tts.modules.hifigan_modules.Generator",)


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


@dataclass(frozen=True)
class HiFiGANConfig:
    """Upstream's `Generator` arguments; the defaults are examples/tts/conf/hifigan/model/generator/v1.yaml (the
    size NeMo's `tts_hifigan` was trained at) with 80 mel channels."""

    resblock: int = 1
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    initial_input_size: int = 80

    def __post_init__(self):
        if self.resblock not in (1, 2):
            raise ValueError(f"resblock must be 1 or 2, not {self.resblock!r}")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes) or not self.upsample_rates:
            raise ValueError("upsample_rates and upsample_kernel_sizes must be non-empty and of one length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes) or not self.resblock_kernel_sizes:
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes must be non-empty and of one length")
        need = 3 if self.resblock == 1 else 2
        if any(len(d) < need for d in self.resblock_dilation_sizes):
            raise ValueError(f"ResBlock{self.resblock} needs {need} dilations per block")

    @property
    def hop_length(self) -> int:
        """Waveform samples per mel frame."""
        return math.prod(self.upsample_rates)

    @classmethod
    def from_config(cls, node: dict[str, Any]) -> HiFiGANConfig:
        """From a `.nemo` file's `generator` node (its `_target_` must be NeMo's Generator; unknown keys are
        refused rather than ignored)."""
        node = dict(node)
        target = node.pop("_target_", GENERATOR_TARGETS[0])
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(node) - names - {"apply_weight_init_conv_pre"})  # an init-only flag
        if target not in GENERATOR_TARGETS or unknown:
            raise ValueError(f"not NeMo's HiFi-GAN Generator (target {target!r}, unsupported keys {unknown})")
        node.pop("apply_weight_init_conv_pre", None)

        def tup(v):
            return tuple(tup(x) for x in v) if isinstance(v, (list, tuple)) else int(v)

        return cls(**{k: tup(v) for k, v in node.items()})


class ResBlock1(nn.Module):
    """Three (dilated conv, conv) pairs, each pair preceded by leaky ReLUs and added to its input."""

    def __init__(self, channels: int, kernel_size: int, dilation: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, 1, dilation=d,
                                              padding=get_padding(kernel_size, d)) for d in dilation[:3])
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, 1, padding=get_padding(kernel_size))
                                    for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
            x = xt + x
        return x


class ResBlock2(nn.Module):
    """Two dilated convolutions, each preceded by a leaky ReLU and added to its input."""

    def __init__(self, channels: int, kernel_size: int, dilation: tuple[int, ...]):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, 1, dilation=d,
                                             padding=get_padding(kernel_size, d)) for d in dilation[:2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c in self.convs:
            x = c(F.leaky_relu(x, LRELU_SLOPE)) + x
        return x


class HiFiGANGenerator(nn.Module):
    """Mel (B, n_mels, T) -> waveform (B, T * hop_length) in [-1, 1]. Deterministic: no noise input."""

    def __init__(self, config: HiFiGANConfig = HiFiGANConfig()):
        super().__init__()
        c = self.config = config
        ch = c.upsample_initial_channel
        self.conv_pre = nn.Conv1d(c.initial_input_size, ch, 7, 1, padding=3)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(ch // 2 ** i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes)))
        block = ResBlock1 if c.resblock == 1 else ResBlock2
        self.resblocks = nn.ModuleList(
            nn.ModuleList(block(ch // 2 ** (i + 1), k, d)
                          for k, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes))
            for i in range(len(self.ups)))
        self.conv_post = nn.Conv1d(ch // 2 ** len(self.ups), 1, 7, 1, padding=3)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(mel)
        for up, group in zip(self.ups, self.resblocks):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            xs = torch.zeros_like(x)
            for block in group:
                xs += block(x)
            x = xs / len(group)
        x = self.conv_post(F.leaky_relu(x))  # torch's default slope (0.01), as upstream
        return torch.tanh(x)[:, 0]


def generator_state(state: dict[str, torch.Tensor], config: HiFiGANConfig,
                    prefix: str = "generator.") -> dict[str, torch.Tensor]:
    """The generator's tensors of a HiFi-GAN model's state dict under this module's names: only `prefix`ed
    entries (the discriminators `mpd.`/`msd.` and the featurisers are training-only), the flat pre-v1.x
    `resblocks.{n}` renamed `resblocks.{n // num_kernels}.{n % num_kernels}`, weight norm folded."""
    num_kernels = len(config.resblock_kernel_sizes)
    out = {}
    for name, tensor in state.items():
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix):].split(".")
        if parts[0] == "resblocks" and len(parts) == 5:  # resblocks.{n}.convs1.{k}.weight_g (flat layout)
            n = int(parts[1])
            parts = ["resblocks", str(n // num_kernels), str(n % num_kernels)] + parts[2:]
        out[".".join(parts)] = tensor
    return fold_weight_norm(out)
