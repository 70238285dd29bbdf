"""Flowtron + WaveGlow against upstream's own code (golden file from tests/golden/make_flowtron.py), their
checkpoint readers, and the registered methods' request handling (seeds, batching, bad input, missing files)."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from baselines.tts import flowtron_methods as fm
from baselines.tts.flowtron import Flowtron, FlowtronConfig
from baselines.tts.flowtron_text import SYMBOLS, parse_cmudict, text_to_ids
from baselines.tts.waveglow import WaveGlow, WaveGlowConfig, fold_weight_norm
from harness.api import Request
from harness.errors import ArbenchError, InputError, MissingAssetError
from golden.golden_weights import seeded_state

torch.set_num_threads(1)  # tiny networks: threads only add overhead on the shared test machine
GOLDEN = dict(np.load(Path(__file__).parent / "golden" / "flowtron" / "golden.npz"))
SEED = 22
SMALL_FLOWTRON = FlowtronConfig(n_speakers=3, n_speaker_dim=8, n_text_dim=16, n_hidden=32, n_attn_channels=24)
SMALL_WAVEGLOW = WaveGlowConfig(n_flows=6, n_layers=3, n_channels=16)


def close(ours, theirs, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=rtol, atol=atol)


def upstream_layout(key: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in json.loads(str(GOLDEN[key])).items()}


def seeded(key: str, seed: int) -> dict[str, torch.Tensor]:
    return seeded_state({k: torch.zeros(v) for k, v in upstream_layout(key).items()}, seed)


def folded_layout(names: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Names and shapes after `fold_weight_norm` (computed on meta tensors: no memory at the released size)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in fold_weight_norm({k: torch.empty(s) for k, s in names.items()}).items()}


# -- layouts ------------------------------------------------------------------------------------------------
def test_released_layouts_match_upstream():
    with torch.device("meta"):
        flowtron, waveglow = Flowtron(FlowtronConfig()), WaveGlow(WaveGlowConfig())
    assert {k: tuple(v.shape) for k, v in flowtron.state_dict().items()} == upstream_layout("flowtron_layout_released")
    assert {k: tuple(v.shape) for k, v in waveglow.state_dict().items()} == \
        folded_layout(upstream_layout("waveglow_layout_released"))
    assert len(SYMBOLS) == FlowtronConfig().n_text == 185


# -- text ---------------------------------------------------------------------------------------------------
def test_text_ids_equal_upstream_get_text(tmp_path):
    path = tmp_path / "cmudict_subset"
    path.write_text(str(GOLDEN["cmudict_subset"]), encoding="latin-1")
    cmudict = parse_cmudict(path)
    sentences = GOLDEN["text_sentences"].tolist()
    offsets = GOLDEN["text_offsets"]
    for n, (i, p, seed) in enumerate(GOLDEN["text_cases"]):
        ours = text_to_ids(sentences[int(i)], cmudict, float(p), random.Random(int(seed)))
        assert ours == GOLDEN["text_ids"][offsets[n]:offsets[n + 1]].tolist(), (sentences[int(i)], p)


# -- Flowtron -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flowtron(tmp_path_factory):
    """The small Flowtron, weights seeded by upstream's names and loaded through the method's reader."""
    path = tmp_path_factory.mktemp("ft") / "flowtron_small.pt"
    torch.save({"state_dict": seeded("flowtron_layout", SEED), "iteration": 1}, path)
    model = Flowtron(SMALL_FLOWTRON)
    fm.load_into(model, fm.read_flowtron_state(path), "small flowtron")
    return model.eval()


def test_flowtron_inference_equals_upstream(flowtron):
    args = (torch.from_numpy(GOLDEN["ft_residual"]), torch.from_numpy(GOLDEN["ft_speaker"]),
            torch.from_numpy(GOLDEN["ft_text"]))
    full, _ = flowtron.infer(*args, gate_threshold=1.0)
    close(full, GOLDEN["ft_mel_full"])
    gated, _ = flowtron.infer(*args, gate_threshold=float(GOLDEN["ft_gate_threshold"]))
    assert gated.shape == GOLDEN["ft_mel_gated"].shape and gated.shape[2] < full.shape[2]
    close(gated, GOLDEN["ft_mel_gated"])


def test_flowtron_teacher_forced_forward_equals_upstream(flowtron):
    with torch.no_grad():
        z, log_s, gate, _ = flowtron(torch.from_numpy(GOLDEN["fw_mels"]), torch.from_numpy(GOLDEN["fw_speakers"]),
                                     torch.from_numpy(GOLDEN["fw_texts"]), torch.from_numpy(GOLDEN["fw_text_lens"]),
                                     torch.from_numpy(GOLDEN["fw_mel_lens"]))
    close(z, GOLDEN["fw_z"])
    close(log_s[0], GOLDEN["fw_log_s0"])
    close(log_s[1], GOLDEN["fw_log_s1"])
    close(gate, GOLDEN["fw_gate"])


def test_flowtron_reader_refuses_mismatched_and_pickled_files(tmp_path):
    state = seeded("flowtron_layout", SEED)
    state["flows.0.attn_cond_layer.location_conv_hidden.conv.weight"] = torch.zeros(32, 2, 5)
    path = tmp_path / "extra.pt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ArbenchError, match="unexpected flows.0.attn_cond_layer"):
        fm.load_into(Flowtron(SMALL_FLOWTRON), fm.read_flowtron_state(path), "flowtron")
    pickled = tmp_path / "whole.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, pickled)
    with pytest.raises(ArbenchError, match="state_dict"):
        fm.read_flowtron_state(pickled)


# -- WaveGlow -----------------------------------------------------------------------------------------------
class _ThnnBackend:
    """What torch < 1.0 modules held as `_backend`: it pickles as a call of
    `torch.nn.backends.thnn._get_thnn_function_backend()`."""

    def __reduce__(self):
        return (sys.modules["torch.nn.backends.thnn"]._get_thnn_function_backend, ())


def pickle_like_upstream(model: WaveGlow, path, legacy: bool = False) -> None:
    """Save `model` as upstream's released files are: `{'model': <glow.WaveGlow>}`, WN convs weight-normalised,
    classes named glow.WaveGlow / glow.WN / glow.Invertible1x1Conv (a module `glow.py` written beside the file);
    `legacy`: torch's pre-1.6 file format with every module's old `_backend` attribute."""
    thnn = types.ModuleType("torch.nn.backends.thnn")
    thnn._get_thnn_function_backend = lambda: None
    thnn._get_thnn_function_backend.__module__, thnn._get_thnn_function_backend.__qualname__ = (
        "torch.nn.backends.thnn", "_get_thnn_function_backend")
    # a real source file, so the legacy format stores each class's source as released files do
    source = Path(path).with_name("glow.py")
    source.write_text("from baselines.tts import waveglow\n\n\nclass WaveGlow(waveglow.WaveGlow):\n    pass\n\n\n"
                      "class WN(waveglow.WN):\n    pass\n\n\nclass Invertible1x1Conv(waveglow.Invertible1x1Conv):\n"
                      "    pass\n")
    spec = importlib.util.spec_from_file_location("glow", source)
    glow = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(glow)
    for module in model.modules():
        module.__dict__.pop("cfg", None)  # upstream's modules keep plain numbers, not a config object
        if legacy:
            module._backend = _ThnnBackend()
        if type(module).__name__ in ("WaveGlow", "WN", "Invertible1x1Conv"):
            module.__class__ = getattr(glow, type(module).__name__)
        if type(module).__name__ == "WN":
            for conv in [module.start, module.cond_layer, *module.in_layers, *module.res_skip_layers]:
                torch.nn.utils.weight_norm(conv)
    sys.modules.update({"glow": glow, "torch.nn.backends.thnn": thnn})
    try:
        torch.save({"model": model, "iteration": 1}, path, _use_new_zipfile_serialization=not legacy)
    finally:
        del sys.modules["glow"], sys.modules["torch.nn.backends.thnn"]


def test_allow_list_covers_what_upstream_pickles():
    torch_allows = {"__builtin__.set", "builtins.set"}
    assert set(GOLDEN["wg_pickle_globals"].tolist()) <= set(fm.WAVEGLOW_PICKLED_CLASSES) | torch_allows


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_waveglow_inference_equals_upstream_through_the_pickle_reader(tmp_path, legacy):
    upstream_state = seeded("waveglow_layout", SEED + 1)
    source = WaveGlow(SMALL_WAVEGLOW)
    source.load_state_dict(fold_weight_norm(upstream_state), strict=True)
    path = tmp_path / "waveglow_small.pt"
    pickle_like_upstream(source, path, legacy)
    if legacy:  # the pre-1.6 format stores each module class's source, which the reader must get past
        assert b"class WN(waveglow.WN)" in path.read_bytes()
    state = fm.read_waveglow_state(path)
    model = WaveGlow(SMALL_WAVEGLOW)
    fm.load_into(model, state, "small waveglow")
    generator = torch.Generator().manual_seed(int(GOLDEN["wg_noise_seed"]))
    audio = model.infer(torch.from_numpy(GOLDEN["wg_mel"]), sigma=0.8, generator=generator)
    scale = np.abs(GOLDEN["wg_audio"]).max()
    close(audio, GOLDEN["wg_audio"], rtol=1e-4, atol=1e-5 * scale)
    # the same weights from a converted safetensors file
    converted = tmp_path / "waveglow_small.safetensors"
    save_file({k: v.contiguous() for k, v in upstream_state.items()}, str(converted))
    for name, tensor in fm.read_waveglow_state(converted).items():  # weight norm refolded: equal to rounding
        torch.testing.assert_close(state[name], tensor, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_waveglow_reader_refuses_other_code_with_the_conversion_command(tmp_path, legacy):
    path = tmp_path / "waveglow_256channels_v4.pt"
    torch.save({"model": torch.nn.GRU(2, 2)}, path, _use_new_zipfile_serialization=not legacy)  # not allow-listed
    with pytest.raises(ArbenchError, match="python -c .*save_file.*waveglow_256channels_v4.safetensors"):
        fm.read_waveglow_state(path)


# -- the registered methods ----------------------------------------------------------------------------------
class SmallFlowtron(fm.FlowtronLibriTTS):
    """The LibriTTS method at the golden sizes (3 of its speakers), for request handling."""

    flowtron_config = SMALL_FLOWTRON
    waveglow_config = SMALL_WAVEGLOW
    speakers = (40, 78, 83)
    name = "flowtron-small"


@pytest.fixture(scope="module")
def method(tmp_path_factory):
    folder = tmp_path_factory.mktemp("method")
    torch.save({"state_dict": seeded("flowtron_layout", SEED)}, folder / "f.pt")
    save_file({k: v.contiguous() for k, v in seeded("waveglow_layout", SEED + 1).items()}, str(folder / "w.safetensors"))
    (folder / "cmudict").write_text(str(GOLDEN["cmudict_subset"]), encoding="latin-1")
    config = fm.FlowtronLibriTTSSettings(n_frames=12, flowtron_weights=str(folder / "f.pt"),
                                         waveglow_weights=str(folder / "w.safetensors"), cmudict=str(folder / "cmudict"))
    return SmallFlowtron(config)


def requests(*texts):
    return [Request(i, f"u{i}", 100 + i, {"text": t}) for i, t in enumerate(texts)]


def test_batching_never_changes_a_waveform(method):
    reqs = requests("It is well known.", "Dr. Smith paid $3.50 at 7:30pm.", "The FBI agents' reports.")
    together = method.generate(reqs)
    alone = [method.generate([r])[0] for r in reversed(reqs)][::-1]
    for (a, rate_a), (b, rate_b) in zip(together, alone):
        assert rate_a == rate_b == 22050 and a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
        assert np.abs(a).max() == pytest.approx(1.0)  # upstream's peak normalisation
    other = method.generate([Request(0, "u0", 7, {"text": "It is well known."})])[0][0]
    assert other.shape != together[0][0].shape or not np.array_equal(other, together[0][0])
    assert method.settings()["speaker_id"] == 40 and "flowtron_weights" not in method.settings()


def test_bad_requests_and_settings_are_refused(method, tmp_path):
    with pytest.raises(InputError, match=r"\['u1'\]"):
        method.generate(requests("fine", "  ~ _ "))
    with pytest.raises(InputError, match="no speaker 41"):
        SmallFlowtron(fm.FlowtronLibriTTSSettings(speaker_id=41))
    missing = fm.FlowtronLJS(fm.FlowtronSettings(flowtron_weights=str(tmp_path / "a.pt"),
                                                 waveglow_weights=str(tmp_path / "b.pt"), cmudict=str(tmp_path / "c")))
    with pytest.raises(MissingAssetError) as info:
        missing.checkpoint_sha256()
    assert all(name in str(info.value) for name in ("flowtron_ljs.pt", "waveglow_256channels_v4.pt", "cmudict_dictionary"))
