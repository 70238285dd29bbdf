"""NOVA's long-video rollout (`nova-d48w1024-osp480-long`): the rollout past the temporal base against upstream's code
(tests/golden/nova_video_long, made by tests/golden/make_nova_video_long.py from baaivision/NOVA@2cd254a on seeded
random weights), its windowed VAE decoding, a deliberate break, the class-label adapter, and a tiny seeded NOVA end
to end through the UCF-101 long-video task path (fake UCF copy, stand-in features)."""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.imagegen.nova import generate_video
from baselines.imagegen.sampling import request_generators
from baselines.video import nova_long
from baselines.video.nova_long import class_prompt
from harness.datasets.ucf101 import UCF101_CLASS_NAMES
from golden.golden_weights import seeded_state
from harness.api import Request, build_config
from harness.errors import ArbenchError, MissingAssetError
from harness.registry import METHODS, TASKS, register_method, register_task
from tasks.video_fvd import FVDProtocol
from test_imagegen_nova_video import TINY, VAE3D, model, scheduler, video_snapshot  # noqa: F401 (fixtures)
from test_video_task import TinyFeatures, TinyUCF, _runner, make_fake_ucf

torch.set_num_threads(1)
GOLDEN = Path(__file__).parent / "golden" / "nova_video_long"
SAMPLE = {"num_latents": 13, "num_steps": 4, "num_diffusion_steps": 3, "guidance_scale": 5.0, "motion_flow": 5.0}


@pytest.fixture(scope="module")
def golden():
    return {k: torch.from_numpy(v) for k, v in np.load(GOLDEN / "golden.npz").items() if k != "upstream"}


@pytest.mark.parametrize("i", [0, 1])
def test_rollout_past_the_temporal_base_matches_upstream(model, golden, i):
    """13 latent frames from a model whose temporal base is 4: the cache holds all 12 earlier frames and the time
    embedding is spread over the base, as upstream's `generate_video(max_latent_length=13)`."""
    with torch.no_grad():
        latents = generate_video(model, scheduler(), [golden[f"text_states_{i}"]], request_generators([i]), **SAMPLE)
    assert latents.shape == (1, 4, 13, 8, 8)
    torch.testing.assert_close(latents, golden[f"latents_{i}"], rtol=1e-4, atol=1e-4)


def test_unspread_time_positions_differ(model, golden, monkeypatch):
    """Deliberate break: the time embedding at positions 0..T-1 (not spread over the base) changes the rollout."""
    vpe = model.video_pos_embed
    monkeypatch.setattr(vpe, "base_t", 13)  # arange(13) * 13 / 13: plain frame indices
    with torch.no_grad():
        latents = generate_video(model, scheduler(), [golden["text_states_0"]], request_generators([0]), **SAMPLE)
    assert (latents[:, :, 1:] - golden["latents_0"][:, :, 1:]).abs().max() > 1e-2


def test_long_latents_decode_through_the_windows_as_upstream(golden):
    """13 latents -> 3 windows of 5 overlapping by 1 -> 49 frames, uint8 as upstream's postprocess."""
    from baselines.video.osp_vae import OpenSoraVAEDecoder, to_uint8

    vae = OpenSoraVAEDecoder(VAE3D)
    vae.load_state_dict(seeded_state(vae.state_dict(), 22))  # make_nova_video.py VAE_SEED
    with torch.no_grad():
        frames = to_uint8(vae.decode(golden["latents_0"]))
    assert frames.shape == (1, 49, 64, 64, 3)
    assert np.abs(frames.astype(int) - golden["frames_0"].numpy().astype(int)).max() <= 1


def test_class_prompts_and_lengths():
    assert doctest.testmod(nova_long).failed == 0
    assert len(UCF101_CLASS_NAMES) == 101 == len(set(UCF101_CLASS_NAMES))
    assert (UCF101_CLASS_NAMES[34], UCF101_CLASS_NAMES[46]) == ("Hammering", "JumpingJack")  # classInd 35, 47
    assert class_prompt(29) == "a video of a person floor gymnastics."
    assert class_prompt(73, "{} in a video") == "rock climbing indoor in a video"


def long_method(**settings):
    cls = METHODS.get("nova-d48w1024-osp480-long")
    return cls(build_config(cls.Config, settings, cls.name))


def test_registered_for_the_long_fvd_protocols():
    m = long_method()
    assert m.modality == TASKS.get("ucf101-fvd2048-128f-128").modality == "class-to-video"
    assert m.num_frames() == 129 >= TASKS.get("ucf101-fvd2048-16f-stride8-128").protocol.span
    assert m.settings()["max_latent_length"] == 33 and m.settings()["prompt_template"] == "a video of a person {}."
    assert m.specs == METHODS.get("nova-d48w1024-osp480").specs  # the same released snapshot


@pytest.mark.parametrize("condition, message", [
    ({"label": 101, "num_frames": 128, "resolution": 128}, r"UCF-101 class label \(0-100\).*\['c0'\]"),
    ({"label": 3, "num_frames": 200, "resolution": 128}, r"c0 asks for 200 frames.*max_latent_length to 53"),
    ({"label": 3, "num_frames": 128, "resolution": 512}, r"c0 asks for 512 px"),
])
def test_bad_requests_are_refused_before_loading(condition, message):
    with pytest.raises(ArbenchError, match=message):
        long_method().generate([Request(0, "c0", 0, condition)])


def test_missing_weights_and_data_are_named_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ARBENCH_UCF101", raising=False)
    with pytest.raises(MissingAssetError) as err:
        _runner(tmp_path).plan("ucf101-fvd2048-128f-128", "nova-d48w1024-osp480-long")
    text = str(err.value)
    assert "nova-d48w1024-osp480/vae/diffusion_pytorch_model.safetensors" in text and "no UCF-101 copy" in text
    assert "i3d_pretrained_400.pt" in text


# -- a tiny seeded NOVA through the long-video task path ----------------------------------------------------------
@register_task("test-ucf101-long-tiny")
class TinyLongUCF(TinyUCF):
    """The long-video protocol logic at test scale: 3 classes, 3 vs 3 clips of 30 frames at 16 px."""

    protocol = FVDProtocol(resolution=16, num_frames=30, num_generated=3, num_real=3, num_classes=3)

    def feature_extractor(self, device):
        return TinyFeatures()


@register_method("nova-tiny-long-test")
class TinyLong(METHODS.get("nova-d48w1024-osp480-long")):
    """The registered long method with the golden tiny architecture (64 px, temporal base 4)."""

    declared_size = (64, 64)

    def transformer_config(self):
        return TINY


#: 9 latent frames (twice the tiny model's temporal base of 4; two VAE windows) -> 33 frames, of which 30 are kept
TINY_SETTINGS = {"max_latent_length": 9, "num_pred_steps": 4, "num_diffusion_steps": 3, "guidance_scale": 5.0,
                 "precision": "fp32"}


def test_tiny_nova_end_to_end_through_the_long_video_task(video_snapshot, results_dir, tmp_path,  # noqa: F811
                                                          monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "home"))
    root = make_fake_ucf(tmp_path, frames=32)
    runner = _runner(results_dir)
    result = runner.run("test-ucf101-long-tiny", "nova-tiny-long-test",
                        {**TINY_SETTINGS, "model_dir": str(video_snapshot), "ucf101_root": str(root)})
    fvd = result.metrics[0]
    assert fvd.name == "fvd" and np.isfinite(fvd.value) and fvd.value > 0
    signature = str(runner.store.records()[0]["signature"])
    assert "a video of a person {}." in signature and "max_latent_length" in signature
    videos = np.concatenate([np.load(p) for p in sorted(Path(results_dir).rglob("videos.npy"))])
    assert videos.shape == (3, 30, 16, 16, 3) and videos.dtype == np.uint8
    assert videos.std(axis=1).mean() > 1  # the frames change over the rollout

    method = TinyLong(build_config(TinyLong.Config, {**TINY_SETTINGS, "model_dir": str(video_snapshot)}, "tiny"))
    requests = TinyLongUCF(TinyLongUCF.Config(ucf101_root=str(root))).requests()
    again = method.generate(requests[:1])  # the same seed makes the same video (the run's batch held all three)
    assert np.abs(again.astype(int) - videos[:1].astype(int)).max() <= 1
    # per-request seeds: in float64 (so that reordered float sums are not amplified by the random weights over
    # the rollout) a video's latents do not depend on its batch
    method._model.double()
    together, alone = method.latents(requests), method.latents(requests[2:])
    torch.testing.assert_close(together[2:], alone, rtol=0, atol=1e-12)
    assert (together[0] - together[1]).abs().max() > 1e-2  # another seed and class, another video
