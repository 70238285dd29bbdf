"""RQ-Transformer and its RQ-VAE decoder against upstream's code (tests/golden/rqtransformer, made by
tests/golden/make_rqtransformer.py from kakaobrain/rq-vae-transformer@341395e on seeded weights): teacher-forced
logits, the cached sampler's per-step logits and codes, top-k / top-p probabilities, decoded images; the release
archive read through the registered method's path; released sizes on the meta device; refusals; licence shown;
batch independence."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from baselines.imagegen.rqtransformer import RQSampler, RQTransformer, RQTransformerConfig, code_probabilities, generate_rq
from baselines.imagegen.rqtransformer_methods import (RQ_CONFIGS, RQ_LICENSE_SHORT, RQ_METHODS, RQTransformerMethod,
                                                      unpack_release)
from baselines.imagegen.rqvae import RQVAEConfig, RQVAEDecoder, unused_prefixes
from baselines.imagegen.sampling import request_generators
from harness.api import Request, build_config
from harness.errors import ArbenchError
from harness.registry import METHODS
from harness.weights import WEIGHTS
from golden.golden_weights import seeded_tensor

torch.set_num_threads(1)
GOLDEN = Path(__file__).parent / "golden" / "rqtransformer"
RTOL, ATOL = 1e-5, 1e-5  # float32 CPU; observed differences ~1e-7
STAGE1, STAGE2 = (yaml.safe_load((GOLDEN / f"{s}.yaml").read_text()) for s in ("stage1", "stage2"))
TINY_RQ = RQTransformerConfig.from_arch(STAGE2["arch"])
TINY_VAE = RQVAEConfig.from_arch(STAGE1["arch"])


def layouts() -> dict:
    with gzip.open(GOLDEN / "layouts.json.gz", "rt") as f:
        return {k: {n: tuple(s) for n, s in v.items()} for k, v in json.load(f).items()}


def released_state(layout: dict, seed: int) -> dict[str, torch.Tensor]:
    """Seeded weights in upstream's layout (golden_weights' rule, as make_rqtransformer.py fills upstream's
    modules): the shared codebook holds the last of its four names on both sides; EMA buffers are zeros."""
    state = {}
    for name, shape in layout.items():
        source = "quantizer.codebooks.3.weight" if name.startswith("quantizer.codebooks.") and name.endswith(".weight") else name
        state[name] = torch.zeros(shape) if name.endswith(("_ema",)) else seeded_tensor(source, shape, seed)
    return state


def write_release(path: Path, stage1: dict, stage2: dict, state1: dict, state2: dict) -> Path:
    """A release archive in upstream's layout: <folder>/stage{1,2}/{model.pt,config.yaml}, {"state_dict": ...}."""
    with tarfile.open(path, "w:gz") as tar:
        for stage, config, state in (("stage1", stage1, state1), ("stage2", stage2, state2)):
            for member, data in (("config.yaml", yaml.safe_dump(config).encode()), ("model.pt", _saved(state))):
                info = tarfile.TarInfo(f"imagenet_tiny/{stage}/{member}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _saved(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save({"state_dict": state}, buffer)
    return buffer.getvalue()


class TinyRQ(RQ_METHODS[0]):
    """The registered 480M method with the golden file's tiny shapes; everything else is the released path."""

    name = "rq-transformer-tiny-test"
    num_classes = 10
    transformer_config = TINY_RQ
    vae_config = TINY_VAE


@pytest.fixture(scope="module")
def golden():
    return load_file(str(GOLDEN / "outputs.safetensors"))


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    shapes = layouts()
    return write_release(tmp_path_factory.mktemp("rq") / "imagenet_tiny.tar.gz", STAGE1, STAGE2,
                         released_state(shapes["tiny-stage1"], 2), released_state(shapes["tiny-stage2"], 1))


@pytest.fixture(scope="module")
def method(release):
    config = build_config(TinyRQ.Config, {"release_weights": str(release), "precision": "fp32", "top_k": 1},
                          "rq-tiny")
    m = TinyRQ(config)
    # the archive's own sampling section (top-k 256, as the released 480M and 1.4B ones) differs from this run's
    with pytest.warns(UserWarning, match=r"samples with \{'top_k': 256\}, this run with \{'top_k': 1\}"):
        m.load()
    m._loaded = True
    return m


def close(actual, expected, rtol=RTOL, atol=ATOL):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def test_tiny_modules_have_upstreams_names_and_shapes():
    shapes = layouts()
    ours = {k: tuple(v.shape) for k, v in RQTransformer(TINY_RQ).state_dict().items()}
    assert ours == shapes["tiny-stage2"]
    vae = {k: tuple(v.shape) for k, v in RQVAEDecoder(TINY_VAE).state_dict().items()}
    assert vae == {k: v for k, v in shapes["tiny-stage1"].items() if not k.startswith(unused_prefixes(TINY_VAE))}


def test_teacher_forced_logits_match_upstream(method, golden):
    logits = method._model.teacher_forced_logits(golden["codes"], golden["labels"], method._vae.code_embeddings)
    close(logits, golden["logits"])


def test_cached_sample_codes_logits_and_images_match_upstream(method, golden):
    record = []
    codes = generate_rq(method._model, golden["labels"], request_generators([0, 1]), method.config.sampler(),
                        method._vae.code_embeddings, record=record)
    assert torch.equal(codes, golden["sample_codes"])
    close(torch.stack(record, dim=1), golden["sample_logits"])
    close(method._vae(codes), golden["sample_images"])
    close(method._vae(golden["codes"]), golden["decoded"])
    requests = [Request(i, f"r{i}", i, {"label": int(label)}) for i, label in enumerate(golden["labels"])]
    pixels = torch.from_numpy(method.generate(requests)).int()
    expected = (golden["sample_images"] * 0.5 + 0.5).clamp(0, 1).mul(255).round().permute(0, 2, 3, 1).int()
    assert (pixels - expected).abs().max() <= 1  # one level at rounding boundaries


@pytest.mark.parametrize("name,temp,k,p", [("a", 1.0, 16, 0.9), ("b", 0.7, 64, 0.5), ("c", 1.3, 5, 1.0)])
def test_top_k_top_p_probabilities_match_upstream(golden, name, temp, k, p):
    probs = code_probabilities(golden["filter_logits"], RQSampler(temp, k, p))
    close(probs, golden[f"filter_probs_{name}"], rtol=1e-6, atol=1e-7)


def test_release_archive_is_unpacked_by_member_name_only(release, tmp_path):
    folder = unpack_release(release)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "stage1/config.yaml", "stage1/model.pt", "stage2/config.yaml", "stage2/model.pt", "unpacked.json"]
    assert unpack_release(release) == folder  # reused, not unpacked again
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../../outside/stage1/model.pt")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(ArbenchError, match="not the one regular file stage1/model.pt"):
        unpack_release(evil)
    assert not (tmp_path.parent / "outside").exists() and not list(tmp_path.glob("evil.tar.gz.d*"))
    (tmp_path / "junk.tar.gz").write_bytes(b"not an archive")
    with pytest.raises(ArbenchError, match="could not be read as a release archive"):
        unpack_release(tmp_path / "junk.tar.gz")


def test_wrong_release_or_weights_are_refused(release, tmp_path):
    config = build_config(METHODS.get("rq-transformer-480m").Config,
                          {"release_weights": str(release), "precision": "fp32"}, "rq-480m")
    with pytest.raises(ArbenchError, match=r"not the release this method names: embed_dim is 64, expected 1536"):
        METHODS.get("rq-transformer-480m")(config).load()
    shapes = layouts()
    narrow = {**STAGE2, "arch": {**STAGE2["arch"], "embed_dim": 32}}
    with torch.device("meta"):
        layout = {k: tuple(v.shape) for k, v in RQTransformer(RQTransformerConfig.from_arch(narrow["arch"])).state_dict().items()}
    wrong = write_release(tmp_path / "wrong.tar.gz", STAGE1, STAGE2, released_state(shapes["tiny-stage1"], 2),
                          released_state(layout, 1))
    config = build_config(TinyRQ.Config, {"release_weights": str(wrong), "precision": "fp32"}, "rq-tiny")
    with pytest.raises(ArbenchError, match=r"does not match this architecture: .*cond_emb.weight has shape "
                                           r"\(10, 32\), expected \(10, 64\)"):
        TinyRQ(config).load()
    lying = write_release(tmp_path / "flags.tar.gz", STAGE1, {**STAGE2, "arch": {**STAGE2["arch"], "cumsum_depth_ctx": False}},
                          {}, {})
    config = build_config(TinyRQ.Config, {"release_weights": str(lying), "precision": "fp32"}, "rq-tiny")
    with pytest.raises(ArbenchError, match="cumsum_depth_ctx=False"):
        TinyRQ(config).load()


def test_fp16_autocast_is_refused_on_cpu_before_reading(release):
    config = build_config(TinyRQ.Config, {"release_weights": str(release)}, "rq-tiny")
    with pytest.raises(ArbenchError, match="needs a CUDA device"):
        TinyRQ(config).load()


@pytest.mark.parametrize("size,key,params", [("480M", "480M", 480e6), ("821M", "800M", 821e6),
                                             ("1.4B", "1400M", 1.4e9), ("3.8B", "3800M", 3.8e9)])
def test_released_sizes_have_upstreams_names_and_shapes(size, key, params):
    with torch.device("meta"):
        model = RQTransformer(RQ_CONFIGS[size])
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == layouts()[key]
    assert sum(torch.Size(s).numel() for s in shapes.values()) == pytest.approx(params, rel=0.01)  # README


def test_released_rqvae_decoder_has_upstreams_names_and_shapes():
    with torch.device("meta"):
        vae = RQVAEDecoder(RQVAEConfig())
    upstream = layouts()["stage1"]
    assert {k: tuple(v.shape) for k, v in vae.state_dict().items()} == {
        k: v for k, v in upstream.items() if not k.startswith(unused_prefixes(RQVAEConfig()))}


def test_registered_methods_defaults_and_licence(capsys):
    names = ["rq-transformer-480m", "rq-transformer-821m", "rq-transformer-1.4b", "rq-transformer-1.4b-rqvae50e",
             "rq-transformer-3.8b"]
    assert [m.name for m in RQ_METHODS] == names
    for name in names:
        cls = METHODS.get(name)
        assert issubclass(cls, RQTransformerMethod) and cls.family == "raster-ar"
        settings = cls().settings()
        assert settings == {"temperature": 1.0, "top_k": 256, "top_p": 0.95, "precision": "fp16-autocast",
                            "weights_license": RQ_LICENSE_SHORT}
        assert "NON-COMMERCIAL" in WEIGHTS[name].license and WEIGHTS[name].url.endswith(".tar.gz")
    from harness.cli import main

    assert main(["weights", "list", "rq-transformer-3.8b"]) == 0
    assert "CC-BY-NC-SA-4.0, NON-COMMERCIAL" in capsys.readouterr().out


def test_images_do_not_depend_on_the_batch(method):
    m = TinyRQ(dataclasses.replace(method.config, top_k=64, top_p=0.95))
    m._model, m._vae, m._loaded = method._model, method._vae, True
    requests = [Request(i, f"r{i}", 100 + i, {"label": i % 10}) for i in range(3)]
    together = m.generate(requests).astype(int)
    alone = np.stack([m.generate([r])[0] for r in requests]).astype(int)
    assert np.abs(together - alone).max() <= 1 and (together == alone).mean() > 0.99


def test_a_missing_archive_names_its_spec_url_and_destination(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path))
    method = METHODS.get("rq-transformer-821m")(build_config(METHODS.get("rq-transformer-821m").Config,
                                                             {"precision": "fp32"}, "rq-821m"))
    with pytest.raises(ArbenchError, match=r"rq-transformer-821m: the file rq-transformer/imagenet_821M.tar.gz is not "
                                           r"at .*https://twg.kakaocdn.net/brainrepo/models/RQVAE/"
                                           r"dcd39292319104da5577dec3956bfdcc/imagenet_821M.tar.gz"):
        method.load()
    assert not any(tmp_path.rglob("*.d"))
