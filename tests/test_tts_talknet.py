"""TalkNet 2's networks against NeMo's own code (tests/golden/make_talknet.py, NVIDIA/NeMo@77be763 = v1.8.2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.tts.talknet import (EncoderLayer, TalkNetDurs, TalkNetPitch, TalkNetSpect, generate_mel,
                                   interleave_blanks)

GOLDEN = dict(np.load(Path(__file__).parent / "golden" / "talknet" / "golden.npz"))
N_VOCAB, PAD, BLANK = 59, 56, 58
SMALL_LAYERS = {  # make_talknet.SMALL
    "durs": [EncoderLayer(24, 1, 3, separable=True), EncoderLayer(24, 2, 5, separable=True, se=True),
             EncoderLayer(32, 1, 1)],
    "pitch": [EncoderLayer(24, 2, 7, separable=True, se=True), EncoderLayer(32, 1, 1)],
    "spect": [EncoderLayer(24, 2, 3, separable=True), EncoderLayer(48, 2, 9, separable=True, se=True),
              EncoderLayer(32, 1, 1)],
}
F0_MEAN, F0_STD = 178.7767791748047, 33.51659393310547


def build(part: str, d_char: int, layers, n_mels: int = 80):
    if part == "durs":
        return TalkNetDurs(N_VOCAB, d_char, layers)
    if part == "pitch":
        return TalkNetPitch(N_VOCAB, d_char, PAD, layers, F0_MEAN, F0_STD)
    return TalkNetSpect(N_VOCAB, d_char, PAD, layers, n_mels)


def with_golden_weights(part: str, model: torch.nn.Module) -> torch.nn.Module:
    prefix = f"w_{part}."
    state = {k[len(prefix):]: torch.from_numpy(v) for k, v in GOLDEN.items() if k.startswith(prefix)}
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def small():
    return {part: with_golden_weights(part, build(part, 16, SMALL_LAYERS[part], n_mels=10))
            for part in ("durs", "pitch", "spect")}


def close(ours: torch.Tensor, key: str, tol: float = 1e-5):
    theirs = torch.from_numpy(GOLDEN[key])
    assert ours.shape == theirs.shape, key
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=tol, atol=tol, msg=key)


@pytest.mark.parametrize("part", ["durs", "pitch", "spect"])
def test_released_layouts_match_upstream(part):
    layers = [EncoderLayer.from_config(c) for c in json.loads(str(GOLDEN[f"layers_{part}"]))]
    ours = {k: list(v.shape) for k, v in build(part, 128, layers).state_dict().items()}
    theirs = json.loads(str(GOLDEN[f"layout_{part}"]))
    assert ours == theirs


@pytest.mark.parametrize("row", [0, 1])
def test_generate_spectrogram_equals_upstream(small, row):
    tokens = torch.from_numpy(GOLDEN[f"tokens_{row}"])
    blanked = interleave_blanks(tokens.tolist(), BLANK)
    assert blanked == GOLDEN[f"blanked_{row}"][0].tolist()
    out = generate_mel(small["durs"], small["pitch"], small["spect"], torch.tensor([blanked]))
    assert torch.equal(out["durs"], torch.from_numpy(GOLDEN[f"durs_{row}"]))
    close(out["f0"], f"f0_{row}", 1e-4)  # Hz
    close(out["mel"], f"mel_{row}")


def test_padded_batch_forwards_equal_upstream_on_valid_positions(small):
    text, text_len = torch.from_numpy(GOLDEN["batch_text"]), torch.from_numpy(GOLDEN["batch_text_len"])
    durs, f0 = torch.from_numpy(GOLDEN["batch_durs"]), torch.from_numpy(GOLDEN["batch_f0"])
    with torch.no_grad():
        log_durs = small["durs"](text, text_len)
        sil, body = small["pitch"](text, durs)
        mel = small["spect"](text, durs, f0)
    frames = durs.sum(-1)
    for b in range(2):
        n, t = int(text_len[b]), int(frames[b])
        torch.testing.assert_close(log_durs[b, :n], torch.from_numpy(GOLDEN["batch_log_durs"][b, :n]), rtol=1e-5,
                                   atol=1e-5)
        torch.testing.assert_close(sil[b, :t], torch.from_numpy(GOLDEN["batch_f0_sil"][b, :t]), rtol=1e-5,
                                   atol=1e-5)
        torch.testing.assert_close(body[b, :t], torch.from_numpy(GOLDEN["batch_f0_body"][b, :t]), rtol=1e-5,
                                   atol=1e-5)
        torch.testing.assert_close(mel[b, :, :t], torch.from_numpy(GOLDEN["batch_mel"][b, :, :t]), rtol=1e-5,
                                   atol=1e-5)
