"""The `vbench-quality` task: VBench's prompt suite and sample counts, refusal of bad videos before anything is
stored, missing weights named at once, and the scoring flow (static filter order, per-dimension prompts)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from golden.golden_weights import seeded_fill
from golden.make_vbench import small_clip_state
from harness.errors import InputError, MissingAssetError
from harness.features import amt, musiq, vbench_nets, viclip
from harness.metrics import vbench as rules
from harness.metrics.video import read_video, write_video
from harness.registry import TASKS
from run_context_double import FakeContext
from tasks import vbench as task_module
from tasks.vbench import (FULL_INFO, VBenchQuality, VBenchQualityConfig, VBenchSemantic, VBenchSemanticConfig,
                         quality_prompts, score_semantic, score_videos, semantic_prompts)

DATA = Path(__file__).parent / "data" / "VBench_full_info.json"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "weights").mkdir(parents=True)
    shutil.copyfile(DATA, tmp_path / "home" / "weights" / FULL_INFO.filename)
    return tmp_path / "home"


def test_prompt_suite_and_requests_follow_vbench(home):
    """326 quality prompts; each dimension's own prompt count; 5 samples a prompt, 25 per flickering prompt."""
    prompts = quality_prompts(task_module.load_full_info())
    assert len(prompts) == 326
    counts = {d: sum(d in r["dimension"] for r in prompts) for d in rules.QUALITY_DIMENSIONS}
    assert counts == {"subject_consistency": 72, "background_consistency": 86, "temporal_flickering": 75,
                      "motion_smoothness": 72, "aesthetic_quality": 93, "imaging_quality": 93, "dynamic_degree": 72}
    requests = VBenchQuality().requests()
    assert len(requests) == 251 * 5 + 75 * 25
    assert len({r.seed for r in requests}) == len(requests)
    first = requests[0]
    assert first.id == f"{prompts[0]['prompt_en']}-0"
    assert first.condition == {"prompt": prompts[0]["prompt_en"], "prompt_index": 0, "sample_index": 0,
                               "num_frames": 33, "height": 480, "width": 768, "fps": 12}
    assert len(VBenchQuality(VBenchQualityConfig(flicker_samples=5)).requests()) == 326 * 5
    assert TASKS.get("vbench-quality") is VBenchQuality
    assert VBenchQuality.submission.modality == "text-to-video"


SUITE = [{"prompt_en": "a dog running", "dimension": ["subject_consistency", "motion_smoothness", "dynamic_degree"]},
         {"prompt_en": "In a still frame, a stop sign", "dimension": ["temporal_flickering"]},
         {"prompt_en": "a red car, oil painting",
          "dimension": ["aesthetic_quality", "background_consistency", "imaging_quality"]},
         {"prompt_en": "a cat and a dog", "dimension": ["multiple_objects"]}]
CONFIG = VBenchQualityConfig(num_frames=4, height=128, width=136, fps=8, flicker_samples=7)


def clip(seed: int, moving: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (128, 136, 3)).astype(np.uint8)
    return np.stack([np.roll(base, 9 * i if moving else 0, axis=1) for i in range(4)])


@pytest.fixture
def suite_folder(tmp_path, monkeypatch):
    """A small suite (three quality prompts and a semantic one) in VBench's folder layout."""
    monkeypatch.setattr(task_module, "load_full_info", lambda path=None: SUITE)
    folder = tmp_path / "videos"
    folder.mkdir()
    for record in SUITE[:3]:
        count = 7 if "temporal_flickering" in record["dimension"] else 5
        for s in range(count):  # flickering prompt: samples 0, 2 and 10.. move, the rest are still
            moving = "temporal_flickering" not in record["dimension"] or s in (0, 2)
            write_video(folder / f"{record['prompt_en']}-{s}.mp4", clip(s, moving), fps=8)
    write_video(folder / "a cat and a dog-0.mp4", clip(0, True), fps=8)  # another VBench prompt: ignored
    return folder


def test_folder_is_read_in_vbench_layout(suite_folder):
    videos = VBenchQuality(CONFIG).validate({p.name: p for p in suite_folder.iterdir()}, "test")
    assert [len(f) for f in videos.files] == [5, 7, 5]
    assert [r["prompt_en"] for r in videos.prompts] == [r["prompt_en"] for r in SUITE[:3]]


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "a dog running-3.mp4").unlink(), "lacks 1 of the 17 videos of the suite: 'a dog running-3.mp4'"),
    (lambda f: (f / "a dog running-5.mp4").write_bytes(b""), "not videos of the suite: 'a dog running-5.mp4'"),
    (lambda f: (f / "a dog running-2.mp4").write_bytes(b"not a video"), "a dog running-2.mp4: cannot be opened"),
    (lambda f: write_video(f / "a dog running-1.mp4", clip(1, True)[:3], fps=8), "a dog running-1.mp4: 3 frames"),
    (lambda f: write_video(f / "a dog running-1.mp4", clip(1, True)[:, :, :128], fps=8), "4 frames of 128x128"),
    (lambda f: write_video(f / "a dog running-4.mp4", clip(1, True), fps=16), "a dog running-4.mp4: 16.0 fps"),
])
def test_bad_folders_are_refused_naming_the_first_offenders(suite_folder, damage, message):
    damage(suite_folder)
    with pytest.raises(InputError) as error:
        VBenchQuality(CONFIG).load_samples(suite_folder)
    assert message in str(error.value)


def test_missing_weights_are_named_at_once(suite_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(MissingAssetError) as error:
        VBenchQuality(CONFIG).load_samples(suite_folder)
    text = str(error.value)
    assert "needs 8 files that are missing" in text
    for spec in (FULL_INFO, vbench_nets.DINO_VITB16, vbench_nets.CLIP_VIT_B32_OPENAI, vbench_nets.LAION_AESTHETIC_VIT_L14):
        assert spec.filename in text
    assert "ViT-L-14.pt" in text and "raft-things.pth" in text and musiq.MUSIQ_SPAQ.filename in text
    assert "amt-s.pth" in text and "huggingface.co/lalala125/AMT" in text


class FlowDouble(torch.nn.Module):
    """A test double with RAFT's call signature: a flow whose magnitude is 40x the frames' mean absolute
    difference (RAFT itself is checked against VBench's in tests/test_vbench_golden.py)."""

    def forward(self, image1, image2, num_flow_updates):
        magnitude = 40 * (image2 - image1).abs().mean(dim=1, keepdim=True) / 2
        return [torch.cat([magnitude, torch.zeros_like(magnitude)], dim=1)]


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a loaded two-core machine are many times slower
    yield
    torch.set_num_threads(previous)


def test_scoring_flow_filters_flickering_videos_and_scores_each_dimension_on_its_prompts(suite_folder, tmp_path,
                                                                                         one_thread):
    videos = VBenchQuality(CONFIG).validate({p.name: p for p in suite_folder.iterdir()}, "test")
    dino = seeded_fill(vbench_nets.DinoViT(embed_dim=64, depth=1, num_heads=2), 91)
    clip_b = vbench_nets.clip_from_openai_state_dict(small_clip_state(512, 92))
    clip_l = vbench_nets.clip_from_openai_state_dict(small_clip_state(768, 93))
    head = seeded_fill(torch.nn.Linear(768, 1), 94)
    iqa = seeded_fill(musiq.MUSIQ(hidden=64, mlp_dim=128, heads=2, layers=1), 96)
    interpolator = seeded_fill(amt.AMTS(), 97)  # AMT-S itself is checked against VBench's in test_amt_golden.py
    ctx = FakeContext(tmp_path)
    values = {v.name: v for v in score_videos(videos, ctx, fps=8, dino=dino, clip_b=clip_b, clip_l=clip_l,
                                              head=head, flow_model=FlowDouble(), iqa=iqa,
                                              interpolator=interpolator)}
    results = json.loads((tmp_path / "vbench_results.json").read_text())
    flicker = [Path(r["video_path"]).name for r in results["temporal_flickering"][1]]
    # static filter: file-name order, the moving samples 0 and 2 dropped, the first five still ones kept
    assert flicker == [f"In a still frame, a stop sign-{s}.mp4" for s in (1, 3, 4, 5, 6)]
    assert values["temporal_flickering"].value == 1.0
    assert values["dynamic_degree"].value == 1.0  # every "a dog running" sample moves 9 px a frame
    per_video = {d: [r["video_results"] for r in results[d][1]] for d in results}
    assert [len(per_video[d]) for d in ("subject_consistency", "background_consistency", "aesthetic_quality",
                                        "imaging_quality", "motion_smoothness")] == [5, 5, 5, 5, 5]
    # motion smoothness: on the "a dog running" samples only, each as `amt.motion_smoothness` of its frames
    dogs = sorted(p for p in suite_folder.iterdir() if p.name.startswith("a dog running"))
    expected = [amt.motion_smoothness(interpolator, read_video(p)) for p in dogs]
    assert sorted(per_video["motion_smoothness"]) == pytest.approx(sorted(expected), abs=1e-12)
    assert values["motion_smoothness"].value == pytest.approx(np.mean(expected), abs=1e-12)
    # imaging quality: VBench keeps MUSIQ's 0..100 scale per video and divides the dimension by 100
    assert values["imaging_quality"].value == pytest.approx(np.mean(per_video["imaging_quality"]) / 100)
    # all seven quality dimensions: VBench's quality score itself, no partial one
    assert "quality_score_partial" not in values
    assert values["quality_score"].value == pytest.approx(rules.quality_score(
        {d: values[d].value for d in rules.QUALITY_DIMENSIONS})[0], abs=1e-12)
    assert VBenchQuality.primary_metric == "quality_score"
    assert ctx.extra_provenance["vbench_static_videos_per_prompt"] == {"In a still frame, a stop sign": 5}


# -- vbench-semantic ---------------------------------------------------------------------------------------------
STYLE_SUITE = [{"prompt_en": "a beach, Van Gogh style", "dimension": ["appearance_style"],
                "auxiliary_info": {"appearance_style": {"appearance_style": "Van Gogh style"}}},
               {"prompt_en": "a dog running", "dimension": ["subject_consistency"]},
               {"prompt_en": "a beach, oil painting", "dimension": ["appearance_style"],
                "auxiliary_info": {"appearance_style": {"appearance_style": "oil painting"}}},
               {"prompt_en": "a boat sailing, zoom in", "dimension": ["temporal_style"]},
               {"prompt_en": "a panda drinking coffee", "dimension": ["overall_consistency"]}]
SEMANTIC_CONFIG = VBenchSemanticConfig(num_frames=4, height=128, width=136, fps=8)


def test_semantic_suite_follows_vbench(home):
    """90 appearance-style, 100 temporal-style, 93 overall-consistency prompts, 5 samples each; no semantic or total
    score is claimed."""
    prompts = semantic_prompts(task_module.load_full_info())
    counts = {d: sum(d in r["dimension"] for r in prompts) for d in task_module.SEMANTIC_SCORED}
    assert counts == {"appearance_style": 90, "temporal_style": 100, "overall_consistency": 93}
    assert len(prompts) == 283
    styles = [r for r in prompts if "appearance_style" in r["dimension"]]
    assert [task_module.style_text(r) for r in styles[:2]] == ["Van Gogh style", "oil painting"]
    requests = VBenchSemantic().requests()
    assert len(requests) == 283 * 5
    assert requests[0].condition["prompt"] == prompts[0]["prompt_en"]
    assert TASKS.get("vbench-semantic") is VBenchSemantic
    assert VBenchSemantic.primary_metric == "appearance_style"
    assert "flicker_samples" not in VBenchSemantic().settings()


@pytest.fixture
def style_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(task_module, "load_full_info", lambda path=None: STYLE_SUITE)
    folder = tmp_path / "videos"
    folder.mkdir()
    for p, record in enumerate(STYLE_SUITE):
        for s in range(5):
            write_video(folder / f"{record['prompt_en']}-{s}.mp4", clip(10 * p + s, True), fps=8)
    return folder


def test_semantic_folder_refusals_and_missing_weights(style_folder, tmp_path, monkeypatch):
    videos = VBenchSemantic(SEMANTIC_CONFIG).validate({p.name: p for p in style_folder.iterdir()}, "test")
    assert [r["prompt_en"] for r in videos.prompts] == ["a beach, Van Gogh style", "a beach, oil painting",
                                                        "a boat sailing, zoom in", "a panda drinking coffee"]
    (style_folder / "a beach, oil painting-4.mp4").unlink()
    with pytest.raises(InputError, match="lacks 1 of the 20 videos of the suite: 'a beach, oil painting-4.mp4'. "
                                         "Generate 5 videos per prompt"):
        VBenchSemantic(SEMANTIC_CONFIG).load_samples(style_folder)
    write_video(style_folder / "a beach, oil painting-4.mp4", clip(1, True), fps=8)
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(MissingAssetError) as error:
        VBenchSemantic(SEMANTIC_CONFIG).load_samples(style_folder)
    assert "needs 3 files that are missing" in str(error.value)
    for spec in (FULL_INFO, vbench_nets.CLIP_VIT_B32_OPENAI, viclip.VICLIP_L14):
        assert spec.filename in str(error.value)


def test_semantic_dimensions_score_each_prompt_on_its_own_text(style_folder, tmp_path, one_thread):
    """Appearance style against each prompt's style text, temporal style and overall consistency against the
    prompt itself, each only on its own prompts (the networks are checked against VBench's in the golden tests)."""
    videos = VBenchSemantic(SEMANTIC_CONFIG).validate({p.name: p for p in style_folder.iterdir()}, "test")
    model = vbench_nets.clip_from_openai_state_dict(small_clip_state(512, 97))
    video_text = seeded_fill(viclip.ViCLIP(viclip.ViCLIPVision(224, 14, width=32, layers=1, heads=1, output_dim=16),
                                           viclip.ViCLIPText(embed_dim=16, width=32, heads=1, layers=1)), 98)
    values = score_semantic(videos, FakeContext(tmp_path), clip_b=model, video_text=video_text)
    # no semantic_score: VBench's needs all nine semantic dimensions
    assert [v.name for v in values] == ["appearance_style", "temporal_style", "overall_consistency"]
    assert [v.unit for v in values] == ["CLIP similarity", "cosine", "cosine"]
    all_results = json.loads((tmp_path / "vbench_results.json").read_text())
    for d, prompt in (("temporal_style", "a boat sailing, zoom in"), ("overall_consistency", "a panda drinking coffee")):
        rows = all_results[d][1]
        assert [Path(r["video_path"]).name for r in rows] == [f"{prompt}-{s}.mp4" for s in range(5)]
        expected = [viclip.video_text_score(video_text, read_video(Path(r["video_path"])), prompt) for r in rows]
        assert [r["video_results"] for r in rows] == pytest.approx(expected, rel=1e-6)
        assert dict((v.name, v.value) for v in values)[d] == pytest.approx(np.mean(expected), rel=1e-6)
    results = all_results["appearance_style"][1]
    assert len(results) == 10
    expected = []
    for r in results:
        style = "Van Gogh style" if "Van Gogh" in r["video_path"] else "oil painting"
        frames = vbench_nets.appearance_style_scores(model, read_video(Path(r["video_path"])), style)
        assert r["frame_results"] == pytest.approx(frames, rel=1e-6)
        assert r["video_results"] == pytest.approx(np.mean(frames), rel=1e-6)
        expected += frames
    assert values[0].value == pytest.approx(np.mean(expected), rel=1e-6)
