"""NOVA text-to-video extended to long videos, as a class-conditional generator for the UCF-101 long-video FVD
protocols (`ucf101-fvd2048-128f-128`, `ucf101-fvd2048-16f-stride8-128`): `nova-d48w1024-osp480-long`.

The extension is upstream's own (baaivision/NOVA@2cd254a): `NOVAPipeline(max_latent_length=T)` rolls the temporal
autoregression out for any T. Every latent frame is predicted by the video encoder from the previous one while
attending, through its key/value cache, to the text, motion-flow and fps tokens and to *every* earlier frame (no
sliding window); the time embedding is upstream's `VideoPosEmbed.get_time_embed(T)`, which spreads the T positions
over the model's temporal base (arange(T) * 16 / T for the released model). The paper lists video extrapolation
among NOVA's zero-shot abilities and this is upstream's only code path for it; the released model was trained on 9
latent frames (33 video frames). The rollout is
`baselines.imagegen.nova.generate_video` (the project's code, golden-tested against upstream's pipeline for a
13-latent rollout, more than three times the tiny model's temporal base) and the long latent sequence is decoded by
the Open-Sora-Plan causal VAE's temporal tiling (`baselines.video.osp_vae`: windows of 5 latents overlapping by 1).

ARBench's choices (no paper reports NOVA on UCF-101 FVD; this is not a paper protocol):
- class label -> prompt: `PROMPT_TEMPLATE` ("a video of a person {}.", after CLIP's UCF-101 zero-shot templates)
  filled with the class name of the official `classInd.txt` split at its capitals and lower-cased ("ApplyEyeMakeup"
  -> "a video of a person apply eye makeup.");
- length: the fewest latent frames the VAE's tiling decodes whole (1 + 4k) that cover the requested frames
  (128 frames or the 121-frame span of 16 x stride 8 -> 33 latents, 129 frames), then the first frames as asked;
- frame rate: NOVA's own 12 fps (its fps token, upstream's default) with no temporal resampling, while the real
  UCF-101 clips are 25 fps, so generated motion is played about twice as fast as real motion;
- size: each 480 x 768 frame resized short side first (bilinear, antialiased) and centre-cropped to the protocol
  resolution, exactly as the task prepares the real clips (`harness.metrics.video.resize_short_side_center_crop`).
Per-request seeds as every NOVA method here: a video's patch order and noise come from its own generator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from baselines.video.nova_t2v import NOVA_T2V_METHODS, TEMPORAL_STRIDE, NOVAVideoMethod, NOVAVideoSettings
from baselines.video.osp_vae import OpenSoraVAEDecoder, to_uint8
from harness.api import Request
from harness.datasets.ucf101 import UCF101_CLASS_NAMES
from harness.errors import ArbenchError
from harness.metrics.video import resize_short_side_center_crop
from harness.registry import register_method
from harness.settings import Annotated, Field

PROMPT_TEMPLATE = "a video of a person {}."  # ARBench's choice, after CLIP's UCF-101 zero-shot prompt templates


def class_prompt(label: int, template: str = PROMPT_TEMPLATE) -> str:
    """The prompt of UCF-101 class `label` (0-based, classInd order).

    >>> class_prompt(0), class_prompt(100)
    ('a video of a person apply eye makeup.', 'a video of a person yo yo.')
    """
    return template.format(re.sub(r"(?<=[a-z])(?=[A-Z])", " ", UCF101_CLASS_NAMES[label]).lower())


def latents_for(num_frames: int) -> int:
    """The fewest latent frames (1 + 4k, what the VAE's tiling of 5 latents overlapping by 1 decodes whole) whose
    video has at least `num_frames` frames.

    >>> latents_for(128), latents_for(121), latents_for(33), latents_for(34), latents_for(9)
    (33, 33, 9, 13, 3)
    """
    needed = 1 + -(-(num_frames - 1) // TEMPORAL_STRIDE)  # 1 + 4 (T - 1) >= num_frames
    step = OpenSoraVAEDecoder.LATENT_MIN_T - OpenSoraVAEDecoder.LATENT_OVERLAP_T
    return needed if needed <= OpenSoraVAEDecoder.LATENT_MIN_T else 1 + step * -(-(needed - 1) // step)


@dataclass
class NOVALongSettings(NOVAVideoSettings):
    """The VBench script's sampling, rolled out to 33 latent frames (129 video frames); the class prompt template."""

    max_latent_length: Annotated[int, Field(ge=1, le=64)] = 33  # latent frames; 1 + 4 x 32 = 129 video frames
    prompt_template: str = PROMPT_TEMPLATE  # "{}" is replaced by the lower-cased, space-split class name


class NOVALongVideoMethod(NOVAVideoMethod):
    """A released NOVA text-to-video snapshot rolled out past its trained length, driven by class labels."""

    modality = "class-to-video"
    Config = NOVALongSettings

    def class_prompts(self, requests: Sequence[Request]) -> list[Request]:
        """Text-to-video requests (same ids and seeds) for class-to-video ones, after checking what they ask for."""
        template = self.config.prompt_template
        if template.count("{}") != 1:
            raise ArbenchError(f"{self.name}: prompt_template {template!r} needs exactly one '{{}}' for the class "
                               "name (default 'a video of a person {}.').")
        bad = [r.id for r in requests if not isinstance(r.condition.get("label"), (int, np.integer))
               or not 0 <= int(r.condition["label"]) < len(UCF101_CLASS_NAMES)]
        if bad:
            raise ArbenchError(f"{self.name} needs a UCF-101 class label (0-100) in every request; requests "
                               f"{bad[:5]} have none or another. Use a UCF-101 FVD task.")
        makes, height = self.num_frames(), self.declared_size[0]
        long = [(r.id, r.condition.get("num_frames")) for r in requests if r.condition.get("num_frames", 0) > makes]
        big = [(r.id, r.condition.get("resolution")) for r in requests if r.condition.get("resolution", 0) > height]
        if long or big:
            what = f"{long[0][0]} asks for {long[0][1]} frames" if long else f"{big[0][0]} asks for {big[0][1]} px"
            raise ArbenchError(f"{self.name} makes {makes} frames of {height} px or less (max_latent_length="
                               f"{self.config.max_latent_length}); {len(long) + len(big)} requests ask for more, "
                               f"e.g. {what}. Set max_latent_length to {latents_for(max([makes] + [n for _, n in long]))}"
                               " (frames = 1 + 4 x (latents - 1)).")
        return [Request(r.index, r.id, r.seed, {"prompt": class_prompt(int(r.condition["label"]), template)})
                for r in requests]

    def latents(self, requests: Sequence[Request]) -> torch.Tensor:
        return super().latents(self.class_prompts(requests))

    @torch.no_grad()
    def generate(self, requests: Sequence[Request]) -> np.ndarray:
        """uint8 (N, T, S, S, 3): each video's first T = num_frames frames, resized and centre-cropped to S px."""
        z = self.latents(requests).to(self.dtype)
        videos = np.concatenate([to_uint8(self._vae.decode(part)) for part in z.split(self.config.vae_batch_size)])
        frames = {r.condition.get("num_frames", videos.shape[1]) for r in requests}
        sizes = {r.condition.get("resolution", videos.shape[2]) for r in requests}
        if len(frames) != 1 or len(sizes) != 1:
            raise ArbenchError(f"{self.name}: one batch asks for several lengths {sorted(frames)} or sizes "
                               f"{sorted(sizes)}; the FVD tasks ask for one of each.")
        count, size = frames.pop(), sizes.pop()
        return np.stack([resize_short_side_center_crop(v[:count], size) for v in videos])


def _nova_long(base: type, name: str) -> type:
    cls = type(name.replace("-", "_").upper(), (NOVALongVideoMethod,), {
        "description": f"{base.name} rolled out to 33 latent frames (129 frames, upstream's longer rollout with the "
                       f"full temporal KV cache; trained on 9) for UCF-101 class labels: prompt 'a video of a person "
                       f"<class>.' (ARBench's), 12 fps, resized and centre-cropped to the protocol size",
        "specs": base.specs, "expected": base.expected, "declared_size": base.declared_size,
        "__module__": __name__})
    return register_method(name)(cls)


NOVA_LONG_METHODS = [_nova_long(NOVA_T2V_METHODS[0], "nova-d48w1024-osp480-long")]
