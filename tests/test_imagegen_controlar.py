"""ControlAR (`baselines.imagegen.controlar`) against upstream hustvl/ControlAR on seeded weights
(tests/golden/make_controlar.py): control-encoder features, every decoding step's guided and unguided logits, and
deterministic samples, for a nearest-resized (canny) and a bicubic-resized (hed) control; then the registered
methods (names, weights, refusals)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.imagegen.checkpoints import load_into
from baselines.imagegen.controlar import UNUSED_PREFIXES, ControlAR, dinov2_config, generate_controlar
from baselines.imagegen.controlar_methods import CONTROLAR_METHODS
from baselines.imagegen.llamagen_gpt import GPTConfig
from baselines.imagegen.llamagen_t2i import left_pad_layout
from baselines.imagegen.llamagen_t2i_methods import FLAN_T5_XL_FILES
from baselines.imagegen.sampling import SamplerConfig, request_generators
from golden.golden_weights import seeded_state
from harness.api import Request
from harness.errors import InputError, MissingAssetError
from harness.protocols.controllable_text_to_image import MODALITY
from harness.registry import METHODS
from test_golden_imagegen import assert_same_layout, golden

TINY = GPTConfig(dim=64, n_layer=3, n_head=4, multiple_of=32, vocab_size=64, block_size=16, cls_token_num=120)
TINY_DINOV2 = dict(num_hidden_layers=1)
SEED = 20  # make_controlar.py
# float32 on CPU: transformers' DINOv2 and 3 decoder layers, reductions ordered alike on both sides
RTOL, ATOL = 1e-4, 1e-4


@pytest.fixture(scope="module")
def g():
    return golden("controlar")


_MODELS: dict[str, ControlAR] = {}


def tiny_model(kind: str, g) -> ControlAR:
    """The tiny model with the golden weights, built once per control type (built through `load_into`)."""
    if kind in _MODELS:
        return _MODELS[kind]
    model = ControlAR(TINY, dinov2_config("small", **TINY_DINOV2), kind, caption_dim=32)
    assert_same_layout(model, g["layout"], UNUSED_PREFIXES)
    state = seeded_state(model.state_dict(), SEED)
    extra = {k: torch.zeros(1) for k in ("condition_embeddings.weight", "condition_mlp.uncond_embedding")}
    load_into(model, {**state, **extra}, "tiny controlar", UNUSED_PREFIXES)  # unused upstream entries accepted
    _MODELS[kind] = model.eval()
    return _MODELS[kind]


def caption(g):
    return left_pad_layout(torch.from_numpy(g["states"]), torch.from_numpy(g["masks"]))


@pytest.mark.parametrize("kind", ["canny", "hed"])
def test_control_features_match_upstream(kind, g):
    model = tiny_model(kind, g)
    with torch.no_grad():
        ours = model.control_features(torch.from_numpy(g[f"{kind}_control"]))
    np.testing.assert_allclose(ours.numpy(), g[f"{kind}_features"], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind,strength", [("canny", 0.6), ("hed", 1.0)])
@pytest.mark.parametrize("mode,cfg", [("guided", 4.0), ("unguided", 1.0)])
def test_decoding_matches_upstream(kind, strength, mode, cfg, g):
    """Every step's logits with upstream's tokens fed, and the deterministic (top-k 1) sample itself."""
    model = tiny_model(kind, g)
    cap, mask = caption(g)
    control = torch.from_numpy(g[f"{kind}_control"])
    sampler = SamplerConfig(cfg_scale=cfg, top_k=1)
    expected = torch.from_numpy(g[f"{kind}_{mode}_tokens"])
    record: list = []
    generate_controlar(model, cap, mask, control, request_generators([0, 1]), sampler, strength, forced=expected,
                       record=record)
    np.testing.assert_allclose(torch.cat(record, dim=1).numpy(), g[f"{kind}_{mode}_logits"], rtol=RTOL, atol=ATOL)
    tokens = generate_controlar(model, cap, mask, control, request_generators([3, 4]), sampler, strength)
    assert torch.equal(tokens, expected)


def test_deliberate_breaks_fail(g, monkeypatch):
    """The comparison can fail: a wrong resize mode, a shifted control token, or a control on the unguided half."""
    cap, mask = caption(g)
    control = torch.from_numpy(g["canny_control"])
    model = tiny_model("canny", g)
    monkeypatch.setattr(model.adapter, "condition_type", "hed")  # bicubic instead of nearest
    with torch.no_grad():
        assert not np.allclose(model.control_features(control).numpy(), g["canny_features"], rtol=RTOL, atol=ATOL)
    monkeypatch.undo()
    sampler = SamplerConfig(cfg_scale=4.0, top_k=1)
    expected = torch.from_numpy(g["canny_guided_tokens"])
    original = model.control_sequences
    monkeypatch.setattr(model, "control_sequences", lambda f: [s.roll(1, dims=1) for s in original(f)])
    record: list = []
    generate_controlar(model, cap, mask, control, request_generators([0, 1]), sampler, 0.6, forced=expected,
                       record=record)
    assert not np.allclose(torch.cat(record, dim=1).numpy(), g["canny_guided_logits"], rtol=RTOL, atol=ATOL)
    monkeypatch.setattr(model, "control_sequences", original)
    record = []
    generate_controlar(model, cap, mask, control, request_generators([0, 1]), sampler, 1.0, forced=expected,
                       record=record)  # strength 1 instead of 0.6
    assert not np.allclose(torch.cat(record, dim=1).numpy(), g["canny_guided_logits"], rtol=RTOL, atol=ATOL)


def test_layer_count_must_allow_three_injection_points():
    with pytest.raises(ValueError, match="multiple of 3"):
        ControlAR(GPTConfig(dim=64, n_layer=4, n_head=4, block_size=16, cls_token_num=120),
                  dinov2_config("small", num_hidden_layers=1), "canny", caption_dim=32)


def test_control_size_must_match_tokens(g):
    model = tiny_model("canny", g)
    cap, mask = caption(g)
    with pytest.raises(ValueError, match="control tokens"):
        generate_controlar(model, cap, mask, torch.zeros(2, 3, 48, 48), request_generators([0, 1]), SamplerConfig())



# -- the registered methods ---------------------------------------------------------------------------------
def test_released_layout_is_upstreams(g):
    """GPT-XL at 512 px with the 12-layer DINOv2-small encoder: ControlAR's checkpoint names and shapes."""
    with torch.device("meta"):
        ours = METHODS.get("controlar-canny")().build_network()
    assert_same_layout(ours, g["layout_xl_512"], UNUSED_PREFIXES)


def test_methods_registered_with_weights_and_licence():
    names = ["controlar-canny", "controlar-depth", "controlar-hed", "controlar-seg-cocostuff", "controlar-depth-base"]
    for name, cls in zip(names, CONTROLAR_METHODS):
        assert METHODS.get(name) is cls and cls.modality == MODALITY
        assert cls.gpt_spec.url.startswith("https://huggingface.co/wondervictor/ControlAR/resolve/main/")
        assert "Apache-2.0" in cls.weights_license
    settings = CONTROLAR_METHODS[0]().config
    assert (settings.cfg_scale, settings.top_k, settings.top_p, settings.control_strength) == (4.0, 2000, 1.0, 1.0)
    stored = CONTROLAR_METHODS[0]().settings()  # what the run signature records: no local paths
    assert stored["control_strength"] == 1.0 and not {"gpt_weights", "vq_weights", "t5_dir"} & set(stored)
    assert CONTROLAR_METHODS[0]().sampler() == SamplerConfig(4.0, -1, 1.0, 2000, 1.0)


def test_missing_files_are_all_named(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(MissingAssetError) as info:
        METHODS.get("controlar-hed")().checkpoint_sha256()
    for name in ("hed.safetensors", "vq_ds16_t2i.pt", *FLAN_T5_XL_FILES):
        assert name in str(info.value)


def test_requests_of_another_control_type_are_refused():
    method = METHODS.get("controlar-canny")()
    with pytest.raises(InputError, match="canny maps"):
        method.check_controls([Request(0, "a", 0, {"prompt": "a dog", "control": "x.png", "control_type": "hed"})])
    with pytest.raises(InputError, match="control image path"):
        method.check_controls([Request(0, "a", 0, {"prompt": "a dog", "control_type": "canny"})])
