"""The registered NPP generators `npp-b`, `npp-l`, `npp-xl`, `npp-xxl` (class-to-image, ImageNet 256).

NPP checkpoints are LlamaGen GPTs (PKU-YuanGroup/Next-Patch-Prediction keeps LlamaGen's architecture and
sampler unchanged; see `baselines.imagegen.npp` for what NPP changes in training), decoded by LlamaGen's VQ
tokenizer `vq_ds16_c2i.pt`. Defaults are upstream's README table and sampling command: 256 px, 16x16 tokens,
constant CFG 2.0 / 1.75 / 1.70 / 1.65 for B / L / XL / XXL, top-k 0, top-p 1.0, temperature 1.0 (the
`sample_c2i_ddp.py` defaults the README's sample file name records).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import ClassVar

import torch

from baselines.imagegen.checkpoints import WRAPPER_KEYS, load_into
from baselines.imagegen.llamagen_gpt import LlamaGenGPT
from baselines.imagegen.methods import LLAMAGEN_VQ, LlamaGen, LlamaGenSettings
from baselines.imagegen.vq_decoder import ENCODER_PREFIXES, VQConfig, VQDecoder
from harness.errors import ArbenchError
from harness.registry import register_method
from harness.weights import WeightSpec, register_weights

HF_NPP = "https://huggingface.co/pytttttt/LlamaGen-NPP/resolve/main/"
# The repository has no LICENSE file (snapshot e333f2c) and the weights page could not be read offline: treat
# both as all rights reserved until the authors say otherwise. The architecture is LlamaGen's (MIT).
NPP_LICENSE = ("no licence stated (PKU-YuanGroup/Next-Patch-Prediction has no LICENSE file; HF pytttttt/LlamaGen-NPP "
               "unverified offline): research use only; LlamaGen architecture (MIT); trained on ImageNet")


def read_npp_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The GPT weights of an NPP/LlamaGen checkpoint, chosen as upstream's `sample_c2i_ddp.py` does: the
    "model" entry (then "module", "state_dict"), else the file itself.

    Read with weights_only=True. NPP's training script saves `{"model", "optimizer", "steps", "args"}` (+ "ema")
    with `args` an argparse.Namespace: that is the one extra type allowed (plain attribute storage, no code)."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means the same thing to the user
        raise ArbenchError(f"{path} could not be read as an NPP checkpoint ({type(exc).__name__}: {exc}). "
                           "Give the released c2i_*_256.pt or a state dict saved with torch.save.") from exc
    for key in WRAPPER_KEYS:
        if isinstance(saved, dict) and isinstance(saved.get(key), dict):
            saved = saved[key]
            break
    if not isinstance(saved, dict) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
        raise ArbenchError(f"{path} holds no name -> tensor state dict (looked inside {', '.join(WRAPPER_KEYS)}).")
    return saved


@dataclasses.dataclass
class NPPSettings(LlamaGenSettings):
    """LlamaGen's sampler settings; `cfg_scale` is replaced per size by the README's value."""


class NPPMethod(LlamaGen):
    """A released NPP checkpoint: LlamaGen GPT + VQ-16, raster decoding with constant CFG."""

    family = "raster-ar"
    Config = NPPSettings
    image_size: ClassVar[int] = 256
    vq_config: ClassVar[VQConfig] = VQConfig()

    def load(self) -> None:
        (gpt_path, _), (vq_path, _) = self.weight_files()
        model = LlamaGenGPT(self.gpt_config())
        load_into(model, read_npp_checkpoint(gpt_path), f"{self.name} ({gpt_path.name})")
        vq = VQDecoder(self.vq_config)
        load_into(vq, read_npp_checkpoint(vq_path), f"{self.name} tokenizer ({vq_path.name})", ENCODER_PREFIXES)
        self._model, self._vq = model.to(self.device).eval(), vq.to(self.device).eval()


def _npp(size: str, cfg: float, params: str, fid: float) -> type:
    filename = f"c2i_{size}_256.pt"
    name = f"npp-{size.lower()}"
    spec = register_weights(WeightSpec(
        name, f"npp_{filename}", HF_NPP + filename, None, NPP_LICENSE,
        f"LlamaGen-{size} + NPP ({params}) class-conditional ImageNet 256; upstream file {filename} "
        f"(same name as LlamaGen's, cached as npp_{filename})"))
    settings = dataclasses.make_dataclass(f"NPP{size}Settings", [
        ("cfg_scale", float, dataclasses.field(default=cfg))], bases=(NPPSettings,),
        namespace={"__module__": __name__})
    cls = type(f"NPP{size}", (NPPMethod,), {
        "description": f"LlamaGen-{size} + NPP ({params}, README FID {fid}), raster AR decoding, constant CFG {cfg}, "
                       f"top-k 0, top-p 1 (upstream README); weights {filename} + vq_ds16_c2i.pt",
        "gpt_model": f"GPT-{size}", "gpt_spec": spec, "Config": settings, "__module__": __name__})
    return register_method(name)(cls)


NPP_METHODS = [
    _npp("B", 2.0, "111M", 4.47),
    _npp("L", 1.75, "343M", 2.76),
    _npp("XL", 1.70, "775M", 2.65),
    _npp("XXL", 1.65, "1.4B", 2.55),
]
#: the tokenizer is LlamaGen's own file (the NPP README links FoundationVision/LlamaGen's vq_ds16_c2i.pt)
NPP_VQ = LLAMAGEN_VQ
