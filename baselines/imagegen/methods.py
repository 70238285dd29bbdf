"""The registered `class-to-image` generators: LlamaGen (raster), VAR (next-scale) and the offline mini
models over 8x8 digits (raster and PAR region-parallel).

Every sampler setting (CFG scale and schedule, top-k, top-p, temperature, resolution and resize) is a
method setting, so it enters the run signature; the checkpoint files are identified by their sha256.
Each request's image is drawn from its own generator seeded with `Request.seed`, so an image does not
depend on the batch or rank it was generated in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from baselines.imagegen import digits_mini
from baselines.imagegen.checkpoints import combined_sha256, load_into, read_state_dict
from baselines.imagegen.llamagen_gpt import GPT_CONFIGS, LlamaGenGPT, generate_raster
from baselines.imagegen.par import decode_schedule, generate_par
from baselines.imagegen.sampling import SamplerConfig, request_generators
from baselines.imagegen.var import VAE_ENCODER_PREFIXES, VAR, VARConfig, VARSampler, VQVAEDecoder, generate_var
from baselines.imagegen.vq_decoder import ENCODER_PREFIXES, VQConfig, VQDecoder, to_uint8
from harness.api import Method, Request
from harness.errors import ArbenchError
from harness.provenance import sha256_file
from harness.registry import register_method
from harness.settings import Field, NonNegativeFloat, PositiveFloat, PositiveInt, TopK, TopP
from harness.weights import WeightSpec, register_weights, require_all

HF_LLAMAGEN = "https://huggingface.co/FoundationVision/LlamaGen/resolve/main/"
LLAMAGEN_LICENSE = "MIT (FoundationVision/LlamaGen); trained on ImageNet (research use)"
# The publishers list no checksums; sha256=None makes `resolve` record the digest of the file used,
# and every run signature carries it (checkpoint_sha256).
LLAMAGEN_VQ = register_weights(WeightSpec(
    "llamagen-vq-ds16-c2i", "vq_ds16_c2i.pt", HF_LLAMAGEN + "vq_ds16_c2i.pt", None, LLAMAGEN_LICENSE,
    "LlamaGen VQ tokenizer, downsample 16, codebook 16384 x 8 (class-conditional models)"))


def _llamagen_spec(filename: str, what: str) -> WeightSpec:
    return register_weights(WeightSpec(f"llamagen-{filename.removesuffix('.pt').replace('_', '-').lower()}",
                                       filename, HF_LLAMAGEN + filename, None, LLAMAGEN_LICENSE, what))


def labels_and_generators(requests: Sequence[Request], device: str) -> tuple[torch.Tensor, list[torch.Generator]]:
    labels = torch.tensor([int(r.condition["label"]) for r in requests], dtype=torch.long, device=device)
    return labels, request_generators([r.seed for r in requests])


class ClassToImage(Method):
    """Common ground of the class-conditional generators; settings named `*_weights` are local paths
    (identified in the signature by the files' sha256, not by the path)."""

    modality = "class-to-image"
    num_classes: ClassVar[int] = 1000

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self.config).items() if not k.endswith("_weights")}

    def check_labels(self, requests: Sequence[Request]) -> None:
        bad = [r.condition.get("label") for r in requests
               if not isinstance(r.condition.get("label"), (int, np.integer)) or
               not 0 <= int(r.condition["label"]) < self.num_classes]
        if bad:
            raise ArbenchError(f"{self.name} draws classes 0..{self.num_classes - 1}; got labels {bad[:5]}. "
                               "Use a task with the same class set.")


class ReleasedClassToImage(ClassToImage):
    """A released generator checkpoint and its image decoder (VQ tokenizer or VAE).

    Subclasses say which files they need (`weight_files`: located by weight spec or by an explicit path setting),
    how to build the networks from them (`load`, called on first use) and how to turn labels into uint8 images
    (`images`). The files are identified together by one combined sha256, computed once.
    """

    def __init__(self, config=None, device: str = "cpu"):
        super().__init__(config, device)
        self._sha: str | None = None
        self._loaded = False

    def weight_files(self) -> Sequence[tuple[Path, str]]:
        """(path, sha256) of every file the method reads, generator first."""
        raise NotImplementedError

    def locate_all(self, *wanted: tuple[WeightSpec, str]) -> list[tuple[Path, str]]:
        """(path, sha256) of each (spec, explicit setting); one MissingAssetError names every missing file at once."""
        return require_all([lambda spec=spec, explicit=explicit: spec.locate(explicit) for spec, explicit in wanted],
                           f"method {self.name}")

    def load(self) -> None:
        raise NotImplementedError

    def images(self, labels: torch.Tensor, generators: list[torch.Generator]) -> np.ndarray:
        """uint8 NHWC images for `labels`, sample b drawing only from `generators[b]`."""
        raise NotImplementedError

    def checkpoint_sha256(self) -> str | None:
        if self._sha is None:
            self._sha = combined_sha256(digest for _, digest in self.weight_files())
        return self._sha

    @torch.no_grad()
    def generate(self, requests: Sequence[Request]) -> np.ndarray:
        self.check_labels(requests)
        if not self._loaded:
            self.load()
            self._loaded = True
        return self.images(*labels_and_generators(requests, self.device))


# -- LlamaGen ---------------------------------------------------------------------------------------
@dataclass
class LlamaGenSettings:
    """LlamaGen's sampler (`sample_c2i_ddp.py` defaults) plus the evaluation resize; the field types declare
    each setting's domain (harness.settings)."""

    cfg_scale: NonNegativeFloat = 2.0
    # upstream: uncond + s (cond - uncond) on every token
    cfg_schedule: Annotated[Literal["constant"], Field(description="LlamaGen's guidance is constant over tokens")] = "constant"
    cfg_interval: Annotated[int, Field(ge=-1, description="-1: guide every token")] = -1
    temperature: PositiveFloat = 1.0
    top_k: TopK = 0
    top_p: TopP = 1.0
    image_size_eval: PositiveInt = 256
    # upstream resizes 384 px samples to 256 with F.interpolate(mode="bicubic")
    resize: Literal["bicubic", "bilinear", "area"] = "bicubic"
    gpt_weights: str = ""
    vq_weights: str = ""


class LlamaGen(ReleasedClassToImage):
    """A released LlamaGen class-conditional checkpoint, decoded in raster order."""

    family = "raster-ar"
    #: 2: `cfg_interval` = k guides k + 2 tokens as upstream (version 1 guided k + 1); cfg_interval -1 unchanged.
    version = "2"
    Config = LlamaGenSettings
    gpt_model: ClassVar[str] = "GPT-B"
    image_size: ClassVar[int] = 256
    gpt_spec: ClassVar[WeightSpec]
    vq_config: ClassVar[VQConfig] = VQConfig()

    def gpt_config(self):
        tokens = (self.image_size // self.vq_config.downsample) ** 2
        return dataclasses.replace(GPT_CONFIGS[self.gpt_model], block_size=tokens)

    def weight_files(self):
        return self.locate_all((self.gpt_spec, self.config.gpt_weights), (LLAMAGEN_VQ, self.config.vq_weights))

    def load(self) -> None:
        (gpt_path, _), (vq_path, _) = self.weight_files()
        model = LlamaGenGPT(self.gpt_config())
        # freqs_cis: the rotary table some LlamaGen files carry; upstream recomputes it and never loads it
        load_into(model, read_state_dict(gpt_path, derived=("freqs_cis",)), f"{self.name} ({gpt_path.name})")
        vq = VQDecoder(self.vq_config)
        load_into(vq, read_state_dict(vq_path), f"{self.name} tokenizer ({vq_path.name})", ENCODER_PREFIXES)
        self._model, self._vq = model.to(self.device).eval(), vq.to(self.device).eval()

    def sampler(self) -> SamplerConfig:
        c = self.config
        return SamplerConfig(c.cfg_scale, c.cfg_interval, c.temperature, c.top_k, c.top_p)

    def images(self, labels, generators):
        tokens = generate_raster(self._model, labels, generators, self.sampler())
        side = self._model.config.grid_size
        images = self._vq(tokens.view(-1, side, side))
        if images.shape[-1] != self.config.image_size_eval:
            size = (self.config.image_size_eval,) * 2
            images = F.interpolate(images, size=size, mode=self.config.resize,
                                   **({} if self.config.resize == "area" else {"align_corners": False}))
        return to_uint8(images)


def _llamagen(name: str, gpt_model: str, filename: str, image_size: int, cfg: float, params: str) -> type:
    spec = _llamagen_spec(filename, f"LlamaGen {gpt_model} class-conditional, {image_size} px ({params})")
    settings = dataclasses.make_dataclass(f"{name.title().replace('-', '')}Settings", [
        ("cfg_scale", float, dataclasses.field(default=cfg))], bases=(LlamaGenSettings,))
    cls = type(name.title().replace("-", ""), (LlamaGen,), {
        "description": f"LlamaGen {gpt_model} ({params}), {image_size} px, raster AR + CFG {cfg} "
                       f"(upstream evaluation setting); weights {filename}",
        "gpt_model": gpt_model, "image_size": image_size, "gpt_spec": spec, "Config": settings,
        "__module__": __name__})
    return register_method(name)(cls)


# CFG scales: the upstream evaluation commands (seed-methods.md: 2.0 for B/L, 1.75 for XL/XXL, 1.65 for 3B).
LLAMAGEN_METHODS = [
    _llamagen("llamagen-b", "GPT-B", "c2i_B_256.pt", 256, 2.0, "111M"),
    _llamagen("llamagen-l", "GPT-L", "c2i_L_256.pt", 256, 2.0, "343M"),
    _llamagen("llamagen-l-384", "GPT-L", "c2i_L_384.pt", 384, 2.0, "343M"),
    _llamagen("llamagen-xl-384", "GPT-XL", "c2i_XL_384.pt", 384, 1.75, "775M"),
    _llamagen("llamagen-xxl-384", "GPT-XXL", "c2i_XXL_384.pt", 384, 1.75, "1.4B"),
    _llamagen("llamagen-3b-384", "GPT-3B", "c2i_3B_384.pt", 384, 1.65, "3.1B"),
]


# -- VAR --------------------------------------------------------------------------------------------
HF_VAR = "https://huggingface.co/FoundationVision/var/resolve/main/"
VAR_LICENSE = "MIT (FoundationVision/VAR); trained on ImageNet (research use)"
VAR_VAE = register_weights(WeightSpec(
    "var-vae-ch160v4096z32", "vae_ch160v4096z32.pth", HF_VAR + "vae_ch160v4096z32.pth", None, VAR_LICENSE,
    "VAR multi-scale VQVAE (ch 160, vocabulary 4096, 32 channels, scales 1..16)"))


@dataclass
class VARSettings:
    """VAR's README/FID sampler; the paper's FID used cfg 2.0 (VAR#86), so it is a setting, not a constant."""

    cfg: NonNegativeFloat = 1.5
    # t = cfg * si / (K - 1); logits = (1 + t) cond - t uncond
    cfg_schedule: Annotated[Literal["linear"], Field(description="VAR's guidance ramps linearly over scales")] = "linear"
    top_k: TopK = 900
    top_p: Annotated[float, Field(ge=0, le=1, description="0 or 1 = off")] = 0.96
    more_smooth: bool = False
    to_uint8: Literal["truncate", "round"] = "truncate"  # upstream demo: img.mul(255) then astype(uint8)
    var_weights: str = ""
    vae_weights: str = ""

    def __post_init__(self):
        if self.more_smooth:
            raise ValueError("more_smooth (Gumbel smoothing) is a visualisation option upstream does not use for FID; "
                             "it is not implemented")


class VARMethod(ReleasedClassToImage):
    """A released VAR checkpoint: 10 scales, 680 tokens, one forward pass per scale."""

    family = "next-scale"
    Config = VARSettings
    depth: ClassVar[int] = 16
    var_spec: ClassVar[WeightSpec]

    def weight_files(self):
        return self.locate_all((self.var_spec, self.config.var_weights), (VAR_VAE, self.config.vae_weights))

    def load(self) -> None:
        (var_path, _), (vae_path, _) = self.weight_files()
        model = VAR(VARConfig(depth=self.depth))
        load_into(model, read_state_dict(var_path), f"{self.name} ({var_path.name})")
        vae = VQVAEDecoder()
        load_into(vae, read_state_dict(vae_path), f"{self.name} VQVAE ({vae_path.name})", VAE_ENCODER_PREFIXES)
        self._model, self._vae = model.to(self.device).eval(), vae.to(self.device).eval()

    def images(self, labels, generators):
        sampler = VARSampler(self.config.cfg, self.config.top_k, self.config.top_p)
        images, _ = generate_var(self._model, self._vae, labels, generators, sampler)
        unit = (images + 1) * 0.5 * 255
        unit = unit.clamp(0, 255) if self.config.to_uint8 == "truncate" else unit.round().clamp(0, 255)
        return unit.permute(0, 2, 3, 1).to("cpu", torch.uint8).numpy()


def _var(depth: int, params: str) -> type:
    filename = f"var_d{depth}.pth"
    spec = register_weights(WeightSpec(f"var-d{depth}", filename, HF_VAR + filename, None, VAR_LICENSE,
                                       f"VAR-d{depth} ({params}) class-conditional ImageNet 256"))
    cls = type(f"VARd{depth}", (VARMethod,), {
        "description": f"VAR-d{depth} ({params}), next-scale prediction, 10 scales, cfg 1.5 ramp, top-k 900, "
                       f"top-p 0.96 (README setting); weights {filename}",
        "depth": depth, "var_spec": spec, "__module__": __name__})
    return register_method(f"var-d{depth}")(cls)


VAR_METHODS = [_var(16, "310M"), _var(20, "600M"), _var(24, "1.0B"), _var(30, "2.0B")]


# -- offline mini models ----------------------------------------------------------------------------
@dataclass
class DigitsMiniSettings:
    cfg_scale: NonNegativeFloat = 1.0
    temperature: PositiveFloat = 1.0
    top_k: TopK = 0
    top_p: TopP = 1.0


class DigitsMini(ClassToImage):
    """The bundled LlamaGen-architecture GPT over 4-level 8x8 digits (trained by train_digits.py)."""

    Config = DigitsMiniSettings
    num_classes = 10
    order: ClassVar[str] = "raster"

    def __init__(self, config=None, device: str = "cpu"):
        super().__init__(config, device)
        self._model: LlamaGenGPT | None = None

    def checkpoint_sha256(self) -> str | None:
        return sha256_file(digits_mini.FILES[self.order])

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "order": self.order, "tokens": "8x8, 4 grey levels"}

    def load(self) -> None:
        path = digits_mini.FILES[self.order]
        if not path.is_file():
            raise ArbenchError(f"{path} is missing; it ships with the project. Retrain it with "
                               "`python -m baselines.imagegen.train_digits`.")
        model = digits_mini.build(self.order)
        load_into(model, read_state_dict(path), f"{self.name} ({path.name})")
        self._model = model.to(self.device).eval()

    def sampler(self) -> SamplerConfig:
        c = self.config
        return SamplerConfig(c.cfg_scale, -1, c.temperature, c.top_k, c.top_p)

    @property
    def decode_steps(self) -> int:
        """Sequential network passes per image."""
        tokens = digits_mini.MINI_CONFIG.block_size
        return len(decode_schedule(tokens, digits_mini.MINI_PAR.regions)) if self.order == "par" else tokens

    def generate_tokens(self, labels: torch.Tensor, generators) -> torch.Tensor:
        if self._model is None:
            self.load()
        decode = generate_par if self.order == "par" else generate_raster
        return decode(self._model, labels, generators, self.sampler())

    @torch.no_grad()
    def generate(self, requests: Sequence[Request]) -> np.ndarray:
        self.check_labels(requests)
        labels, generators = labels_and_generators(requests, self.device)
        # the task decides the rendered size (digits-c2i: 32 px); the tokens are the same at any size
        size = int(requests[0].condition.get("image_size", digits_mini.IMAGE_SIZE)) if requests else 0
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # an 84k-parameter network: handing ops to more threads costs more than it saves
        try:
            tokens = self.generate_tokens(labels, generators)
        finally:
            torch.set_num_threads(threads)
        return digits_mini.tokens_to_images(tokens.cpu(), size)


@register_method("digits-ar-raster")
class DigitsRaster(DigitsMini):
    description = "offline mini LlamaGen-architecture GPT on 8x8 digits, raster order (64 steps)"
    family = "raster-ar"
    order = "raster"


@register_method("digits-ar-par")
class DigitsPAR(DigitsMini):
    description = "offline mini GPT on 8x8 digits trained in PAR order, 2x2 regions decoded in parallel (19 steps)"
    family = "region-parallel-ar"
    order = "par"
