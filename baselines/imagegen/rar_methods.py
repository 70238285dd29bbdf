"""The registered RAR generators `rar-b`, `rar-l`, `rar-xl`, `rar-xxl` (class-to-image, 256 px).

Defaults are the README_RAR.md evaluation commands (guidance 16.0 / 15.5 / 6.9 / 8.0, power 2.75 / 2.5 /
1.5 / 1.2, temperature 1.0 / 1.02 / 1.02 / 1.02); every sampler setting goes into the signature, the
checkpoint pair (generator + MaskGIT-VQ tokenizer) is identified by its sha256. Each request's image
is drawn from its own generator seeded with `Request.seed`, so it does not depend on its batch or rank.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from baselines.imagegen.checkpoints import load_into, read_state_dict
from baselines.imagegen.maskgit_vq import ENCODER_PREFIXES, MaskGITVQDecoder, to_uint8
from baselines.imagegen.methods import ReleasedClassToImage
from baselines.imagegen.rar import RAR, RAR_CONFIGS, RARSampler, generate_rar
from harness.registry import register_method
from harness.settings import Annotated, Field, PositiveFloat
from harness.weights import WeightSpec, register_weights

RAR_LICENSE = "Apache-2.0 code (bytedance/1d-tokenizer); weights for research purposes only (README_RAR.md)"
# The publishers list no checksums; sha256=None makes the digest of the file used go into the signature.
MASKGIT_VQ = register_weights(WeightSpec(
    "maskgit-vqgan-imagenet-f16-256", "maskgit-vqgan-imagenet-f16-256.bin",
    "https://huggingface.co/fun-research/TiTok/resolve/main/maskgit-vqgan-imagenet-f16-256.bin", None,
    "Apache-2.0 code; weights for research purposes only (fun-research/TiTok, MaskGIT VQGAN)",
    "MaskGIT VQGAN tokenizer, downsample 16, codebook 1024 x 256 (RAR's tokenizer)"))


@dataclass
class RARSettings:
    """RAR's sampler (`rar.yaml` / README_RAR.md); upstream has no top-k or top-p for RAR."""

    guidance_scale: Annotated[float, Field(ge=0, description="0 = no guidance")] = 16.0
    guidance_scale_pow: Annotated[float, Field(ge=0, description="0 = constant")] = 2.75
    randomize_temperature: PositiveFloat = 1.0  # RAR divides the guided logits by it (a plain softmax temperature)
    rar_weights: str = ""
    tokenizer_weights: str = ""


class RARMethod(ReleasedClassToImage):
    """A released RAR checkpoint decoded in raster order (256 steps) with the MaskGIT-VQ tokenizer."""

    family = "raster-ar"
    Config = RARSettings
    size: ClassVar[str] = "RAR-B"
    rar_spec: ClassVar[WeightSpec]

    def weight_files(self):
        return self.locate_all((self.rar_spec, self.config.rar_weights), (MASKGIT_VQ, self.config.tokenizer_weights))

    def load(self) -> None:
        (rar_path, _), (vq_path, _) = self.weight_files()
        model = RAR(RAR_CONFIGS[self.size])
        load_into(model, read_state_dict(rar_path), f"{self.name} ({rar_path.name})")
        vq = MaskGITVQDecoder()
        load_into(vq, read_state_dict(vq_path), f"{self.name} tokenizer ({vq_path.name})", ENCODER_PREFIXES)
        self._model, self._vq = model.to(self.device).eval(), vq.to(self.device).eval()

    def sampler(self) -> RARSampler:
        c = self.config
        return RARSampler(c.guidance_scale, c.guidance_scale_pow, c.randomize_temperature)

    def images(self, labels, generators):
        return to_uint8(self._vq(generate_rar(self._model, labels, generators, self.sampler())))


def _rar(size: str, filename: str, guidance: float, power: float, temperature: float, params: str) -> type:
    name = size.lower()
    spec = register_weights(WeightSpec(name, filename, f"https://huggingface.co/yucornetto/RAR/resolve/main/{filename}",
                                       None, RAR_LICENSE, f"{size} ({params}) class-conditional ImageNet 256"))
    settings = dataclasses.make_dataclass(f"{size.replace('-', '')}Settings", [
        ("guidance_scale", float, dataclasses.field(default=guidance)),
        ("guidance_scale_pow", float, dataclasses.field(default=power)),
        ("randomize_temperature", float, dataclasses.field(default=temperature))],
        bases=(RARSettings,), namespace={"__module__": __name__})
    cls = type(size.replace("-", ""), (RARMethod,), {
        "description": f"{size} ({params}), raster AR with KV cache, 256 steps, power-cosine guidance "
                       f"{guidance} (pow {power}), temperature {temperature} (README setting); weights {filename} "
                       "+ maskgit-vqgan-imagenet-f16-256.bin",
        "size": size, "rar_spec": spec, "Config": settings, "__module__": __name__})
    return register_method(name)(cls)


RAR_METHODS = [
    _rar("RAR-B", "rar_b.bin", 16.0, 2.75, 1.0, "261M"),
    _rar("RAR-L", "rar_l.bin", 15.5, 2.5, 1.02, "461M"),
    _rar("RAR-XL", "rar_xl.bin", 6.9, 1.5, 1.02, "955M"),
    _rar("RAR-XXL", "rar_xxl.bin", 8.0, 1.2, 1.02, "1.5B"),
]
