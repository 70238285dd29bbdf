"""`moving-digits-t2v-mini` (offline text-to-video toy, NOT VBench) and its bundled model `digits-t2v-mini`: the
suite, the scores on ground-truth renders against broken videos (explicit thresholds), refusal of bad folders before
anything is stored, the model's decoding against its teacher-forced training path, and a run end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.video import digits_t2v as model_module
from harness.api import Request
from harness.datasets import digits_t2v as suite
from harness.errors import ArbenchError, InputError
from harness.metrics.video import write_video
from harness.registry import METHODS, TASKS
from harness.runner import RunOptions, Runner
from harness.store import Store
from run_context_double import FakeContext
from tasks.digits_t2v import DIMENSIONS, MovingDigitsT2V
from tasks.vbench import VBenchVideos

#: A subset of the suite for fast tests: two digits, every motion (10 prompts).
SUBSET = [r for r in suite.prompt_suite() if r["auxiliary_info"]["digit"] in (0, 7)]
PER_PROMPT = 2


def test_suite_is_vbench_shaped_and_labelled_not_vbench():
    records = suite.prompt_suite()
    assert len(records) == 50 and len({r["prompt_en"] for r in records}) == 50
    assert records[0] == {"prompt_en": "a 0 moving left", "auxiliary_info": {"digit": 0, "motion": "left"},
                          "dimension": ["digit_class", "motion_direction", "subject_consistency_digits"]}
    counts = {d: sum(d in r["dimension"] for r in records) for d in DIMENSIONS}
    assert counts == {"digit_class": 50, "motion_direction": 40, "subject_consistency_digits": 40,
                      "temporal_flickering": 10}
    task = TASKS.get("moving-digits-t2v-mini")()
    requests = task.requests()
    assert len(requests) == 250 and len({r.seed for r in requests}) == 250
    assert requests[7].id == "a 0 moving right-2"
    assert requests[7].condition == {"prompt": "a 0 moving right", "prompt_index": 1, "sample_index": 2,
                                     "num_frames": 8, "height": 32, "width": 32, "fps": 8}
    assert "NOT VBench" in task.description and task.offline and task.demo_methods == ("digits-t2v-mini",)
    assert "vbench-full-info" not in str(task.signature()) and "digits_net_sha256:" in str(task.signature())


@pytest.fixture(scope="module")
def truth() -> dict[str, np.ndarray]:
    """Ground-truth clips of the held-out digits, PER_PROMPT per prompt of SUBSET."""
    return {r["prompt_en"]: suite.reference_clips(r, PER_PROMPT, seed=5) for r in SUBSET}


def score_variant(folder: Path, truth, change) -> dict[str, float]:
    """Write `change(record, clip)` of every ground-truth clip as mp4s, read them back, score them."""
    folder.mkdir()
    files = []
    for record in SUBSET:
        paths = []
        for s, clip in enumerate(truth[record["prompt_en"]]):
            paths.append(folder / f"{record['prompt_en']}-{s}.mp4")
            write_video(paths[-1], change(record, clip), fps=suite.FPS)
        files.append(paths)
    return {v.name: v.value for v in MovingDigitsT2V().score(VBenchVideos(SUBSET, files), FakeContext(folder))}


def other_digit(record, clip):
    """The same motion with a digit of another class (the prompt's digit + 3)."""
    other = dict(record, auxiliary_info=dict(record["auxiliary_info"], digit=(record["auxiliary_info"]["digit"] + 3)
                                             % 10))
    return suite.reference_clips(other, 1, seed=9)[0]


def test_ground_truth_scores_high_and_each_broken_video_loses_its_dimension(tmp_path, truth):
    gt = score_variant(tmp_path / "gt", truth, lambda r, c: c)
    assert gt["digit_class"] >= 0.9 and gt["subject_consistency_digits"] >= 0.99
    assert gt["motion_direction"] == 1.0 and gt["temporal_flickering"] == 1.0
    assert gt["digits_t2v_score"] == pytest.approx(np.mean([gt[d] for d in DIMENSIONS]))
    rng = np.random.default_rng(0)
    shuffled = score_variant(tmp_path / "shuffled", truth, lambda r, c: c[rng.permutation(len(c))])
    assert shuffled["motion_direction"] <= 0.3 and shuffled["digit_class"] == gt["digit_class"]
    static = score_variant(tmp_path / "static", truth, lambda r, c: np.repeat(c[:1], len(c), axis=0))
    assert static["motion_direction"] == 0.0 and static["temporal_flickering"] == 1.0
    assert score_variant(tmp_path / "reversed", truth, lambda r, c: c[::-1])["motion_direction"] == 0.0
    wrong = score_variant(tmp_path / "wrong", truth, other_digit)
    assert wrong["digit_class"] <= 0.1 and wrong["motion_direction"] == 1.0
    morph = score_variant(tmp_path / "morph", truth, lambda r, c: np.concatenate([c[:4], other_digit(r, c)[4:]]))
    assert morph["subject_consistency_digits"] <= gt["subject_consistency_digits"] - 0.02
    noisy = score_variant(tmp_path / "noisy", truth, lambda r, c: np.clip(
        c.astype(int) + rng.integers(-40, 41, c.shape), 0, 255).astype(np.uint8))
    assert noisy["temporal_flickering"] <= 0.97


@pytest.fixture
def small_suite(monkeypatch, tmp_path, truth):
    """The task on two prompts ("a 0 moving left", "a 0 standing still"), 5 ground-truth videos each, in a folder."""
    records = [SUBSET[0], SUBSET[4]]
    monkeypatch.setattr(MovingDigitsT2V, "suite", lambda self: (records, {r["prompt_en"] for r in records}))
    folder = tmp_path / "videos"
    folder.mkdir()
    for record in records:
        for s in range(5):
            write_video(folder / f"{record['prompt_en']}-{s}.mp4", truth[record["prompt_en"]][s % PER_PROMPT], fps=8)
    return folder


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "a 0 moving left-3.mp4").unlink(), "lacks 1 of the 10 videos of the suite: 'a 0 moving left-3.mp4'"),
    (lambda f: (f / "a 0 moving left-5.mp4").write_bytes(b""), "not videos of the suite: 'a 0 moving left-5.mp4'"),
    (lambda f: (f / "a 0 moving up-0.mp4").write_bytes(b""), "not videos of the suite: 'a 0 moving up-0.mp4'"),
    (lambda f: (f / "a 0 moving left-2.mp4").write_bytes(b"not a video"), "a 0 moving left-2.mp4: cannot be opened"),
    (lambda f: write_video(f / "a 0 moving left-1.mp4", np.zeros((7, 32, 32, 3), np.uint8), fps=8),
     "a 0 moving left-1.mp4: 7 frames of 32x32"),
    (lambda f: write_video(f / "a 0 moving left-1.mp4", np.zeros((8, 64, 64, 3), np.uint8), fps=8), "8 frames of 64x64"),
    (lambda f: write_video(f / "a 0 standing still-4.mp4", np.zeros((8, 32, 32, 3), np.uint8), fps=16),
     "a 0 standing still-4.mp4: 16.0 fps"),
])
def test_bad_folders_are_refused_before_anything_is_stored(small_suite, tmp_path, damage, message):
    damage(small_suite)
    runner = Runner(Store(f"sqlite:///{tmp_path / 'arbench.db'}"), RunOptions(progress=False))
    with pytest.raises(InputError) as error:
        runner.score("moving-digits-t2v-mini", small_suite)
    assert message in str(error.value) and "flicker_samples" not in str(error.value)
    assert runner.store.records() == []


def test_tokens_round_trip_and_decoding_matches_the_teacher_forced_model():
    clips = suite.render_prompt_clips(np.rint(suite.digit_sprites("train")[0][:3] * 3) / 3, ["left", "up", "still"],
                                      np.random.default_rng(0))
    tokens = model_module.videos_to_tokens(clips)
    assert tokens.shape == (3, 8, 64) and tokens.max() < 256
    assert np.array_equal(model_module.tokens_to_videos(tokens, 8), clips)
    torch.manual_seed(0)
    model = model_module.FrameARTransformer().eval()
    words = torch.tensor([model_module.encode_prompt(p, 6) for p in ("a 3 moving left", "a 5 standing still")])
    greedy = model_module.generate(model, words, [torch.Generator().manual_seed(i) for i in range(2)], 0.0, 0.0)
    with torch.no_grad():  # every greedy token is the argmax of the teacher-forced logits on the decoded video
        assert torch.equal(model.training_logits(words, greedy).argmax(dim=-1), greedy)
    with pytest.raises(ArbenchError, match="unknown: dancing"):
        model_module.encode_prompt("a 3 dancing left", 6)


def test_method_seeds_per_request_and_refuses_other_shapes():
    method = METHODS.get("digits-t2v-mini")()
    condition = {"prompt": "a 4 moving down", "num_frames": 8, "height": 32, "width": 32, "fps": 8}
    a, b = Request(0, "a", 11, condition), Request(1, "b", 12, dict(condition, prompt="a 9 standing still"))
    together = method.generate([a, b])
    assert together.shape == (2, 8, 32, 32, 3) and together.dtype == np.uint8
    assert np.array_equal(method.generate([b])[0], together[1])
    assert not np.array_equal(method.generate([Request(0, "a", 13, condition)])[0], together[0])
    with pytest.raises(ArbenchError, match="makes 8 frames of 32x32"):
        method.generate([Request(0, "a", 1, dict(condition, height=64))])


def test_end_to_end_run_on_a_small_suite(small_suite, tmp_path):
    runner = Runner(Store(f"sqlite:///{tmp_path / 'arbench.db'}"), RunOptions(progress=False))
    result = runner.run("moving-digits-t2v-mini", "digits-t2v-mini")
    values = {m.name: m.value for m in result.metrics}
    assert set(values) == {"digits_t2v_score", *DIMENSIONS}
    assert all(0.0 <= v <= 1.0 for v in values.values())
    assert runner.store.records()[0]["status"] == "finished"
