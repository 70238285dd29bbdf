"""The registered AiM generators `aim-b`, `aim-l`, `aim-xl` (class-to-image, ImageNet 256, Mamba-2).

Released as Hugging Face repositories hp-l33/aim-{base,large,xlarge}, written by upstream's
`PyTorchModelHubMixin.save_pretrained`: `config.json` and one `model.safetensors` holding both stages under
`mamba.*` (the generator; the tied `lm_head.weight` is dropped by safetensors and restored from the token
table) and `vqvae.*` (AiM's VQ-f16 tokenizer: LlamaGen's VQ architecture, 16384 x 8 codes, downsample 16; its
encoder entries are not used). A `.bin`/`.pt` state dict with the same names is read with `weights_only=True`.

Defaults are the README's inference call `model.generate(batch, temperature=1, top_p=0.98, top_k=600,
cfg_scale=5)`; AiM publishes no FID script or evaluation settings (AiM issue #12), so these are the settings
the reported rows are attributed to. Upstream's `sample` accepts `temperature` and ignores it; here the logits
are divided by it, so only temperature 1 reproduces upstream. Images are mapped to uint8 as LlamaGen's sample
script does (clamp(127.5 x + 128)), AiM's decoder output being in [-1, 1] (its training images are normalised
with mean = std = 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from baselines.imagegen.aim import AIM_CONFIGS, AiM, AiMConfig, generate_aim
from baselines.imagegen.checkpoints import load_into, read_state_dict
from baselines.imagegen.mamba2 import ScanPath, resolve_scan
from baselines.imagegen.methods import ReleasedClassToImage
from baselines.imagegen.sampling import SamplerConfig
from baselines.imagegen.vq_decoder import ENCODER_PREFIXES, VQConfig, VQDecoder, to_uint8
from harness.registry import register_method
from harness.settings import NonNegativeFloat, Temperature, TopK, TopP
from harness.weights import WeightSpec, register_weights

HF_AIM = "https://huggingface.co/hp-l33/{repo}/resolve/main/model.safetensors"
AIM_LICENSE = "MIT (hp-l33/AiM LICENSE; the HF mixin tags the weights license=mit); trained on ImageNet"
TIED = ("mamba.backbone.embeddings.word_embeddings.weight", "mamba.lm_head.weight")


class AiMFile(torch.nn.Module):
    """Both stages under upstream's attribute names (`AiM.mamba`, `AiM.vqvae`), for one strict name check."""

    def __init__(self, config: AiMConfig, vq_config: VQConfig):
        super().__init__()
        self.mamba = AiM(config)
        self.vqvae = VQDecoder(vq_config)


def read_aim_checkpoint(path) -> dict[str, torch.Tensor]:
    """The state dict of a released AiM file, the tied output head filled in from the token table (or back)."""
    state = dict(read_state_dict(path, what="an AiM checkpoint"))
    for have, missing in (TIED, TIED[::-1]):
        if have in state and missing not in state:
            state[missing] = state[have]
    return state


@dataclass
class AiMSettings:
    """The README's `generate` call; `scan` picks the selective-scan path (the signature records the one used)."""

    cfg_scale: NonNegativeFloat = 5.0
    temperature: Temperature = 1.0
    top_k: TopK = 600
    top_p: TopP = 0.98
    scan: ScanPath = "auto"
    weights: str = ""


class AiMMethod(ReleasedClassToImage):
    """A released AiM checkpoint: raster-order Mamba-2 decoding with CFG, AiM's VQ-f16 decoder."""

    family = "raster-ar"
    Config = AiMSettings
    arch: ClassVar[str] = "AiM-B"
    spec: ClassVar[WeightSpec]
    vq_config: ClassVar[VQConfig] = VQConfig()

    def model_config(self) -> AiMConfig:
        return AIM_CONFIGS[self.arch]

    def scan_path(self) -> str:
        """"plain" or "fused": what this run uses on its device (`baselines.imagegen.mamba2.resolve_scan`)."""
        return resolve_scan(self.config.scan, self.device)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "scan": self.scan_path()}

    def sampler(self) -> SamplerConfig:
        c = self.config
        return SamplerConfig(c.cfg_scale, -1, c.temperature, c.top_k, c.top_p)

    def weight_files(self):
        return self.locate_all((self.spec, self.config.weights))

    def load(self) -> None:
        self.scan_path()  # refuse scan=fused where it cannot run, before reading anything
        ((path, _),) = self.weight_files()
        model = AiMFile(self.model_config(), self.vq_config)
        ignore = tuple("vqvae." + prefix for prefix in ENCODER_PREFIXES)
        load_into(model, read_aim_checkpoint(path), f"{self.name} ({path.name})", ignore)
        self._model, self._vq = model.mamba.to(self.device).eval(), model.vqvae.to(self.device).eval()

    def images(self, labels, generators):
        tokens = generate_aim(self._model, labels, generators, self.sampler(), self.scan_path())
        side = self._model.config.grid_size
        return to_uint8(self._vq(tokens.view(-1, side, side)))


def _aim(size: str, repo: str, params: str, fid: float) -> type:
    name = f"aim-{size.lower()}"
    spec = register_weights(WeightSpec(
        name, f"{repo}.safetensors", HF_AIM.format(repo=repo), None, AIM_LICENSE,
        f"AiM-{size} ({params}) + its VQ-f16 tokenizer, one file (HF hp-l33/{repo}, model.safetensors as "
        "PyTorchModelHubMixin writes it; the file list is unverified offline)"))
    cls = type(f"AiM{size}", (AiMMethod,), {
        "description": f"AiM-{size} ({params}, README FID {fid}): Mamba-2 raster AR over VQ-f16 tokens, CFG 5, "
                       f"top-k 600, top-p 0.98 (README's generate call); weights hp-l33/{repo}",
        "arch": f"AiM-{size}", "spec": spec, "__module__": __name__})
    return register_method(name)(cls)


AIM_METHODS = [
    _aim("B", "aim-base", "148M", 3.52),
    _aim("L", "aim-large", "350M", 2.83),
    _aim("XL", "aim-xlarge", "763M", 2.56),
]
