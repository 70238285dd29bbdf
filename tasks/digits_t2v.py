"""`moving-digits-t2v-mini`: an offline text-to-video toy on moving digits ("a 3 moving left"). NOT VBench.

It runs `vbench-quality`'s protocol (`tasks.vbench.VBenchQuality`: requests `{prompt}-{index}`, 5 videos a prompt,
per-request seeds, lossless mp4 shards, and the same refusal of missing, extra, undecodable or mis-shaped videos
before anything is stored) on a bundled 50-prompt suite in VBench's record layout (`harness.datasets.digits_t2v`):
8 frames of 32x32 at 8 fps. What it scores, per dimension on its own prompts:

| dimension | prompts | rule | network |
|---|---|---|---|
| `temporal_flickering` | "a D standing still" | VBench's (`harness.metrics.vbench.temporal_flickering`) | none |
| `subject_consistency_digits` | "a D moving ..." | VBench's subject-consistency rule (`frame_consistency`) | bundled DigitsNet on the located digit, in place of DINO |
| `digit_class` | all | VBench's `object_class` aggregation (fraction of frames) | located digit + bundled DigitsNet, in place of GRiT |
| `motion_direction` | "a D moving ..." | project rule (`harness.metrics.digits_t2v.follows_direction`) | none (exact localiser) |

`digits_t2v_score` is their unweighted mean (a project summary, not VBench's quality score). Not scored: every other
VBench dimension needs downloaded networks (DINO, CLIP, LAION, MUSIQ, AMT) and dynamic degree and the static filter
need RAFT, which is a download and takes 128 px and up; so temporal flickering scores every still-prompt video (no
static filter).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from harness.datasets import digits_t2v as suite
from harness.features.digits_net import load_digits_net
from harness.metrics import digits_t2v as adherence
from harness.metrics import vbench as rules
from harness.api import Task
from harness.metrics.base import MetricValue
from harness.metrics.video import read_video
from harness.registry import register_task
from harness.settings import Seed
from harness.signature import Signature
from tasks.vbench import VIDEOS_PER_PROMPT, VBenchQuality, VBenchVideos

TASK_VERSION = "1"
#: The scored dimensions, in the order they are stored; the summary is their mean.
DIMENSIONS = ("digit_class", "motion_direction", "subject_consistency_digits", "temporal_flickering")
DESCRIPTIONS = {
    "digit_class": "NOT VBench: fraction of frames whose located 16x16 digit the bundled DigitsNet classifies as the "
                   "prompt's digit (VBench object_class's frame aggregation, DigitsNet in place of GRiT)",
    "motion_direction": f"NOT VBench: fraction of 'moving' videos whose located digit moves the prompt's way "
                        f"(least-squares slope >= {adherence.MIN_SPEED} px/frame, across <= "
                        f"{adherence.MAX_CROSS_SPEED})",
    "subject_consistency_digits": "NOT VBench: VBench's subject-consistency rule on the bundled DigitsNet's features "
                                  "of the located digit (in place of DINO ViT-B/16), 'moving' prompts",
    "temporal_flickering": "VBench's temporal-flickering rule on every 'standing still' video (no RAFT static filter)",
}


@dataclass
class DigitsT2VConfig:
    """The seed of the requests; the videos' shape is the suite's (8 frames of 32x32 at 8 fps, 5 a prompt)."""

    seed: Seed = 0
    num_frames: ClassVar[int] = suite.NUM_FRAMES
    height: ClassVar[int] = suite.SIZE
    width: ClassVar[int] = suite.SIZE
    fps: ClassVar[int] = suite.FPS
    flicker_samples: ClassVar[int] = VIDEOS_PER_PROMPT


@register_task("moving-digits-t2v-mini")
class MovingDigitsT2V(VBenchQuality):
    """VBench-style text-to-video protocol on a bundled moving-digits suite, scored offline (NOT VBench)."""

    version = TASK_VERSION
    description = ("offline text-to-video toy, NOT VBench: 50 moving-digit prompts ('a 3 moving left') x 5 videos, "
                   "VBench's flickering rule + bundled digit classifier + motion direction")
    primary_metric = "digits_t2v_score"
    Config = DigitsT2VConfig
    offline = True
    demo_methods = ("digits-t2v-mini",)

    def settings(self) -> dict:
        return {"seed": self.config.seed}

    def signature(self) -> Signature:
        from harness.features.digits_net import WEIGHTS_PATH
        from harness.provenance import sha256_file

        sig = Task.signature(self)  # not VBench's: none of its networks or its prompt file
        sig.add("suite", "digits-t2v-50:8f-32px-8fps").add("videos_per_prompt", VIDEOS_PER_PROMPT)
        sig.add("dimensions", ",".join(DIMENSIONS)).add("vbench_rules", f"{rules.VBENCH_REPO}-v"
                                                                         f"{rules.VBENCH_METRICS_VERSION}")
        sig.add("adherence_rules", f"digits-t2v-v{adherence.DIGITS_T2V_METRICS_VERSION}")
        return sig.add("digits_net_sha256", sha256_file(WEIGHTS_PATH))

    def suite(self) -> tuple[list[dict], set[str]]:
        records = suite.prompt_suite()
        return records, {r["prompt_en"] for r in records}

    def fix_hint(self, problem: str) -> str:
        return {"missing": f"Generate {VIDEOS_PER_PROMPT} videos per prompt of the suite "
                           f"(harness.datasets.digits_t2v.prompt_suite()), named '{{prompt}}-{{index}}.mp4'.",
                "unknown": f"Remove them: the suite has {VIDEOS_PER_PROMPT} videos per prompt, nothing else.",
                "shape": f"Generate {suite.NUM_FRAMES} frames of {suite.SIZE}x{suite.SIZE} at {suite.FPS} fps (ARBench "
                         f"never resizes or resamples)."}[problem]

    def weight_checks(self) -> list:
        return [load_digits_net]  # bundled; its absence is named like a missing download

    def score(self, samples: VBenchVideos, ctx) -> list[MetricValue]:
        net, sha = load_digits_net()
        ctx.extra_provenance["digits_net_sha256"] = sha
        means = {d: rules.VideoMeanScore(d) for d in ("digit_class", "motion_direction", "temporal_flickering")}
        consistency = rules.FrameConsistencyScore("subject_consistency_digits")
        per_video: dict[str, list[dict]] = {d: [] for d in DIMENSIONS}
        for record, files in ctx.progress(list(zip(samples.prompts, samples.files)), desc="digits-t2v"):
            info = record["auxiliary_info"]
            videos = [read_video(path) for path in files]
            located = [adherence.locate_sprite(frames, suite.SPRITE) for frames in videos]
            crops = np.stack([adherence.crop_sprites(v, c, suite.SPRITE) for v, c in zip(videos, located)])
            with torch.inference_mode():  # one batch per prompt: every frame's located digit
                all_features, all_logits = net(torch.from_numpy(crops.reshape(-1, *crops.shape[2:])))
            for k, (path, frames, corners) in enumerate(zip(files, videos, located)):
                features, logits = (x.reshape(len(files), -1, x.shape[-1])[k] for x in (all_features, all_logits))
                for d in record["dimension"]:
                    if d == "digit_class":
                        value = float((logits.argmax(dim=1) == info["digit"]).double().mean())
                    elif d == "motion_direction":
                        value = float(adherence.follows_direction(corners, suite.DIRECTIONS[info["motion"]]))
                    elif d == "subject_consistency_digits":
                        consistency.update([features])
                        total, count = rules.frame_consistency(features)
                        value = total / count
                    else:
                        value = rules.temporal_flickering(frames)
                    if d in means:
                        means[d].update([value])
                    per_video[d].append({"video_path": str(path), "video_results": value,
                                         "located_corners": corners.tolist()})
        raw = {d: float((consistency if d == "subject_consistency_digits" else means[d]).compute())
               for d in DIMENSIONS}
        with open(ctx.artifact("digits_t2v_results.json"), "w", encoding="utf-8") as out:
            json.dump({d: [raw[d], per_video[d]] for d in DIMENSIONS}, out, indent=1)
        summary = MetricValue("digits_t2v_score", float(np.mean([raw[d] for d in DIMENSIONS])), True, "fraction",
                              adherence.DIGITS_T2V_METRICS_VERSION, description="NOT VBench: unweighted mean of " + ", ".join(DIMENSIONS))
        return [summary] + [MetricValue(d, raw[d], True, "fraction", adherence.DIGITS_T2V_METRICS_VERSION, description=DESCRIPTIONS[d])
                            for d in DIMENSIONS]
