"""The registered ControlAR text-to-image generators with spatial control (hustvl/ControlAR, ICLR 2025), driven by
the controllable text-to-image task (`controlar-multigen`).

Pipeline as upstream's `autoregressive/test/test_t2i.py` and `sample/sample_t2i.py` (hustvl/ControlAR@87e32e9):
the prompt is encoded by FLAN-T5-XL and laid out as for LlamaGen T2I (`baselines.imagegen.llamagen_t2i_methods`,
reused); the control image (an RGB or greyscale PNG of the control map, 512 x 512: canny edges 0/255, a HED
map, a depth map, a segmentation colour map) is scaled to [-1, 1] as upstream's `2 * (x / 255 - 0.5)` and
encoded by the DINOv2 control encoder; image tokens are sampled by `baselines.imagegen.controlar` and decoded by
the t2i VQ tokenizer. Defaults are upstream's evaluation arguments (`test_t2i.py`): cfg 4, top-k 2000, top-p 1.0,
temperature 1.0, guidance on every token, control strength 1.0, bf16 for T5, the GPT and the control encoder.

Each request's tokens are drawn from its own generator seeded by `Request.seed` (upstream draws a batch from one
global generator seeded per rank), so an image does not depend on its batch.

Request condition: {"prompt": str, "control": path of the control PNG, "control_type": str}.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
import torch
from PIL import Image

from baselines.imagegen.controlar import UNUSED_PREFIXES, ControlAR, dinov2_config, generate_controlar
from baselines.imagegen.llamagen_t2i_methods import LlamaGenT2IMethod
from baselines.imagegen.sampling import request_generators
from harness.api import Request
from harness.errors import InputError
from harness.protocols.controllable_text_to_image import MODALITY, ControlConditioned
from harness.registry import register_method
from harness.settings import Annotated, Field, Literal, NonNegativeFloat, PositiveFloat, TopK, TopP
from harness.weights import WeightSpec, register_weights

HF_CONTROLAR = "https://huggingface.co/wondervictor/ControlAR/resolve/main/"
CONTROLAR_LICENSE = ("Apache-2.0 (hustvl/ControlAR code and the wondervictor/ControlAR model card); fine-tuned from "
                     "LlamaGen t2i XL (MIT; LAION-COCO and internal data) on MultiGen-20M / COCOStuff")


def _spec(name: str, filename: str, what: str) -> WeightSpec:
    # The model card lists no checksums: sha256=None makes `locate` record the digest of the file used, and the
    # run signature carries it (checkpoint_sha256).
    return register_weights(WeightSpec(name, f"controlar/{filename}", HF_CONTROLAR + filename, None,
                                       CONTROLAR_LICENSE, f"ControlAR LlamaGen-XL t2i 512 px, {what}"))


CANNY_MR = _spec("controlar-canny-mr", "canny_MR.safetensors", "canny-edge control, DINOv2-small encoder")
DEPTH_MR = _spec("controlar-depth-mr", "depth_MR.safetensors", "depth control, DINOv2-small encoder")
HED = _spec("controlar-hed", "hed.safetensors", "HED-edge control, DINOv2-small encoder")
SEG_COCOSTUFF = _spec("controlar-seg-cocostuff", "seg_cocostuff.safetensors",
                      "COCOStuff segmentation-map control, DINOv2-small encoder")
DEPTH_BASE = _spec("controlar-depth-base", "depth_base.safetensors", "depth control, DINOv2-base encoder")


@dataclass
class ControlARSettings:
    """Upstream `test_t2i.py` defaults (the evaluation script; `sample_t2i.py` has the same)."""

    cfg_scale: NonNegativeFloat = 4.0
    cfg_interval: Annotated[int, Field(ge=-1)] = -1
    temperature: PositiveFloat = 1.0
    top_k: TopK = 2000
    top_p: TopP = 1.0
    control_strength: Annotated[float, Field(ge=0.0, le=10.0)] = 1.0  # upstream --control-strength (1.0)
    precision: Literal["bf16", "fp32"] = "bf16"
    gpt_weights: str = ""
    vq_weights: str = ""
    t5_dir: str = ""


class ControlARMethod(LlamaGenT2IMethod, ControlConditioned):
    """A released ControlAR checkpoint (the whole GPT with its control encoder) + FLAN-T5-XL + the t2i VQ."""

    Config = ControlARSettings
    modality = MODALITY
    image_size: ClassVar[int] = 512
    control_type: ClassVar[str] = "canny"
    adapter_size: ClassVar[str] = "small"
    unused_prefixes = UNUSED_PREFIXES

    def adapter_config(self):
        return dinov2_config(self.adapter_size)

    def build_network(self) -> ControlAR:
        return ControlAR(self.gpt_config(), self.adapter_config(), self.control_type, self.caption_dim)

    def check_controls(self, requests: Sequence[Request]) -> list[Path]:
        """The control files, after checking that each request asks for this method's control type."""
        wrong = [r.id for r in requests if r.condition.get("control_type") != self.control_type]
        if wrong:
            found = requests[[r.id for r in requests].index(wrong[0])].condition.get("control_type")
            raise InputError(f"{self.name} is conditioned on {self.control_type} maps; requests {wrong[:5]} carry "
                             f"{found!r} controls. Run the task with control_type={self.control_type} or pick the "
                             f"ControlAR method of that control type (`arbench methods`).")
        missing = [r.id for r in requests if not isinstance(r.condition.get("control"), str)]
        if missing:
            raise InputError(f"{self.name} needs a control image path in every request's condition ('control'); "
                             f"requests {missing[:5]} have none. Use the controlar-multigen task.")
        return [Path(r.condition["control"]) for r in requests]

    def control_batch(self, paths: Sequence[Path]) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1]: upstream's `2 * (x / 255 - 0.5)` of the control map (greyscale -> 3 channels)."""
        arrays = []
        for path in paths:
            with Image.open(path) as image:
                array = np.asarray(image.convert("RGB"))
            if array.shape[:2] != (self.image_size, self.image_size):
                raise InputError(f"{path} is {array.shape[1]}x{array.shape[0]}; {self.name} generates "
                                 f"{self.image_size}x{self.image_size} images and needs control maps of that size.")
            arrays.append(array)
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
        return (2 * (x / 255 - 0.5)).to(self.device, self.dtype)

    @torch.no_grad()
    def generate(self, requests: Sequence[Request]) -> np.ndarray:
        prompts = self.check_prompts(requests)
        paths = self.check_controls(requests)
        caption, emb_mask = self.encode_prompts(prompts)
        tokens = generate_controlar(self._model, caption, emb_mask, self.control_batch(paths),
                                    request_generators([r.seed for r in requests]), self.sampler(),
                                    self.config.control_strength)
        return self.decode_tokens(tokens)


def _controlar(name: str, spec: WeightSpec, control_type: str, adapter_size: str = "small") -> type:
    cls = type(name.title().replace("-", ""), (ControlARMethod,), {
        "description": f"ControlAR on LlamaGen-XL t2i, 512 px, {control_type} control (DINOv2-{adapter_size} encoder), "
                       f"CFG 4, top-k 2000 (upstream test_t2i.py defaults); weights {spec.filename}",
        "gpt_spec": spec, "control_type": control_type, "adapter_size": adapter_size,
        "weights_license": CONTROLAR_LICENSE, "__module__": __name__})
    return register_method(name)(cls)


CONTROLAR_METHODS = [
    _controlar("controlar-canny", CANNY_MR, "canny"),
    _controlar("controlar-depth", DEPTH_MR, "depth"),
    _controlar("controlar-hed", HED, "hed"),
    _controlar("controlar-seg-cocostuff", SEG_COCOSTUFF, "seg"),
    _controlar("controlar-depth-base", DEPTH_BASE, "depth", "base"),
]
