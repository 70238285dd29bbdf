"""NOVA's text-to-video rollout against upstream's code (tests/golden/nova_video, made by
tests/golden/make_nova_video.py from baaivision/NOVA@2cd254a on seeded random weights): the context tokens with
the motion-flow and fps tokens, the temporal steps of the video encoder through its key/value cache (frame 2 given
frame 1), and a deterministic 3-frame latent sample; deliberate breaks that the golden data catches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.imagegen import nova
from baselines.imagegen.nova import (DiffusionMLPConfig, NOVAConfig, NOVATransformer, ViTConfig, generate_video,
                                     motion_context, temporal_step, temporal_tokens, text_context)
from baselines.imagegen.sampling import request_generators
from golden.golden_weights import seeded_state

torch.set_num_threads(1)
GOLDEN = Path(__file__).parent / "golden" / "nova_video"
TINY = NOVAConfig(ViTConfig(2, 64, 4), ViTConfig(4, 64, 4), DiffusionMLPConfig(2, 48), image_size=(64, 64),
                  text_token_dim=32, text_token_len=12, image_base_size=(4, 4), video_base_size=(4, 2, 2))
SAMPLE = {"num_latents": 3, "num_steps": 4, "num_diffusion_steps": 3, "guidance_scale": 5.0, "motion_flow": 5.0}
RTOL, ATOL = 1e-5, 1e-5  # float32 CPU


@pytest.fixture(scope="module")
def golden():
    return {k: torch.from_numpy(v) for k, v in np.load(GOLDEN / "golden.npz").items() if k != "upstream"}


@pytest.fixture(scope="module")
def model():
    m = NOVATransformer(TINY)
    m.load_state_dict(seeded_state(m.state_dict(), 21))  # make_nova_video.py SEED
    return m.eval()


def scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler
    return FlowMatchEulerDiscreteScheduler(shift=3.0)


def context(model, golden, i):
    return motion_context(model, text_context(model, [golden[f"text_states_{i}"]], True), SAMPLE["motion_flow"])


@pytest.mark.parametrize("i", [0, 1])
def test_context_tokens_with_motion_match_upstream(model, golden, i):
    with torch.no_grad():
        torch.testing.assert_close(context(model, golden, i), golden[f"context_{i}"], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("i", [0, 1])
def test_temporal_steps_through_the_cache_match_upstream(model, golden, i):
    """Frame 1 from BOS after the text, then frame 2 given frame 1 and frame 3 given frame 2, each attending to
    the cached text and earlier frames."""
    latents = golden[f"latents_{i}"]
    time_embed = model.video_pos_embed.time_embed(3)
    with torch.no_grad():
        text = context(model, golden, i)
        model.video_encoder.enable_kvcache(True)
        try:
            for t in range(3):
                prev = None if t == 0 else latents[:, :, t - 1]
                torch.testing.assert_close(temporal_tokens(model, 2, prev, t, time_embed),
                                           golden[f"temporal_in_{i}_{t}"], rtol=RTOL, atol=ATOL)
                torch.testing.assert_close(temporal_step(model, text, prev, t, time_embed),
                                           golden[f"temporal_out_{i}_{t}"], rtol=RTOL, atol=ATOL)
        finally:
            model.video_encoder.enable_kvcache(False)


def test_frame_two_without_the_cache_differs(model, golden):
    """Deliberate break: frame 2's context computed without the text and frame 1 in the cache."""
    time_embed = model.video_pos_embed.time_embed(3)
    with torch.no_grad():
        text = context(model, golden, 0)
        out = temporal_step(model, text, golden["latents_0"][:, :, 0], 1, time_embed)
    assert (out - golden["temporal_out_0_1"]).abs().max() > 1e-2


@pytest.mark.parametrize("i", [0, 1])
def test_three_frame_sample_matches_upstream(model, golden, i):
    with torch.no_grad():
        latents = generate_video(model, scheduler(), [golden[f"text_states_{i}"]], request_generators([i]), **SAMPLE)
    assert latents.shape == (1, 4, 3, 8, 8)
    torch.testing.assert_close(latents, golden[f"latents_{i}"], rtol=1e-4, atol=1e-4)


def test_fresh_patch_order_per_frame_differs(model, golden, monkeypatch):
    """Deliberate break: drawing a new set order for every frame (upstream keeps the first frame's)."""
    real = nova.generate_frame
    monkeypatch.setattr(nova, "generate_frame", lambda *a, **k: real(*a[:6]))
    with torch.no_grad():
        latents = generate_video(model, scheduler(), [golden["text_states_0"]], request_generators([0]), **SAMPLE)
    assert (latents[:, :, 1:] - golden["latents_0"][:, :, 1:]).abs().max() > 1e-2


# -- the registered method ---------------------------------------------------------------------------------------
def video_method(**settings):
    from harness.api import build_config
    from harness.registry import METHODS

    cls = METHODS.get("nova-d48w1024-osp480")
    return cls(build_config(cls.Config, settings, cls.name))


def test_registered_with_the_vbench_script_defaults():
    m = video_method()
    assert m.modality == "text-to-video"
    assert m.settings() == {"max_latent_length": 9, "num_pred_steps": 128, "num_diffusion_steps": 25,
                            "guidance_scale": 7.0, "motion_flow": 5.0, "vae_batch_size": 1, "precision": "fp16"}
    assert m.num_frames() == 33
    assert m.expected["video_base_size"] == [16, 15, 24]  # configs/nova_d48w1024_osp480.yaml


def test_missing_snapshot_files_are_named_at_once(tmp_path):
    from harness.errors import MissingAssetError

    with pytest.raises(MissingAssetError) as err:
        video_method(model_dir=str(tmp_path)).weight_files()
    text = str(err.value)
    assert "needs 12 files" in text and "vae/diffusion_pytorch_model.safetensors" in text
    assert "https://huggingface.co/BAAI/nova-d48w1024-osp480/resolve/main/transformer/config.json" in text


def test_requests_for_another_video_shape_are_refused():
    from harness.api import Request
    from harness.errors import ArbenchError

    ok = {"prompt": "a dog running", "num_frames": 33, "height": 480, "width": 768, "fps": 12}
    requests = [Request(id="r0", index=0, condition=ok, seed=0),
                Request(id="r1", index=1, condition={**ok, "num_frames": 16}, seed=1)]
    with pytest.raises(ArbenchError, match=r"request r1: num_frames=16 \(makes 33\)"):
        video_method().generate(requests)


# -- the video VAE's decoder (upstream's AutoencoderKLOpenSora) --------------------------------------------------
VAE3D = {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock3D"] * 4,
         "up_block_types": ["UpDecoderBlock3D"] * 4, "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1,
         "latent_channels": 4, "scaling_factor": 0.18215}  # make_nova_video.py VAE3D


def test_video_vae_decoder_matches_upstream(golden):
    """9 latents -> 33 frames through the causal 3D decoder and the temporal tiling, then uint8 as upstream."""
    from baselines.video.osp_vae import OpenSoraVAEDecoder, to_uint8

    vae = OpenSoraVAEDecoder(VAE3D)
    vae.load_state_dict(seeded_state(vae.state_dict(), 22))  # make_nova_video.py VAE_SEED
    with torch.no_grad():
        video = vae.decode(golden["vae_latents"])
    assert video.shape == (1, 3, 33, 16, 16)
    torch.testing.assert_close(video, golden["vae_decoded"], rtol=1e-4, atol=1e-4)
    frames = to_uint8(video)
    assert np.abs(frames.astype(int) - golden["vae_frames"].numpy().astype(int)).max() <= 1


# -- end to end through the registered method's loading path ------------------------------------------------------
@pytest.fixture(scope="module")
def video_snapshot(tmp_path_factory):
    """The tiny text-to-image snapshot of test_imagegen_nova with the video transformer and the 3D VAE."""
    import json

    from safetensors.torch import save_file
    from test_imagegen_nova import write_snapshot

    from baselines.video.osp_vae import OpenSoraVAEDecoder

    folder = write_snapshot(tmp_path_factory.mktemp("nova-video") / "nova-tiny-video")
    config = json.loads((folder / "transformer" / "config.json").read_text())
    (folder / "transformer" / "config.json").write_text(json.dumps({**config, "video_base_size": [4, 2, 2]}))
    save_file(seeded_state(NOVATransformer(TINY).state_dict(), 21),
              str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    (folder / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLOpenSora", **VAE3D}))
    vae = seeded_state(OpenSoraVAEDecoder(VAE3D).state_dict(), 22)
    vae["encoder.conv_in.weight"] = torch.zeros(32, 3, 3, 3)  # the encoder's entries are present and not read
    save_file(vae, str(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "vae": ["__vae__", "AutoencoderKLOpenSora"]}))
    return folder


def test_method_end_to_end_matches_upstream_latents(video_snapshot, golden):
    from harness.api import Request, build_config
    from harness.registry import METHODS

    base = METHODS.get("nova-d48w1024-osp480")

    class TinyVideo(base):
        name = "nova-tiny-video-test"
        declared_size = (64, 64)

        def transformer_config(self):
            return TINY

    settings = {"max_latent_length": 3, "num_pred_steps": 4, "num_diffusion_steps": 3, "guidance_scale": 5.0,
                "precision": "fp32", "model_dir": str(video_snapshot)}
    m = TinyVideo(build_config(TinyVideo.Config, settings, "tiny"))
    cond = {"num_frames": 9, "height": 64, "width": 64, "fps": 12}
    prompts = ["a photo of a red bench", "a photo of two blue clocks"]  # make_nova.py PROMPTS
    requests = [Request(id=f"r{i}", index=i, condition={"prompt": p, **cond}, seed=i) for i, p in enumerate(prompts)]
    latents = m.latents(requests)  # both in one batch (upstream: one each): per-request seeds
    # batched kernels reorder float sums, which guidance x5 amplifies over 3 frames (observed 1.3e-4)
    torch.testing.assert_close(latents, torch.cat([golden["latents_0"], golden["latents_1"]]), rtol=1e-3, atol=1e-3)
    video = m.generate(requests[:1])
    assert video.dtype == np.uint8 and video.shape == (1, 9, 64, 64, 3)
    from baselines.video.osp_vae import to_uint8
    expected = to_uint8(m._vae.decode(golden["latents_0"]))
    assert np.abs(video.astype(int) - expected.astype(int)).max() <= 1
    with pytest.raises(Exception, match="max_latent_length=7"):
        TinyVideo(build_config(TinyVideo.Config, {**settings, "max_latent_length": 7}, "tiny")).num_frames()
