"""The registered MAR generators `mar-b`, `mar-l`, `mar-h` (class-to-image, ImageNet 256).

Defaults are upstream's evaluation commands (README / seed-methods.md): `--num_iter 256 --num_sampling_steps
100 --cfg {2.9, 3.0, 3.2} --cfg_schedule linear --temperature 1.0`, fp16 autocast on CUDA, EMA weights.
Every sampler setting goes into the run signature (MAR#31: linear versus constant guidance moves FID a lot);
the checkpoint pair (MAR + KL-16 VAE) is identified by its sha256. Each request's image is drawn from its own
generator seeded with `Request.seed`, so it does not depend on its batch or rank.
"""

from __future__ import annotations

import contextlib
import typing
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from baselines.imagegen.checkpoints import load_checkpoint_file, load_into, read_state_dict
from baselines.imagegen.kl_vae import ENCODER_PREFIXES, KLVAEDecoder, to_uint8
from baselines.imagegen.mar import MAR, MAR_CONFIGS, MARSampler, generate_mar
from baselines.imagegen.methods import ReleasedClassToImage
from harness.errors import ArbenchError
from harness.registry import register_method
from harness.settings import Annotated, Field, Literal, NonNegativeFloat, PositiveFloat, Precision
from harness.weights import WeightSpec, register_weights

MAR_LICENSE = "MIT (LTH14/mar, Copyright (c) 2024 Tianhong Li); trained on ImageNet (research use)"
PRECISIONS = typing.get_args(Precision)
# Upstream's `util/download.py` links (Dropbox, `dl=0` fetched with a wget user agent); `dl=1` asks Dropbox
# for the file itself. The publishers list no checksums: sha256=None puts the digest of the file used into
# every run signature. Every MAR checkpoint is called checkpoint-last.pth upstream, so the cache names differ.
MAR_VAE = register_weights(WeightSpec(
    "mar-kl16-vae", "kl16.ckpt",
    "https://www.dropbox.com/scl/fi/hhmuvaiacrarfg28qxhwz/kl16.ckpt?rlkey=l44xipsezc8atcffdp4q7mwmh&dl=1",
    None, MAR_LICENSE + "; LDM AutoencoderKL architecture",
    "MAR's KL-16 VAE (LDM AutoencoderKL, 16 latent channels, downsample 16); also used by xAR, FlowAR, NOVA"))


@dataclass
class MARSettings:
    """MAR's evaluation sampler; `cfg` defaults to MAR-B's 2.9 and is replaced per model."""

    num_iter: Annotated[int, Field(ge=1, le=256, description="at most the 256 tokens of a 256 px image")] = 256
    num_sampling_steps: Annotated[int, Field(ge=2, le=1000, description="at most the 1000 training steps")] = 100
    cfg: NonNegativeFloat = 2.9
    cfg_schedule: Literal["linear", "constant"] = "linear"  # upstream evaluates with linear
    temperature: PositiveFloat = 1.0
    precision: Precision = "fp16-autocast"  # upstream evaluates under torch.cuda.amp.autocast()
    mar_weights: str = ""
    vae_weights: str = ""

    def sampler(self) -> MARSampler:
        return MARSampler(self.num_iter, self.num_sampling_steps, self.cfg, self.cfg_schedule, self.temperature)


def read_mar_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The EMA weights of an upstream `checkpoint-last.pth` ({"model", "model_ema", maybe "args"}), as
    upstream's evaluation uses them; a flat state dict (e.g. exported EMA weights) is taken as given.

    Read by `load_checkpoint_file` (weights_only=True; the argparse.Namespace upstream's training saves beside
    the weights is the one extra class allowed)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_state_dict(path)
    saved = load_checkpoint_file(path, "a MAR checkpoint")
    if isinstance(saved, dict) and "model_ema" in saved:
        saved = saved["model_ema"]
    elif isinstance(saved, dict) and "model" in saved:
        raise ArbenchError(f"{path} has no 'model_ema' entry: MAR is evaluated with its EMA weights. Use the "
                           "released checkpoint-last.pth, or export the EMA weights as a flat state dict.")
    if not isinstance(saved, dict) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
        raise ArbenchError(f"{path} holds no name -> tensor state dict (looked at its 'model_ema' entry).")
    return saved


class MARMethod(ReleasedClassToImage):
    """A released MAR checkpoint: random-order masked generation with a per-token diffusion head."""

    family = "masked"  # as the reported MAR rows (harness/reported_results.toml)
    Config = MARSettings
    arch: ClassVar[str] = "mar_base"
    mar_spec: ClassVar[WeightSpec]

    def weight_files(self):
        return self.locate_all((self.mar_spec, self.config.mar_weights), (MAR_VAE, self.config.vae_weights))

    def load(self) -> None:
        self._precision()  # refuse fp16 on a CPU before reading a gigabyte of weights
        (mar_path, _), (vae_path, _) = self.weight_files()
        model = MAR(MAR_CONFIGS[self.arch])
        load_into(model, read_mar_checkpoint(mar_path), f"{self.name} ({mar_path.name}, EMA weights)")
        vae = KLVAEDecoder()
        load_into(vae, read_state_dict(vae_path), f"{self.name} VAE ({vae_path.name})", ENCODER_PREFIXES)
        self._model, self._vae = model.to(self.device).eval(), vae.to(self.device).eval()

    def _precision(self):
        if self.config.precision == "fp32":
            return contextlib.nullcontext()
        if not str(self.device).startswith("cuda"):
            raise ArbenchError(f"{self.name}: precision=fp16-autocast (upstream's evaluation) needs a CUDA device; "
                               f"on {self.device} pass --set precision=fp32 (its own signature).")
        return torch.autocast("cuda", dtype=torch.float16)

    def images(self, labels, generators):
        with self._precision():
            latents = generate_mar(self._model, labels, generators, self.config.sampler())
            images = self._vae(latents)
        return to_uint8(images)


def _mar(name: str, arch: str, url: str, cfg: float, params: str) -> type:
    config = MAR_CONFIGS[arch]
    spec = register_weights(WeightSpec(
        name, f"{arch}-checkpoint-last.pth", url, None, MAR_LICENSE,
        f"MAR {arch.split('_')[1]} ({params}), Diffusion Loss head {config.diffloss_depth} x "
        f"{config.diffloss_width}; upstream file pretrained_models/mar/{arch}/checkpoint-last.pth"))
    settings = dataclasses.make_dataclass(f"{name.replace('-', '').title()}Settings", [
        ("cfg", float, dataclasses.field(default=cfg))], bases=(MARSettings,), namespace={"__module__": __name__})
    cls = type(name.replace("-", "").upper(), (MARMethod,), {
        "description": f"MAR-{name[-1].upper()} ({params}), random-order masked AR with a per-token diffusion head: "
                       f"256 iterations, 100 DDPM steps, linear CFG {cfg}, temperature 1.0 (upstream evaluation); "
                       f"EMA weights of {arch}/checkpoint-last.pth + kl16.ckpt",
        "arch": arch, "mar_spec": spec, "Config": settings, "__module__": __name__})
    return register_method(name)(cls)


DROPBOX = "https://www.dropbox.com/scl/fi/"
MAR_METHODS = [
    _mar("mar-b", "mar_base", DROPBOX + "f6dpuyjb7fudzxcyhvrhk/checkpoint-last.pth?rlkey=a6i4bo71vhfo4anp33n9ukujb&dl=1",
         2.9, "208M"),
    _mar("mar-l", "mar_large", DROPBOX + "pxacc5b2mrt3ifw4cah6k/checkpoint-last.pth?rlkey=m48ovo6g7ivcbosrbdaz0ehqt&dl=1",
         3.0, "479M"),
    _mar("mar-h", "mar_huge", DROPBOX + "1qmfx6fpy3k7j9vcjjs3s/checkpoint-last.pth?rlkey=4lae281yzxb406atp32vzc83o&dl=1",
         3.2, "943M"),
]
