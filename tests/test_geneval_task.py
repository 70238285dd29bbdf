"""The GenEval task: folder reader and its refusals, generation layout, scoring pipeline and canary, missing weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from harness.errors import ArbenchError, InputError, MissingAssetError
from harness.metrics.geneval import TAGS, Detection, GenEvalRules
from harness.registry import TASKS, register_method
from harness.runner import Runner, RunOptions
from harness.store import Store
from harness.protocols.text_to_image import TextToImage
from tasks.geneval import METADATA, GenEval, GenEvalConfig, load_metadata, read_folder, score_images

DATA = Path(__file__).parent / "data" / "geneval_evaluation_metadata.jsonl"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """ARBENCH_HOME with the prompt metadata in its cache, and no detector or CLIP weights."""
    path = tmp_path / "home"
    (path / "weights").mkdir(parents=True)
    shutil.copyfile(DATA, path / "weights" / METADATA.filename)
    monkeypatch.setenv("ARBENCH_HOME", str(path))
    return path


def write_folder(root: Path, per_prompt: int = 1, size: int = 8) -> Path:
    for p, record in enumerate(load_metadata()):
        samples = root / f"{p:05d}" / "samples"
        samples.mkdir(parents=True)
        (root / f"{p:05d}" / "metadata.jsonl").write_text(json.dumps(record) + "\n")
        for s in range(per_prompt):
            Image.new("RGB", (size, size), (p % 256, s, 0)).save(samples / f"{s:04d}.png")
    return root


@pytest.fixture
def folder(home, tmp_path):
    return write_folder(tmp_path / "images")


def task(**settings):
    return GenEval(GenEvalConfig(images_per_prompt=1, **settings))


def test_registered_with_full_signature(home):
    assert TASKS.get("geneval") is GenEval
    sig = str(GenEval().signature())
    for part in ("prompts_sha256", "mmdet2-mask2former-swin-s-coco:743b7d99", "clip-vit-l14-openai-quickgelu",
                 "cv2-bilinear-short800", "counting_threshold"):
        assert part in sig


def test_reader_accepts_an_official_tree(folder):
    images = read_folder(folder, load_metadata(), 1)
    assert len(images) == 553
    assert images[0].path == folder / "00000" / "samples" / "0000.png"
    assert images[300].metadata == load_metadata()[300]
    (folder / "00007" / "grid.png").write_bytes(b"ignored, as GenEval ignores it")
    (folder / "notes").mkdir()
    assert len(read_folder(folder, load_metadata(), 1)) == 553


@pytest.mark.parametrize("damage, message", [
    (lambda f: shutil.rmtree(f / "00017"), "lacks 1 of the 553 prompt folders (00017)"),
    (lambda f: (f / "00553").mkdir(), "beyond the 553 official prompts: 00553"),
    (lambda f: (f / "00003" / "metadata.jsonl").unlink(), "00003/metadata.jsonl is missing"),
    (lambda f: (f / "00003" / "metadata.jsonl").write_text(
        json.dumps({**load_metadata()[4]}) + "\n"), "does not match the official prompt"),
    (lambda f: (f / "00003" / "metadata.jsonl").write_text("{not json"), "is not JSON"),
    (lambda f: Image.new("RGB", (8, 8)).save(f / "00009" / "samples" / "0001.png"), "has 2 images"),
    (lambda f: (f / "00009" / "samples" / "0000.png").unlink(), "has 0 images"),
    (lambda f: Image.new("RGBA", (8, 8)).save(f / "00011" / "samples" / "0000.png"), "is a RGBA image"),
    (lambda f: Image.new("L", (8, 8)).save(f / "00011" / "samples" / "0000.png"), "is a L image"),
    (lambda f: (f / "00012" / "samples" / "0000.png").write_bytes(b"\x89PNG\r\n\x1a\n broken"), "not a readable PNG"),
])
def test_reader_refuses_bad_folders(folder, damage, message):
    damage(folder)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        task().load_samples(folder)


def test_score_without_weights_names_them_and_stores_nothing(folder, results_dir):
    runner = Runner(store=Store(f"sqlite:///{results_dir / 'db.sqlite'}"))
    with pytest.raises(MissingAssetError) as info:
        runner.score("geneval", folder, {"images_per_prompt": 1})
    assert "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth" in str(info.value)
    assert "download.openmmlab.com" in str(info.value)
    assert runner.store.records() == []


def test_missing_metadata_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(MissingAssetError, match="geneval_evaluation_metadata.jsonl"):
        task().requests()


class TinyT2I(TextToImage):
    name = "tiny-t2i"
    description = "test: seeded noise images"

    def generate(self, requests):
        return np.stack([np.random.default_rng(r.seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
                         for r in requests])


def test_requests_and_generated_layout(home, tmp_path):
    t = GenEval(GenEvalConfig(images_per_prompt=2))
    requests = t.requests()
    assert len(requests) == 1106 and requests[3].id == "00001/0001"
    assert requests[3].condition["prompt"] == load_metadata()[1]["prompt"]
    assert len({r.seed for r in requests}) == 1106
    method = TinyT2I()
    shards = []
    for k in range(0, len(requests), 500):
        shard = tmp_path / f"shard-{k}"
        shard.mkdir()
        t.write_shard(method.generate(requests[k:k + 500]), requests[k:k + 500], shard)
        shards.append(shard)
    out = t.assemble_folder(shards, tmp_path / "images")
    images = read_folder(out, load_metadata(), 2)
    assert len(images) == 1106
    again = np.asarray(Image.open(out / "00001" / "samples" / "0001.png"))
    assert np.array_equal(again, method.generate([requests[3]])[0])
    with pytest.raises(ArbenchError, match="uint8"):
        t.write_shard(np.zeros((2, 6, 6, 3), np.float32), requests[:2], tmp_path)


def test_run_refuses_before_generating_without_weights(home):
    with pytest.raises(MissingAssetError, match="mask2former"):
        task().check_method(TinyT2I())


def detections_for(record, good):
    """What the prompt asks for, placed to satisfy its position clause (good), or nothing (bad)."""
    dets = {"person": [Detection((0, 0, 1, 1), 0.2)]}  # below every threshold
    for k, clause in enumerate(record["include"] if good else []):
        relation = clause.get("position", [None])[0]
        x = 100.0 * k + {"left of": -400.0, "right of": 400.0}.get(relation, 0.0)
        y = {"above": -400.0, "below": 400.0}.get(relation, 0.0)
        dets.setdefault(clause["class"], []).extend(
            Detection((500 + x + 30 * i, 500 + y, 520 + x + 30 * i, 520 + y), 0.95, np.ones((4, 4), bool))
            for i in range(clause["count"]))
    return dets


class OneAtATime:
    def detect_batch(self, images):
        return [self.detect(image) for image in images]


class PlannedDetector(OneAtATime):
    """Returns planned detections for each image in turn: correct ones on even prompts, nothing on odd ones."""

    def __init__(self, images):
        self.queue = list(images)
        self.record = None

    def detect(self, image):
        sample = self.queue.pop(0)
        self.record = sample.metadata
        return detections_for(sample.metadata, good=sample.prompt_index % 2 == 0)


class PromptColors:
    """Predicts the colour the current prompt asks for."""

    def __init__(self, detector):
        self.detector = detector

    def classify(self, image, dets, name):
        wanted = next(c["color"] for c in self.detector.record["include"] if c["class"] == name)
        return [wanted] * len(dets)


def test_score_images_pipeline_artifact_and_canary(home, tmp_path):
    records = load_metadata()
    images = read_folder(write_folder(tmp_path / "imgs"), records, 1)
    ctx = SimpleNamespace(artifact=lambda name: tmp_path / name, progress=lambda it, total=None, desc="": it)
    detector = PlannedDetector(images)
    values = {v.name: v.value for v in score_images(images, detector, PromptColors(detector), GenEvalRules(), ctx)}
    expected = {tag: np.mean([p % 2 == 0 for p, r in enumerate(records) if r["tag"] == tag]) for tag in TAGS}
    assert [values[f"geneval_{t}"] for t in TAGS] == pytest.approx([expected[t] for t in TAGS], abs=1e-12)
    assert values["geneval"] == pytest.approx(np.mean(list(expected.values())), abs=1e-12)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 553 and rows[0]["correct"] is True and rows[1]["correct"] is False
    assert set(rows[0]) == {"filename", "tag", "prompt", "correct", "reason", "metadata", "details"}

    class Batched(PlannedDetector):  # remembers which record each image object answers
        def __init__(self, images):
            super().__init__(images)
            self.by_image, self.chunks = {}, []

        def detect_batch(self, images):
            self.chunks.append(len(images))
            out = []
            for image in images:
                out.append(self.detect(image))
                self.by_image[id(image)] = self.record
            return out

    class ImageColors:  # the colour each image's own prompt asks for, however the detector batches
        def __init__(self, detector):
            self.detector = detector

        def classify(self, image, dets, name):
            record = self.detector.by_image[id(image)]
            return [next(c["color"] for c in record["include"] if c["class"] == name)] * len(dets)

    batched = Batched(images)
    values5 = {v.name: v.value for v in score_images(images, batched, ImageColors(batched), GenEvalRules(), ctx,
                                                     batch_size=5)}
    assert values5 == values and batched.chunks == [5] * 110 + [3]

    class Blind(OneAtATime):
        def detect(self, image):
            return {"person": [Detection((0, 0, 1, 1), 0.1)]}

    with pytest.raises(ArbenchError, match="canary: the detector found no object"):
        score_images(images, Blind(), PromptColors(detector), GenEvalRules(), ctx)

    class OnlyPeople(OneAtATime):
        def detect(self, image):
            return {"person": [Detection((0, 0, 1, 1), 0.99)]}

    with pytest.raises(ArbenchError, match="canary: the GenEval score is exactly 0"):
        no_person = [next(i for i in images if i.metadata["tag"] == tag
                          and all(c["class"] != "person" for c in i.metadata["include"])) for tag in TAGS]
        score_images(no_person, OnlyPeople(), None, GenEvalRules(), ctx)


@register_method("geneval-test-t2i")
class RegisteredTinyT2I(TinyT2I):
    """TinyT2I under a registered name, for the runner."""


def test_run_generates_the_official_layout_scores_and_stores(home, results_dir, monkeypatch):
    def scripted_score(self, samples, ctx):
        detector = PlannedDetector(samples)
        return score_images(samples, detector, PromptColors(detector), self.rules, ctx)

    monkeypatch.setattr(GenEval, "require_assets", lambda self: None)
    monkeypatch.setattr(GenEval, "score", scripted_score)
    runner = Runner(store=Store(f"sqlite:///{results_dir / 'db.sqlite'}"),
                    options=RunOptions(batch_size=7, shard_size=200, device="cpu", progress=False))
    result = runner.run("geneval", "geneval-test-t2i", {"images_per_prompt": 1})
    values = {m.name: m.value for m in result.metrics}
    assert set(values) == {"geneval", *(f"geneval_{t}" for t in TAGS)}
    assert 0.4 < values["geneval"] < 0.6  # even prompts pass, odd ones fail
    folder = result.run_dir / "images"
    assert len(read_folder(folder, load_metadata(), 1)) == 553
    assert len((result.run_dir / "results.jsonl").read_text().splitlines()) == 553
    (record,) = runner.store.records(task="geneval")
    assert record["status"] == "finished" and "prompts_sha256" in record["eval_signature"]
