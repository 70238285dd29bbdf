"""VBench's appearance-style dimension against VBench's own code and OpenAI's CLIP
(tests/golden/make_vbench_semantic.py, seeded random weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from golden.make_vbench import small_clip_state
from harness.features import vbench_nets
from harness.metrics import vbench

GOLDEN = Path(__file__).parent / "golden" / "vbench_semantic" / "golden.npz"


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN, allow_pickle=False))


def test_open_clip_tokenizes_every_style_text_as_openai_clip(golden):
    """The 90 appearance-style texts of VBench's suite: open_clip's `tokenize` gives OpenAI's `clip.tokenize` ids."""
    import open_clip

    assert len(golden["style_texts"]) == 90
    ours = open_clip.tokenize([str(t) for t in golden["style_texts"]]).numpy()
    np.testing.assert_array_equal(ours, golden["style_tokens"])


def test_appearance_style_matches_vbench(golden):
    """open_clip built from OpenAI names (float32, as `clip.load` on a CPU) + `clip_transform_Image` on PIL frames +
    ``exp(logit_scale) * cos / 100`` per frame; per video the mean; the dimension frame-weighted over all videos."""
    model = vbench_nets.clip_from_openai_state_dict(small_clip_state(512, 97))
    np.testing.assert_allclose(float(model.logit_scale.detach()), float(golden["logit_scale"]), rtol=0, atol=0)
    videos = [golden["gif_frames"][0], golden["gif_frames"][1], golden["gif_frames"][2], golden["large_frames"]]
    styles = [str(golden["styles"][0])] * 2 + [str(golden["styles"][1])] * 2
    per_frame = [vbench_nets.appearance_style_scores(model, v, s, batch_size=4) for v, s in zip(videos, styles)]
    np.testing.assert_allclose(np.concatenate(per_frame), golden["per_frame"], rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose([np.mean(f) for f in per_frame], golden["per_video"], rtol=1e-4, atol=1e-8)
    metric = vbench.FrameMeanScore("appearance_style")
    metric.update(per_frame[0] + per_frame[1])
    metric.update(per_frame[2])
    metric.update(per_frame[3])
    np.testing.assert_allclose(float(metric.compute()), float(golden["appearance_style"]), rtol=1e-4, atol=1e-8)
