"""GenEval's rule engine: from per-class detections to per-image correctness, per-tag and overall scores.

Faithful to djghosh13/geneval@af4902f (`evaluation/evaluate_images.py`, `evaluation/summary_scores.py`) with
its default options: score threshold 0.3 (0.9 for every class of a counting prompt), at most 16 detections per
class, no NMS (`max_overlap` 1.0), the relative-position rule with a 0.1 margin, `include` clauses ANDed and
`exclude` clauses ORed. The detector and the colour classifier are plugged in from `harness.features`; this
module only holds the rules, so they are testable on hand-made detections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from harness.errors import InputError
from harness.metrics.base import Accumulator, MetricValue

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
RELATIONS = ("left of", "right of", "above", "below")
#: 2: ties in score ordered as upstream's `np.argsort(scores)[::-1]` (the later detection first), the threshold
#: compared in float32 (a score of float32(0.3) is dropped) and box geometry in float32, as upstream computes on
#: mmdet's float32 arrays. Version 1 kept the earlier of equal scores first and compared in float64.
RULES_VERSION = "2"


@dataclass(frozen=True)
class GenEvalRules:
    """The evaluator's options (GenEval's `--options`), at their official defaults.

    Args:
        threshold: detection score a kept instance must exceed.
        counting_threshold: the same for every class of a counting prompt.
        max_objects: kept instances per class, highest scores first.
        position_threshold: the margin of the relative-position rule.

    Example:
        >>> rules = GenEvalRules()
        >>> rules.threshold_for("counting"), rules.threshold_for("colors")
        (0.9, 0.3)
    """

    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    position_threshold: float = 0.1

    def threshold_for(self, tag: str) -> float:
        return self.counting_threshold if tag == "counting" else self.threshold


@dataclass(frozen=True)
class Detection:
    """One detected instance: box [x1, y1, x2, y2] in pixels, its score, and its binary mask (H x W) if any."""

    box: tuple[float, float, float, float]
    score: float
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ImageResult:
    correct: bool
    reason: str


#: Predicts one colour name per detection of a class on an image (see `harness.features.clip_color`).
ColorFn = Callable[[Sequence[Detection], str], list[str]]


def keep_detections(detections: Mapping[str, Sequence[Detection]], tag: str,
                    rules: GenEvalRules = GenEvalRules()) -> dict[str, list[Detection]]:
    """Per class: scores strictly above the tag's threshold, highest first, at most `max_objects`.

    Exactly upstream's numpy steps on the detector's float32 scores: `np.argsort(scores)[::-1]` (so of equal
    scores the later detection comes first), then `scores > threshold` in float32 (a score equal to
    float32(0.3) is dropped although it is above the float64 0.3). Classes with nothing left are dropped.
    There is no NMS: at GenEval's default `max_overlap` of 1.0 its greedy suppression keeps every box.

    Args:
        detections: per class name, the detector's instances.
        tag: the prompt's tag (`TAGS`); counting prompts use `rules.counting_threshold`.
        rules: the evaluator's options.

    Returns:
        Per class with something left, the kept detections, highest score first.

    Example:
        >>> dets = [Detection((x, 0, x + 1, 1), s) for x, s in enumerate((0.5, 0.8, 0.5, float(np.float32(0.3))))]
    >>> [int(d.box[0]) for d in keep_detections({"dog": dets}, "colors")["dog"]]
    [1, 2, 0]
    """
    threshold = np.float32(rules.threshold_for(tag))
    kept: dict[str, list[Detection]] = {}
    for name, dets in detections.items():
        scores = np.array([d.score for d in dets], dtype=np.float32).reshape(-1)
        order = np.argsort(scores)[::-1]
        order = order[scores[order] > threshold][: rules.max_objects]
        if len(order):
            kept[name] = [dets[i] for i in order.tolist()]
    return kept


def relative_position(a: Detection, b: Detection, margin: float = 0.1) -> set[str]:
    """The relations "A is <rel> B" that hold between two boxes (image y axis points down).

    The centre offset is shrunk per axis by `margin` times the summed box sizes; what is left, divided by the
    length of the unshrunk offset, must exceed 0.5 on an axis for the relation along it to hold. Computed in
    float32, as upstream does on mmdet's float32 boxes.

    Args:
        a: the detection the relation is about.
        b: the target detection.
        margin: GenEval's `position_threshold`.

    Returns:
        A subset of `RELATIONS` (empty when the boxes are centred on each other).

    Example:
        >>> relative_position(Detection((0, 0, 10, 10), 1.0), Detection((50, 0, 60, 10), 1.0))
        {'left of'}
    """
    boxes = np.array([a.box, b.box], dtype=np.float32).reshape(2, 2, 2)
    centre = boxes.mean(axis=-2)
    size = np.abs(boxes[:, 1] - boxes[:, 0])
    offset = centre[0] - centre[1]
    revised = np.maximum(np.abs(offset) - np.float32(margin) * (size[0] + size[1]), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def evaluate_image(metadata: Mapping, kept: Mapping[str, Sequence[Detection]], color_fn: ColorFn | None = None,
                   rules: GenEvalRules = GenEvalRules()) -> ImageResult:
    """GenEval's per-image verdict on the kept detections (see `keep_detections`) with its reason text.

    Args:
        metadata: the prompt's line of `evaluation_metadata.jsonl` (`include` and `exclude` clauses).
        kept: per class, the kept detections.
        color_fn: the colour classifier, needed by prompts with a colour clause.
        rules: the evaluator's options.

    Returns:
        An `ImageResult`: `correct` and the reasons it is not, one per line.

    Raises:
        ValueError: when a colour clause comes without a colour classifier (a caller's mistake, not the
            input's).

    Example:
        >>> dog = Detection((0, 0, 10, 10), 0.9)
        >>> evaluate_image({"include": [{"class": "dog", "count": 2}]}, {"dog": [dog]})
        ImageResult(correct=False, reason='expected dog>=2, found 1')
    """
    correct = True
    reasons: list[str] = []
    matched_groups: list[list[Detection] | None] = []
    for clause in metadata.get("include", []):
        name, count = clause["class"], clause["count"]
        found = list(kept.get(name, []))[:count]
        matched = True
        if len(found) < count:
            correct = matched = False
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        else:
            if "color" in clause:
                if color_fn is None:
                    raise ValueError("a colour clause needs a colour classifier")
                colors = color_fn(found, name)
                wanted = clause["color"]
                if colors.count(wanted) < count:
                    correct = matched = False
                    seen = ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
                    reasons.append(f"expected {wanted} {name}>={count}, found {colors.count(wanted)} {wanted}; "
                                   f"and {seen}")
            if "position" in clause and matched:
                relation, target = clause["position"]
                targets = matched_groups[target]
                if targets is None:
                    correct = matched = False
                    reasons.append(f"no target for {name} to be {relation}")
                else:
                    for obj in found:
                        for target_obj in targets:
                            holds = relative_position(obj, target_obj, rules.position_threshold)
                            if relation not in holds:
                                correct = matched = False
                                reasons.append(f"expected {name} {relation} target, found "
                                               f"{' and '.join(sorted(holds))} target")
                                break
                        if not matched:
                            break
        matched_groups.append(found if matched else None)
    for clause in metadata.get("exclude", []):
        name = clause["class"]
        if len(kept.get(name, [])) >= clause["count"]:
            correct = False
            reasons.append(f"expected {name}<{clause['count']}, found {len(kept[name])}")
    return ImageResult(correct, "\n".join(reasons))


class GenEvalScore(Accumulator):
    """Per-tag fraction of correct images and GenEval's overall score (unweighted mean of the 6 tag means).

    States are per-tag sums, so the result does not depend on batching or the number of ranks.

    Args:
        kwargs: passed to `torchmetrics.Metric`.

    Raises:
        InputError: (from `update`) for an unknown tag or lists of different lengths; (from `compute`) when a
            tag has no images.

    Example:
        >>> metric = GenEvalScore()
        >>> metric.update(list(TAGS), [True, True, False, True, False, True])
        >>> metric.update(list(TAGS), [True] * 6)
        >>> [round(v, 4) for v in metric.compute().tolist()]
        [1.0, 1.0, 0.5, 1.0, 0.5, 1.0, 0.8333]
    """

    metric_name = "geneval"
    unit = "fraction"
    version = RULES_VERSION
    higher_is_better = True
    description = "GenEval overall: unweighted mean over the 6 tags of the fraction of correct images"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.zeros(len(TAGS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(len(TAGS), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, tags: Sequence[str], correct: Sequence[bool]) -> None:
        if len(tags) != len(correct):
            raise InputError(f"{len(tags)} tags but {len(correct)} verdicts: give one tag per image verdict")
        unknown = sorted(set(tags) - set(TAGS))
        if unknown:
            raise InputError(f"unknown GenEval tag(s) {', '.join(map(repr, unknown))}; the tags are {', '.join(TAGS)}")
        for tag, ok in zip(tags, correct):
            k = TAGS.index(tag)
            self.total[k] += 1
            self.correct[k] += float(ok)

    def compute(self) -> torch.Tensor:
        """The six tag scores followed by the overall score."""
        if bool((self.total == 0).any()):
            missing = [t for t, n in zip(TAGS, self.total.tolist()) if n == 0]
            raise InputError(f"no images for tag(s) {', '.join(missing)}: GenEval needs all six tags")
        per_tag = self.correct / self.total
        return torch.cat([per_tag, per_tag.mean().reshape(1)])

    def values(self) -> list[MetricValue]:
        scores = self.compute().tolist()
        rows = [MetricValue(f"geneval_{tag}", scores[k], True, self.unit, self.version,
                            description=f"fraction of {tag} images judged correct")
                for k, tag in enumerate(TAGS)]
        rows.append(MetricValue(self.metric_name, scores[-1], True, self.unit, self.version,
                                description=self.description))
        return rows
