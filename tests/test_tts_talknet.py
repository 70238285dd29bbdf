"""TalkNet 2's networks against NeMo's own code (tests/golden/make_talknet.py, NVIDIA/NeMo@77be763 = v1.8.2)."""

from __future__ import annotations

import dataclasses
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


# -- the registered method through its real loading path (.nemo archives, WaveGlow safetensors) --------------------
from baselines.tts import talknet_methods as tm  # noqa: E402
from baselines.tts.waveglow import WaveGlow, WaveGlowConfig  # noqa: E402
from golden.golden_weights import seeded_fill  # noqa: E402
from harness.api import Request  # noqa: E402
from harness.errors import ArbenchError, InputError, MissingAssetError  # noqa: E402

SMALL_WAVEGLOW = WaveGlowConfig(n_mel_channels=10, n_flows=2, n_layers=1, n_channels=8, upsample_kernel=512)
VOCAB_CONFIG = {"notation": "phonemes", "punct": True, "spaces": True, "stresses": False, "add_blank_at": "last"}
#: A stand-in for g2p_en's output on the test sentences (g2p_en needs NLTK data that cannot be installed here).
FAKE_G2P = {"hello": ["HH", "AH0", "L", "OW1"], "world": ["W", "ER1", "L", "D"], "it": ["IH1", "T"],
            "is": ["IH1", "Z"], "fine": ["F", "AY1", "N"]}


def fake_g2p(text: str) -> list[str]:
    out: list[str] = []
    for word in text.lower().replace(",", " , ").replace(".", " . ").split():
        out += (FAKE_G2P.get(word, [word]) + [" "]) if word not in ",." else [word, " "]
    return out


def write_nemo(path: Path, config: dict, state: dict, *, extra: dict | None = None, gz: bool = True) -> Path:
    import io
    import tarfile

    import yaml

    buf = io.BytesIO()
    torch.save(state, buf)
    members = {"./model_config.yaml": yaml.safe_dump(config).encode(), "./model_weights.ckpt": buf.getvalue(),
               **(extra or {})}
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def small_config(part: str) -> dict:
    layers = [dataclass_to_yaml(layer) for layer in SMALL_LAYERS[part]]
    config = {"d_char": 16, "dropout": 0.1, "separable": True,
              "train_ds": {"dataset": {"blanking": True, "vocab": dict(VOCAB_CONFIG)}},
              "encoder": {"feat_in": "${model.d_char}", "activation": "relu", "jasper": layers}}
    if part == "pitch":
        config.update(f0_mean=F0_MEAN, f0_std=F0_STD)
    if part == "spect":
        config["n_mels"] = 10
    return config


def dataclass_to_yaml(layer: EncoderLayer) -> dict:
    out = {"filters": layer.filters, "repeat": layer.repeat, "kernel": [layer.kernel], "stride": [1],
           "dilation": [1], "dropout": "${model.dropout}", "residual": layer.residual,
           "separable": "${model.separable}" if layer.separable else False}
    if layer.se:
        out.update(se=True, se_reduction_ratio=layer.se_reduction_ratio)
    return out


class SmallTalkNet(tm.TalkNet2LJS):
    waveglow_config = SMALL_WAVEGLOW
    name = "talknet2-small"


@pytest.fixture(scope="module")
def method(tmp_path_factory):
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("talknet")
    paths = {}
    for part in ("durs", "pitch", "spect"):
        prefix = f"w_{part}."
        state = {k[len(prefix):]: torch.from_numpy(v) for k, v in GOLDEN.items() if k.startswith(prefix)}
        if part == "spect":  # the training-time featuriser NeMo's mel model also saves
            state["preprocessor.featurizer.window"] = torch.hann_window(16)
        paths[part] = write_nemo(folder / f"talknet_{part}.nemo", small_config(part), state)
    waveglow = seeded_fill(WaveGlow(SMALL_WAVEGLOW), 5)
    save_file({k: v.contiguous() for k, v in waveglow.state_dict().items()}, str(folder / "w.safetensors"))
    config = tm.TalkNetSettings(vocoder="waveglow", durs_weights=str(paths["durs"]), pitch_weights=str(paths["pitch"]),
                                spect_weights=str(paths["spect"]), waveglow_weights=str(folder / "w.safetensors"))
    m = SmallTalkNet(config)
    m._g2p = fake_g2p
    return m


@pytest.fixture(scope="module")
def hifigan_method(method, tmp_path_factory):
    """The default vocoder, NeMo's HiFi-GAN, from a `.nemo` file with make_hifigan's seeded small generator."""
    from test_tts_hifigan import nemo_file

    path = nemo_file(tmp_path_factory.mktemp("hifigan") / "tts_hifigan.nemo")
    m = SmallTalkNet(dataclasses.replace(method.config, vocoder="hifigan", hifigan_weights=str(path)))
    m._g2p = fake_g2p
    return m


def requests(*texts):
    return [Request(i, f"u{i}", 100 + i, {"text": t}) for i, t in enumerate(texts)]


def test_method_reads_nemo_archives_and_matches_the_networks(method, small):
    models = method.load()
    assert models.blanking and models.vocab.blank == BLANK and models.vocab.pad == PAD
    for part in ("durs", "pitch", "spect"):
        ours = getattr(models, part).state_dict()
        for k, v in small[part].state_dict().items():
            assert torch.equal(ours[k], v), k


def test_batching_never_changes_a_waveform(method):
    reqs = requests("Hello.", "It is.")
    together = method.generate(reqs)
    alone = [method.generate([r])[0] for r in reversed(reqs)][::-1]
    for (a, rate_a), (b, rate_b) in zip(together, alone):
        assert rate_a == rate_b == 22050 and a.dtype == np.float32 and a.size % 256 == 0 and a.size > 0
        np.testing.assert_array_equal(a, b)
    other = method.generate([Request(0, "u0", 7, {"text": "Hello."})])[0][0]
    assert not np.array_equal(other, together[0][0])  # another seed, other WaveGlow noise
    assert "durs_weights" not in method.settings() and method.settings()["waveglow_sigma"] == 0.6


def test_hifigan_default_gives_upstreams_waveform_of_upstreams_mel(hifigan_method):
    """Upstream TalkNet's tokens -> mel (make_talknet) -> upstream HiFi-GAN's waveform (make_hifigan), through
    the method's loaded networks."""
    from test_tts_hifigan import ATOL, RTOL
    from test_tts_hifigan import GOLDEN as HIFIGAN_GOLDEN

    assert tm.TalkNetSettings().vocoder == "hifigan"
    models = hifigan_method.load()
    for row in (0, 1):
        blanked = interleave_blanks(GOLDEN[f"tokens_{row}"].tolist(), BLANK)
        with torch.no_grad():
            mel = generate_mel(models.durs, models.pitch, models.spect, torch.tensor([blanked]))["mel"]
            audio = models.vocoder(mel)
        torch.testing.assert_close(audio, torch.from_numpy(HIFIGAN_GOLDEN[f"audio_{row}"])[:, 0], atol=ATOL, rtol=RTOL)


def test_hifigan_waveforms_depend_on_neither_batch_nor_seed(hifigan_method):
    reqs = requests("Hello.", "It is.")
    together = hifigan_method.generate(reqs)
    alone = [hifigan_method.generate([r])[0] for r in reversed(reqs)][::-1]
    other_seed = hifigan_method.generate([Request(0, "u0", 7, {"text": "Hello."})])[0][0]
    for (a, rate_a), (b, _) in zip(together, alone):
        assert rate_a == 22050 and a.dtype == np.float32 and a.size % 16 == 0 and a.size > 0
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(other_seed, together[0][0])  # HiFi-GAN draws no noise
    settings = hifigan_method.settings()
    assert settings["vocoder"] == "hifigan" and "waveglow_sigma" not in settings and "hifigan_weights" not in settings
    assert hifigan_method.weight_files()[-1][0].name == "tts_hifigan.nemo"


def test_files_in_the_pre_3092_layout_load_the_same(method, tmp_path):
    """NeMo before PR #3092 saved the encoder as `model` (config node and state-dict prefix)."""
    config = small_config("durs")
    config["model"] = config.pop("encoder")
    state = {k[len("w_durs."):]: torch.from_numpy(v) for k, v in GOLDEN.items() if k.startswith("w_durs.")}
    state = {("model." + k[len("encoder."):] if k.startswith("encoder.") else k): v for k, v in state.items()}
    old = write_nemo(tmp_path / "old_durs.nemo", config, state)
    assert any(k.startswith("model.encoder.0.") for k in tm.read_nemo(old)[1])
    settings = dataclasses.replace(method.config, durs_weights=str(old))
    other = SmallTalkNet(settings)
    other._g2p = fake_g2p
    ours, theirs = other.load().durs.state_dict(), method.load().durs.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_bad_requests_files_and_configs_are_refused(method, tmp_path):
    with pytest.raises(InputError, match=r"\['u1'\]"):
        method.generate(requests("fine", " ~ ~ "))
    files = dict(durs_weights=str(tmp_path / "a.nemo"), pitch_weights=str(tmp_path / "b.nemo"),
                 spect_weights=str(tmp_path / "c.nemo"), hifigan_weights=str(tmp_path / "h.nemo"),
                 waveglow_weights=str(tmp_path / "d.pt"))
    for vocoder, names in (("hifigan", ("a.nemo", "b.nemo", "c.nemo", "h.nemo")),
                           ("waveglow", ("a.nemo", "b.nemo", "c.nemo", "d.pt"))):
        missing = tm.TalkNet2LJS(tm.TalkNetSettings(vocoder=vocoder, **files))
        with pytest.raises(MissingAssetError) as info:
            missing.weight_files()
        assert all(name in str(info.value) for name in names)
    (tmp_path / "plain.nemo").write_bytes(b"not a tar")
    with pytest.raises(ArbenchError, match="not a .nemo archive"):
        tm.read_nemo(tmp_path / "plain.nemo")

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = write_nemo(tmp_path / "evil.nemo", {"d_char": 1}, {"x": Payload()}, gz=False)
    with pytest.raises(ArbenchError, match="weights_only=True"):
        tm.read_nemo(evil)
    # Only the two members are read (into memory); a path-escaping member is ignored, never extracted.
    odd = write_nemo(tmp_path / "odd.nemo", {"d_char": 1}, {"x": torch.ones(1)}, extra={"../../escape": b"x"})
    config, state = tm.read_nemo(odd)
    assert config == {"d_char": 1} and torch.equal(state["x"], torch.ones(1))
    assert not (tmp_path.parent / "escape").exists()
    with pytest.raises(ArbenchError, match="improved_version_g2p"):
        tm.TalkNetPhonemes.from_config({**VOCAB_CONFIG, "improved_version_g2p": True}, "x")
    with pytest.raises(ValueError, match="stride 1"):
        EncoderLayer.from_config({"filters": 8, "repeat": 1, "kernel": [3], "stride": [2]})


@pytest.mark.parametrize("key", ["released", "variant"])
def test_phoneme_vocabulary_equals_upstream(key):
    flags = json.loads(str(GOLDEN["vocab_variants"]))[key]
    vocab = tm.TalkNetPhonemes.from_config({"notation": "phonemes", **flags}, "test")
    assert vocab.labels == json.loads(str(GOLDEN[f"vocab_{key}_labels"]))
    assert [vocab.pad, vocab.blank, vocab.oov] == GOLDEN[f"vocab_{key}_special"].tolist()
    ids = [vocab.encode(out) for out in json.loads(str(GOLDEN["g2p_outputs"]))]
    assert ids == json.loads(str(GOLDEN[f"vocab_{key}_ids"]))


def test_missing_g2p_en_is_reported_with_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "g2p_en", None)  # import fails as when the package is absent
    with pytest.raises(ArbenchError, match=r"pip install g2p_en.*nltk\.downloader"):
        tm.load_g2p()
