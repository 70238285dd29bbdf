"""The registered NOVA text-to-video generator `nova-d48w1024-osp480` (baaivision/NOVA, Apache-2.0 code and
models; README: NOVA-0.6B, 33x768x480, VBench 80.12), driven by the text-to-video protocol (`vbench-quality`).

Pipeline as upstream's `evaluations/vbench/sample.py` with `NOVAPipeline` (baaivision/NOVA@2cd254a):
- prompt states from the released Phi-2 text encoder and tokenizer (delegated to transformers, as the text-to-image
  methods in `baselines.imagegen.nova_methods`, whose loading path this class inherits);
- the NOVA transformer (`baselines.imagegen.nova.generate_video`, the project's code, golden-tested against
  upstream's pipeline): the text, motion-flow and fps tokens; 9 latent frames (`--max_latent_length 9`), each
  predicted by the video encoder from the previous one through its key/value cache, then generated set by set (128
  steps, `--num_pred_steps`) with 25 flow-matching steps per set (`--num_diff_steps`), guidance 7
  (`--guidance_scale`), motion flow 5 (`--flow`); fps token 12 (MotionEmbed's base_fps; the script passes none and
  writes the videos at 12 fps); float16 (the script's `precison="float16"`);
- decoding: the released VAE is upstream's `AutoencoderKLOpenSora` (upstream's NOVA/docs/training.md loads
  `nova-d48w1024-osp480/vae` with that class), Open-Sora-Plan's causal 3D VAE (4x temporal compression: 9 latents
  -> 33 frames, decoded jointly with temporal tiling): diffusers has no such class, so its decoder is the
  project's code (`baselines.video.osp_vae`, golden-tested against upstream), in batches of `vae_batch_size`
  videos, then uint8 as upstream (x * 127.5 + 127.5, clamped, truncated).

Per-request seeds: each request draws its patch order and noise from its own generator (upstream draws a batch
from one generator seeded 1337), so a video does not depend on its batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Sequence

import json
from pathlib import Path

import numpy as np
import torch

from baselines.imagegen.checkpoints import load_into, read_state_dict
from baselines.imagegen.nova import generate_video
from baselines.imagegen.nova_methods import MODEL_INDEX, NOVAMethod, nova_weight_specs
from baselines.imagegen.sampling import request_generators
from baselines.video.osp_vae import OpenSoraVAEDecoder, to_uint8
from harness.api import Request
from harness.errors import ArbenchError
from harness.protocols.text_to_video import MODALITY as VIDEO, TextToVideo
from harness.registry import register_method
from harness.settings import Annotated, Field, NonNegativeFloat, PositiveInt

#: Open-Sora-Plan's causal VAE: the first latent decodes to one frame, each later one to 4 (33 = 1 + 4 x 8).
TEMPORAL_STRIDE = 4


@dataclass
class NOVAVideoSettings:
    """Upstream's VBench sampling (evaluations/vbench/sample.py defaults)."""

    max_latent_length: Annotated[int, Field(ge=1, le=64)] = 9  # latent frames; 33 video frames
    num_pred_steps: PositiveInt = 128  # set steps per latent frame
    num_diffusion_steps: Annotated[int, Field(ge=1, le=1000)] = 25
    guidance_scale: NonNegativeFloat = 7.0  # <= 1 disables guidance
    motion_flow: NonNegativeFloat = 5.0  # the motion-flow token (`--flow`)
    vae_batch_size: PositiveInt = 1  # videos per VAE decode (`--vae_batch_size`)
    precision: Literal["fp16", "fp32"] = "fp16"
    model_dir: str = ""  # a folder with the snapshot; default $ARBENCH_HOME/weights/<method name>


class NOVAVideoMethod(NOVAMethod, TextToVideo):
    """A released NOVA text-to-video snapshot: temporal AR over latent frames, set-by-set spatial AR per frame."""

    modality = VIDEO
    Config = NOVAVideoSettings
    specs: ClassVar = ()
    expected: ClassVar[dict[str, Any]] = {}
    declared_size: ClassVar[tuple[int, int]] = (480, 768)  # (height, width) pixels
    #: upstream's training guide loads the released vae/ with AutoencoderKLOpenSora (the listing is not seen here)
    model_index: ClassVar[dict[str, list[str]]] = {**MODEL_INDEX, "vae": ["__vae__", "AutoencoderKLOpenSora"]}

    def num_frames(self) -> int:
        """Frames the VAE makes of max_latent_length latents; refuses a length its temporal tiling (windows of 5
        latents overlapping by 1) would not cover (upstream would drop the last latents silently)."""
        t, window = self.config.max_latent_length, OpenSoraVAEDecoder.LATENT_MIN_T
        if t > window and (t - 1) % (window - 1):
            raise ArbenchError(f"{self.name}: max_latent_length={t} is not decoded whole by the VAE's temporal tiling "
                               f"(windows of {window} latents overlapping by 1); use at most {window} or 1 + a "
                               f"multiple of {window - 1} (9 gives 33 frames).")
        return 1 + TEMPORAL_STRIDE * (t - 1)

    def check_requests(self, requests: Sequence[Request]) -> list[str]:
        """Prompts, after checking that every request asks for the video this configuration makes."""
        prompts = self.check_prompts(requests)
        want = {"num_frames": self.num_frames(), "height": self.declared_size[0], "width": self.declared_size[1],
                "fps": 12}
        bad = [(r.id, k, r.condition.get(k), v) for r in requests for k, v in want.items()
               if k in r.condition and r.condition[k] != v]
        if bad:
            first = "; ".join(f"request {i}: {k}={got} (makes {v})" for i, k, got, v in bad[:3])
            raise ArbenchError(f"{self.name} makes {want['num_frames']} frames of {want['height']}x{want['width']} at "
                               f"12 fps (max_latent_length={self.config.max_latent_length}); {len(bad)} request "
                               f"fields differ: {first}. Run the task with those settings or change "
                               "max_latent_length (frames = 1 + 4 x (latents - 1)).")
        return prompts

    def load_vae(self, folder: Path) -> OpenSoraVAEDecoder:
        """The released causal 3D VAE's decoder (the project's code, `baselines.video.osp_vae`), safetensors only;
        the encoder's entries are not read."""
        config = json.loads((folder / "config.json").read_text())
        vae = OpenSoraVAEDecoder(config)
        path = self._path("vae/diffusion_pytorch_model.safetensors")
        state = {k: v for k, v in read_state_dict(path).items() if k.startswith(("decoder.", "post_quant_conv."))}
        load_into(vae, state, f"{self.name} (vae/{path.name})")
        return vae.to(self.device, self.dtype).eval()

    @torch.no_grad()
    def latents(self, requests: Sequence[Request]) -> torch.Tensor:
        """Latent videos (N, C, T, h, w) for the requests, each from its own seeded generator."""
        prompts = self.check_requests(requests)
        if not self._loaded:
            self.load()
        c = self.config
        return generate_video(self._model, self._scheduler, self.prompt_states(prompts),
                              request_generators([r.seed for r in requests]), c.max_latent_length,
                              c.num_pred_steps, c.num_diffusion_steps, c.guidance_scale, c.motion_flow)

    @torch.no_grad()
    def generate(self, requests: Sequence[Request]) -> np.ndarray:
        z = self.latents(requests).to(self.dtype)
        return np.concatenate([to_uint8(self._vae.decode(part)) for part in z.split(self.config.vae_batch_size)])


def _nova_video(name: str, params: str, size: tuple[int, int], vbench: float, expected: dict[str, Any]) -> type:
    cls = type(name.replace("-", "_").upper(), (NOVAVideoMethod,), {
        "description": f"NOVA-{params} text-to-video, 33 frames of {size[0]}x{size[1]} at 12 fps: temporal AR over 9 "
                       f"latent frames (video-encoder KV cache, motion flow 5), set-by-set AR per frame (128 steps, "
                       f"25 flow steps, CFG 7; upstream VBench script), Open-Sora-Plan causal VAE. README VBench "
                       f"{vbench} (likely VBench's total score, not the quality score).",
        "specs": nova_weight_specs(name, f"{params} text-to-video {size[0]}x{size[1]}"), "expected": expected,
        "declared_size": size, "__module__": __name__})
    return register_method(name)(cls)


NOVA_T2V_METHODS = [
    # configs/nova_d48w1024_osp480.yaml, pipeline.paths.module_config.transformer
    _nova_video("nova-d48w1024-osp480", "0.6B", (480, 768), 80.12,
                {"image_size": [480, 768], "image_stride": 8, "image_dim": 4, "text_token_dim": 2560,
                 "text_token_len": 256, "image_base_size": [30, 48], "video_base_size": [16, 15, 24],
                 "arch": ["vit_d16w1024", "vit_d32w1024", "mlp_d3w1280"]}),
]
