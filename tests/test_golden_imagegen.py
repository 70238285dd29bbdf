"""The image generators against upstream's own outputs (tests/golden/make_*.py, seeded weights).

Each golden file was written by running the upstream repository's code (named with its commit in the file and
in the generating script) on weights drawn by `golden/golden_weights.py`; here ARBench's modules get the same
weights through their normal checkpoint reader and must give the same logits, tokens and pixels.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.imagegen.checkpoints import load_into, read_state_dict
from baselines.imagegen.llamagen_gpt import GPTConfig, LlamaGenGPT, generate_raster
from baselines.imagegen.methods import LLAMAGEN_METHODS, LlamaGen, LlamaGenSettings
from baselines.imagegen.sampling import SamplerConfig, request_generators
from baselines.imagegen.var import (VAE_ENCODER_PREFIXES, VAR, VARConfig, VARSampler, VQVAEConfig, VQVAEDecoder,
                                    generate_var, scale_schedule)
from baselines.imagegen.vq_decoder import ENCODER_PREFIXES, VQConfig, VQDecoder
from golden.golden_weights import seeded_module_state, seeded_state
from harness.api import Request

GOLDEN = Path(__file__).parent / "golden"
# float32 on CPU through 2 transformer layers: upstream and ARBench order a few reductions differently
RTOL, ATOL = 1e-5, 1e-5


def golden(system: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / system / "golden.npz") as data:
        return {k: data[k] for k in data.files}


def assert_same_layout(module: torch.nn.Module, upstream_layout: np.ndarray, ignore_prefixes=()) -> None:
    """ARBench's parameter names and shapes are upstream's (less the parts it does not build, e.g. encoders)."""
    theirs = {k: tuple(v) for k, v in json.loads(str(upstream_layout)).items() if not k.startswith(ignore_prefixes)}
    ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert ours == theirs


# -- LlamaGen (FoundationVision/LlamaGen@ce98ec4, tests/golden/make_llamagen.py) ---------------------------
LLAMAGEN_GPT = GPTConfig(dim=64, n_layer=2, n_head=4, vocab_size=64, block_size=16, num_classes=10)
LLAMAGEN_VQ = VQConfig(codebook_size=64, codebook_embed_dim=8, z_channels=64, ch=128, ch_mult=(1, 2))


def write_llamagen_training_checkpoint(path: Path, g: dict) -> None:
    """The layout of LlamaGen's train_c2i.py: weights under "model" (plus a `freqs_cis` entry), the optimizer
    state, the step and the command line as an argparse.Namespace."""
    state = seeded_state(LlamaGenGPT(LLAMAGEN_GPT).state_dict(), 16)
    state["freqs_cis"] = torch.from_numpy(g["freqs_cis"])
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "steps": 5000,
                "args": argparse.Namespace(gpt_model="GPT-tiny", ema=False, lr=1e-4)}, path)


@pytest.fixture(scope="module")
def llamagen(tmp_path_factory):
    g = golden("llamagen")
    path = tmp_path_factory.mktemp("llamagen") / "c2i_tiny.pt"
    write_llamagen_training_checkpoint(path, g)
    model = LlamaGenGPT(LLAMAGEN_GPT)
    load_into(model, read_state_dict(path, derived=("freqs_cis",)), "tiny LlamaGen")
    return model.eval(), g, path


def test_llamagen_rotary_table_and_teacher_forced_logits_equal_upstream(llamagen):
    model, g, _ = llamagen
    assert_same_layout(model, g["gpt_layout"])
    assert_same_layout(VQDecoder(LLAMAGEN_VQ), g["vq_layout"], ENCODER_PREFIXES)
    np.testing.assert_allclose(model.rope.numpy(), g["freqs_cis"], rtol=0, atol=1e-6)
    with torch.no_grad():
        logits = model.training_logits(torch.from_numpy(g["labels"]), torch.from_numpy(g["tokens"]))
    np.testing.assert_allclose(logits.numpy(), g["teacher_logits"], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("k", [0, 1])
def test_llamagen_sampler_sees_upstreams_guided_logits_at_every_step(llamagen, k):
    """Top-k 1 makes upstream's sample deterministic; sample 0 has cfg_interval 2, which upstream applies to
    steps 0..3 (prefill plus decode steps i <= 2): guiding one step fewer changes step 3's logits."""
    model, g, _ = llamagen
    scale, interval = g[f"sample{k}_cfg"]
    record: list[torch.Tensor] = []
    sampler = SamplerConfig(cfg_scale=float(scale), cfg_interval=int(interval), top_k=1)
    tokens = generate_raster(model, torch.from_numpy(g["labels"]), request_generators([0, 1]), sampler, record=record)
    np.testing.assert_array_equal(tokens.numpy(), g[f"sample{k}_tokens"])
    np.testing.assert_allclose(torch.cat(record, 1).numpy(), g[f"sample{k}_step_logits"], rtol=RTOL, atol=ATOL)


class TinyLlamaGen(LlamaGen):
    """The registered method's loading and decoding path, on the golden configuration."""

    name = "llamagen-golden-tiny"
    image_size = 8
    num_classes = 10
    vq_config = LLAMAGEN_VQ
    gpt_spec = LLAMAGEN_METHODS[0].gpt_spec  # files are given by path: only the spec's locate() is used

    def gpt_config(self):
        return LLAMAGEN_GPT


@pytest.fixture(scope="module")
def llamagen_vq_state():
    return seeded_state(VQDecoder(LLAMAGEN_VQ).state_dict(), 17)


@pytest.mark.parametrize("k", [0, 1])
def test_llamagen_method_end_to_end_equals_upstream_pixels(llamagen, llamagen_vq_state, tmp_path, k):
    """Checkpoint files -> `LlamaGen.load` -> sampling -> VQ decoder -> resize -> uint8, against upstream's
    generate + decode_code + sample_c2i_ddp.py's mapping; within one grey level (float rounding at .5)."""
    _, g, gpt_path = llamagen
    vq_path = tmp_path / "vq_tiny.pt"
    torch.save({"model": llamagen_vq_state}, vq_path)  # released vq_ds16_c2i.pt layout
    scale, interval = g[f"sample{k}_cfg"]
    size = g[f"sample{k}_uint8"].shape[1]
    method = TinyLlamaGen(LlamaGenSettings(cfg_scale=float(scale), cfg_interval=int(interval), top_k=1,
                                           image_size_eval=size, gpt_weights=str(gpt_path), vq_weights=str(vq_path)))
    images = method.generate([Request(i, str(i), i, {"label": int(label)}) for i, label in enumerate(g["labels"])])
    assert images.dtype == np.uint8 and images.shape == g[f"sample{k}_uint8"].shape
    assert np.abs(images.astype(int) - g[f"sample{k}_uint8"]).max() <= 1


def test_llamagen_vq_decoder_equals_upstream(llamagen_vq_state):
    g = golden("llamagen")
    vq = VQDecoder(LLAMAGEN_VQ)
    vq.load_state_dict(llamagen_vq_state)
    with torch.no_grad():
        images = vq.eval()(torch.from_numpy(g["codes"]))
    np.testing.assert_allclose(images.numpy(), g["vq_images"], rtol=RTOL, atol=ATOL)


# -- VAR (FoundationVision/VAR@78b9539, tests/golden/make_var.py) -----------------------------------------
VAR_PATCH = (1, 2, 4)
VAR_CONFIG = VARConfig(depth=2, num_classes=10, vocab_size=16, patch_nums=VAR_PATCH)
VAR_VAE = VQVAEConfig(vocab_size=16, ch=32, patch_nums=VAR_PATCH)


@pytest.fixture(scope="module")
def var_models(tmp_path_factory):
    """Seeded weights written as the released flat `var_d16.pth` / `vae_ch160v4096z32.pth`, read back."""
    g = golden("var")
    model, vae = VAR(VAR_CONFIG), VQVAEDecoder(VAR_VAE)
    assert_same_layout(model, g["var_layout"])
    assert_same_layout(vae, g["vae_layout"], VAE_ENCODER_PREFIXES)
    folder = tmp_path_factory.mktemp("var")
    torch.save(seeded_module_state(model, 30), folder / "var_tiny.pth")
    torch.save(seeded_module_state(vae, 31), folder / "vae_tiny.pth")
    load_into(model, read_state_dict(folder / "var_tiny.pth"), "tiny VAR")
    load_into(vae, read_state_dict(folder / "vae_tiny.pth"), "tiny VQVAE", VAE_ENCODER_PREFIXES)
    return model.eval(), vae.eval(), g


def test_var_teacher_forced_logits_equal_upstream(var_models):
    """Upstream `VAR.forward` on `idxBl_to_var_input(codes)` (training mask, all scales in one pass)."""
    model, vae, g = var_models
    labels = torch.from_numpy(g["labels"])
    codes = [torch.from_numpy(g[f"codes_scale{i}"]) for i in range(len(VAR_PATCH))]
    with torch.no_grad():
        cond = model.class_emb(labels)
        lvl_pos = model.level_positions()
        f_hat = torch.zeros(len(labels), VAR_CONFIG.z_channels, VAR_PATCH[-1], VAR_PATCH[-1])
        inputs = [cond.unsqueeze(1) + model.pos_start + lvl_pos[:, :1]]
        for si, (begin, end) in enumerate(scale_schedule(VAR_PATCH)[1:]):
            f_hat, nxt = vae.quantize.add_scale(si, f_hat, codes[si])
            inputs.append(model.word_embed(nxt.flatten(2).transpose(1, 2)) + lvl_pos[:, begin:end])
        logits = model.logits(torch.cat(inputs, dim=1), cond, None, model.attn_bias_for_masking)
    np.testing.assert_allclose(logits.numpy(), g["teacher_logits"], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("k", [0, 1])
def test_var_sampler_scale_by_scale_equals_upstream(var_models, k):
    """`autoregressive_infer_cfg` with top_k 1: the guided logits at every scale (cfg ramp t = cfg * si / 2),
    the codes, and the image ([0, 1] upstream, [-1, 1] here)."""
    model, vae, g = var_models
    record: list[torch.Tensor] = []
    sampler = VARSampler(cfg=float(g[f"sample{k}_cfg"]), top_k=1, top_p=0.0)
    images, codes = generate_var(model, vae, torch.from_numpy(g["labels"]), request_generators([0, 1]), sampler,
                                 record=record)
    for si in range(len(VAR_PATCH)):
        np.testing.assert_array_equal(codes[si].numpy(), g[f"sample{k}_scale{si}_codes"])
        np.testing.assert_allclose(record[si].numpy(), g[f"sample{k}_scale{si}_logits"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose((images * 0.5 + 0.5).numpy(), g[f"sample{k}_image01"], rtol=RTOL, atol=ATOL)
