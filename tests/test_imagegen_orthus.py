"""Orthus (baselines/imagegen/orthus.py) against upstream zhijie-group/Orthus@609d968 on seeded random weights
(tests/golden/make_orthus.py): the released parameter layout, the Chameleon backbone (delegated to transformers)
with the soft VQ embedding on a mixed text + image batch, the diffusion head and its guided DDIM sampling, a short
deterministic text-to-image sample through the cached generation loop, and the VQ pixel decoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.imagegen.checkpoints import load_into
from baselines.imagegen.orthus import DDIM_CONFIG, Orthus, Prompts, generate_latents, to_uint8
from golden.golden_weights import seeded_state

GOLDEN = Path(__file__).parent / "golden" / "orthus"
SEED, HEAD_WIDTH, HEAD_DEPTH, CFG = 21, 96, 2, 5.0  # as make_orthus.py


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN / "golden.npz"))


@pytest.fixture(scope="module")
def model(golden):
    from transformers import ChameleonConfig

    raw = json.loads((GOLDEN / "config.json").read_text())
    net = Orthus(ChameleonConfig(**raw), raw["vq_config"], head_width=HEAD_WIDTH, head_depth=HEAD_DEPTH)
    released = {k: torch.zeros(v) for k, v in json.loads(str(golden["state_names"])).items()}
    load_into(net, Orthus.split_state(seeded_state(released, SEED)), "golden Orthus")  # every name and shape checked
    return net.eval()


def scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**DDIM_CONFIG)


def test_backbone_mixed_text_and_image(model, golden):
    ids, mask = torch.as_tensor(golden["mixed_ids"]), torch.as_tensor(golden["mixed_mask"])
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    with torch.no_grad():
        hidden = model.backbone(model.embed(ids, torch.as_tensor(golden["mixed_latents"])), mask, positions)
        logits = model.lm_head(hidden[:, -1])
    valid = mask.bool().numpy()
    np.testing.assert_allclose(hidden.numpy()[valid], golden["mixed_hidden"][valid], atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(logits.numpy(), golden["mixed_last_logits"], atol=2e-5, rtol=1e-4)


def test_diffusion_head_and_guided_ddim(model, golden):
    with torch.no_grad():
        out = model.mlp_head(*(torch.as_tensor(golden[k]) for k in ("head_x", "head_t", "head_z")))
        np.testing.assert_allclose(out.numpy(), golden["head_out"], atol=1e-5, rtol=1e-4)
        ids, mask = torch.as_tensor(golden["mixed_ids"]), torch.as_tensor(golden["mixed_mask"])
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        z = model.backbone(model.embed(ids, torch.as_tensor(golden["mixed_latents"])), mask, positions)[:, -1]
        noise = torch.randn(1, 256, generator=torch.Generator().manual_seed(5))
        sample = model.head_sample(z, noise, scheduler(), CFG, 100)
    np.testing.assert_allclose(sample.numpy(), golden["head_sample"], atol=2e-3, rtol=1e-4)


def test_short_text_to_image_sample(model, golden):
    """The cached loop: prompt + <boi> prefill, then feature by feature through the soft embedding, per-request
    noise from a generator seeded as upstream's global one."""
    rows = [[int(t) for t, m in zip(r, k) if m] + [8197] for r, k in zip(golden["sample_ids"], golden["sample_mask"])]
    ids = torch.full((2, max(map(len, rows))), 1)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, ids.shape[1] - len(r):], mask[i, ids.shape[1] - len(r):] = torch.as_tensor(r), 1
    gen = torch.Generator().manual_seed(7)
    latents = generate_latents(model, Prompts(ids, mask), lambda k: torch.randn(1, 256, generator=gen), scheduler(),
                               CFG, 100, num_tokens=len(golden["sample"]))
    np.testing.assert_allclose(latents[0].numpy(), golden["sample"], atol=5e-3, rtol=1e-4)


def test_pixel_decoder(model, golden):
    feats = torch.randn(1024, 256, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        pixels = model.decode(feats[None])
    np.testing.assert_allclose(pixels.numpy(), golden["decode_pixels"], atol=1e-4, rtol=1e-4)
    images = to_uint8(pixels, {"image_mean": [1.0] * 3, "image_std": [1.0] * 3, "rescale_factor": 0.0078})
    expected = golden["decode_uint8"].transpose(0, 2, 3, 1)
    assert np.mean(np.abs(images.astype(int) - expected.astype(int)) > 1) < 0.001  # truncation at float ties


# ---- the registered method on a released-layout snapshot (tiny model, weights rebuilt from the seed) ----

WORDS = ["a", "photo", "of", "red", "bench", "two", "clocks", "Generate", "an", "image."]


def write_snapshot(folder: Path, golden) -> Path:
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True)
    (folder / "config.json").write_bytes((GOLDEN / "config.json").read_bytes())
    released = {k: torch.zeros(v) for k, v in json.loads(str(golden["state_names"])).items()}
    state = seeded_state(released, SEED)
    names = sorted(state)
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for file, part in halves.items():
        save_file({k: state[k].contiguous() for k in part}, str(folder / file))
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: f for f, part in halves.items() for k in part}}))
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<reserved08706>": 8710,
             **{w: 8712 + i for i, w in enumerate(WORDS[:8])}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>", sep_token="<reserved08706>").save_pretrained(str(folder))
    if not (folder / "special_tokens_map.json").exists():  # transformers 5 folds it into tokenizer_config.json
        (folder / "special_tokens_map.json").write_text(json.dumps(
            {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
             "sep_token": "<reserved08706>"}))
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [1.0, 1.0, 1.0], "image_std": [1.0, 1.0, 1.0], "rescale_factor": 0.0078}))
    return folder


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory, golden):
    return write_snapshot(tmp_path_factory.mktemp("orthus") / "orthus-tiny", golden)


def tiny_method(folder: Path, **settings):
    from baselines.imagegen.orthus_methods import ORTHUS_METHODS
    from harness.api import build_config

    class TinyOrthus(ORTHUS_METHODS[0]):
        name, head_width, head_depth = "orthus-tiny-test", HEAD_WIDTH, HEAD_DEPTH

    base = {"model_dir": str(folder), "precision": "fp32", "num_diffusion_steps": 2, **settings}
    return TinyOrthus(build_config(TinyOrthus.Config, base, "tiny"))


def test_method_generates_seeded_images_independent_of_batch(snapshot):
    from harness.api import Request

    reqs = [Request(index=i, id=f"r{i}", condition={"prompt": p}, seed=s)
            for i, (p, s) in enumerate([("a photo of red bench", 3), ("two clocks", 4)])]
    method = tiny_method(snapshot, batch_size=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 1024 tiny sequential steps: thread hand-offs cost 10x on a shared 2-core machine
    try:
        images = method.generate(reqs)
    finally:
        torch.set_num_threads(threads)
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.uint8
    assert np.abs(images[0].astype(int) - images[1].astype(int)).mean() > 1  # prompt and seed matter
    # the same request alone: the same features (compared over the first tokens: with random weights the soft
    # embedding's near-argmin amplifies float-level batch differences into a different image after ~5 tokens)
    from baselines.imagegen.orthus import layout, prompt_rows

    def features(prompts, seeds):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        rows = layout(prompt_rows(method._tokenizer, prompts), method._tokenizer.pad_token_id)
        noise = lambda k: torch.cat([torch.randn(1, 256, generator=g) for g in gens])  # noqa: E731
        return generate_latents(method._model, rows, noise, method._scheduler, CFG, 2, num_tokens=4)

    both, alone = features(["a photo of red bench", "two clocks"], [3, 4]), features(["two clocks"], [4])
    np.testing.assert_allclose(alone[0].numpy(), both[1].numpy(), atol=1e-3, rtol=1e-5)


def test_missing_files_named_at_once(tmp_path, snapshot):
    from harness.errors import MissingAssetError

    with pytest.raises(MissingAssetError) as err:
        tiny_method(tmp_path).weight_files()
    for name in ("config.json", "model.safetensors.index.json", "tokenizer.json", "preprocessor_config.json"):
        assert name in str(err.value)
    partial = tmp_path / "partial"
    partial.mkdir()
    for f in snapshot.iterdir():
        if not f.name.startswith("model-"):
            (partial / f.name).write_bytes(f.read_bytes())
    with pytest.raises(MissingAssetError) as err:
        tiny_method(partial).weight_files()
    assert "model-00001-of-00002.safetensors" in str(err.value) and "model-00002-of-00002" in str(err.value)
