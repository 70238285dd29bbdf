"""NPP against upstream's code (tests/golden/npp, made by tests/golden/make_npp.py from
PKU-YuanGroup/Next-Patch-Prediction@e333f2c on seeded random weights): teacher-forced token- and patch-level
logits and losses, the cached CFG sampler's per-step logits and tokens, decoded pixels; the patch schedule;
released sizes on the meta device; checkpoint refusal; batch independence."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from baselines.imagegen.llamagen_gpt import GPTConfig, LlamaGenGPT, generate_raster
from baselines.imagegen.npp import aggregate_patches, npp_loss, patch_logits, patch_schedule, patch_size_at
from baselines.imagegen.npp_methods import NPP_METHODS, read_npp_checkpoint
from baselines.imagegen.sampling import request_generators
from baselines.imagegen.vq_decoder import VQConfig
from harness.api import Request, build_config
from harness.errors import ArbenchError
from harness.registry import METHODS

torch.set_num_threads(1)
GOLDEN = Path(__file__).parent / "golden" / "npp"
TINY_GPT = GPTConfig(dim=64, n_layer=2, n_head=4, multiple_of=32, vocab_size=64, block_size=16, num_classes=10)
TINY_VQ = VQConfig(codebook_size=64, codebook_embed_dim=8, z_channels=32, ch=32, ch_mult=(1, 1), num_res_blocks=1)
RTOL, ATOL = 2e-5, 2e-5  # float32 CPU, two layers; observed differences ~1e-6


class TinyNPP(NPP_METHODS[0]):
    """The registered NPP method with the golden file's tiny shapes; everything else is the released path."""

    name = "npp-tiny-test"
    num_classes = 10
    vq_config = TINY_VQ

    def gpt_config(self):
        return TINY_GPT


@pytest.fixture(scope="module")
def golden():
    return load_file(str(GOLDEN / "outputs.safetensors"))


@pytest.fixture(scope="module")
def method():
    config = build_config(TinyNPP.Config, {"gpt_weights": str(GOLDEN / "gpt.pt"), "vq_weights": str(GOLDEN / "vq.pt"),
                                           "cfg_scale": 2.0, "top_k": 1, "image_size_eval": 8}, "npp-tiny")
    m = TinyNPP(config)
    m.load()
    m._loaded = True
    return m


def close(actual, expected, rtol=RTOL, atol=ATOL):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def test_teacher_forced_logits_and_loss_match_upstream(method, golden):
    model = method._model
    logits = model.training_logits(golden["labels"], golden["tokens"])
    close(logits, golden["logits_p1"])
    close(F.cross_entropy(logits.reshape(-1, 64), golden["tokens"].reshape(-1)), golden["loss_p1"])
    close(model.training_logits(golden["labels"], golden["tokens_b"]), golden["logits_p1_b"])
    assert (golden["logits_p1"] - golden["logits_p1_b"]).abs().mean() > 0.01 * golden["logits_p1"].abs().mean()


def test_patch_level_logits_and_loss_match_upstream(method, golden):
    logits = patch_logits(method._model, golden["labels"], golden["tokens"], 2)
    close(logits, golden["logits_p2"])
    close(npp_loss(logits, golden["tokens"], 2), golden["loss_p2"])
    close(patch_logits(method._model, golden["labels"], golden["tokens"], 1), golden["logits_p1"])


def test_cfg_sample_per_step_logits_tokens_and_pixels_match_upstream(method, golden):
    record = []
    labels = golden["labels"]
    tokens = generate_raster(method._model, labels, request_generators([0, 1]), method.sampler(), record=record)
    assert torch.equal(tokens, golden["sample_tokens"].long())
    close(torch.cat(record, dim=1), golden["sample_logits"])
    requests = [Request(i, f"r{i}", i, {"label": int(label)}) for i, label in enumerate(labels)]
    pixels = torch.from_numpy(method.generate(requests)).int()
    assert (pixels - golden["sample_uint8"].int()).abs().max() <= 1  # one uint8 level at rounding boundaries
    close(method._vq(golden["tokens_b"].view(2, 4, 4)), golden["decoded_b"], rtol=1e-5, atol=1e-5)


def test_aggregation_is_the_mean_of_each_patch_in_raster_order():
    x = torch.arange(16.0).view(1, 16, 1)  # a 4x4 grid numbered in raster order
    assert aggregate_patches(x, 2).flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert torch.equal(aggregate_patches(x, 1), x)
    with pytest.raises(ValueError, match="2x2 patches"):
        aggregate_patches(torch.zeros(1, 9, 1), 2)


def test_patch_schedule_matches_upstream_training_script():
    assert patch_schedule(300, 2) == [(4, 150), (1, 300)]  # README: --patch-level 2 --epoch-rate 0.5
    assert patch_schedule(300, 4) == [(64, 37), (16, 75), (4, 150), (1, 300)]  # upstream's comment: 37, 75, 150, 300
    schedule = patch_schedule(300, 2)
    assert [patch_size_at(e, schedule) for e in (0, 149, 150, 299)] == [4, 4, 1, 1]
    with pytest.raises(ValueError, match="patch_level"):
        patch_schedule(300, 5)


def test_reader_takes_model_not_ema_and_refuses_a_wrong_size(golden, tmp_path):
    saved = torch.load(GOLDEN / "gpt.pt", weights_only=False)
    state = read_npp_checkpoint(GOLDEN / "gpt.pt")
    assert all(torch.equal(state[k], saved["model"][k]) for k in saved["model"])
    config = build_config(METHODS.get("npp-b").Config, {"gpt_weights": str(GOLDEN / "gpt.pt"),
                                                    "vq_weights": str(GOLDEN / "vq.pt")}, "npp-b")
    with pytest.raises(ArbenchError, match=r"does not match this architecture: .*tok_embeddings.weight has shape "
                                           r"\(64, 64\), expected \(16384, 768\)"):
        METHODS.get("npp-b")(config).load()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ArbenchError, match="could not be read as an NPP checkpoint"):
        read_npp_checkpoint(tmp_path / "junk.pt")


# README parameter counts (111M, 343M, 775M, 1.4B): the GPT without the VQ tokenizer.
@pytest.mark.parametrize("name,size,params", [("npp-b", "GPT-B", 111e6), ("npp-l", "GPT-L", 343e6),
                                              ("npp-xl", "GPT-XL", 775e6), ("npp-xxl", "GPT-XXL", 1.4e9)])
def test_released_names_and_shapes_equal_upstreams(name, size, params):
    with gzip.open(GOLDEN / "released_shapes.json.gz", "rt") as f:
        upstream = {k: tuple(v) for k, v in json.load(f)[size].items()}
    cls = METHODS.get(name)
    assert cls in NPP_METHODS and cls.family == "raster-ar"
    with torch.device("meta"):
        model = LlamaGenGPT(cls().gpt_config())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == upstream
    assert sum(torch.Size(s).numel() for s in shapes.values()) == pytest.approx(params, rel=0.03)


def test_registered_defaults_follow_the_readme():
    expected = {"npp-b": 2.0, "npp-l": 1.75, "npp-xl": 1.70, "npp-xxl": 1.65}
    for name, cfg in expected.items():
        settings = METHODS.get(name).Config()
        assert (settings.cfg_scale, settings.top_k, settings.top_p, settings.temperature, settings.cfg_interval) == (
            cfg, 0, 1.0, 1.0, -1)


def test_images_do_not_depend_on_the_batch(method):
    sampled = dataclasses.replace(method.config, top_k=0)
    m = TinyNPP(sampled)
    m._model, m._vq, m._loaded = method._model, method._vq, True
    requests = [Request(i, f"r{i}", 100 + i, {"label": i % 10}) for i in range(3)]
    # the same random draws whatever the batch; float sums may differ in the last bits with the batch size (BLAS
    # blocking), which can move a pixel across a rounding boundary: at most one uint8 level
    together = m.generate(requests).astype(int)
    alone = np.stack([m.generate([r])[0] for r in requests]).astype(int)
    assert np.abs(together - alone).max() <= 1 and (together == alone).mean() > 0.99
