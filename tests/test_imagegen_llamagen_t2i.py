"""LlamaGen text-to-image against upstream's code (tests/golden/llamagen_t2i, made by
tests/golden/make_llamagen_t2i.py from FoundationVision/LlamaGen@ce98ec4 on seeded random weights): the caption
layout, teacher-forced logits, the cached guided sampler's per-step logits and tokens (cfg 7.5, top-k 1);
deliberate breaks that the golden data catches; GPT-XL t2i names and shapes; the registered methods end to end
with a tiny random T5 built by transformers; clean refusals (missing files all named, odd prompts)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from baselines.imagegen import llamagen_t2i
from baselines.imagegen.checkpoints import load_into, read_state_dict
from baselines.imagegen.llamagen_gpt import GPTConfig
from baselines.imagegen.llamagen_t2i import (LlamaGenT2I, attention_mask, generate_t2i, left_pad_layout,
                                             t2i_config, teacher_forced_logits)
from baselines.imagegen.llamagen_t2i_methods import (FLAN_T5_XL_FILES, LLAMAGEN_T2I_METHODS, T5CaptionEncoder,
                                                     clean_prompt)
from baselines.imagegen.llamagen_gpt import GPT_CONFIGS
from baselines.imagegen.sampling import SamplerConfig, request_generators
from baselines.imagegen.vq_decoder import VQConfig, VQDecoder
from harness.api import Request, build_config
from harness.errors import InputError, MissingAssetError
from harness.registry import METHODS, register_method
from imagegen_fixtures import make_tiny_t5, run_geneval_counting

torch.set_num_threads(1)
GOLDEN = Path(__file__).parent / "golden" / "llamagen_t2i"
TINY = GPTConfig(dim=64, n_layer=2, n_head=4, multiple_of=32, vocab_size=64, block_size=16, cls_token_num=120)
RTOL, ATOL = 2e-5, 2e-5  # float32 CPU, two layers; observed differences ~1e-6


@pytest.fixture(scope="module")
def golden():
    return load_file(str(GOLDEN / "outputs.safetensors"))


@pytest.fixture(scope="module")
def model():
    m = LlamaGenT2I(TINY, caption_dim=32)
    load_into(m, read_state_dict(GOLDEN / "t2i_tiny.pt"), "tiny t2i")  # the released {"model": ...} layout
    return m.eval()


def test_caption_layout_matches_upstream(golden):
    caption, mask = left_pad_layout(golden["states"], golden["masks"])
    assert torch.equal(mask, golden["emb_mask"])
    assert torch.equal(caption, golden["caption"])


def test_teacher_forced_logits_match_upstream(model, golden):
    with torch.no_grad():
        for name, tokens in (("logits", "tokens"), ("logits_b", "tokens_b")):
            ours = teacher_forced_logits(model, golden["caption"], golden["emb_mask"], golden[tokens])
            torch.testing.assert_close(ours, golden[name], rtol=RTOL, atol=ATOL)
        other = teacher_forced_logits(model, golden["caption"].flip(0), golden["emb_mask"].flip(0), golden["tokens"])
        torch.testing.assert_close(other, golden["logits_other_caption"], rtol=RTOL, atol=ATOL)
    # the reference depends on its inputs, so a network that ignored the caption could not pass
    scale = golden["logits"].abs().mean()
    assert (golden["logits"] - golden["logits_other_caption"]).abs().mean() > 1e-2 * scale


def test_deterministic_guided_sample_matches_upstream(model, golden):
    sampler = SamplerConfig(cfg_scale=7.5, top_k=1)
    record: list = []
    tokens = generate_t2i(model, golden["caption"], golden["emb_mask"], request_generators([0, 1, 2]), sampler,
                          record=record)
    assert torch.equal(tokens, golden["sample_tokens"].long())
    torch.testing.assert_close(torch.cat(record, dim=1), golden["sample_logits"], rtol=RTOL, atol=1e-4)
    # per-sample streams: a sample does not depend on its batch
    alone = generate_t2i(model, golden["caption"][1:2], golden["emb_mask"][1:2], request_generators([1]), sampler)
    assert torch.equal(alone, tokens[1:2])


def test_deliberate_breaks_fail(model, golden, monkeypatch):
    """Each break is a plausible re-implementation slip; the golden comparison must reject it."""
    def close(a, b):
        return torch.allclose(a, b, rtol=RTOL, atol=ATOL)

    with torch.no_grad():
        # padded caption columns left visible
        h = torch.cat([model.embed_caption(golden["caption"]), model.tok_embeddings(golden["tokens"][:, :-1])], 1)
        visible = model(h, torch.arange(h.shape[1]))[:, 119:]
        assert not close(visible, golden["logits"])
        # caption kept right-padded (no left-padding layout)
        right = teacher_forced_logits(model, golden["states"] * golden["masks"][..., None], golden["masks"],
                                      golden["tokens"])
        assert not close(right, golden["logits"])
        # unconditional half given an all-ones mask instead of its conditional half's mask
        original = llamagen_t2i.attention_mask

        def uncond_unmasked(emb_mask, total):
            b = emb_mask.shape[0] // 2
            return original(torch.cat([emb_mask[:b], torch.ones_like(emb_mask[b:])]), total)

        monkeypatch.setattr(llamagen_t2i, "attention_mask", uncond_unmasked)
        record: list = []
        generate_t2i(model, golden["caption"], golden["emb_mask"], request_generators([0, 1, 2]),
                     SamplerConfig(cfg_scale=7.5, top_k=1), forced=golden["sample_tokens"].long(), record=record)
        assert not close(torch.cat(record, 1), golden["sample_logits"])
        monkeypatch.setattr(llamagen_t2i, "attention_mask", original)
        # guidance stopped one token short (cfg_interval semantics): logits differ from the first unguided step
        record = []
        generate_t2i(model, golden["caption"], golden["emb_mask"], request_generators([0, 1, 2]),
                     SamplerConfig(cfg_scale=7.5, cfg_interval=0, top_k=1), forced=golden["sample_tokens"].long(),
                     record=record)
        got = torch.cat(record, 1)
        torch.testing.assert_close(got[:, :2], golden["sample_logits"][:, :2], rtol=RTOL, atol=1e-4)
        assert not close(got[:, 2:], golden["sample_logits"][:, 2:])


def test_mask_is_upstreams():
    emb = torch.tensor([[0, 0, 1, 1]])
    m = attention_mask(emb, 6)[0, 0]
    assert m[5].tolist() == [False, False, True, True, True, True]
    assert m[1].tolist() == [False, True, False, False, False, False]  # padded row sees itself only


def test_released_names_and_shapes():
    with gzip.open(GOLDEN / "released_shapes.json.gz") as f:
        released = json.load(f)
    for key, size in (("GPT-XL-256", 256), ("GPT-XL-512", 512)):
        with torch.device("meta"):
            ours = LlamaGenT2I(t2i_config(GPT_CONFIGS["GPT-XL"], size))
        assert {k: list(v.shape) for k, v in ours.state_dict().items()} == released[key]


# -- the registered methods ---------------------------------------------------------------------------
class TinyT2IMethod(LLAMAGEN_T2I_METHODS[0]):
    """The registered 256 px method with the golden file's tiny shapes; everything else is the released path."""

    name = "llamagen-t2i-tiny-test"
    caption_dim = 32
    vq_config = VQConfig(codebook_size=64, codebook_embed_dim=8, z_channels=32, ch=32, ch_mult=(1, 1),
                         num_res_blocks=1)

    def gpt_config(self):
        return TINY


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2i")
    make_tiny_t5(root / "t5")
    torch.manual_seed(6)
    vq = VQDecoder(TinyT2IMethod.vq_config)
    torch.save({"model": vq.state_dict()}, root / "vq.pt")
    return root


def test_methods_registered():
    for name in ("llamagen-t2i-xl-256", "llamagen-t2i-xl-512"):
        cls = METHODS.get(name)
        assert cls.modality == "text-to-image" and cls.Config().cfg_scale == 7.5 and cls.Config().top_k == 1000
    assert METHODS.get("llamagen-t2i-xl-512").image_size == 512


def test_t5_encoder_is_transformers(tiny_files):
    from transformers import AutoTokenizer, T5EncoderModel

    enc = T5CaptionEncoder(tiny_files / "t5", "cpu", torch.float32)
    states, mask = enc(["a photo of a bench", "A photo of  two clocks "])
    assert states.shape == (2, 120, 32) and mask.shape == (2, 120)
    assert mask.sum(1).tolist() == [6, 6]  # five words + </s>
    ids = AutoTokenizer.from_pretrained(str(tiny_files / "t5"))(["a photo of two clocks"], max_length=120,
                                                                padding="max_length", return_tensors="pt")
    ref = T5EncoderModel.from_pretrained(str(tiny_files / "t5"))(**ids).last_hidden_state
    torch.testing.assert_close(states[1:], ref, rtol=1e-5, atol=1e-5)  # batch of 2 vs 1: float reordering


def test_method_generates_geneval_images(tiny_files):
    config = build_config(TinyT2IMethod.Config, {
        "gpt_weights": str(GOLDEN / "t2i_tiny.pt"), "vq_weights": str(tiny_files / "vq.pt"),
        "t5_dir": str(tiny_files / "t5"), "precision": "fp32", "top_k": 8}, "tiny")
    method = TinyT2IMethod(config)
    requests = [Request(i, f"{i:05d}/0000", 100 + i, {"prompt": p}) for i, p in
                enumerate(["a photo of a bench", "a photo of two clocks", "a photo of a blue fire hydrant"])]
    images = method.generate(requests)
    assert images.dtype == np.uint8 and images.shape == (3, 8, 8, 3)  # 4x4 tokens, tiny VQ upsamples 2x
    again = method.generate(requests[2:])
    assert np.array_equal(again[0], images[2])
    assert method.checkpoint_sha256() and len(method.weight_files()) == 2 + len(FLAN_T5_XL_FILES)
    with pytest.raises(InputError, match="characters"):
        method.generate([Request(0, "x", 0, {"prompt": "a photo of a <b>cat</b>"})])


def test_missing_files_are_all_named(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "empty"))
    method = METHODS.get("llamagen-t2i-xl-256")()
    with pytest.raises(MissingAssetError) as info:
        method.checkpoint_sha256()
    for name in ("t2i_XL_stage1_256.pt", "vq_ds16_t2i.pt", *FLAN_T5_XL_FILES):
        assert name in str(info.value)


def test_geneval_refusal_names_method_and_scorer_files(tmp_path, monkeypatch):
    from tasks.geneval import GenEval
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(MissingAssetError) as info:
        GenEval().check_method(METHODS.get("llamagen-t2i-xl-512")())
    for name in ("t2i_XL_stage2_512.pt", "model-00002-of-00002.safetensors", "mask2former", "geneval_evaluation"):
        assert name in str(info.value)


def test_prompt_cleaning_matches_upstream():
    """Upstream's clean_caption (run by make_llamagen_t2i.py) on GenEval's 553 prompts and a few others."""
    upstream = json.loads((GOLDEN / "cleaned_prompts.json").read_text())
    assert len(upstream) >= 555
    for prompt, cleaned in upstream.items():
        assert clean_prompt(prompt) == cleaned, prompt
    with pytest.raises(InputError):
        clean_prompt("see https://x.org")


def test_method_runs_in_bf16(tiny_files):
    config = build_config(TinyT2IMethod.Config, {
        "gpt_weights": str(GOLDEN / "t2i_tiny.pt"), "vq_weights": str(tiny_files / "vq.pt"),
        "t5_dir": str(tiny_files / "t5")}, "tiny")  # precision bf16: upstream's default
    images = TinyT2IMethod(config).generate([Request(0, "0", 3, {"prompt": "a photo of a cat"})])
    assert images.dtype == np.uint8 and images.shape == (1, 8, 8, 3)


@register_method("llamagen-t2i-tiny-runner-test")
class RegisteredTinyT2IMethod(TinyT2IMethod):
    """The tiny method under a registered name, for the runner."""


def test_geneval_run_writes_all_553_prompts(tiny_files, tmp_path, monkeypatch, results_dir):
    """`arbench run geneval <llamagen t2i>` through the real runner and GenEval's folder writer and reader; the
    detector and CLIP (no weights here) are replaced by a count of what was read. One image per prompt keeps it
    fast (the protocol's 4 are the task's default, `images_per_prompt`)."""
    samples = run_geneval_counting("llamagen-t2i-tiny-runner-test", {
        "gpt_weights": str(GOLDEN / "t2i_tiny.pt"), "vq_weights": str(tiny_files / "vq.pt"),
        "t5_dir": str(tiny_files / "t5"), "precision": "fp32", "images_per_prompt": 1}, tmp_path, monkeypatch, results_dir)
    first = np.asarray(Image.open(samples[0].path))
    assert first.shape == (8, 8, 3) and first.dtype == np.uint8
