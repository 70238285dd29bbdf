"""melle-mini (toy-scale MELLE re-implementation): shapes, cached step-wise decoding equal to the teacher-forced
forward, padding and batch independence, setting domains, the Griffin-Lim vocoder, and the method through the
offline TTS task."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from baselines.tts.melle_mini import (EOS, WEIGHTS_PATH, MelFeatures, MelleMini, MelleMiniConfig,
                                      MelleMiniNetConfig, tokenize)
from harness.api import Request
from harness.errors import ArbenchError
from harness.settings import build_settings

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
SMALL = MelleMiniNetConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, n_mels=16, reduction=2,
                           postnet_channels=8, n_fft=256, hop_length=64)


def seeded_model(cfg: MelleMiniNetConfig = SMALL) -> MelleMini:
    torch.manual_seed(0)
    model = MelleMini(cfg).eval()
    with torch.no_grad():  # a zero-initialised start vector would hide position mistakes less well
        model.audio_start.normal_()
    return model


def test_tokenize_reads_espeak_mnemonics():
    ids = tokenize("D@ b'3:tS\nk@n'u:\n")
    assert ids[-1] == EOS and len(ids) == len("D@ b'3:tS _ k@n'u:") + 1
    assert all(2 <= i < 97 for i in ids[:-1])


def test_shapes():
    model = seeded_model()
    tokens = [torch.tensor([5, 6, 7, EOS]), torch.tensor([9, EOS])]
    groups = [torch.randn(6, SMALL.frame_dim), torch.randn(3, SMALL.frame_dim)]
    e, mask = model(tokens, groups)
    assert e.shape == (2, 6, SMALL.d_model) and mask.tolist() == [[True] * 6, [True] * 3 + [False] * 3]
    out = model.heads(e, torch.randn(2, 6, SMALL.frame_dim))
    assert out["mu"].shape == out["logvar"].shape == out["coarse"].shape == (2, 6, SMALL.frame_dim)
    assert out["stop"].shape == (2, 6)
    assert model.postnet(out["coarse"]).shape == (2, 6, SMALL.frame_dim)


def test_cached_decoding_equals_teacher_forced_forward():
    """Generate step by step with the key/value cache, then feed the generated groups back with teacher forcing
    and the same latent noise: every step's mean, variance, y' and stop logit must agree."""
    model = seeded_model()
    tokens = torch.tensor([[4, 8, 15, 16, 23, 42, EOS]])
    coarse, stopped = model.generate(tokens, 9, 0.7, 1.0, 0.0, torch.Generator().manual_seed(3))
    assert coarse.shape == (1, 9, SMALL.frame_dim) and not stopped  # a threshold of 1 is never exceeded
    eps = 0.7 * torch.randn(1, 9, SMALL.frame_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        e, _ = model([tokens[0]], [coarse[0]])
        out = model.heads(e, eps)
    torch.testing.assert_close(out["coarse"], coarse, atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_an_utterance():
    model = seeded_model()
    tokens = [torch.tensor([5, 6, 7, 8, 9, EOS]), torch.tensor([11, EOS])]
    groups = [torch.randn(4, SMALL.frame_dim), torch.randn(7, SMALL.frame_dim)]
    with torch.no_grad():
        both, _ = model(tokens, groups)
        for i in range(2):
            alone, _ = model([tokens[i]], [groups[i]])
            torch.testing.assert_close(both[i, :len(groups[i])], alone[0], atol=1e-5, rtol=1e-5)


def test_stop_layer_ends_generation():
    model = seeded_model()
    with torch.no_grad():
        model.stop.bias.fill_(20.0)  # sigmoid ~ 1 at every step
    coarse, stopped = model.generate(torch.tensor([[5, EOS]]), 50, 1.0, 0.5, 0.5, torch.Generator().manual_seed(0))
    assert stopped and coarse.shape[1] == 1


def test_settings_have_declared_domains():
    assert build_settings(MelleMiniConfig, {"temperature": "0.5"}, "melle-mini").temperature == 0.5
    for bad in ({"temperature": "-1"}, {"stop_threshold": "1.5"}, {"max_seconds": "0"},
                {"prenet_dropout": "2"}, {"griffin_lim_iters": "0"}):
        with pytest.raises(ArbenchError, match=next(iter(bad))):
            build_settings(MelleMiniConfig, bad, "melle-mini")


@needs_espeak
def test_griffin_lim_reconstructs_an_espeak_spectrogram():
    """The vocoder inverts MELLE's features of real espeak-ng speech: the mel of its output is close to the input."""
    from harness.datasets.espeak import synthesize
    from harness.features.audio import to_16k_mono

    features = MelFeatures(MelleMiniNetConfig())
    audio, rate = synthesize("A large size in stockings is hard to sell.")
    mel = features(to_16k_mono(audio, rate))
    wave = features.griffin_lim(mel, 32, torch.Generator().manual_seed(0))
    rebuilt = features(wave)
    n = min(len(mel), len(rebuilt))
    loud = mel[:n] > -3  # where there is speech energy
    error = (rebuilt[:n] - mel[:n]).abs()[loud].mean().item()
    assert error < 0.25, error  # log10 units: within a factor of 10**0.25 = 1.8 on average
    silent = features.griffin_lim(mel, 0, torch.Generator().manual_seed(0))  # random phase, no iteration
    assert (features(silent)[:n] - mel[:n]).abs()[loud].mean().item() > error


needs_weights = pytest.mark.skipif(not WEIGHTS_PATH.is_file(), reason="melle-mini weights not trained")


@needs_espeak
@needs_weights
def test_batching_never_changes_a_waveform():
    from baselines.tts.melle_mini import MelleMiniTTS

    method = MelleMiniTTS(MelleMiniConfig(max_seconds=0.6, griffin_lim_iters=4))
    a = Request(0, "a", 11, {"text": "The boy was there."})
    b = Request(1, "b", 12, {"text": "Rice is served."})
    together = method.generate([a, b])
    assert np.array_equal(method.generate([b])[0][0], together[1][0])
    assert np.array_equal(method.generate([a])[0][0], together[0][0])
    again = method.generate([Request(1, "b", 13, {"text": "Rice is served."})])[0][0]
    assert not np.array_equal(again, together[1][0])  # another seed samples another waveform
    assert together[0][1] == 16000 and np.isfinite(together[0][0]).all()


@needs_espeak
@needs_weights
def test_melle_mini_runs_through_the_offline_task(results_dir):
    from harness.runner import RunOptions, Runner
    from harness.store import Store

    runner = Runner(Store(), RunOptions(progress=False, batch_size=2, shard_size=4))
    result = runner.run("espeak-tts-mini", "melle-mini", {"rtf_items": 1, "rtf_warmup": 0})
    metrics = {m.name: m.value for m in result.metrics}
    assert metrics["failed_files"] == 0
    assert 0 < metrics["rtf_p50"] < 5
    assert 0 <= metrics["wer_seed_utt_mean"] and -1 <= metrics["sim"] <= 1
    rows = [json.loads(line) for line in (result.run_dir / "per_utterance.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(row["duration_s"] > 0.3 for row in rows)
    stored = Store().records(task="espeak-tts-mini")[0]
    assert stored["method"] == "melle-mini" and "temperature" in stored["signature"]
