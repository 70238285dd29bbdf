"""AMT-S and VBench's motion smoothness against VBench's own code (tests/golden/make_amt.py, seeded weights)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from golden.golden_weights import damp, layout, seeded_fill
from golden.make_amt import DAMPED, DAMPING, SEED, VIDEOS, synthetic_frames
from harness.errors import ArbenchError
from harness.features import amt

GOLDEN = Path(__file__).parent / "golden" / "amt" / "golden.npz"


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a loaded two-core machine are ten times slower
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model(golden, tmp_path_factory):
    """AMT-S read through `load_amt_s` from a training checkpoint in the released layout."""
    reference = amt.AMTS()
    assert json.loads(layout(reference)) == json.loads(str(golden["amt_layout"]))  # upstream's names and shapes
    damp(seeded_fill(reference, SEED), DAMPED, DAMPING)
    path = tmp_path_factory.mktemp("amt") / "amt-s.pth"
    optim = torch.optim.AdamW(reference.parameters(), lr=2e-4)
    torch.save({"epoch": 299, "state_dict": reference.state_dict(), "optim": optim.state_dict()}, path)
    return amt.load_amt_s(str(path))


def frames_of(golden, name: str) -> np.ndarray:
    _, n, h, w, _ = next(v for v in VIDEOS if v[0] == name)
    frames = synthetic_frames(n, h, w)
    assert hashlib.sha256(frames.tobytes()).hexdigest() == str(golden[f"frames_sha256_{name}"])  # what VBench saw
    return frames


def scale_of(golden, name: str, frames: np.ndarray) -> float:
    memory = int(golden[f"memory_{name}"])
    return amt.vram_scale(*frames.shape[1:3], None if memory < 0 else memory)


def test_network_output_matches_vbench_amt(golden, model):
    """Flows at full size and the interpolated frame of A's first even pair (padded to 128 x 160)."""
    frames = frames_of(golden, "a")
    x = [amt.replicate_pad(torch.from_numpy(f).permute(2, 0, 1)[None] / 255.0, 16)[0] for f in frames[[0, 2]]]
    with torch.no_grad():
        out = model(x[0], x[1], torch.tensor(0.5).view(1, 1, 1, 1), flows=True)
    for key in ("flow0", "flow1"):
        ours = out[f"{key}_pred"][0, :, :, ::4, ::4].numpy()
        np.testing.assert_allclose(ours, golden[f"{key}_a01_every4"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out["imgt_pred"][0, :, ::4, ::4].numpy(), golden["imgt_a01_every4"], rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_motion_smoothness_matches_vbench(golden, model, batch_size):
    """Per-video scores of A (7 frames), B (6: the last odd frame is not compared) and C (scale 0.5 as on a small
    GPU), each compared frame's mean difference, and A's uint8 interpolated frames: one pair at a time as VBench
    (the same bytes), and A with pairs batched by 2 (rounding may move a truncated pixel by one grey level)."""
    exact = batch_size == 1
    scores = []
    for name, *_ in VIDEOS if exact else VIDEOS[:1]:
        frames = frames_of(golden, name)
        scale = scale_of(golden, name, frames)
        assert scale == (0.5 if name == "c" else 1.0)
        interpolated = amt.interpolate_even_frames(model, frames, scale=scale, batch_size=batch_size)
        if name == "a":
            off = np.abs(interpolated[:, ::2, ::2].astype(int) - golden["interpolated_a_every2"])
            assert off.max() <= (0 if exact else 1) and (off > 0).mean() < 1e-3, (off.max(), (off > 0).mean())
        odd = frames[1::2][:len(interpolated)]
        diffs = [np.mean(np.abs(o.astype(int) - p.astype(int))) for o, p in zip(odd, interpolated)]
        np.testing.assert_allclose(diffs, golden[f"diffs_{name}"], rtol=0, atol=1e-12 if exact else 1e-3)
        scores.append(amt.motion_smoothness(model, frames, scale=scale, batch_size=batch_size))
    np.testing.assert_allclose(scores, golden["scores"][:len(scores)], rtol=0, atol=1e-12 if exact else 5e-6)
    if exact:  # VBench's `motion_smoothness`: the mean over videos
        np.testing.assert_allclose(np.mean(scores), golden["means"].mean(), rtol=0, atol=1e-12)


def test_vram_scale_and_bad_checkpoints(tmp_path):
    """VBench's rule: a CPU never shrinks; on a GPU only large frames on small memory do."""
    assert amt.vram_scale(2160, 3840, None) == 1.0
    assert amt.vram_scale(480, 768, 80 * 2 ** 30) == 1.0
    assert amt.vram_scale(1080, 1920, 16 * 2 ** 30) < 1.0
    bad = tmp_path / "amt-s.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, bad)
    with pytest.raises(ArbenchError, match="not the AMT-S checkpoint"):
        amt.load_amt_s(str(bad))
    torch.save({"state_dict": {}, "config": np.float64(1.0)}, bad)  # a pickled object beyond tensors
    with pytest.raises(ArbenchError, match="will not unpickle"):
        amt.load_amt_s(str(bad))
    with pytest.raises(ValueError, match="T>=3"):
        amt.motion_smoothness(amt.AMTS(), np.zeros((2, 128, 128, 3), np.uint8))
