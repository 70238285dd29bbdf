"""GenEval's rule engine on hand-made detections, built from the official metadata's own clause shapes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.errors import InputError
from harness.features.geneval_detector import COCO_CLASSES
from harness.metrics.geneval import (COLORS, TAGS, Detection, GenEvalRules, GenEvalScore, evaluate_image,
                                     keep_detections, relative_position)

METADATA_FILE = Path(__file__).parent / "data" / "geneval_evaluation_metadata.jsonl"
RECORDS = [json.loads(line) for line in METADATA_FILE.read_text().splitlines()]


def box(x1, y1, x2, y2, score=0.95):
    return Detection((x1, y1, x2, y2), score)


def first(tag, predicate=lambda r: True):
    return next(r for r in RECORDS if r["tag"] == tag and predicate(r))


def test_official_metadata_shape():
    assert len(RECORDS) == 553
    assert Counter(r["tag"] for r in RECORDS) == {"single_object": 80, "two_object": 99, "counting": 80,
                                                  "colors": 94, "position": 100, "color_attr": 100}
    assert {r["include"][0]["class"] for r in RECORDS if r["tag"] == "single_object"} == set(COCO_CLASSES)
    for r in RECORDS:
        for clause in r["include"]:
            assert clause["class"] in COCO_CLASSES and clause.get("color", "red") in COLORS
            if "position" in clause:
                assert clause["position"][0] in ("left of", "right of", "above", "below")
        if r["tag"] == "counting":
            (inc,), (exc,) = r["include"], r["exclude"]
            assert exc == {"class": inc["class"], "count": inc["count"] + 1} and 2 <= inc["count"] <= 4
        else:
            assert "exclude" not in r


def test_threshold_is_strict_and_per_tag():
    dets = {"dog": [Detection((0, 0, 1, 1), s) for s in (0.3, 0.31, 0.9, 0.95)]}
    assert [d.score for d in keep_detections(dets, "two_object")["dog"]] == [0.95, 0.9, 0.31]
    assert [d.score for d in keep_detections(dets, "counting")["dog"]] == [0.95]
    assert keep_detections({"cat": [Detection((0, 0, 1, 1), 0.2)]}, "colors") == {}


def test_at_most_16_per_class_and_no_nms():
    same_box = [Detection((10, 10, 50, 50), 0.5 + i / 100) for i in range(20)]  # identical boxes: NMS would keep 1
    kept = keep_detections({"cup": same_box}, "single_object")["cup"]
    assert len(kept) == 16 and kept[0].score == pytest.approx(0.69) and kept[-1].score == pytest.approx(0.54)


def test_relative_position_axes_and_diagonal():
    b = box(100, 100, 120, 120)
    assert relative_position(box(0, 100, 20, 120), b) == {"left of"}
    assert relative_position(box(200, 100, 220, 120), b) == {"right of"}
    assert relative_position(box(100, 0, 120, 20), b) == {"above"}
    assert relative_position(box(100, 200, 120, 220), b) == {"below"}
    assert relative_position(box(300, 300, 320, 320), b) == {"right of", "below"}
    assert relative_position(b, b) == set()


def test_relative_position_margin():
    # boxes 20 px wide: 0.1 * (20 + 20) = 4 px come off each axis of the centre offset
    b = box(100, 100, 120, 120)
    assert relative_position(box(103, 100, 123, 120), b) == set()  # offset (3, 0): nothing left
    assert relative_position(box(106, 100, 126, 120), b) == set()  # (6 - 4) / 6 = 0.33 <= 0.5
    assert relative_position(box(109, 100, 129, 120), b) == {"right of"}  # (9 - 4) / 9 = 0.56
    assert relative_position(box(106, 100, 126, 120), b, margin=0.0) == {"right of"}
    # offset (10, 6): revised (6, 2) / |(10, 6)| = (0.51, 0.17)
    assert relative_position(box(110, 106, 130, 126), b) == {"right of"}
    # offset (8, 6): revised (4, 2) / 10 = (0.4, 0.2); without the margin (0.8, 0.6) is right of and below
    assert relative_position(box(108, 106, 128, 126), b) == set()
    assert relative_position(box(108, 106, 128, 126), b, margin=0.0) == {"right of", "below"}


def test_single_and_two_object():
    single = first("single_object")
    name = single["include"][0]["class"]
    assert evaluate_image(single, {name: [box(0, 0, 5, 5)]}).correct
    result = evaluate_image(single, {})
    assert not result.correct and result.reason == f"expected {name}>=1, found 0"
    two = first("two_object")
    a, b = (c["class"] for c in two["include"])
    assert evaluate_image(two, {a: [box(0, 0, 5, 5)], b: [box(5, 5, 9, 9)], "person": [box(1, 1, 2, 2)]}).correct
    assert not evaluate_image(two, {a: [box(0, 0, 5, 5)]}).correct


@pytest.mark.parametrize("found, correct", [(1, False), (2, False), (3, True), (4, False), (16, False)])
def test_counting_is_exact_through_the_exclude_clause(found, correct):
    record = first("counting", lambda r: r["include"][0]["count"] == 3)
    name = record["include"][0]["class"]
    dets = {name: [Detection((i, 0, i + 1, 1), 0.95) for i in range(found)] + [Detection((0, 0, 1, 1), 0.85)]}
    kept = keep_detections(dets, "counting")  # the 0.85 one is below the counting threshold
    result = evaluate_image(record, kept)
    assert result.correct is correct
    if found == 4:
        assert result.reason == f"expected {name}<4, found 4"


def fixed_colors(colors_by_class):
    calls = []

    def color_fn(dets, name):
        calls.append((name, len(dets)))
        return [colors_by_class[name]] * len(dets)
    return color_fn, calls


def test_colors_and_color_attr():
    record = first("colors")
    clause = record["include"][0]
    wrong = next(c for c in COLORS if c != clause["color"])
    dets = {clause["class"]: [box(0, 0, 5, 5), box(9, 9, 19, 19, 0.5)]}
    color_fn, calls = fixed_colors({clause["class"]: clause["color"]})
    assert evaluate_image(record, dets, color_fn).correct
    assert calls == [(clause["class"], 1)]  # only the top `count` detections are colour-checked
    color_fn, _ = fixed_colors({clause["class"]: wrong})
    result = evaluate_image(record, dets, color_fn)
    assert not result.correct
    assert result.reason == f"expected {clause['color']} {clause['class']}>=1, found 0 {clause['color']}; and 1 {wrong}"

    attr = first("color_attr", lambda r: r["include"][0]["class"] != r["include"][1]["class"])
    (a, b) = attr["include"]
    dets = {a["class"]: [box(0, 0, 5, 5)], b["class"]: [box(9, 9, 19, 19)]}
    assert evaluate_image(attr, dets, fixed_colors({a["class"]: a["color"], b["class"]: b["color"]})[0]).correct
    swapped = fixed_colors({a["class"]: b["color"], b["class"]: a["color"]})[0]
    assert not evaluate_image(attr, dets, swapped).correct


def test_position_rule_and_missing_target():
    record = first("position", lambda r: r["include"][1]["position"][0] == "left of")
    target, obj = record["include"][0]["class"], record["include"][1]["class"]
    assert record["include"][1]["position"] == ["left of", 0]
    ref = box(100, 100, 140, 140)
    assert evaluate_image(record, {target: [ref], obj: [box(0, 100, 40, 140)]}).correct
    result = evaluate_image(record, {target: [ref], obj: [box(200, 100, 240, 140)]})
    assert not result.correct and result.reason == f"expected {obj} left of target, found right of target"
    result = evaluate_image(record, {obj: [box(0, 100, 40, 140)]})
    assert not result.correct
    assert result.reason == f"expected {target}>=1, found 0\nno target for {obj} to be left of"
    # the margin decides a near-tie: 8 px left of a 40 px box is not "left of"
    assert not evaluate_image(record, {target: [ref], obj: [box(92, 100, 132, 140)]}).correct


def test_accumulator_is_batch_invariant_and_averages_tags():
    rng = np.random.default_rng(0)
    tags = [TAGS[i] for i in rng.integers(0, 6, 500)]
    correct = rng.random(500) < 0.4
    whole = GenEvalScore()
    whole.update(tags, correct)
    pieces = GenEvalScore()
    for start in range(0, 500, 7):
        pieces.update(tags[start:start + 7], correct[start:start + 7])
    assert torch.equal(whole.compute(), pieces.compute())
    per_tag = [np.mean([c for t, c in zip(tags, correct) if t == tag]) for tag in TAGS]
    values = {v.name: v.value for v in whole.values()}
    assert values["geneval"] == pytest.approx(np.mean(per_tag), abs=1e-12)
    assert [values[f"geneval_{t}"] for t in TAGS] == pytest.approx(per_tag, abs=1e-12)


def test_accumulator_refuses_a_missing_tag():
    metric = GenEvalScore()
    metric.update(["colors"], [True])
    with pytest.raises(InputError, match="single_object"):
        metric.compute()
    with pytest.raises(InputError, match="unknown GenEval tag"):
        metric.update(["colour"], [True])
    with pytest.raises(InputError, match="1 tags but 2 verdicts"):
        metric.update(["colors"], [True, False])


def test_rules_defaults_are_the_official_ones():
    rules = GenEvalRules()
    assert (rules.threshold, rules.counting_threshold, rules.max_objects, rules.position_threshold) == (
        0.3, 0.9, 16, 0.1)


GOLDEN = json.loads((Path(__file__).parent / "golden" / "geneval" / "cases.json").read_text())


def _relations_as_sets(reason: str) -> list:
    """Upstream joins a *set* of relations into its reason text, so their order follows string hashing."""
    lines = []
    for line in reason.split("\n"):
        head, sep, rest = line.partition(" target, found ")
        lines.append((head, frozenset(rest.removesuffix(" target").split(" and "))) if sep else line)
    return lines


def test_rule_engine_equals_upstream_on_golden_cases():
    """600 synthetic (prompt, detections) cases judged by upstream's own evaluate_image
    (tests/golden/make_geneval.py): same verdict, same reason, same kept detections in the same order.
    The scores include ties and exactly float32(0.3) / float32(0.9); colours come from a shared rule."""
    def color_rule(dets, name):
        return [COLORS[int(np.float32(d.box[0])) % 10] for d in dets]

    for k, case in enumerate(GOLDEN["cases"]):
        metadata = RECORDS[case["record"]]
        detections = {name: [Detection(tuple(row[:4]), row[4]) for row in rows]
                      for name, rows in case["detections"].items()}
        kept = keep_detections(detections, metadata["tag"])
        assert {name: [[*d.box, d.score] for d in dets] for name, dets in kept.items()} == case["details"], k
        result = evaluate_image(metadata, kept, color_rule)
        assert result.correct == case["correct"], (k, result.reason, case["reason"])
        assert _relations_as_sets(result.reason) == _relations_as_sets(case["reason"]), k


def test_equal_scores_put_the_later_detection_first_and_threshold_is_float32():
    a, b = box(0, 0, 10, 10, 0.5), box(100, 0, 110, 10, 0.5)
    assert keep_detections({"dog": [a, b]}, "colors")["dog"] == [b, a]  # np.argsort(scores)[::-1]
    at_threshold = box(0, 0, 10, 10, float(np.float32(0.3)))  # 0.30000001 > 0.3 in float64, not in float32
    assert keep_detections({"dog": [at_threshold]}, "colors") == {}
    # the tie decides a colour verdict: only the first `count` detections are classified
    meta = {"tag": "colors", "include": [{"class": "dog", "count": 1, "color": "red"}]}
    colour_of_x = lambda dets, name: ["red" if d.box[0] == 100 else "blue" for d in dets]  # noqa: E731
    assert evaluate_image(meta, keep_detections({"dog": [a, b]}, "colors"), colour_of_x).correct
