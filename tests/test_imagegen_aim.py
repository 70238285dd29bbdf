"""AiM against upstream's code (tests/golden/aim, made by tests/golden/make_aim.py from hp-l33/AiM@0a91c60 on
mamba_ssm 2.2.2's reference functions, seeded random weights in the released layout): teacher-forced logits, the
guided logits of the cached decoder on given tokens, a deterministic sample (tokens, per-step logits, pixels), the
VQ decoder; the chunked scan against the recurrence; released sizes on the meta device; checkpoint refusal; the
scan-path dispatch (the fused kernels cannot run here); batch independence."""

from __future__ import annotations

import dataclasses
import gzip
import json
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from baselines.imagegen import mamba2
from baselines.imagegen.aim import AIM_CONFIGS, AiM, AiMConfig, generate_aim
from baselines.imagegen.aim_methods import AIM_METHODS, AiMFile, read_aim_checkpoint
from baselines.imagegen.sampling import request_generators
from baselines.imagegen.vq_decoder import VQConfig, to_uint8
from harness.api import Request, build_config
from harness.errors import ArbenchError
from harness.registry import METHODS

sys.path.insert(0, str(Path(__file__).parent / "golden"))
from golden_weights import seeded_state  # noqa: E402

torch.set_num_threads(1)
GOLDEN = Path(__file__).parent / "golden" / "aim"
with gzip.open(GOLDEN / "released_shapes.json.gz", "rt") as _f:
    SHAPES = json.load(_f)
VARIANTS = {"block": (19, {}), "group": (20, dict(adaln_group=True, num_groups=2))}
TINY_VQ = VQConfig(codebook_size=64, codebook_embed_dim=8, z_channels=32, ch=128, ch_mult=(1, 1), num_res_blocks=1)
# float32 on CPU. Teacher-forced logits: observed <= 5e-6. Guided logits: cfg 5 multiplies the difference of the
# two halves by 5 (observed <= 3e-5 on logits of size ~3).
RTOL, ATOL, GUIDED_ATOL = 1e-5, 1e-5, 5e-5


def tiny_config(tag: str, **changes) -> AiMConfig:
    return AiMConfig(d_model=64, n_layer=3, vocab_size=64, num_classes=10, num_tokens=16, d_state=16, headdim=16,
                     **VARIANTS[tag][1], **changes)


def write_checkpoint(tag: str, folder: Path) -> Path:
    """The golden weights (seeded by name) saved in the released layout: one model.safetensors, lm_head dropped."""
    layout = SHAPES["tiny"][tag]["layout"]
    path = folder / f"{tag}.safetensors"
    save_file(seeded_state({k: torch.empty(v) for k, v in layout.items()}, VARIANTS[tag][0]), str(path))
    return path


def tiny_method(tag: str, path: Path, **settings):
    cls = type(f"TinyAiM{tag}", (AIM_METHODS[0],), {
        "name": f"aim-tiny-{tag}", "num_classes": 10, "vq_config": TINY_VQ,
        "model_config": lambda self: tiny_config(tag)})
    m = cls(build_config(cls.Config, {"weights": str(path), "top_k": 1, "top_p": 1.0, **settings}, "aim-tiny"))
    m.load()
    m._loaded = True
    return m


@pytest.fixture(scope="module")
def golden():
    return load_file(str(GOLDEN / "outputs.safetensors"))


@pytest.fixture(scope="module")
def methods(tmp_path_factory):
    folder = tmp_path_factory.mktemp("aim")
    return {tag: tiny_method(tag, write_checkpoint(tag, folder)) for tag in VARIANTS}


def close(actual, expected, atol=ATOL):
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=atol)


@pytest.mark.parametrize("tag", VARIANTS)
@pytest.mark.parametrize("chunk", [256, 4])  # one chunk (upstream's default), and 4 chunks passing states on
def test_teacher_forced_logits_match_upstream(methods, golden, tag, chunk):
    model = methods[tag]._model
    if chunk != 256:
        model = AiM(tiny_config(tag, chunk_size=chunk))
        model.load_state_dict(methods[tag]._model.state_dict())
    logits = model.training_logits(golden[f"{tag}_labels"], golden[f"{tag}_tokens"])
    close(logits, golden[f"{tag}_logits"])


@pytest.mark.parametrize("tag", VARIANTS)
def test_cached_decoding_matches_upstream_and_the_full_forward(methods, golden, tag):
    model, labels, tokens = methods[tag]._model, golden[f"{tag}_labels"], golden[f"{tag}_tokens"]
    record = []
    generate_aim(model, labels, request_generators([0, 1]), methods[tag].sampler(), teacher=tokens, record=record)
    close(torch.stack(record, dim=1), golden[f"{tag}_decode_logits"], GUIDED_ATOL)
    # the full sequence at the sampler's positions (token j at j + 1) gives the same guided logits
    both = model.forward(torch.cat([labels, torch.full_like(labels, 10)]), tokens.repeat(2, 1)[:, :-1], 1)
    cond, uncond = both[:2], both[2:]
    close(uncond + 5.0 * (cond - uncond), torch.stack(record, dim=1), GUIDED_ATOL)


@pytest.mark.parametrize("tag", VARIANTS)
def test_deterministic_sample_tokens_logits_and_pixels_match_upstream(methods, golden, tag):
    m, labels = methods[tag], golden[f"{tag}_labels"]
    record = []
    tokens = generate_aim(m._model, labels, request_generators([0, 1]), m.sampler(), record=record)
    assert torch.equal(tokens, golden[f"{tag}_sample_tokens"])
    close(torch.stack(record, dim=1), golden[f"{tag}_sample_logits"], GUIDED_ATOL)
    requests = [Request(i, f"r{i}", i, {"label": int(label)}) for i, label in enumerate(labels)]
    pixels = m.generate(requests).astype(int)
    assert np.abs(pixels - to_uint8(golden[f"{tag}_sample_images"]).astype(int)).max() <= 1  # rounding boundaries
    close(m._vq(golden[f"{tag}_tokens"].view(2, 4, 4)), golden[f"{tag}_decoded"])


def test_chunked_scan_equals_the_recurrence():
    gen = torch.Generator().manual_seed(0)
    b, length, h, p, n = 2, 11, 4, 3, 5
    x, B, C = (torch.randn(s, generator=gen) for s in ((b, length, h, p), (b, length, 1, n), (b, length, 1, n)))
    dt = F.softplus(torch.randn(b, length, h, generator=gen))
    A = -torch.rand(h, generator=gen) - 0.5
    state = torch.zeros(b, h, p, n)
    steps = torch.stack([mamba2.ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t]) for t in range(length)], 1)
    for chunk in (1, 3, 4, 16):
        y, final = mamba2.ssd_scan(x, dt, A, B, C, chunk)
        close(y, steps)
        close(final, state)


@pytest.mark.parametrize("size,params", [("AiM-B", 148e6), ("AiM-L", 350e6), ("AiM-XL", 763e6)])
def test_released_names_and_shapes_equal_upstreams(size, params):
    upstream = {k: tuple(v) for k, v in SHAPES["released"][size].items()}
    with torch.device("meta"):
        model = AiMFile(AIM_CONFIGS[size], VQConfig())
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    skipped = {k for k in upstream if k.startswith(("vqvae.encoder.", "vqvae.quant_conv.", "vqvae.quantize.codebook"))}
    assert ours == {k: v for k, v in upstream.items() if k not in skipped}
    count = sum(p.numel() for p in model.mamba.parameters())  # tied head counted once, as upstream's count
    assert count == SHAPES["released"][size + " params"]
    assert count == pytest.approx(params, rel=0.005)  # the README's 148M / 350M / 763M


def test_registered_sizes_and_readme_defaults():
    assert [METHODS.get(n) for n in ("aim-b", "aim-l", "aim-xl")] == AIM_METHODS
    for cls, size in zip(AIM_METHODS, ("AiM-B", "AiM-L", "AiM-XL")):
        s = cls.Config()
        assert (cls.arch, cls.family, s.cfg_scale, s.temperature, s.top_k, s.top_p) == (size, "raster-ar", 5.0, 1.0,
                                                                                         600, 0.98)
        assert cls.spec.url.startswith("https://huggingface.co/hp-l33/aim-") and cls.spec.license.startswith("MIT")


def test_reader_restores_the_tied_head_and_refuses_a_wrong_size(tmp_path):
    path = write_checkpoint("block", tmp_path)
    state = read_aim_checkpoint(path)
    assert torch.equal(state["mamba.lm_head.weight"], state["mamba.backbone.embeddings.word_embeddings.weight"])
    config = build_config(METHODS.get("aim-b").Config, {"weights": str(path)}, "aim-b")
    with pytest.raises(ArbenchError, match=r"does not match this architecture: .*word_embeddings.weight has shape "
                                           r"\(64, 64\), expected \(16384, 768\)"):
        METHODS.get("aim-b")(config).load()
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ArbenchError, match="could not be read as an AiM checkpoint"):
        read_aim_checkpoint(tmp_path / "junk.safetensors")


def test_scan_path_dispatch(methods, golden, monkeypatch):
    """The fused kernels cannot run here (no CUDA, no mamba-ssm): this checks only which path is chosen, that the
    signature records it, and that the fused branch hands the kernels mamba_ssm's argument layout (fakes built
    from the plain functions stand in for them)."""
    assert mamba2.resolve_scan("auto", "cpu") == "plain" and mamba2.resolve_scan("plain", "cuda") == "plain"
    assert methods["block"].settings()["scan"] == "plain"
    with pytest.raises(ArbenchError, match="needs the mamba-ssm package"):
        mamba2.resolve_scan("fused", "cpu")
    calls = []

    def chunk_scan(x, dt, A, B, C, chunk_size, D=None, dt_bias=None, dt_softplus=False):
        calls.append("chunk_scan")
        y, _ = mamba2.ssd_scan(x, F.softplus(dt + dt_bias), A, B, C, chunk_size)
        return y + x * D[:, None]

    def state_update(state, x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False):
        calls.append("state_update")  # mamba_ssm's per-channel layout: dt, A, D, dt_bias repeated over headdim
        assert dt.shape == x.shape and A.shape == state.shape[1:] and D.shape == dt_bias.shape == x.shape[1:]
        return mamba2.ssd_step(state, x, F.softplus(dt + dt_bias)[..., 0], A[:, 0, 0], B, C) + x * D

    monkeypatch.setattr(mamba2, "fused_kernels", lambda: (chunk_scan, state_update))
    assert mamba2.resolve_scan("auto", "cuda") == "fused" and mamba2.resolve_scan("fused", "cuda") == "fused"
    model, labels, tokens = methods["group"]._model, golden["group_labels"], golden["group_tokens"]
    close(model.forward(labels, tokens, scan="fused"), model.forward(labels, tokens))
    record = []
    generate_aim(model, labels, request_generators([0, 1]), methods["group"].sampler(), "fused", tokens, record)
    close(torch.stack(record, dim=1), golden["group_decode_logits"], GUIDED_ATOL)
    assert calls.count("chunk_scan") == 3 and calls.count("state_update") == 3 * 16
    monkeypatch.undo()
    if importlib.util.find_spec("mamba_ssm") is None:  # this machine: no fused path, auto falls back to plain
        assert mamba2.fused_kernels() is None and mamba2.resolve_scan("auto", "cuda") == "plain"


def test_images_do_not_depend_on_the_batch(methods):
    m = methods["group"]
    sampled = type(m)(dataclasses.replace(m.config, top_k=0, top_p=0.98))
    sampled._model, sampled._vq, sampled._loaded = m._model, m._vq, True
    requests = [Request(i, f"r{i}", 100 + i, {"label": i % 10}) for i in range(3)]
    together = sampled.generate(requests).astype(int)
    alone = np.stack([sampled.generate([r])[0] for r in requests]).astype(int)
    # the same draws whatever the batch; float sums may differ in the last bits with the batch size (BLAS
    # blocking), which can move a pixel across a rounding boundary: at most one uint8 level
    assert np.abs(together - alone).max() <= 1 and (together == alone).mean() > 0.99
