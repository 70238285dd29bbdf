"""VBench's quality dimensions against VBench's own code (tests/golden/make_vbench.py, seeded random weights)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from golden.golden_weights import layout, seeded_fill
from golden.make_vbench import small_clip_state
from harness.features import vbench_nets
from harness.metrics import vbench

GOLDEN = Path(__file__).parent / "golden" / "vbench" / "golden.npz"


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def test_temporal_flickering_matches_vbench(golden):
    """`cal_score` on the cv2-decoded frames: float32 MAE per pair, mean, (255 - m) / 255."""
    ours = [vbench.temporal_flickering(v) for v in golden["avi_frames"]]
    np.testing.assert_allclose(ours, golden["flicker"], rtol=0, atol=1e-6)
    metric = vbench.VideoMeanScore("temporal_flickering")
    for score in ours:  # one video per update: batching does not change the result
        metric.update([score])
    np.testing.assert_allclose(float(metric.compute()), np.mean(golden["flicker"]), atol=1e-6)


def test_subject_consistency_matches_vbench(golden):
    """DINO's ViT (timm blocks, DINO's positional interpolation at 224 x 403) + `dino_transform` + the
    frame-weighted aggregation of `subject_consistency`."""
    model = vbench_nets.DinoViT(embed_dim=64, depth=2, num_heads=2)
    assert json.loads(layout(model)) == json.loads(str(golden["dino_layout"]))  # DINO's release names and shapes
    seeded_fill(model, 91)
    features = [vbench_nets.dino_features(model, v, batch_size=4) for v in golden["gif_frames"]]
    per_video = [total / count for total, count in map(vbench.frame_consistency, features)]
    np.testing.assert_allclose(per_video, golden["subject_per_video"], rtol=0, atol=1e-6)
    metric = vbench.FrameConsistencyScore("subject_consistency")
    metric.update(features[:1])
    metric.update(features[1:])
    np.testing.assert_allclose(float(metric.compute()), float(golden["subject"]), rtol=0, atol=1e-6)


def test_background_consistency_matches_vbench(golden):
    """open_clip from OpenAI names (float32 on CPU, as `clip.load`) + `clip_transform` + frame-weighted mean."""
    model = vbench_nets.clip_from_openai_state_dict(small_clip_state(512, 92))
    features = [vbench_nets.clip_image_features(model, v) for v in golden["gif_frames"]]
    per_video = [total / count for total, count in map(vbench.frame_consistency, features)]
    np.testing.assert_allclose(per_video, golden["background_per_video"], rtol=0, atol=1e-6)
    metric = vbench.FrameConsistencyScore("background_consistency")
    metric.update(features)
    np.testing.assert_allclose(float(metric.compute()), float(golden["background"]), rtol=0, atol=1e-6)


def test_aesthetic_quality_matches_vbench(golden):
    """CLIP ViT-L/14-shaped embedding, normalised, LAION linear head, / 10, mean over frames then videos."""
    model = vbench_nets.clip_from_openai_state_dict(small_clip_state(768, 93))
    head = seeded_fill(torch.nn.Linear(768, 1), 94)
    per_video = [vbench_nets.aesthetic_score(model, head, v) for v in golden["gif_frames"]]
    np.testing.assert_allclose(per_video, golden["aesthetic_per_video"], rtol=1e-5, atol=1e-7)
    metric = vbench.VideoMeanScore("aesthetic_quality")
    metric.update(per_video)
    np.testing.assert_allclose(float(metric.compute()), float(golden["aesthetic"]), rtol=1e-5, atol=1e-7)


def test_quality_score_matches_cal_final_score(golden):
    """`get_nomalized_score` + `get_quality_score` of scripts/cal_final_score.py (NORMALIZE_DIC, DIM_WEIGHT)."""
    raw = {str(k).replace(" ", "_"): float(v) for k, v in zip(golden["raw_names"], golden["raw_values"])}
    assert set(raw) == set(vbench.ALL_DIMENSIONS)
    score, missing = vbench.quality_score({d: raw[d] for d in vbench.QUALITY_DIMENSIONS})
    assert missing == []
    assert score == pytest.approx(float(golden["quality"]), abs=1e-12)
    value = vbench.quality_score_value({d: raw[d] for d in vbench.QUALITY_DIMENSIONS})
    assert value.name == "quality_score"


def test_partial_quality_score_is_named_and_lists_what_is_missing():
    value = vbench.quality_score_value({"subject_consistency": 0.9, "temporal_flickering": 0.95})
    assert value.name == "quality_score_partial"
    assert "missing background_consistency, motion_smoothness, aesthetic_quality, imaging_quality, dynamic_degree" \
        in value.description
    with pytest.raises(ValueError, match="not VBench quality dimensions"):
        vbench.quality_score({"object_class": 0.5})
