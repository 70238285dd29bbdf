"""xAR against upstream's code (tests/golden/xar, made by tests/golden/make_xar.py from OliverRensu/xAR@121e9c9
on seeded random weights): cell layout, teacher-forced velocity of noisy cells, every cell of a CFG SDE sample with
fixed per-request noise, VAE pixels; released names and shapes of B/L/H; checkpoint refusal; batch independence."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from baselines.imagegen.kl_vae import KLVAEConfig
from baselines.imagegen.sampling import request_generators
from baselines.imagegen.xar import XAR, XAR_CONFIGS, XARConfig, XARSampler, from_cells, generate_xar, to_cells
from baselines.imagegen.xar_methods import XAR_METHODS
from harness.api import Request, build_config
from harness.errors import ArbenchError
from harness.registry import METHODS

torch.set_num_threads(1)
GOLDEN = Path(__file__).parent / "golden" / "xar"
TINY = XARConfig(embed_dim=32, depth=1, num_heads=2)
TINY_VAE = KLVAEConfig(embed_dim=16, ch=32, ch_mult=(1, 1), num_res_blocks=1)


class TinyXAR(XAR_METHODS[0]):
    name = "xar-tiny-test"
    num_classes = 10
    vae_config = TINY_VAE

    def model_config(self):
        return TINY


@pytest.fixture(scope="module")
def golden():
    return load_file(str(GOLDEN / "outputs.safetensors"))


@pytest.fixture(scope="module")
def method():
    values = {"xar_weights": str(GOLDEN / "xar_tiny.pth"), "vae_weights": str(GOLDEN.parent / "flowar" / "vae.ckpt"),
              "num_steps": 4, "cfg": 3.0, "precision": "fp32"}
    m = TinyXAR(build_config(TinyXAR.Config, values, "xar-tiny"))
    m.load()
    m._loaded = True
    return m


def close(actual, expected, rtol, atol):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def test_cell_layout_is_upstreams(golden):
    assert torch.equal(to_cells(golden["latents"], TINY), golden["cells"])
    assert torch.equal(from_cells(golden["cells"], TINY), golden["uncells"])
    assert torch.equal(golden["uncells"], golden["latents"])


def test_teacher_forced_velocity_matches_upstream(method, golden):
    model = method._model
    with torch.no_grad():
        for noisy, expected in (("noisy", "teacher_v"), ("noisy_b", "teacher_v_b")):
            close(model.teacher_forced(golden["labels"], golden[noisy], golden["times"]), golden[expected],
                  rtol=2e-5, atol=2e-5)
    assert (golden["teacher_v"] - golden["teacher_v_b"]).abs().mean() > 0.01 * golden["teacher_v"].abs().mean()


def test_sample_every_cell_and_pixels_match_upstream(method, golden):
    record = []
    latents = generate_xar(method._model, golden["labels"], request_generators([0, 1]), method.config.sampler(),
                           record=record)
    for k, cell in enumerate(record):  # float32 CPU, 4 cells x 4 SDE steps through the cached AR stacks
        close(cell, golden[f"cell{k}"], rtol=1e-4, atol=1e-4)
    close(latents, golden["sample"], rtol=1e-4, atol=1e-4)
    requests = [Request(i, f"r{i}", i, {"label": int(label)}) for i, label in enumerate(golden["labels"])]
    pixels = torch.from_numpy(method.generate(requests)).int()
    assert (pixels - golden["uint8"].int()).abs().max() <= 1  # one uint8 level at rounding boundaries


@pytest.mark.parametrize("name,arch", [("xar-b", "xar_base"), ("xar-l", "xar_large"), ("xar-h", "xar_huge")])
def test_released_names_and_shapes_equal_upstreams(name, arch):
    with gzip.open(GOLDEN / "released_shapes.json.gz", "rt") as f:
        upstream = {k: tuple(v) for k, v in json.load(f)[arch].items()}
    cls = METHODS.get(name)
    with torch.device("meta"):
        model = XAR(cls().model_config())
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == upstream
    assert cls.family == "next-x" and cls().model_config() == XAR_CONFIGS[arch]


def test_registered_defaults_follow_the_readme():
    for name, expected in {"xar-b": (40, 2.7), "xar-l": (50, 2.3), "xar-h": (50, 2.2)}.items():
        s = METHODS.get(name).Config()
        assert (s.num_steps, s.cfg, s.precision) == (*expected, "fp16-autocast")
    with pytest.raises(ValueError, match="at least 3"):
        XARSampler(num_steps=2)


def test_wrong_size_and_cpu_fp16_are_refused():
    config = build_config(METHODS.get("xar-b").Config, {"xar_weights": str(GOLDEN / "xar_tiny.pth"),
                                                        "vae_weights": str(GOLDEN.parent / "flowar" / "vae.ckpt"),
                                                        "precision": "fp32"}, "xar-b")
    with pytest.raises(ArbenchError, match=r"does not match this architecture: .*class_emb.weight has shape "
                                           r"\(1001, 32\), expected \(1001, 768\)"):
        METHODS.get("xar-b")(config).load()
    with pytest.raises(ArbenchError, match="needs a CUDA device"):
        METHODS.get("xar-b")(dataclasses.replace(config, precision="fp16-autocast")).load()


def test_images_do_not_depend_on_the_batch(method):
    m = TinyXAR(dataclasses.replace(method.config, num_steps=3))
    m._model, m._vae, m._loaded = method._model, method._vae, True
    requests = [Request(i, f"r{i}", 100 + i, {"label": i % 10}) for i in range(3)]
    # the same random draws whatever the batch; float sums may differ in the last bits with the batch size (BLAS
    # blocking), which can move a pixel across a rounding boundary: at most one uint8 level
    together = m.generate(requests).astype(int)
    alone = np.stack([m.generate([r])[0] for r in requests]).astype(int)
    assert np.abs(together - alone).max() <= 1 and (together == alone).mean() > 0.99


def test_buffers_built_here_equal_upstreams_stored_ones():
    """The file's `mask` and RoPE tables override the module's on loading: check the module computes the same."""
    stored = torch.load(GOLDEN / "xar_tiny.pth", weights_only=True)
    built = dict(XAR(TINY).named_buffers())
    assert {k for k in stored if k not in dict(XAR(TINY).named_parameters())} == set(built)
    for name, value in built.items():
        torch.testing.assert_close(value, stored[name].float(), rtol=0, atol=1e-6, msg=name)
