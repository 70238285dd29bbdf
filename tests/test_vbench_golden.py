"""VBench's quality dimensions against VBench's own code (tests/golden/make_vbench.py, seeded random weights)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from golden.golden_weights import layout, seeded_fill, seeded_state
from golden.make_vbench import small_clip_state
from harness.features import musiq, raft, vbench_nets
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


def test_raft_dynamic_degree_and_static_filter_match_vbench(golden):
    """torchvision's raft_large with VBench's RAFT weights mapped by name (seeded by upstream's names), sintel
    padding, 20 iterations: the flow of the first pair dynamic degree compares, its top-5% score, and the
    decisions of `check_move` / `check_static` on VBench's recorded per-pair scores."""
    shapes = json.loads(str(golden["raft_layout"]))
    reference = {name: torch.zeros(shape, dtype=torch.int64 if name.endswith("num_batches_tracked") else torch.float32)
                 for name, shape in shapes.items()}
    model = raft.build_raft_large()
    model.load_state_dict(raft.raft_things_to_torchvision(seeded_state(reference, 95)), strict=True)
    frames = golden["motion_frames"]
    kept = vbench.dynamic_degree_frames(len(frames), 16)  # the golden clip is 16 fps: every 2nd frame
    assert kept == [0, 2, 4, 6]
    flow = raft.raft_flow(model.eval(), frames[0], frames[2])
    assert flow.shape == (2, 128, 152)  # the padded size, as VBench reads it
    np.testing.assert_allclose(flow[:, ::4, ::4], golden["flow02_every4"], rtol=1e-5, atol=1e-3)
    assert raft.top_flow_magnitude(flow, 0.05) == pytest.approx(float(golden["dynamic_scores"][0]), rel=1e-5)
    side = min(frames.shape[1:3])
    assert vbench.is_dynamic(list(golden["dynamic_scores"]), side, len(kept)) == bool(golden["dynamic"])
    assert vbench.is_static(list(golden["static_scores"]), side, len(frames)) == bool(golden["static"])


def test_imaging_quality_matches_vbench_with_pyiqa_musiq(golden):
    """MUSIQ (pyiqa's names and layout) on a frame wider than 512 px: VBench's 'longer' resize to 77 x 512,
    multi-scale patches (224, 384, original), per-frame scores averaged, the dimension / 100."""
    model = musiq.MUSIQ(hidden=64, mlp_dim=128, heads=2, layers=2)
    assert json.loads(layout(model)) == json.loads(str(golden["musiq_layout"]))
    seeded_fill(model, 96)
    per_video = musiq.imaging_quality(model, golden["musiq_frames"])
    assert per_video == pytest.approx(float(golden["musiq_per_video"][0]), rel=1e-5)
    metric = vbench.VideoMeanScore("imaging_quality")
    metric.update([per_video / 100])
    assert float(metric.compute()) == pytest.approx(float(golden["musiq"]), rel=1e-5)


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


def test_clip_on_cuda_is_in_openai_convert_weights_precision():
    """`clip.load` on CUDA casts only convolutions, linear/attention weights and the projections to float16;
    LayerNorms (computed in float32), embeddings and logit_scale stay float32. A plain `.half()` casts them all."""
    from open_clip.transformer import LayerNormFp32

    model = vbench_nets.clip_from_openai_state_dict(small_clip_state(512, 92), half=True)
    v = model.visual
    assert v.conv1.weight.dtype == v.proj.dtype == model.text_projection.dtype == torch.float16
    assert v.transformer.resblocks[0].attn.in_proj_weight.dtype == torch.float16
    assert v.ln_pre.weight.dtype == v.class_embedding.dtype == v.positional_embedding.dtype == torch.float32
    assert model.logit_scale.dtype == model.token_embedding.weight.dtype == torch.float32
    assert isinstance(v.ln_pre, LayerNormFp32) and isinstance(model.ln_final, LayerNormFp32)
    assert vbench_nets.clip_from_openai_state_dict(small_clip_state(512, 92)).visual.conv1.weight.dtype == torch.float32
