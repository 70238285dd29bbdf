"""The registered xAR generators `xar-b`, `xar-l`, `xar-h` (class-to-image, ImageNet 256).

Defaults are upstream's README evaluation commands (OliverRensu/xAR @ 121e9c9): B `--num_steps 40 --cfg 2.7`,
L `--num_steps 50 --cfg 2.3`, H `--num_steps 50 --cfg 2.2` (`--num_iter 256` is parsed but unused by
`sample_tokens`), under `torch.cuda.amp.autocast()` (fp16), decoded by MAR's KL-16 VAE
(`vae.decode(tokens / 0.2325)`) and written as round(clip((x + 1) / 2 * 255)). The checkpoint is a flat state dict
(eval.py: `load_state_dict(torch.load(...))`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from baselines.imagegen.flowar_methods import KL16LatentMethod
from baselines.imagegen.xar import XAR, XAR_CONFIGS, XARSampler, generate_xar
from harness.registry import register_method
from harness.settings import Annotated, Field, GuidanceScale, Precision
from harness.weights import WeightSpec, register_weights

HF_XAR = "https://huggingface.co/OliverRen/xAR/resolve/main/"
# No LICENSE file upstream (snapshot 121e9c9) and the weights page could not be read offline.
XAR_LICENSE = ("no licence stated (OliverRensu/xAR has no LICENSE file; HF OliverRen/xAR unverified offline): "
               "research use only; trained on ImageNet")


@dataclass
class XARSettings:
    """Upstream `eval.py` flags; `num_steps` and `cfg` are replaced per size by the README's values."""

    # upstream's last step re-feeds the context when its loop ran only once
    num_steps: Annotated[int, Field(ge=3)] = 40
    cfg: GuidanceScale = 2.7
    precision: Precision = "fp16-autocast"
    xar_weights: str = ""
    vae_weights: str = ""

    def sampler(self) -> XARSampler:
        return XARSampler(self.num_steps, self.cfg)


class XARMethod(KL16LatentMethod):
    """A released xAR checkpoint: 4 cells of 8x8 KL-16 latents, each denoised by the AR model (SDE + CFG)."""

    family = "next-x"  # as the reported xAR rows (leaderboard/reported_results.toml)
    Config = XARSettings
    network = XAR
    weights_setting = "xar_weights"
    arch: ClassVar[str] = "xar_base"

    def model_config(self):
        return XAR_CONFIGS[self.arch]

    def latents(self, labels, generators):
        return generate_xar(self._model, labels, generators, self.config.sampler())


def _xar(size: str, arch: str, num_steps: int, cfg: float, params: str, fid: float) -> type:
    name = f"xar-{size.lower()}"
    filename = f"xAR-{size}.pth"
    spec = register_weights(WeightSpec(
        name, filename, HF_XAR + filename, None, XAR_LICENSE,
        f"xAR-{size} ({params}), {arch}; file name from the README's eval command (--resume ../ckpt/{filename}), "
        "the Hugging Face path is unverified"))
    settings = dataclasses.make_dataclass(f"XAR{size}Settings", [
        ("num_steps", int, dataclasses.field(default=num_steps)),
        ("cfg", float, dataclasses.field(default=cfg))], bases=(XARSettings,), namespace={"__module__": __name__})
    cls = type(f"XAR{size}", (XARMethod,), {
        "description": f"xAR-{size} ({params}, paper FID {fid}), next-cell (4 cells of 8x8) AR with flow matching: "
                       f"{num_steps} Euler-Maruyama steps per cell, CFG {cfg} ramped over cells (README evaluation); "
                       f"weights {filename} + kl16.ckpt",
        "arch": arch, "model_spec": spec, "Config": settings, "__module__": __name__})
    return register_method(name)(cls)


XAR_METHODS = [
    _xar("B", "xar_base", 40, 2.7, "172M", 1.72),
    _xar("L", "xar_large", 50, 2.3, "608M", 1.28),
    _xar("H", "xar_huge", 50, 2.2, "1.19B", 1.24),
]
