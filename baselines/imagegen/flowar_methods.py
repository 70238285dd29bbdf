"""The registered FlowAR generators `flowar-s`, `flowar-l`, `flowar-h` (class-to-image, ImageNet 256).

Defaults are upstream's README evaluation commands (OliverRensu/FlowAR @ 21835c0): S `--num_step 25 --cfg 4.3
--guidance 0.9`, L `--num_step 25 --cfg 2.4 --guidance 0.9`, H `--num_step 50 --cfg 2.4 --guidance 0.7`, under
`torch.cuda.amp.autocast()` (fp16), decoded by MAR's KL-16 VAE (`vae.decode(tokens / 0.2325)`) and written as
round(clip((x + 1) / 2 * 255)). Upstream's `eval.sh` has cfg 4.2 (S) and 2.8 (H) instead: `cfg` is a setting.
Only S, L and H are defined upstream (`flowar_small/large/huge`); the paper's FlowAR-B has no model function or
weights. The checkpoint is a flat state dict (eval.py: `load_state_dict(torch.load(...))`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch

from baselines.imagegen.checkpoints import load_into, read_state_dict
from baselines.imagegen.flowar import FLOWAR_CONFIGS, FlowAR, FlowARSampler, generate_flowar
from baselines.imagegen.kl_vae import ENCODER_PREFIXES, KLVAEConfig, KLVAEDecoder, to_uint8
from baselines.imagegen.mar_methods import MAR_VAE, PRECISIONS
from baselines.imagegen.methods import ReleasedClassToImage
from harness.errors import ArbenchError
from harness.registry import register_method
from harness.settings import Annotated, Field, GuidanceScale, Precision
from harness.weights import WeightSpec, register_weights

HF_FLOWAR = "https://huggingface.co/OliverRen/FlowAR/resolve/main/"
# No LICENSE file upstream (neither the README-only snapshot nor the code commits); the weights page could not
# be read offline. Treat both as all rights reserved.
FLOWAR_LICENSE = ("no licence stated (OliverRensu/FlowAR has no LICENSE file; HF OliverRen/FlowAR unverified "
                  "offline): research use only; trained on ImageNet")


def precision_context(precision: str, device: str, name: str):
    """fp16 autocast as upstream's evaluation (CUDA only), or plain float32."""
    if precision not in PRECISIONS:
        raise ArbenchError(f"{name}: precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if not str(device).startswith("cuda"):
        raise ArbenchError(f"{name}: precision=fp16-autocast (upstream's evaluation) needs a CUDA device; "
                           f"on {device} pass --set precision=fp32 (its own signature).")
    return torch.autocast("cuda", dtype=torch.float16)


@dataclass
class FlowARSettings:
    """Upstream `eval.py` flags; `num_steps`, `cfg`, `guidance` are replaced per size by the README's values."""

    num_steps: Annotated[int, Field(ge=2)] = 25
    cfg: GuidanceScale = 4.3
    guidance: Annotated[float, Field(ge=0, le=1, description="the highest t that is guided")] = 0.9
    precision: Precision = "fp16-autocast"
    flowar_weights: str = ""
    vae_weights: str = ""

    def sampler(self) -> FlowARSampler:
        return FlowARSampler(self.num_steps, self.cfg, self.guidance)


class KL16LatentMethod(ReleasedClassToImage):
    """A released generator of MAR KL-16 latents (FlowAR, xAR) and the KL-16 VAE that decodes them, under
    upstream's fp16 autocast or in float32. Subclasses name the network, its config, the weight spec and the
    setting that overrides its path, and sample latents (`latents`)."""

    network: ClassVar[type]
    model_spec: ClassVar[WeightSpec]
    weights_setting: ClassVar[str]
    vae_config: ClassVar[KLVAEConfig] = KLVAEConfig()

    def model_config(self):
        raise NotImplementedError

    def latents(self, labels, generators) -> torch.Tensor:
        raise NotImplementedError

    def weight_files(self):
        return self.locate_all((self.model_spec, getattr(self.config, self.weights_setting)),
                               (MAR_VAE, self.config.vae_weights))

    def load(self) -> None:
        precision_context(self.config.precision, self.device, self.name)  # refuse fp16 on CPU before reading
        (path, _), (vae_path, _) = self.weight_files()
        model = self.network(self.model_config())
        load_into(model, read_state_dict(path), f"{self.name} ({path.name})")
        vae = KLVAEDecoder(self.vae_config)
        load_into(vae, read_state_dict(vae_path), f"{self.name} VAE ({vae_path.name})", ENCODER_PREFIXES)
        self._model, self._vae = model.to(self.device).eval(), vae.to(self.device).eval()

    def images(self, labels, generators):
        with precision_context(self.config.precision, self.device, self.name):
            images = self._vae(self.latents(labels, generators))
        return to_uint8(images)


class FlowARMethod(KL16LatentMethod):
    """A released FlowAR checkpoint: 5 scales (1..16) of KL-16 latents, flow matching inside each scale."""

    family = "next-scale"  # as the reported FlowAR row (leaderboard/reported_results.toml)
    Config = FlowARSettings
    network = FlowAR
    weights_setting = "flowar_weights"
    arch: ClassVar[str] = "flowar_small"

    def model_config(self):
        return FLOWAR_CONFIGS[self.arch]

    def latents(self, labels, generators):
        return generate_flowar(self._model, labels, generators, self.config.sampler())


def _flowar(size: str, arch: str, num_steps: int, cfg: float, guidance: float, params: str, fid: str) -> type:
    name = f"flowar-{size.lower()}"
    filename = f"FlowAR-{size}.pth"
    config = FLOWAR_CONFIGS[arch]
    spec = register_weights(WeightSpec(
        name, filename, HF_FLOWAR + filename, None, FLOWAR_LICENSE,
        f"FlowAR-{size} ({params}), {arch}, flow head {config.head_depth} x {config.head_width}; file name from the "
        f"README's eval command (--resume /path/to/{filename}), the Hugging Face path is unverified"))
    settings = dataclasses.make_dataclass(f"FlowAR{size}Settings", [
        ("num_steps", int, dataclasses.field(default=num_steps)),
        ("cfg", float, dataclasses.field(default=cfg)),
        ("guidance", float, dataclasses.field(default=guidance))], bases=(FlowARSettings,),
        namespace={"__module__": __name__})
    cls = type(f"FlowAR{size}", (FlowARMethod,), {
        "description": f"FlowAR-{size} ({params}{fid}), next-scale (1..16) AR with a flow-matching head: "
                       f"{num_steps} Euler steps, CFG {cfg} ramped over scales, guided for t <= {guidance} "
                       f"(README evaluation); weights {filename} + kl16.ckpt",
        "arch": arch, "model_spec": spec, "Config": settings, "__module__": __name__})
    return register_method(name)(cls)


FLOWAR_METHODS = [
    _flowar("S", "flowar_small", 25, 4.3, 0.9, "170M", ""),
    _flowar("L", "flowar_large", 25, 2.4, 0.9, "589M", ", README FID 1.90"),
    _flowar("H", "flowar_huge", 50, 2.4, 0.7, "1.9B", ", README FID 1.65"),
]
