"""NeMo's HiFi-GAN generator (TalkNet 2's vocoder) against NeMo's own code (tests/golden/make_hifigan.py,
NVIDIA/NeMo@77be763 = v1.8.2; layout of v1.0.0rc1 = NVIDIA/NeMo@977b9a2), loaded from `.nemo` archives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from golden.golden_weights import seeded_state
from test_tts_talknet import write_nemo

from baselines.tts import talknet_methods as tm
from baselines.tts.hifigan import HiFiGANConfig, HiFiGANGenerator, generator_state
from harness.errors import ArbenchError

GOLDEN = dict(np.load(Path(__file__).parent / "golden" / "hifigan" / "golden.npz"))
TARGET = "nemo.collections.tts.modules.hifigan_modules.Generator"
#: Waveform samples are tanh outputs in [-1, 1]; float32 with folded (vs. on-the-fly) weight norm and another
#: summation order agrees to ~1e-6.
ATOL, RTOL = 2e-5, 1e-4


def upstream_state(tag: str) -> dict[str, torch.Tensor]:
    """Upstream's seeded generator state (weight_g / weight_v), rebuilt from the stored names and the seed."""
    shapes = json.loads(str(GOLDEN[f"layout_small{tag}"]))
    return seeded_state({k: torch.zeros(v) for k, v in shapes.items()}, int(GOLDEN["seed"]))


def nemo_file(path: Path, tag: str = "", **config) -> Path:
    """A HiFi-GAN `.nemo` archive as NeMo saves one: generator, discriminators and featurisers."""
    state = {f"generator.{k}": v for k, v in upstream_state(tag).items()}
    state.update({"mpd.discriminators.0.convs.0.weight_g": torch.ones(32, 1, 1, 1),
                  "msd.meanpools.0.weight": torch.ones(1),
                  "audio_to_melspec_precessor.featurizer.window": torch.hann_window(16, periodic=False),
                  "trg_melspec_fn.featurizer.fb": torch.ones(1, 10, 9)})
    generator = {"_target_": TARGET, **json.loads(str(GOLDEN[f"config_small{tag}"]))}
    base = {"generator": generator, "preprocessor": {"sample_rate": 22050, "nfilt": 10}, "l1_loss_factor": 45}
    return write_nemo(path, {**base, **config}, state)


@pytest.fixture(scope="module")
def generators(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hifigan")
    return {tag: tm.build_hifigan(nemo_file(folder / f"h{tag}.nemo", tag), 10, "test").eval() for tag in ("", "2")}


@pytest.mark.parametrize("tag", ["", "2"])
@pytest.mark.parametrize("row", [0, 1])
def test_waveform_from_talknets_mel_equals_upstream(generators, tag, row):
    mel = torch.from_numpy(GOLDEN[f"mel_{row}"])
    with torch.no_grad():
        audio = generators[tag](mel)
    theirs = torch.from_numpy(GOLDEN[f"audio{tag}_{row}"])[:, 0]
    assert audio.shape == theirs.shape == (1, mel.shape[-1] * generators[tag].config.hop_length)
    torch.testing.assert_close(audio, theirs, atol=ATOL, rtol=RTOL)


def test_batch_equals_upstream(generators):
    n = min(GOLDEN[f"mel_{i}"].shape[-1] for i in range(2))
    mel = torch.cat([torch.from_numpy(GOLDEN[f"mel_{i}"][..., :n]) for i in range(2)])
    with torch.no_grad():
        torch.testing.assert_close(generators[""](mel), torch.from_numpy(GOLDEN["audio_batch"])[:, 0], atol=ATOL,
                                   rtol=RTOL)


def shapes_after_loading(layout_key: str, config: HiFiGANConfig) -> dict[str, list[int]]:
    state = {k: torch.empty(v, device="meta") for k, v in json.loads(str(GOLDEN[layout_key])).items()}
    return {k: list(v.shape) for k, v in generator_state(state, config, prefix="").items()}


@pytest.mark.parametrize("layout_key", ["layout_v1", "layout_rc1"])
def test_released_layouts_load_under_our_names(layout_key):
    """v1.8.2's Generator at generator/v1.yaml's size and v1.0.0rc1's (flat `resblocks`, the released file's
    code) map onto this module's names and shapes exactly."""
    config = HiFiGANConfig.from_config({"_target_": TARGET, **json.loads(str(GOLDEN["config_v1"]))})
    assert config == HiFiGANConfig()  # the defaults are the released size
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in HiFiGANGenerator(config).state_dict().items()}
    assert shapes_after_loading(layout_key, config) == ours


def test_wrong_files_are_refused(tmp_path):
    with pytest.raises(ArbenchError, match="takes 10 mels at 22050 Hz; TalkNet's mel model gives 80"):
        tm.build_hifigan(nemo_file(tmp_path / "a.nemo"), 80, "test")
    with pytest.raises(ArbenchError, match="at 44100 Hz"):
        tm.build_hifigan(nemo_file(tmp_path / "b.nemo", preprocessor={"sample_rate": 44100}), 10, "test")
    with pytest.raises(ArbenchError, match="not a NeMo HiFi-GAN file"):
        tm.build_hifigan(nemo_file(tmp_path / "c.nemo", generator={"_target_": "x.UnivNetGenerator"}), 10, "test")
    with pytest.raises(ArbenchError, match="not a NeMo HiFi-GAN file"):
        tm.build_hifigan(nemo_file(tmp_path / "d.nemo", generator={"_target_": TARGET, "resblock": 3}), 10, "t")
