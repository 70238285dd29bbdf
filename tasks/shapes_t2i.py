"""shapes-t2i: the offline toy of the GenEval protocol on rendered shapes. It is NOT GenEval and its number is no
GenEval score.

What is GenEval's, unchanged: the prompt-record schema and templates, the image folder layout and its validation
(`tasks.geneval.read_folder`), the rule engine and its accumulator (`harness.metrics.geneval`: `keep_detections`,
`evaluate_image`, `GenEvalScore`, at GenEval's default thresholds) and the scoring loop (`tasks.geneval.score_images`,
with its results.jsonl artifact and canaries). What is the toy's: 78 prompts over 3 shapes and 4 colours on a
32 px canvas (`harness.datasets.shapes.prompt_records`, a deterministic enumeration), the bundled ShapesNet detector
and its colour head in place of Mask2Former and CLIP (`harness.features.shapes_detector`). Metrics are named
`compositional_shapes` and `compositional_shapes_<tag>` so that no board row reads as GenEval.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from harness.datasets import shapes
from harness.features import shapes_detector
from harness.metrics.base import MetricValue
from harness.metrics.geneval import GenEvalScore
from harness.registry import register_task
from harness.signature import Signature
from harness.api import Task
from tasks.geneval import GENEVAL_COMMIT, GenEval, GenEvalConfig, score_images

METRIC = "compositional_shapes"


def prompts_sha256() -> str:
    return hashlib.sha256("".join(json.dumps(r) + "\n" for r in shapes.prompt_records()).encode()).hexdigest()


@register_task("shapes-t2i")
class ShapesT2I(GenEval):
    version = "1"
    description = ("offline toy, NOT GenEval: GenEval's rule engine on 78 prompts of rendered shapes/colours/"
                   "counts/positions (32 px), bundled ShapesNet detector")
    primary_metric = METRIC
    Config = GenEvalConfig  # GenEval's options and defaults (4 images a prompt, its thresholds)
    offline = True
    demo_methods = ("shapes-ar-t2i",)

    def records(self) -> list[dict]:
        return shapes.prompt_records()

    def signature(self) -> Signature:
        sig = Task.signature(self)
        _, detector_sha = shapes_detector.load_shapes_net()
        sig.add("prompts_sha256", prompts_sha256())
        sig.add("rules", f"geneval@{GENEVAL_COMMIT[:7]}-v{GenEvalScore.version}")
        sig.add("detector", shapes_detector.DETECTOR_ID).add("detector_sha256", detector_sha)
        sig.add("color_model", shapes_detector.COLOR_MODEL_ID)
        return sig

    def require_assets(self) -> None:
        shapes_detector.load_shapes_net()

    def score(self, samples, ctx) -> list[MetricValue]:
        detector = shapes_detector.ShapesDetector.from_pretrained()
        check = (f"The bundled detector is {shapes_detector.WEIGHTS_PATH}; restore it from git or retrain it with "
                 "`python -m baselines.imagegen.train_shapes_detector`.")
        values = score_images(samples, detector, detector, self.rules, ctx, detector_check=check)
        return [rename(v) for v in values]


def rename(value: MetricValue) -> MetricValue:
    """geneval[_<tag>] -> compositional_shapes[_<tag>], described as the toy it is."""
    name = METRIC + value.name[len("geneval"):]
    what = value.description.replace("GenEval overall", "GenEval's rules on the shapes-t2i toy (not GenEval)")
    return dataclasses.replace(value, name=name, description=what)
