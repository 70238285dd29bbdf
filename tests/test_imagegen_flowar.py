"""FlowAR against upstream's code (tests/golden/flowar, made by tests/golden/make_flowar.py from
OliverRensu/FlowAR@21835c0 on seeded random weights): teacher-forced condition, flow-head velocity (Block_v1 and
Block_v2), every scale of a CFG sample with fixed per-request noise, VAE pixels; released names and shapes of
S/L/H; the Euler time grid; checkpoint refusal; batch independence."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from baselines.imagegen.flowar import (FLOWAR_CONFIGS, FlowAR, FlowARConfig, FlowARSampler, flow_timesteps,
                                       generate_flowar)
from baselines.imagegen.flowar_methods import FLOWAR_METHODS
from baselines.imagegen.kl_vae import KLVAEConfig
from baselines.imagegen.sampling import request_generators
from harness.api import Request, build_config
from harness.errors import ArbenchError
from harness.registry import METHODS

torch.set_num_threads(1)
GOLDEN = Path(__file__).parent / "golden" / "flowar"
TINY_VAE = KLVAEConfig(embed_dim=16, ch=32, ch_mult=(1, 1), num_res_blocks=1)
# float32 on CPU; the sample runs 5 scales x 6 Euler steps through a 2-block AR stack and the head, then the VAE
RTOL, ATOL = 1e-4, 1e-4


def tiny_method(cross: bool, **settings):
    config = FlowARConfig(embed_dim=32, depth=1, num_heads=2, head_width=64, head_depth=1, cross=cross)

    class TinyFlowAR(FLOWAR_METHODS[0]):
        name = "flowar-tiny-test"
        num_classes = 10
        vae_config = TINY_VAE

        def model_config(self):
            return config

    values = {"flowar_weights": str(GOLDEN / f"flowar_{'v2' if cross else 'v1'}.pth"),
              "vae_weights": str(GOLDEN / "vae.ckpt"), "num_steps": 6, "cfg": 3.0, "guidance": 0.9,
              "precision": "fp32", **settings}
    method = TinyFlowAR(build_config(TinyFlowAR.Config, values, "flowar-tiny"))
    method.load()
    method._loaded = True
    return method


@pytest.fixture(scope="module")
def golden():
    return load_file(str(GOLDEN / "outputs.safetensors"))


@pytest.fixture(scope="module", params=[False, True], ids=["block_v1", "block_v2"])
def method(request):
    return tiny_method(request.param)


def tag(method) -> str:
    return "v2" if method.model_config().cross else "v1"


def close(actual, expected, rtol=RTOL, atol=ATOL):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def test_teacher_forced_condition_matches_upstream(golden):
    model = tiny_method(True)._model
    z = model.teacher_forced(golden["labels"], golden["latents"])
    close(z, golden["v2_teacher_z"], rtol=2e-5, atol=2e-5)


def test_flow_head_velocity_matches_upstream(method, golden):
    t = tag(method)
    with torch.no_grad():
        v = method._model.flownet(golden[f"{t}_head_x"], golden[f"{t}_head_t"],
                                  method._model.teacher_forced(golden["labels"], golden["latents"])[:, 5:21])
    close(v, golden[f"{t}_head_v"], rtol=2e-5, atol=2e-5)


def test_sample_every_scale_and_pixels_match_upstream(method, golden):
    t = tag(method)
    record = []
    latents = generate_flowar(method._model, golden["labels"], request_generators([0, 1]), method.config.sampler(),
                              record=record)
    close(latents, golden[f"{t}_sample"])
    if t == "v2":
        for k, (z, sample) in enumerate(record):
            close(z[:2], golden[f"v2_z{k}"])
            if k < 4:
                close(sample, golden[f"v2_s{k}"])
    requests = [Request(i, f"r{i}", i, {"label": int(label)}) for i, label in enumerate(golden["labels"])]
    pixels = torch.from_numpy(method.generate(requests)).int()
    assert (pixels - golden[f"{t}_uint8"].int()).abs().max() <= 1  # one uint8 level at rounding boundaries
    close(method._vae(golden["latents_b"]), golden["vae_decoded_b"], rtol=1e-5, atol=1e-5)


def test_sample_depends_on_its_inputs(golden):
    assert (golden["v1_sample"] - golden["v2_sample"]).abs().mean() > 0.1
    assert (golden["v2_z3"] - golden["v2_z4"][:, :64]).abs().mean() > 0.01


def test_euler_time_grid_is_upstreams():
    grid = flow_timesteps(25)  # README S/L: 25 -> linspace(1, .3, 12) ++ linspace(.25, 0, 13): 24 steps
    assert len(grid) == 25 and grid[11].item() == pytest.approx(0.3) and grid[12].item() == 0.25
    assert torch.equal(flow_timesteps(50), torch.linspace(1, 0, 51, dtype=torch.float64))
    assert flow_timesteps(4).tolist() == [1.0, 0.3, 0.25, 0.125, 0.0]


@pytest.mark.parametrize("name,arch", [("flowar-s", "flowar_small"), ("flowar-l", "flowar_large"),
                                       ("flowar-h", "flowar_huge")])
def test_released_names_and_shapes_equal_upstreams(name, arch):
    with gzip.open(GOLDEN / "released_shapes.json.gz", "rt") as f:
        upstream = {k: tuple(v) for k, v in json.load(f)[arch].items()}
    cls = METHODS.get(name)
    with torch.device("meta"):
        model = FlowAR(cls().model_config())
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == upstream
    assert cls.family == "next-scale" and cls().model_config() == FLOWAR_CONFIGS[arch]


def test_registered_defaults_follow_the_readme():
    for name, expected in {"flowar-s": (25, 4.3, 0.9), "flowar-l": (25, 2.4, 0.9), "flowar-h": (50, 2.4, 0.7)}.items():
        s = METHODS.get(name).Config()
        assert (s.num_steps, s.cfg, s.guidance, s.precision) == (*expected, "fp16-autocast")
    with pytest.raises(ValueError, match="cfg must be >= 1"):
        FlowARSampler(cfg=0.5)


def test_wrong_size_and_cpu_fp16_are_refused():
    config = build_config(METHODS.get("flowar-s").Config, {"flowar_weights": str(GOLDEN / "flowar_v1.pth"),
                                                           "vae_weights": str(GOLDEN / "vae.ckpt"),
                                                           "precision": "fp32"}, "flowar-s")
    with pytest.raises(ArbenchError, match=r"does not match this architecture: .*class_emb.weight has shape "
                                           r"\(1001, 32\), expected \(1001, 768\)"):
        METHODS.get("flowar-s")(config).load()
    with pytest.raises(ArbenchError, match="needs a CUDA device"):
        METHODS.get("flowar-s")(dataclasses.replace(config, precision="fp16-autocast")).load()


def test_images_do_not_depend_on_the_batch():
    m = tiny_method(False, num_steps=2)
    requests = [Request(i, f"r{i}", 100 + i, {"label": i % 10}) for i in range(3)]
    # the same random draws whatever the batch; float sums may differ in the last bits with the batch size (BLAS
    # blocking), which can move a pixel across a rounding boundary: at most one uint8 level
    together = m.generate(requests).astype(int)
    alone = np.stack([m.generate([r])[0] for r in requests]).astype(int)
    assert np.abs(together - alone).max() <= 1 and (together == alone).mean() > 0.99


@pytest.mark.parametrize("cross", [False, True])
def test_buffers_built_here_equal_upstreams_stored_ones(cross):
    """The file's `mask` and RoPE frequencies override the module's on loading: check the module computes the same."""
    stored = torch.load(GOLDEN / f"flowar_{'v2' if cross else 'v1'}.pth", weights_only=True)
    model = FlowAR(FlowARConfig(embed_dim=32, depth=1, num_heads=2, head_width=64, head_depth=1, cross=cross))
    built = dict(model.named_buffers())
    assert {k for k in stored if k not in dict(model.named_parameters())} == set(built)
    for name, value in built.items():
        torch.testing.assert_close(value, stored[name].float(), rtol=0, atol=0, msg=name)
