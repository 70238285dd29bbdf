"""ImageFolder against upstream's code (tests/golden/imagefolder, made by tests/golden/make_imagefolder.py from
adobe-research/ImageFolder@47d36b2 on seeded random weights): teacher-forced logits, per-branch logits and codes
at every scale of a deterministic guided sample, the decoded image and uint8 pixels, the ViT decoder alone; the
released checkpoint's names and shapes (meta device); checkpoint refusal; the licence; batch independence."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.imagegen.imagefolder import FoldedTokenizer, FoldedTokenizerConfig, generator_config
from baselines.imagegen.imagefolder_methods import IMAGEFOLDER_LICENSE, ImageFolder
from baselines.imagegen.sampling import request_generators
from baselines.imagegen.var import VAR, VARSampler, generate_var, scale_schedule
from harness.api import Request, build_config
from harness.errors import ArbenchError
from harness.registry import METHODS
from golden.golden_weights import seeded_module_state

torch.set_num_threads(1)
GOLDEN = Path(__file__).parent / "golden" / "imagefolder"
TINY_TOKENIZER = FoldedTokenizerConfig(codebook_size=16, codebook_dim=8, width=64, depth=2, heads=2, img_size=144,
                                       patch_size=12)
TINY_GENERATOR = generator_config(depth=2, num_classes=10, tokenizer=TINY_TOKENIZER)
PATCH = TINY_TOKENIZER.patch_nums
RTOL, ATOL = 1e-5, 1e-5
IMAGE_ATOL = 1.5e-3  # full golden images are stored in float16 (spacing 2**-11 near 1); a crop in float32


class TinyImageFolder(ImageFolder):
    name = "imagefolder-tiny-test"
    num_classes = 10
    depth = 2
    tokenizer_config = TINY_TOKENIZER


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN / "golden.npz") as data:
        return {k: data[k] for k in data.files}


def layout_of(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def write_training_checkpoint(path: Path, golden) -> None:
    """Seeded weights (as the golden script filled upstream's modules) in the released training-checkpoint layout,
    with the encoder-side entries the method must skip."""
    model, tokenizer = VAR(TINY_GENERATOR), FoldedTokenizer(TINY_TOKENIZER)
    assert layout_of(model) == {k: tuple(v) for k, v in json.loads(str(golden["var_layout"])).items()}
    upstream_tok = {k: tuple(v) for k, v in json.loads(str(golden["tok_layout"])).items()}
    assert layout_of(tokenizer) == {k: v for k, v in upstream_tok.items() if "ema_vocab_hit_SV" not in k}
    vae_local = seeded_module_state(tokenizer, 41)
    vae_local.update({f"quantizes.{b}.ema_vocab_hit_SV": torch.zeros(len(PATCH), 16) for b in range(2)})
    vae_local["encoder.model.pos_embed"] = torch.zeros(1, 145, 64)
    vae_local["semantic_model.cls_token"] = torch.zeros(1, 1, 64)
    torch.save({"epoch": 1, "iter": 0, "args": {"depth": 2, "cfg": 3.25, "v_patch_nums": list(PATCH)},
                "trainer": {"config": {"prog_it": 0}, "var_wo_ddp": seeded_module_state(model, 40),
                            "vae_local": vae_local, "var_opt": {"step": torch.tensor(3)}}}, path)


@pytest.fixture(scope="module")
def checkpoint(golden, tmp_path_factory):
    path = tmp_path_factory.mktemp("imagefolder") / "imagenet-var-tiny.pt"
    write_training_checkpoint(path, golden)
    return path


def tiny_method(checkpoint, **settings):
    values = {"imagefolder_weights": str(checkpoint), "precision": "fp32", **settings}
    method = TinyImageFolder(build_config(TinyImageFolder.Config, values, "imagefolder-tiny"))
    method.load()
    method._loaded = True
    return method


@pytest.fixture(scope="module")
def method(checkpoint):
    return tiny_method(checkpoint, top_k=1, top_p=1.0)


def test_teacher_forced_logits_match_upstream(method, golden):
    """Upstream `VAR.forward` on `idxBl_to_var_input(codes)` of both branches (training mask, one pass)."""
    model, tok = method._model, method._tokenizer
    labels = torch.from_numpy(golden["labels"])
    codes = [[torch.from_numpy(golden[f"codes_b{b}_s{s}"]).long() for b in range(2)] for s in range(len(PATCH))]
    with torch.no_grad():
        cond = model.class_emb(labels)
        lvl_pos = model.level_positions()
        f_hat = torch.zeros(len(labels), TINY_GENERATOR.z_channels, PATCH[-1], PATCH[-1])
        inputs = [cond.unsqueeze(1) + model.pos_start + lvl_pos[:, :1]]
        for si, (begin, end) in enumerate(scale_schedule(PATCH)[1:]):
            f_hat, nxt = tok.add_scale(si, f_hat, codes[si])
            inputs.append(model.word_embed(nxt.flatten(2).transpose(1, 2)) + lvl_pos[:, begin:end])
        logits = model.logits(torch.cat(inputs, dim=1), cond, None, model.attn_bias_for_masking)
    np.testing.assert_allclose(logits.numpy(), golden["teacher_logits"], rtol=RTOL, atol=ATOL)


def test_sample_scale_by_scale_matches_upstream(method, golden):
    """`autoregressive_infer_cfg` at cfg 3.25 with top_k 1: each branch's logits and codes at every scale, the image."""
    record: list[torch.Tensor] = []
    sampler = VARSampler(cfg=float(golden["sample_cfg"]), top_k=1, top_p=0.0)
    images, codes = generate_var(method._model, method._tokenizer, torch.from_numpy(golden["labels"]),
                                 request_generators([0, 1]), sampler, record=record)
    assert len(record) == len(PATCH) == 10
    for si in range(len(PATCH)):
        for b, part in enumerate(record[si].chunk(2, dim=-1)):
            np.testing.assert_allclose(part.numpy(), golden[f"sample_s{si}_b{b}_logits"], rtol=RTOL, atol=ATOL)
            np.testing.assert_array_equal(codes[si][b].numpy(), golden[f"sample_s{si}_b{b}_codes"])
    crop = golden["sample_image01_crop"]
    np.testing.assert_allclose((images[0, :, :crop.shape[1]] * 0.5 + 0.5).numpy(), crop, rtol=RTOL, atol=ATOL)


def test_end_to_end_pixels_match_upstreams_inference(method, golden):
    requests = [Request(i, f"r{i}", i, {"label": int(label)}) for i, label in enumerate(golden["labels"])]
    pixels = method.generate(requests).astype(int)
    assert pixels.shape == (2, 144, 144, 3)
    diff = np.abs(pixels - golden["sample_uint8"].astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99  # truncation boundaries may differ by one level


def test_decoder_matches_upstream(method, golden):
    with torch.no_grad():
        decoded = method._tokenizer.fhat_to_img(torch.from_numpy(golden["latent"]))
    np.testing.assert_allclose(decoded.numpy(), golden["decoded"].astype(np.float32), rtol=0, atol=IMAGE_ATOL)
    crop = golden["decoded_crop"]
    np.testing.assert_allclose(decoded[0, :, :crop.shape[1]].numpy(), crop, rtol=RTOL, atol=ATOL)
    assert float(np.abs(golden["decoded"].astype(np.float32)).mean()) > 0.1  # not a constant image


def test_released_names_and_shapes_equal_upstreams():
    with gzip.open(GOLDEN / "released_layout.json.gz", "rt") as f:
        upstream = {part: {k: tuple(v) for k, v in shapes.items()} for part, shapes in json.load(f).items()}
    with torch.device("meta"):
        model = VAR(generator_config(ImageFolder.depth, 1000, ImageFolder.tokenizer_config))
        tokenizer = FoldedTokenizer(ImageFolder.tokenizer_config)
    assert layout_of(model) == upstream["var_wo_ddp"]
    ours = layout_of(tokenizer)
    skipped = {k for k in upstream["vae_local"] if k.startswith(tokenizer.encoder_prefixes())}
    assert {k: v for k, v in upstream["vae_local"].items() if k not in skipped} == ours
    assert any(k.startswith("semantic_model.") for k in skipped) and any(k.startswith("encoder.") for k in skipped)
    # the README command's depth 16: 314.1M generator parameters (the model zoo says 362M, see the docs)
    params = sum(p.numel() for p in model.parameters())
    assert params == 314_111_232


def test_checkpoint_of_another_size_or_layout_is_refused(checkpoint, tmp_path):
    config = build_config(ImageFolder.Config, {"imagefolder_weights": str(checkpoint), "precision": "fp32"},
                          "imagefolder")
    with pytest.raises(ArbenchError, match=r"does not match this architecture: .*pos_start has shape \(1, 1, 128\), "
                                           r"expected \(1, 1, 1024\)"):
        ImageFolder(config).load()
    flat = tmp_path / "flat.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, flat)
    with pytest.raises(ArbenchError, match=r"not an ImageFolder training checkpoint.*\['trainer'\]\['var_wo_ddp'\]"):
        ImageFolder(build_config(ImageFolder.Config, {"imagefolder_weights": str(flat), "precision": "fp32"},
                                 "imagefolder")).load()
    with pytest.raises(ArbenchError, match="needs a CUDA device"):
        ImageFolder(build_config(ImageFolder.Config, {"imagefolder_weights": str(checkpoint)}, "imagefolder")).load()


def test_registered_defaults_are_the_readme_command():
    cls = METHODS.get("imagefolder")
    s = cls.Config()
    assert (s.cfg, s.top_k, s.top_p, s.joint_sample, s.precision, s.to_uint8) == \
        (3.25, 750, 0.95, False, "fp16-autocast", "truncate")
    assert cls.family == "next-scale" and generator_config().patch_nums == (1, 1, 2, 3, 3, 4, 5, 6, 8, 11)
    with pytest.raises(ArbenchError, match="joint_sample"):
        build_config(cls.Config, {"joint_sample": "True"}, "imagefolder")
    with pytest.raises(ArbenchError, match="top_p"):
        build_config(cls.Config, {"top_p": "1.5"}, "imagefolder")


def test_non_commercial_licence_is_declared_and_listed():
    from harness.cli import main
    from harness.reported import read_data_file

    row = next(e for e in read_data_file()[1] if e.method == "imagefolder")  # the board's reported row
    assert "NON-COMMERCIAL" in row.provenance["note"] and row.metrics["fid"] == 2.60

    assert "NON-COMMERCIAL" in IMAGEFOLDER_LICENSE and METHODS.get("imagefolder").weights_license == IMAGEFOLDER_LICENSE
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["weights", "list", "imagefolder-var-4096"])
    assert "NON-COMMERCIAL" in out.getvalue() and "ang9867/imagefolder" in out.getvalue()


def test_images_do_not_depend_on_the_batch(checkpoint):
    m = tiny_method(checkpoint)  # the README's top-k 750 / top-p 0.95: real draws
    requests = [Request(i, f"r{i}", 100 + i, {"label": i % 10}) for i in range(3)]
    together = m.generate(requests).astype(int)
    alone = np.stack([m.generate([r])[0] for r in requests]).astype(int)
    assert np.abs(together - alone).max() <= 1 and (together == alone).mean() > 0.99
    assert np.abs(together[0] - together[1]).mean() > 1  # different requests, different images


def test_runs_record_the_weights_licence_in_their_provenance(method):
    from harness.runner import Plan, RunOptions, Runner
    from harness.signature import Signature

    plan = Plan(task=None, method=method, kind="score", signature=Signature(), eval_signature=Signature(), settings={})
    assert Runner(options=RunOptions(progress=False))._provenance(plan, "cpu", 1)["weights_license"] == \
        IMAGEFOLDER_LICENSE
