"""ViCLIP and VBench's temporal style / overall consistency against VBench's own code (tests/golden/make_viclip.py,
seeded random weights)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from golden.golden_weights import layout, seeded_fill
from harness.features import viclip
from harness.metrics import vbench

GOLDEN = Path(__file__).parent / "golden" / "viclip" / "golden.npz"


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN, allow_pickle=False))


@pytest.fixture(scope="module")
def model(golden):
    small = viclip.ViCLIP(viclip.ViCLIPVision(224, 14, width=64, layers=2, heads=2, output_dim=32),
                          viclip.ViCLIPText(embed_dim=32, width=64, heads=2, layers=2))
    assert json.loads(layout(small)) == json.loads(str(golden["layout"]))  # the release's names and shapes
    return seeded_fill(small, 98).eval()


def test_tokens_match_viclip_tokenizer(golden, model):
    """Every temporal-style and overall-consistency prompt of the suite (and one over 32 tokens): open_clip's
    `tokenize(context_length=32)` equals ViCLIP's `CLIP_TEXT.tokenize`."""
    assert len(golden["texts"]) == 194
    np.testing.assert_array_equal(model.tokenize([str(t) for t in golden["texts"]]).numpy(), golden["tokens"])


@pytest.mark.parametrize("dimension", ["temporal_style", "overall_consistency"])
def test_video_text_scores_match_vbench(golden, model, dimension):
    """8 middle frames (padded for 6-frame clips), uint8 bicubic resize + crop, joint space-time ViT, 32-token
    text encoder; per-video cosine and the mean over videos."""
    videos = {0: golden["gif_frames"][0], 1: golden["gif_frames"][1], 2: golden["gif_frames"][2],
              3: golden["tall_frames"]}
    prompts = [str(p) for p in golden[f"prompts_{dimension}"]]
    order = [(0, prompts[0]), (3, prompts[0]), (1, prompts[1]), (2, prompts[1])]
    ours = [viclip.video_text_score(model, videos[v], text) for v, text in order]
    np.testing.assert_allclose(ours, golden[f"{dimension}_per_video"], rtol=1e-5, atol=1e-6)
    metric = vbench.VideoTextScore(dimension)
    metric.update(ours)
    np.testing.assert_allclose(float(metric.compute()), float(golden[dimension]), rtol=1e-5, atol=1e-6)


def test_checkpoint_loads_by_name_and_bad_files_are_refused(model, tmp_path):
    """A file in the release's format (`{"model": state dict}`) loads strictly into the same classes; a file
    without the entry, or with pickled code, is refused with a message."""
    import torch

    from harness.errors import InputError

    path = tmp_path / "viclip.pth"
    torch.save({"model": model.state_dict(), "epoch": 3}, path)
    fresh = viclip.ViCLIP(viclip.ViCLIPVision(224, 14, width=64, layers=2, heads=2, output_dim=32),
                          viclip.ViCLIPText(embed_dim=32, width=64, heads=2, layers=2))
    loaded = viclip.load_viclip(str(path), model=fresh)
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    torch.save(model.state_dict(), path)
    with pytest.raises(InputError, match="no 'model' entry"):
        viclip.load_viclip(str(path), model=fresh)
    torch.save({"model": model.state_dict(), "config": object()}, path)
    with pytest.raises(InputError, match="without running pickled code"):
        viclip.load_viclip(str(path), model=fresh)
