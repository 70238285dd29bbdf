"""VBench (Huang et al., CVPR 2024) on VBench's standard prompt suite: `vbench-quality` (the quality dimensions) and
`vbench-semantic` (the semantic dimensions implemented: appearance style, temporal style, overall consistency).

Protocol (Vchitect/VBench@45e79ec; docs/video.md, "VBench"):

- **Prompts**: the 326 prompts of `vbench/VBench_full_info.json` tagged with a quality dimension, in file order;
  each dimension scores only its own prompts (subject consistency, motion smoothness and dynamic degree 72, background
  consistency 86, aesthetic and imaging quality 93, temporal flickering 75).
- **Samples**: 5 videos per prompt (`prompts/README.md`), named `{prompt}-{index}.mp4`; a temporal-flickering prompt
  gets 25 (`flicker_samples`), of which VBench's static filter (`static_filter.py`, RAFT) keeps the first 5 static
  ones in file-name order, as `check_and_move` + `build_full_info_json` do.
- **Videos**: every video has exactly the declared `num_frames`, `height`, `width` and `fps` (VBench does not fix
  them; every dimension reads every frame, and dynamic degree's sampling and thresholds depend on them, so they
  are part of the signature). A folder for `arbench score` is VBench's own layout: one folder of
  `{prompt}-{index}.mp4` files (other VBench prompts' videos may be there and are ignored).
- **Scored here**: all seven quality dimensions: subject consistency (DINO ViT-B/16), background consistency
  (CLIP ViT-B/32), temporal flickering (after the static filter), motion smoothness (AMT-S), dynamic degree
  (RAFT), aesthetic quality (LAION head on CLIP ViT-L/14), imaging quality (MUSIQ, SPAQ), with VBench's rules
  (`harness.metrics.vbench`, `harness.features.vbench_nets`, `harness.features.amt`, `harness.features.raft`,
  `harness.features.musiq`), and VBench's quality score (`quality_score`) over them.
- **Semantic** (`vbench-semantic`): appearance style (CLIP ViT-B/32 per frame against the prompt's style text) and
  temporal style / overall consistency (ViCLIP-L/14, `harness.features.viclip`, against the prompt), each on its own
  prompts, 5 videos a prompt; each stored as its own metric, since VBench's semantic score needs all nine semantic
  dimensions and its total score both (docs/video.md, "Semantic dimensions").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.api import Method, Request, SubmissionSpec, Task
from harness.errors import ArbenchError, InputError
from harness.features import amt, clip_color, musiq, raft, vbench_nets, viclip
from harness.metrics import vbench as rules
from harness.metrics.base import MetricValue
from harness.metrics.video import read_video, write_video
from harness.protocols.text_to_video import MODALITY
from harness.registry import register_task
from harness.settings import Annotated, Field, Seed
from harness.signature import Signature
from harness.weights import WeightSpec, register_weights, require_all

VBENCH_COMMIT = "45e79ec14e69a2187202c675d2dbce1a71843d53"
FULL_INFO = register_weights(WeightSpec(
    name="vbench-full-info",
    filename="VBench_full_info.json",
    url=f"https://raw.githubusercontent.com/Vchitect/VBench/{VBENCH_COMMIT}/vbench/VBench_full_info.json",
    sha256="5dd2de80ee43cda750b2b72ea7023657c0b90d3702041c7e4608c65dbe50dccd",
    license="Apache-2.0 (Vchitect/VBench)",
    description="VBench's standard prompt suite: 946 prompts with the dimensions each one serves",
))
#: Videos per prompt (`prompts/README.md`) and the static videos temporal flickering keeps per prompt.
VIDEOS_PER_PROMPT = 5
#: The quality dimensions this task scores, in VBench's order.
SCORED = ("subject_consistency", "background_consistency", "temporal_flickering", "motion_smoothness",
          "aesthetic_quality", "imaging_quality", "dynamic_degree")
SAMPLE_NAME = re.compile(r"^(?P<prompt>.+)-(?P<index>\d+)\.mp4$")
TASK_VERSION = "2"  # 2: motion smoothness (AMT-S), so the full quality score


def load_full_info(path: str | Path | None = None) -> list[dict]:
    """VBench_full_info.json (hash-checked), as a list of {"prompt_en", "dimension", ...} records."""
    return json.loads(FULL_INFO.resolve(path).read_text(encoding="utf-8"))


def quality_prompts(full_info: Sequence[dict]) -> list[dict]:
    """The records serving at least one quality dimension, in file order (326 in VBench's suite).

    >>> [r["prompt_en"] for r in quality_prompts([{"prompt_en": "a", "dimension": ["color"]},
    ...                                           {"prompt_en": "b", "dimension": ["dynamic_degree"]}])]
    ['b']
    """
    return [r for r in full_info if set(r["dimension"]) & set(rules.QUALITY_DIMENSIONS)]


def samples_for(record: dict, flicker_samples: int) -> int:
    """How many videos a prompt gets: `flicker_samples` for a temporal-flickering prompt, else 5."""
    return flicker_samples if "temporal_flickering" in record["dimension"] else VIDEOS_PER_PROMPT


@dataclass(frozen=True)
class VBenchVideos:
    """Validated videos: per quality prompt (in suite order), its record and its files in index order."""

    prompts: list[dict]
    files: list[list[Path]]


@dataclass
class VBenchQualityConfig:
    """The videos' shape and rate (defaults: NOVA's 33 x 480 x 768 at 12 fps), samples per flickering prompt,
    the seed of the requests, and explicit weight paths (paths change no number, so they are not settings)."""

    num_frames: Annotated[int, Field(ge=3, le=1024)] = 33  # motion smoothness interpolates frames 0 and 2
    height: Annotated[int, Field(ge=128, le=4096)] = 480  # torchvision's RAFT takes 128 px and up
    width: Annotated[int, Field(ge=128, le=4096)] = 768
    fps: Annotated[int, Field(ge=1, le=240)] = 12
    flicker_samples: Annotated[int, Field(ge=VIDEOS_PER_PROMPT, le=100)] = 25
    seed: Seed = 0
    full_info: str = ""
    dino_weights: str = ""
    clip_b32_weights: str = ""
    clip_l14_weights: str = ""
    aesthetic_weights: str = ""
    raft_weights: str = ""
    musiq_weights: str = ""
    amt_weights: str = ""


@register_task("vbench-quality")
class VBenchQuality(Task):
    version = TASK_VERSION
    modality = MODALITY
    submission = SubmissionSpec(MODALITY, "generate(requests) -> uint8 array (N, T, H, W, 3), one video per request "
                                          "(condition: prompt, prompt_index, sample_index, num_frames, height, width, "
                                          "fps)")
    description = "VBench's 7 quality dimensions and quality score on its standard prompt suite (needs weights)"
    primary_metric = "quality_score"
    Config = VBenchQualityConfig

    def settings(self) -> dict:
        c = self.config
        return {"num_frames": c.num_frames, "height": c.height, "width": c.width, "fps": c.fps,
                "flicker_samples": c.flicker_samples, "seed": c.seed}

    def signature(self) -> Signature:
        sig = super().signature()
        sig.add("prompts_sha256", FULL_INFO.sha256).add("rules", f"{rules.VBENCH_REPO}-v{rules.VBENCH_METRICS_VERSION}")
        sig.add("dimensions", ",".join(SCORED)).add("videos_per_prompt", VIDEOS_PER_PROMPT)
        sig.add("dino", f"dino-vitb16:{vbench_nets.DINO_PREPROCESS}")
        sig.add("clip_b32", f"{vbench_nets.CLIP_VIT_B32_OPENAI.sha256[:12]}:{vbench_nets.CLIP_PREPROCESS}:"
                            "fp16-on-cuda")
        sig.add("aesthetic", f"{clip_color.CLIP_VIT_L14_OPENAI.sha256[:12]}+"
                             f"{vbench_nets.LAION_AESTHETIC_VIT_L14.sha256[:12]}:{vbench_nets.CLIP_PREPROCESS}")
        sig.add("raft", f"torchvision-raft_large<-raft-things:{raft.ITERATIONS}iters:sintel-pad")
        sig.add("musiq", "musiq-spaq:longer512-float-bilinear-noantialias:scales224,384,original")
        sig.add("amt", "amt-s:even-frames:t0.5:replicate-pad16:vbench-vram-scale:trunc-uint8")
        return sig

    # -- assets --------------------------------------------------------------------------------
    def weight_checks(self) -> list:
        c = self.config
        return [lambda: FULL_INFO.resolve(c.full_info or None),
                lambda: vbench_nets.DINO_VITB16.locate(c.dino_weights or None),
                lambda: vbench_nets.CLIP_VIT_B32_OPENAI.resolve(c.clip_b32_weights or None),
                lambda: clip_color.CLIP_VIT_L14_OPENAI.resolve(c.clip_l14_weights or None),
                lambda: vbench_nets.LAION_AESTHETIC_VIT_L14.resolve(c.aesthetic_weights or None),
                lambda: raft.RAFT_THINGS.locate(c.raft_weights or None),
                lambda: musiq.MUSIQ_SPAQ.locate(c.musiq_weights or None),
                lambda: amt.AMT_S.locate(c.amt_weights or None)]

    def require_assets(self) -> list:
        """Resolve every file scoring needs; one MissingAssetError names all that are missing."""
        return require_all(self.weight_checks(), f"task {self.name}")

    def check_method(self, method: Method) -> None:
        super().check_method(method)
        require_all([method.checkpoint_sha256, self.require_assets], f"{self.name} with {method.name}")

    # -- the suite -----------------------------------------------------------------------------
    def samples(self, record: dict) -> int:
        """How many videos `record` gets."""
        return samples_for(record, self.config.flicker_samples)

    def count_hint(self) -> str:
        """How many videos each prompt needs, for messages."""
        return (f"{VIDEOS_PER_PROMPT} videos per prompt ({self.config.flicker_samples} per temporal-flickering "
                f"prompt; set flicker_samples=N if you generated another number, {VIDEOS_PER_PROMPT} at least)")

    # -- generation ----------------------------------------------------------------------------
    def requests(self) -> list[Request]:
        c = self.config
        requests: list[Request] = []
        for p, record in enumerate(self.suite()[0]):
            for s in range(self.samples(record)):
                index = len(requests)
                requests.append(Request(index, f"{record['prompt_en']}-{s}", c.seed * 1_000_003 + index,
                                        {"prompt": record["prompt_en"], "prompt_index": p, "sample_index": s,
                                         "num_frames": c.num_frames, "height": c.height, "width": c.width,
                                         "fps": c.fps}))
        return requests

    def write_shard(self, outputs: Any, requests: Sequence[Request], directory: Path) -> None:
        c = self.config
        videos = np.asarray(outputs)
        expected = (len(requests), c.num_frames, c.height, c.width, 3)
        if videos.dtype != np.uint8 or videos.shape != expected:
            raise ArbenchError(f"a text-to-video method must return uint8 {list(expected)} for task {self.name}; "
                               f"got {videos.dtype} {list(videos.shape)}")
        for video, request in zip(videos, requests):  # lossless H.264 RGB at the declared rate
            write_video(directory / f"{request.id}.mp4", video, fps=c.fps)

    def read_generated(self, shard_dirs: Sequence[Path], requests: Sequence[Request]) -> VBenchVideos:
        files = {p.name: p for d in shard_dirs for p in d.iterdir() if p.suffix == ".mp4"}
        return self.validate(files, f"the generated shards ({len(shard_dirs)} folders)")

    # -- reading and validating ----------------------------------------------------------------
    def suite(self) -> tuple[list[dict], set[str]]:
        """The scored prompt records in suite order, and every prompt of the suite file (a folder may hold videos of
        the others, which are ignored)."""
        full_info = load_full_info(self.config.full_info or None)
        return quality_prompts(full_info), {r["prompt_en"] for r in full_info}

    def fix_hint(self, problem: str) -> str:
        """How to fix a folder with `problem` "missing" (videos), "unknown" (files) or "shape" (of videos)."""
        return {"missing": f"Generate {self.count_hint()}, named '{{prompt}}-{{index}}.mp4'.",
                "unknown": f"Remove them (more samples than the suite's count of a prompt count too: "
                           f"{self.count_hint()}).",
                "shape": "Generate them so (ARBench never resizes or resamples), or declare the videos' own shape "
                         "with --set num_frames=... height=... width=... fps=..."}[problem]

    def load_samples(self, path: Path) -> VBenchVideos:
        """Validate a folder of `{prompt}-{index}.mp4` completely, then resolve the weights; nothing is scored."""
        path = Path(path)
        if not path.is_dir():
            raise InputError(f"{path} is not a folder: give VBench's video folder (one '{{prompt}}-{{index}}.mp4' "
                             f"file per sample, as VBench's standard mode reads)")
        videos = self.validate({p.name: p for p in path.iterdir()}, str(path))
        self.require_assets()
        return videos

    def validate(self, present: dict[str, Path], where: str) -> VBenchVideos:
        """Every sample of the suite present once, decodable, and of the declared length, size and rate; raises
        InputError naming the first offending files."""
        c = self.config
        prompts, all_prompts = self.suite()
        expected = {f"{r['prompt_en']}-{s}.mp4": (p, s) for p, r in enumerate(prompts)
                    for s in range(self.samples(r))}
        missing = [name for name in expected if name not in present]
        if missing:
            raise InputError(f"{where} lacks {len(missing)} of the {len(expected)} videos of the suite: "
                             f"{_first(missing)}. {self.fix_hint('missing')}")
        unknown = []
        for name in sorted(set(present) - set(expected)):
            match = SAMPLE_NAME.match(name)
            if not (match and match["prompt"] in all_prompts and match["prompt"] not in
                    {r["prompt_en"] for r in prompts}):  # other VBench prompts' videos are allowed and ignored
                unknown.append(name)
        if unknown:
            raise InputError(f"{where} has {len(unknown)} files that are not videos of the suite: {_first(unknown)}. "
                             f"{self.fix_hint('unknown')}")
        problems = []
        for name in expected:
            problem = self.check_video(present[name])
            if problem:
                problems.append(f"{name}: {problem}")
        if problems:
            raise InputError(f"{len(problems)} videos in {where} do not fit the declared {c.num_frames} frames of "
                             f"{c.height}x{c.width} at {c.fps} fps: {_first(problems, 3)}. {self.fix_hint('shape')}")
        files: list[list[Path]] = [[] for _ in prompts]
        for name, (p, _) in expected.items():
            files[p].append(present[name])
        return VBenchVideos(prompts, files)

    def check_video(self, path: Path) -> str:
        """'' when the file decodes to the declared shape and rate, else what is wrong."""
        import av

        c = self.config
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    return "no video stream"
                rate = container.streams.video[0].average_rate
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            return f"cannot be opened ({exc})"
        if rate is None or abs(Fraction(rate) - c.fps) > Fraction(1, 1000):
            return f"{float(rate) if rate else 'no'} fps"
        try:
            frames = read_video(path)
        except InputError as exc:
            return f"undecodable ({exc})"
        if frames.shape[1:] != (c.height, c.width, 3) or len(frames) != c.num_frames:
            return f"{len(frames)} frames of {frames.shape[1]}x{frames.shape[2]}"
        return ""

    # -- scoring -------------------------------------------------------------------------------
    def score(self, samples: VBenchVideos, ctx) -> list[MetricValue]:
        c, device = self.config, ctx.device
        weights = self.require_assets()
        ctx.extra_provenance["vbench_weights_sha256"] = {"dino-vitb16": weights[1][1], "raft-things": weights[5][1],
                                                         "musiq-spaq": weights[6][1], "amt-s": weights[7][1]}
        dino = vbench_nets.load_dino(str(weights[1][0]), device)
        clip_b = vbench_nets.load_clip(vbench_nets.CLIP_VIT_B32_OPENAI, c.clip_b32_weights or None, device)
        clip_l = vbench_nets.load_clip(clip_color.CLIP_VIT_L14_OPENAI, c.clip_l14_weights or None, device)
        head = vbench_nets.load_aesthetic_head(c.aesthetic_weights or None, device)
        flow_model = raft.load_raft(str(weights[5][0]), device)
        iqa = musiq.load_musiq(str(weights[6][0]), device)
        interpolator = amt.load_amt_s(str(weights[7][0]), device)
        # VBench shrinks the frames for AMT-S on a GPU whose memory it deems too small for their size (1 on a CPU)
        scale = amt.vram_scale(c.height, c.width, amt.device_memory(device))
        ctx.extra_provenance["vbench_amt_scale"] = scale
        if scale < 1:
            ctx.log(f"motion smoothness: VBench's rule shrinks {c.height}x{c.width} frames by {scale:.3f} for AMT-S "
                    f"on this GPU's memory, as VBench would here; on a larger GPU the number can differ")
        return score_videos(samples, ctx, fps=c.fps, dino=dino, clip_b=clip_b, clip_l=clip_l, head=head,
                            flow_model=flow_model, iqa=iqa, interpolator=interpolator, amt_scale=scale)


def _first(items: Sequence[str], n: int = 5) -> str:
    """The first `n` entries, quoted, and how many more there are."""
    return "; ".join(f"'{i}'" for i in items[:n]) + (f" (and {len(items) - n} more)" if len(items) > n else "")


def flow_scores(flow_model, frames: np.ndarray, pairs: Sequence[tuple[int, int]], fraction: float,
                device: str) -> list[float]:
    """`top_flow_magnitude` of RAFT's flow for each (i, j) frame pair."""
    return [raft.top_flow_magnitude(raft.raft_flow(flow_model, frames[i], frames[j], device), fraction)
            for i, j in pairs]


def dynamic_degree(flow_model, frames: np.ndarray, fps: float, device: str = "cpu") -> tuple[bool, list[float]]:
    """VBench's `DynamicDegree.infer` on decoded frames: every round(fps/8)-th frame, top-5% flow per pair."""
    kept = rules.dynamic_degree_frames(len(frames), fps)
    scores = flow_scores(flow_model, frames, list(zip(kept[:-1], kept[1:])), 0.05, device)
    return rules.is_dynamic(scores, min(frames.shape[1:3]), len(kept)), scores


def static(flow_model, frames: np.ndarray, device: str = "cpu") -> tuple[bool, list[float]]:
    """VBench's `StaticFilter.infer`: every consecutive pair, then (first, last) and (last, first), top 2%."""
    n = len(frames)
    pairs = [(i, i + 1) for i in range(n - 1)] + [(0, n - 1), (n - 1, 0)]
    scores = flow_scores(flow_model, frames, pairs, 0.02, device)
    return rules.is_static(scores, min(frames.shape[1:3]), n), scores


def score_videos(samples: VBenchVideos, ctx, *, fps: float, dino, clip_b, clip_l, head, flow_model, iqa, interpolator,
                 amt_scale: float = 1.0, dimensions: Sequence[str] = SCORED) -> list[MetricValue]:
    """Score every implemented dimension on its own prompts; per-video results go to `vbench_results.json`
    (VBench's `{dimension: [value, [{"video_path", "video_results"}]]}` layout)."""
    device = ctx.device
    consistency = {"subject_consistency": rules.FrameConsistencyScore("subject_consistency"),
                   "background_consistency": rules.FrameConsistencyScore("background_consistency")}
    means = {d: rules.VideoMeanScore(d) for d in ("temporal_flickering", "motion_smoothness", "aesthetic_quality",
                                                  "imaging_quality", "dynamic_degree")}
    per_video: dict[str, list[dict]] = {d: [] for d in dimensions}
    filtered: dict[str, int] = {}
    for record, files in ctx.progress(list(zip(samples.prompts, samples.files)), desc="vbench"):
        dims = [d for d in record["dimension"] if d in dimensions]
        if "temporal_flickering" in dims:  # static filter first: file-name order, first 5 static ones
            files = _static_videos(flow_model, files, device)
            filtered[record["prompt_en"]] = len(files)
        for path in files:
            frames = read_video(path)
            for d in dims:
                if d in consistency:
                    features = (vbench_nets.dino_features(dino, frames, device) if d == "subject_consistency" else
                                vbench_nets.clip_image_features(clip_b, frames, device))
                    consistency[d].update([features])
                    total, count = rules.frame_consistency(features)
                    value = total / count
                elif d == "temporal_flickering":
                    value = rules.temporal_flickering(frames)
                elif d == "motion_smoothness":
                    value = amt.motion_smoothness(interpolator, frames, device, scale=amt_scale)
                elif d == "aesthetic_quality":
                    value = vbench_nets.aesthetic_score(clip_l, head, frames, device)
                elif d == "imaging_quality":  # per video VBench keeps MUSIQ's 0..100 scale; the dimension is / 100
                    value = musiq.imaging_quality(iqa, frames, device)
                else:
                    value = float(dynamic_degree(flow_model, frames, fps, device)[0])
                if d in means:
                    means[d].update([value / 100.0 if d == "imaging_quality" else value])
                per_video[d].append({"video_path": str(path), "video_results": value})
    short = {p: n for p, n in filtered.items() if n < VIDEOS_PER_PROMPT}
    ctx.extra_provenance["vbench_static_videos_per_prompt"] = filtered
    if short:
        ctx.log(f"temporal flickering: {len(short)} prompts have fewer than {VIDEOS_PER_PROMPT} static videos "
                f"(VBench warns and scores those it has): {_first(list(short))}")
    accumulators = {**consistency, **means}
    raw, values = {}, []
    for d in rules.QUALITY_DIMENSIONS:
        if d not in dimensions:
            continue
        if int(accumulators[d].count) == 0:
            raise ArbenchError(f"{d}: no video was scored (for temporal flickering: no video passed the static "
                               f"filter); nothing is stored")
        raw[d] = float(accumulators[d].compute())
        values.append(MetricValue(d, raw[d], True, "fraction", rules.VBENCH_METRICS_VERSION,
                                  description=f"VBench {d.replace('_', ' ')} ({rules.VBENCH_REPO})"))
    values.insert(0, rules.quality_score_value(raw))
    with open(ctx.artifact("vbench_results.json"), "w", encoding="utf-8") as out:
        json.dump({d: [raw[d], per_video[d]] for d in raw}, out, indent=1)
    return values


def _static_videos(flow_model, files: Sequence[Path], device: str) -> list[Path]:
    kept = []
    for path in sorted(files, key=lambda p: p.name):  # static_filter.py walks sorted(glob(...))
        if len(kept) == VIDEOS_PER_PROMPT:
            break
        if static(flow_model, read_video(path), device)[0]:
            kept.append(path)
    return kept


# -- semantic dimensions ---------------------------------------------------------------------------------------------
#: The semantic dimensions scored here (VBench's `SEMANTIC_LIST` has nine; docs/video.md says why the rest are not).
SEMANTIC_SCORED = ("appearance_style", "temporal_style", "overall_consistency")
SEMANTIC_TASK_VERSION = "1"


def semantic_prompts(full_info: Sequence[dict], dimensions: Sequence[str] = SEMANTIC_SCORED) -> list[dict]:
    """The records serving at least one of `dimensions`, in file order (283 in VBench's suite: 90 appearance style,
    100 temporal style, 93 overall consistency, none shared).

    >>> [r["prompt_en"] for r in semantic_prompts([{"prompt_en": "a", "dimension": ["appearance_style"]},
    ...                                            {"prompt_en": "b", "dimension": ["dynamic_degree"]}])]
    ['a']
    """
    return [r for r in full_info if set(r["dimension"]) & set(dimensions)]


def style_text(record: dict) -> str:
    """The style an appearance-style prompt is scored against (VBench: `auxiliary_info` of the dimension)."""
    try:
        return record["auxiliary_info"]["appearance_style"]["appearance_style"]
    except (KeyError, TypeError):
        raise ArbenchError(f"VBench's prompt record {record.get('prompt_en')!r} has no appearance-style text "
                           f"(auxiliary_info.appearance_style.appearance_style)") from None


@dataclass
class VBenchSemanticConfig:
    """The videos' shape and rate (defaults: NOVA's 33 x 480 x 768 at 12 fps), the seed of the requests, and
    explicit weight paths (paths change no number, so they are not settings)."""

    num_frames: Annotated[int, Field(ge=1, le=1024)] = 33
    height: Annotated[int, Field(ge=16, le=4096)] = 480
    width: Annotated[int, Field(ge=16, le=4096)] = 768
    fps: Annotated[int, Field(ge=1, le=240)] = 12
    seed: Seed = 0
    full_info: str = ""
    clip_b32_weights: str = ""
    viclip_weights: str = ""


@register_task("vbench-semantic")
class VBenchSemantic(VBenchQuality):
    """VBench's semantic dimensions that ARBench implements faithfully (appearance style, temporal style, overall
    consistency), each on its own prompts of
    VBench's suite, 5 videos a prompt. VBench's semantic score averages all nine normalised semantic dimensions and
    its total score needs it, so neither is computed: each dimension is its own metric."""

    version = SEMANTIC_TASK_VERSION
    description = ("VBench's semantic dimensions implemented so far (appearance style: CLIP ViT-B/32; temporal style "
                   "and overall consistency: ViCLIP) on their prompts of VBench's suite; no semantic or total score "
                   "(needs weights)")
    primary_metric = "appearance_style"
    Config = VBenchSemanticConfig

    def settings(self) -> dict:
        c = self.config
        return {"num_frames": c.num_frames, "height": c.height, "width": c.width, "fps": c.fps, "seed": c.seed}

    def signature(self) -> Signature:
        sig = Task.signature(self)
        sig.add("prompts_sha256", FULL_INFO.sha256).add("rules", f"{rules.VBENCH_REPO}-v{rules.VBENCH_METRICS_VERSION}")
        sig.add("dimensions", ",".join(SEMANTIC_SCORED)).add("videos_per_prompt", VIDEOS_PER_PROMPT)
        sig.add("clip_b32", f"{vbench_nets.CLIP_VIT_B32_OPENAI.sha256[:12]}:{vbench_nets.CLIP_IMAGE_PREPROCESS}:"
                            "openai-tokenize:fp16-on-cuda")
        sig.add("viclip", f"viclip-l14-internvid-10m-flt:{viclip.VICLIP_PREPROCESS}:ctx{viclip.CONTEXT_LENGTH}:fp32")
        return sig

    def weight_checks(self) -> list:
        c = self.config
        return [lambda: FULL_INFO.resolve(c.full_info or None),
                lambda: vbench_nets.CLIP_VIT_B32_OPENAI.resolve(c.clip_b32_weights or None),
                lambda: viclip.VICLIP_L14.locate(c.viclip_weights or None)]

    def suite(self) -> tuple[list[dict], set[str]]:
        full_info = load_full_info(self.config.full_info or None)
        return semantic_prompts(full_info), {r["prompt_en"] for r in full_info}

    def samples(self, record: dict) -> int:
        return VIDEOS_PER_PROMPT

    def count_hint(self) -> str:
        return f"{VIDEOS_PER_PROMPT} videos per prompt"

    def score(self, samples: VBenchVideos, ctx) -> list[MetricValue]:
        c = self.config
        weights = self.require_assets()
        ctx.extra_provenance["vbench_weights_sha256"] = {viclip.VICLIP_L14.name: weights[2][1]}
        clip_b = vbench_nets.load_clip(vbench_nets.CLIP_VIT_B32_OPENAI, c.clip_b32_weights or None, ctx.device)
        video_text = viclip.load_viclip(str(weights[2][0]), ctx.device)
        return score_semantic(samples, ctx, clip_b=clip_b, video_text=video_text)


def score_semantic(samples: VBenchVideos, ctx, *, clip_b, video_text,
                   dimensions: Sequence[str] = SEMANTIC_SCORED) -> list[MetricValue]:
    """Score each implemented semantic dimension on its own prompts (appearance style against the prompt's style
    text, temporal style and overall consistency against the prompt itself); per-video results (with VBench's
    `frame_results` for appearance style) go to `vbench_results.json` in VBench's layout."""
    metrics = {"appearance_style": rules.FrameMeanScore(
                   "appearance_style", description=f"VBench appearance style: CLIP ViT-B/32 frame-text similarity "
                                                   f"({rules.VBENCH_REPO})"),
               **{d: rules.VideoTextScore(d, description=f"VBench {d.replace('_', ' ')}: ViCLIP-L/14 video-text "
                                                         f"cosine ({rules.VBENCH_REPO})")
                  for d in ("temporal_style", "overall_consistency")}}
    per_video: dict[str, list[dict]] = {d: [] for d in dimensions}
    for record, files in ctx.progress(list(zip(samples.prompts, samples.files)), desc="vbench-semantic"):
        dims = [d for d in dimensions if d in record["dimension"]]
        for path in files:
            frames = read_video(path) if dims else None
            for d in dims:
                if d == "appearance_style":
                    scores = vbench_nets.appearance_style_scores(clip_b, frames, style_text(record), ctx.device)
                    metrics[d].update(scores)
                    per_video[d].append({"video_path": str(path), "video_results": float(np.mean(scores)),
                                         "frame_results": scores})
                else:
                    value = viclip.video_text_score(video_text, frames, record["prompt_en"], ctx.device)
                    metrics[d].update([value])
                    per_video[d].append({"video_path": str(path), "video_results": value})
    values = []
    for d in dimensions:
        if int(metrics[d].count) == 0:
            raise ArbenchError(f"{d}: no video was scored; nothing is stored")
        values += metrics[d].values()
    with open(ctx.artifact("vbench_results.json"), "w", encoding="utf-8") as out:
        json.dump({v.name: [v.value, per_video[v.name]] for v in values}, out, indent=1)
    return values
