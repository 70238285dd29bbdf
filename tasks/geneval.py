"""GenEval (Ghosh et al., NeurIPS 2023): 553 compositional text-to-image prompts scored by object detection.

Protocol and rules: docs/geneval.md and `harness.metrics.geneval`. Images live in GenEval's own
folder layout, which `arbench score geneval <folder>` reads and `arbench run geneval <method>` writes:

    <folder>/00000/metadata.jsonl      one JSON object: that prompt's line of evaluation_metadata.jsonl
    <folder>/00000/samples/0000.png    `images_per_prompt` RGB images (names matching \\d+\\.png)

Scoring needs the mmdet Mask2Former Swin-S COCO weights and OpenAI's CLIP ViT-L/14; neither can be had
offline. Both are resolved before anything is stored. The offline toy `shapes-t2i` (tasks/shapes_t2i.py, not
GenEval) reuses this module's folder checks and scoring loop with a bundled detector on rendered shapes.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from harness.api import Method, Request, SubmissionSpec, Task
from harness.errors import ArbenchError, InputError
from harness.inputs import InputCaps, decode_image, read_text
from harness.features import clip_color, geneval_detector
from harness.metrics.base import MetricValue
from harness.metrics.geneval import GenEvalRules, GenEvalScore, evaluate_image, keep_detections
from harness.registry import register_task
from harness.settings import Annotated, Field, Probability, Seed
from harness.signature import Signature
from harness.weights import WeightSpec, register_weights, require_all

GENEVAL_COMMIT = "af4902f24d3ca90ebbb446dd9891a59e0f82725f"
METADATA = register_weights(WeightSpec(
    name="geneval-metadata",
    filename="geneval_evaluation_metadata.jsonl",
    url=f"https://raw.githubusercontent.com/djghosh13/geneval/{GENEVAL_COMMIT}/prompts/evaluation_metadata.jsonl",
    sha256="5c48e0813e812e3c373fa5c8ed07a8f0a483be30272b4427b0559c8048e67c13",
    license="MIT (Copyright (c) 2023 Dhruba Ghosh)",
    description="GenEval's 553 prompts with their include/exclude clauses",
))
NUM_PROMPTS = 553
SAMPLE_NAME = re.compile(r"\d+\.png")  # GenEval uses re.match: start-anchored


def load_metadata(path: str | Path | None = None) -> list[dict]:
    """The official prompt records, in file order (line i is prompt folder i)."""
    resolved = METADATA.resolve(path)
    records = [json.loads(line) for line in resolved.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(records) != NUM_PROMPTS:
        raise ArbenchError(f"{resolved} has {len(records)} prompts, expected {NUM_PROMPTS}")
    return records


@dataclass(frozen=True)
class GenEvalImage:
    """One image to score and the prompt record it answers."""

    prompt_index: int
    path: Path
    metadata: dict


@dataclass
class GenEvalConfig:
    images_per_prompt: Annotated[int, Field(ge=1, le=64)] = 4
    seed: Seed = 42
    threshold: Probability = GenEvalRules.threshold
    counting_threshold: Probability = GenEvalRules.counting_threshold
    max_objects: Annotated[int, Field(ge=1, le=1000)] = GenEvalRules.max_objects
    position_threshold: Probability = GenEvalRules.position_threshold
    # images per detector pass (equal-size images only, see GenEvalDetector.detect_batch); GenEval's own script
    # detects one at a time, which is the default. On a GPU, 8-16 is several times faster; batched kernels can
    # round differently, so the value is part of the signature like every setting.
    detect_batch_size: Annotated[int, Field(ge=1, le=256)] = 1


@register_task("geneval")
class GenEval(Task):
    version = "1"
    modality = "text-to-image"
    submission = SubmissionSpec("text-to-image", "generate(requests) -> uint8 array (N, H, W, 3), one image per "
                                "request (condition: prompt, tag, prompt_index, sample_index)")
    description = "GenEval: 553 compositional prompts, Mask2Former + CLIP colour rules (needs weights)"
    primary_metric = "geneval"
    Config = GenEvalConfig

    @property
    def rules(self) -> GenEvalRules:
        c = self.config
        return GenEvalRules(c.threshold, c.counting_threshold, c.max_objects, c.position_threshold)

    def signature(self) -> Signature:
        sig = super().signature()
        sig.add("prompts_sha256", METADATA.sha256)
        sig.add("rules", f"geneval@{GENEVAL_COMMIT[:7]}-v{GenEvalScore.version}")
        sig.add("detector", geneval_detector.DETECTOR_ID)
        sig.add("detector_preprocess", geneval_detector.PREPROCESS_ID)
        sig.add("color_model", clip_color.COLOR_MODEL_ID)
        return sig

    def require_assets(self) -> None:
        """Resolve (and hash-check) every file scoring needs; one MissingAssetError names all that are missing."""
        require_all([spec.resolve for spec in (METADATA, geneval_detector.MASK2FORMER_SWIN_S_COCO,
                                                clip_color.CLIP_VIT_L14_OPENAI)],
                    "GenEval scoring (offline, only the toy shapes-t2i runs; it is not GenEval)")

    def check_method(self, method: Method) -> None:
        super().check_method(method)
        # refuse before generating for hours, and before a run row is stored, naming every missing file at once:
        # the method's own weights (resolved by checkpoint_sha256) and the scoring networks
        require_all([method.checkpoint_sha256, self.require_assets], f"geneval with {method.name}")

    def records(self) -> list[dict]:
        """The prompt records, in folder order (GenEval's official 553; a variant can give its own)."""
        return load_metadata()

    # -- generation ----------------------------------------------------------------------------
    def requests(self) -> list[Request]:
        n = self.config.images_per_prompt
        requests = []
        for p, record in enumerate(self.records()):
            for s in range(n):
                index = p * n + s
                requests.append(Request(index, f"{p:05d}/{s:04d}", self.config.seed * 1_000_003 + index,
                                        {"prompt": record["prompt"], "tag": record["tag"],
                                         "prompt_index": p, "sample_index": s}))
        return requests

    def write_shard(self, outputs: Any, requests: Sequence[Request], directory: Path) -> None:
        images = np.asarray(outputs)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(requests):
            raise ArbenchError(f"a text-to-image method must return uint8 (N, H, W, 3) images, one per request; "
                               f"got {images.dtype} {images.shape} for {len(requests)} requests")
        for image, request in zip(images, requests):
            target = directory / f"{request.condition['prompt_index']:05d}" / "samples"
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, "RGB").save(target / f"{request.condition['sample_index']:04d}.png")

    def read_generated(self, shard_dirs: Sequence[Path], requests: Sequence[Request]) -> list[GenEvalImage]:
        raise ArbenchError("geneval assembles its image folder in score_generated(); read_generated is not used")

    def assemble_folder(self, shard_dirs: Sequence[Path], target: Path) -> Path:
        """Merge generated shards into GenEval's official layout (metadata.jsonl per prompt folder)."""
        records = self.records()
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for shard in shard_dirs:
            for prompt_dir in sorted(shard.iterdir()):
                out = tmp / prompt_dir.name / "samples"
                out.mkdir(parents=True, exist_ok=True)
                for png in sorted((prompt_dir / "samples").iterdir()):
                    shutil.copyfile(png, out / png.name)
        for p, record in enumerate(records):
            (tmp / f"{p:05d}").mkdir(parents=True, exist_ok=True)
            (tmp / f"{p:05d}" / "metadata.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        return target

    def score_generated(self, shard_dirs: Sequence[Path], requests: Sequence[Request], ctx) -> list[MetricValue]:
        folder = self.assemble_folder(shard_dirs, ctx.artifact("images"))
        ctx.log(f"images in GenEval's layout at {folder}")
        return self.score(self.load_samples(folder), ctx)

    # -- reading and validating a folder ---------------------------------------------------------
    def load_samples(self, path: Path) -> list[GenEvalImage]:
        """Validate a GenEval image folder completely, then check the weights; nothing is scored here."""
        records = self.records()
        images = read_folder(Path(path), records, self.config.images_per_prompt)
        self.require_assets()
        return images

    # -- scoring -------------------------------------------------------------------------------
    def score(self, samples: Sequence[GenEvalImage], ctx) -> list[MetricValue]:
        detector = geneval_detector.GenEvalDetector.from_pretrained(device=ctx.device)
        colors = clip_color.ColorClassifier.from_pretrained(device=ctx.device)
        return score_images(samples, detector, colors, self.rules, ctx, self.config.detect_batch_size)


def _detected(samples: Sequence[GenEvalImage], detector, batch_size: int):
    """(sample, RGB image, detections) in order, `batch_size` images per detector call."""
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        images = [Image.open(sample.path).convert("RGB") for sample in chunk]
        yield from zip(chunk, images, detector.detect_batch(images))


def score_images(samples: Sequence[GenEvalImage], detector, colors, rules: GenEvalRules, ctx,
                 batch_size: int = 1, detector_check: str | None = None) -> list[MetricValue]:
    """Detect, judge every image, write GenEval's results.jsonl as an artifact, and refuse silent failures.

    `batch_size` images go to the detector at once (`detector.detect_batch`); `detector_check` tells, in the
    canary's message, how to check the detector's weights (default: GenEval's Mask2Former file)."""
    metric = GenEvalScore()
    any_detection = False
    with open(ctx.artifact("results.jsonl"), "w", encoding="utf-8") as rows:
        for sample, image, detections in ctx.progress(_detected(samples, detector, batch_size), total=len(samples),
                                                      desc="geneval"):
            tag = sample.metadata["tag"]
            kept = keep_detections(detections, tag, rules)
            any_detection |= bool(keep_detections(detections, "", rules))
            result = evaluate_image(sample.metadata, kept, lambda dets, name: colors.classify(image, dets, name),
                                    rules)
            metric.update([tag], [result.correct])
            rows.write(json.dumps({
                "filename": str(sample.path), "tag": tag, "prompt": sample.metadata["prompt"],
                "correct": result.correct, "reason": result.reason, "metadata": json.dumps(sample.metadata),
                "details": json.dumps({name: [[*map(float, d.box), float(d.score)] for d in dets]
                                       for name, dets in kept.items()}),
            }) + "\n")
    if not any_detection:
        raise ArbenchError(
            f"canary: the detector found no object above score {rules.threshold} in any of {len(samples)} images. "
            "That is a broken detector (wrong or corrupt weights, a failed load, a numerics problem on this device), "
            f"not a result; nothing is stored as a score. " + (detector_check or
            f"Check that the detector file's sha256 starts with {geneval_detector.CHECKPOINT_SHA256_PREFIX} (`sha256sum "
            f"{geneval_detector.MASK2FORMER_SWIN_S_COCO.cache_path}`) and try another device."))
    values = metric.values()
    overall = values[-1].value
    if overall == 0.0:
        raise ArbenchError("canary: the GenEval score is exactly 0 (no image judged correct, not even a single "
                           "object). Real generators score well above 0 on single_object; suspect the detector "
                           "weights or the image folder, not the method.")
    return values


def read_folder(folder: Path, records: Sequence[dict], images_per_prompt: int) -> list[GenEvalImage]:
    """Every image of a GenEval folder, checked against the official records; raises InputError with a fix."""
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder: give GenEval's image folder (00000/ ... 00552/ inside)")
    prompt_dirs = {d.name: d for d in folder.iterdir() if d.is_dir() and d.name.isdigit()}
    expected = [f"{p:05d}" for p in range(len(records))]
    missing = [name for name in expected if name not in prompt_dirs]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"{folder} lacks {len(missing)} of the {len(records)} prompt folders ({shown}). "
                         "Generate every prompt of evaluation_metadata.jsonl, one zero-padded 5-digit folder each.")
    extra = sorted(set(prompt_dirs) - set(expected))
    if extra:
        raise InputError(f"{folder} has prompt folders beyond the {len(records)} official prompts: "
                         f"{', '.join(extra[:5])}. Remove them (folder i holds prompt line i).")
    images: list[GenEvalImage] = []
    for p, record in enumerate(records):
        prompt_dir = prompt_dirs[expected[p]]
        check_prompt_metadata(prompt_dir / "metadata.jsonl", record)
        sample_dir = prompt_dir / "samples"
        names = sorted(f.name for f in sample_dir.iterdir() if SAMPLE_NAME.match(f.name)) if sample_dir.is_dir() else []
        if len(names) != images_per_prompt:
            raise InputError(f"{sample_dir} has {len(names)} images named like 0000.png, expected "
                             f"{images_per_prompt} (set images_per_prompt=N if you generated another number).")
        for name in names:
            check_image(sample_dir / name)
            images.append(GenEvalImage(p, sample_dir / name, record))
    return images


def check_prompt_metadata(path: Path, record: dict) -> None:
    if not path.is_file():
        raise InputError(f"{path} is missing: each prompt folder needs its line of evaluation_metadata.jsonl "
                         "(one JSON object) as metadata.jsonl")
    try:
        text = read_text(path, "metadata").strip()
        theirs = json.loads(text.splitlines()[0]) if text else None
    except ValueError as exc:
        raise InputError(f"{path} is not JSON ({exc}); write the prompt's metadata line there") from exc
    if theirs != record:
        raise InputError(f"{path} does not match the official prompt for this folder: expected {json.dumps(record)}, "
                         f"found {text[:300]}. Folder i must hold prompt line i of evaluation_metadata.jsonl.")


def check_image(path: Path, caps: InputCaps = InputCaps()) -> None:
    """Decoded once, under the pixel cap: a truncated or oversized file is refused before scoring."""
    mode = decode_image(path, caps, "task 'geneval'")
    if mode != "RGB":
        raise InputError(f"{path} is a {mode} image; GenEval scores 8-bit RGB images. Save it with "
                         "Image.convert('RGB') (no alpha channel, no palette, no greyscale).")
