"""shapes-t2i, the offline toy of GenEval (not GenEval): grammar, bundled detector, GenEval's rules on rendered
ground truth and on mismatched images, the toy generator end to end through the runner, and the folder refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from harness.datasets import shapes
from harness.errors import ArbenchError, InputError
from harness.features.shapes_detector import ShapesDetector
from harness.metrics.geneval import TAGS, GenEvalRules, evaluate_image, keep_detections
from harness.registry import METHODS, TASKS
from harness.runner import Runner, RunOptions
from harness.store import Store
from tasks.geneval import GenEvalConfig, read_folder, score_images
from tasks.shapes_t2i import METRIC, ShapesT2I

RECORDS = shapes.prompt_records()


@pytest.fixture(scope="module")
def detector():
    return ShapesDetector.from_pretrained()


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_prompts_follow_genevals_schema():
    assert len(RECORDS) == 78 and len(shapes.grammar_records()) == 126
    assert {r["tag"] for r in RECORDS} == set(TAGS)
    position = next(r for r in RECORDS if r["tag"] == "position")
    assert position == {"tag": "position", "include": [{"class": "circle", "count": 1}, {"class": "square", "count": 1,
                        "position": ["left of", 0]}], "prompt": "a photo of a square left of a circle"}
    counting = next(r for r in RECORDS if r["tag"] == "counting")
    assert counting["exclude"] == [{"class": "circle", "count": 3}] and counting["prompt"] == "a photo of two circles"
    assert RECORDS == shapes.prompt_records()  # deterministic


def test_detector_on_rendered_ground_truth(detector):
    """On 240 fresh scenes (a seed the training never used): every object found once at GenEval's counting
    threshold (0.9), with its class, a box of IoU >= 0.9 and its colour; nothing else above 0.3."""
    rng = np.random.default_rng(12345)
    scenes = [shapes.render_scene(RECORDS[i % len(RECORDS)], rng) for i in range(240)]
    exact = boxes_ok = colors_ok = objects = 0
    for scene in scenes:
        image = Image.fromarray(scene.image)
        dets = detector.detect(image)
        strong = keep_detections(dets, "counting")
        loose = keep_detections(dets, "colors")
        want = {s: sum(o.shape == s for o in scene.objects) for s in shapes.SHAPES}
        exact += all(len(strong.get(s, [])) == n and len(loose.get(s, [])) == n for s, n in want.items())
        for obj in scene.objects:
            objects += 1
            found = [d for d in loose.get(obj.shape, []) if iou(d.box, obj.box) >= 0.9]
            boxes_ok += len(found) == 1
            colors_ok += len(found) == 1 and detector.classify(image, found, obj.shape) == [obj.color]
    assert exact / len(scenes) >= 0.99  # measured 1.0 (240 / 240 scenes, 459 objects)
    assert boxes_ok / objects >= 0.99 and colors_ok / objects >= 0.99


def ground_truth_folder(root: Path, per_prompt: int, seed: int = 7, image_for=None) -> Path:
    rng = np.random.default_rng(seed)
    for p, record in enumerate(RECORDS):
        samples = root / f"{p:05d}" / "samples"
        samples.mkdir(parents=True)
        (root / f"{p:05d}" / "metadata.jsonl").write_text(json.dumps(record) + "\n")
        for s in range(per_prompt):
            image = shapes.render_scene(record, rng).image
            Image.fromarray(image_for(record, image, rng) if image_for else image).save(samples / f"{s:04d}.png")
    return root


def score_folder(folder: Path, per_prompt: int, tmp_path: Path, detector) -> dict[str, float]:
    ctx = SimpleNamespace(artifact=lambda name: tmp_path / name, progress=lambda it, total=None, desc="": it)
    images = read_folder(folder, RECORDS, per_prompt)
    return {v.name: v.value for v in score_images(images, detector, detector, GenEvalRules(), ctx)}


def test_genevals_rules_score_ground_truth_near_one(tmp_path, detector):
    values = score_folder(ground_truth_folder(tmp_path / "gt", 2), 2, tmp_path, detector)
    assert values["geneval"] >= 0.99  # measured 1.0
    assert min(values[f"geneval_{t}"] for t in TAGS) >= 0.97


def mirrored(record, image, rng):
    return image[:, ::-1].copy()


def recoloured(record, image, rng):
    """Every object's colour moved one step round the palette."""
    cells = shapes.image_to_cells(image)
    return shapes.cells_to_image(np.where(cells > 0, cells % (len(shapes.PALETTE) - 1) + 1, 0))


def shifted_prompt(record, image, rng):
    """The image of another prompt of another tag (the next tag's prompt of the same rank)."""
    others = [r for r in RECORDS if r["tag"] == TAGS[(TAGS.index(record["tag"]) + 1) % len(TAGS)]]
    return shapes.render_scene(others[RECORDS.index(record) % len(others)], rng).image


def test_rules_fail_images_that_do_not_match(tmp_path, detector):
    """Invariance: a mirror keeps counts and colours but breaks left/right; a recolouring keeps every object but
    breaks every colour clause; another prompt's image fails nearly everything."""
    values = score_folder(ground_truth_folder(tmp_path / "m", 1, image_for=mirrored), 1, tmp_path, detector)
    assert min(values[f"geneval_{t}"] for t in TAGS if t != "position") >= 0.97
    left_right = [r for r in RECORDS if r["tag"] == "position" and r["include"][1]["position"][0].endswith("of")]
    assert values["geneval_position"] == pytest.approx(1 - len(left_right) / 24, abs=0.05)  # above/below pass
    values = score_folder(ground_truth_folder(tmp_path / "c", 1, image_for=recoloured), 1, tmp_path, detector)
    assert values["geneval_colors"] == 0.0 and values["geneval_color_attr"] == 0.0
    assert min(values[f"geneval_{t}"] for t in ("single_object", "two_object", "counting", "position")) >= 0.97
    values = score_folder(ground_truth_folder(tmp_path / "s", 1, image_for=shifted_prompt), 1, tmp_path, detector)
    assert values["geneval"] <= 0.2  # measured 0.083


def test_evaluate_image_is_genevals_on_the_detectors_output(detector):
    record = next(r for r in RECORDS if r["tag"] == "color_attr")
    scene = shapes.render_scene(record, np.random.default_rng(3))
    image = Image.fromarray(scene.image)
    kept = keep_detections(detector.detect(image), record["tag"])
    assert evaluate_image(record, kept, lambda d, n: detector.classify(image, d, n)).correct
    swapped = {**record, "include": [{**c, "color": other["color"]} for c, other in
                                     zip(record["include"], record["include"][::-1])]}
    result = evaluate_image(swapped, kept, lambda d, n: detector.classify(image, d, n))
    assert not result.correct and "expected" in result.reason


def test_generator_seeds_are_per_request():
    method = METHODS.get("shapes-ar-t2i")()
    requests = ShapesT2I(GenEvalConfig(images_per_prompt=1)).requests()[:6]
    together = method.generate(requests)
    apart = np.concatenate([method.generate(requests[:2]), method.generate(requests[2:])])
    assert together.shape == (6, 32, 32, 3) and together.dtype == np.uint8
    assert np.array_equal(together, apart)
    with pytest.raises(ArbenchError, match="only knows the shapes grammar"):
        method.generate([SimpleNamespace(id="x", seed=0, condition={"prompt": "a photo of a dog"})])


def test_run_end_to_end_through_the_task(results_dir):
    assert TASKS.get("shapes-t2i") is ShapesT2I and "NOT GenEval" in ShapesT2I.description
    runner = Runner(store=Store(f"sqlite:///{results_dir / 'db.sqlite'}"),
                    options=RunOptions(batch_size=40, shard_size=50, device="cpu", progress=False))
    result = runner.run("shapes-t2i", "shapes-ar-t2i", {"images_per_prompt": 1})
    values = {m.name: m.value for m in result.metrics}
    assert set(values) == {METRIC, *(f"{METRIC}_{t}" for t in TAGS)} and not any("geneval" in n for n in values)
    assert 0.0 < values[METRIC] <= 1.0
    assert len(read_folder(result.run_dir / "images", RECORDS, 1)) == 78
    rows = [json.loads(line) for line in (result.run_dir / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 78 and np.mean([r["correct"] for r in rows if r["tag"] == "single_object"]) == pytest.approx(
        values[f"{METRIC}_single_object"])
    (record,) = runner.store.records(task="shapes-t2i")
    assert record["status"] == "finished" and "detector_sha256" in record["eval_signature"]


@pytest.mark.parametrize("damage, message", [
    (lambda f: shutil.rmtree(f / "00017"), "lacks 1 of the 78 prompt folders (00017)"),
    (lambda f: (f / "00078").mkdir(), "beyond the 78 official prompts: 00078"),
    (lambda f: (f / "00003" / "metadata.jsonl").write_text(json.dumps(RECORDS[4]) + "\n"), "does not match"),
    (lambda f: Image.new("RGB", (32, 32)).save(f / "00009" / "samples" / "0001.png"), "has 2 images"),
    (lambda f: (f / "00012" / "samples" / "0000.png").write_bytes(b"\x89PNG\r\n\x1a\n broken"), "not a readable PNG"),
])
def test_score_refuses_bad_folders_and_stores_nothing(tmp_path, results_dir, damage, message):
    folder = ground_truth_folder(tmp_path / "images", 1)
    damage(folder)
    runner = Runner(store=Store(f"sqlite:///{results_dir / 'db.sqlite'}"), options=RunOptions(progress=False))
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        runner.score("shapes-t2i", folder, {"images_per_prompt": 1})
    assert runner.store.records() == []


def test_patch_codes_round_trip_scenes():
    from baselines.imagegen.shapes_t2i import CODES, cells_to_tokens, tokens_to_cells
    rng = np.random.default_rng(5)
    cells = np.stack([shapes.render_scene(r, rng).cells for r in shapes.grammar_records()])
    tokens = cells_to_tokens(cells)
    assert tokens.shape == (126, 64) and 0 <= tokens.min() and tokens.max() < CODES
    assert np.array_equal(tokens_to_cells(tokens), cells)
    every_code = np.arange(64)[None] % CODES
    assert np.array_equal(cells_to_tokens(tokens_to_cells(every_code)), every_code)


def test_missing_detector_weights_are_named_before_anything_is_stored(tmp_path, monkeypatch):
    from harness.errors import MissingAssetError
    from harness.features import shapes_detector
    monkeypatch.setattr(shapes_detector, "WEIGHTS_PATH", tmp_path / "gone.safetensors")
    shapes_detector.load_shapes_net.cache_clear()
    try:
        with pytest.raises(MissingAssetError, match="gone.safetensors.*train_shapes_detector"):
            ShapesT2I().check_method(METHODS.get("shapes-ar-t2i")())
    finally:
        shapes_detector.load_shapes_net.cache_clear()
