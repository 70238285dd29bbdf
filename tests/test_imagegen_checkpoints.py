"""Released checkpoints: names and shapes at the released configurations, safe reading, refusal of a
mismatching checkpoint with one message, and the methods' plumbing (weights specs, settings, output)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from baselines.imagegen.checkpoints import load_into, mismatches, read_state_dict
from baselines.imagegen.llamagen_gpt import GPT_CONFIGS, GPTConfig, LlamaGenGPT
from baselines.imagegen.methods import LLAMAGEN_VQ, VAR_VAE
from baselines.imagegen.var import VAE_ENCODER_PREFIXES, VAR, VARConfig, VQVAEConfig, VQVAEDecoder
from baselines.imagegen.vq_decoder import ENCODER_PREFIXES, VQConfig, VQDecoder
from harness.api import Request, build_config
from harness.errors import ArbenchError, MissingAssetError
from harness.registry import METHODS

torch.set_num_threads(1)


def meta_shapes(build) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in build().state_dict().items()}


# Parameter counts the upstream READMEs publish (LlamaGen: 111M ... 3.1B; VAR: 310M ... 2.0B).
PUBLISHED = [(lambda: LlamaGenGPT(GPT_CONFIGS["GPT-B"]), 111e6), (lambda: LlamaGenGPT(GPT_CONFIGS["GPT-L"]), 343e6),
             (lambda: LlamaGenGPT(GPT_CONFIGS["GPT-XL"]), 775e6), (lambda: LlamaGenGPT(GPT_CONFIGS["GPT-XXL"]), 1.4e9),
             (lambda: LlamaGenGPT(GPT_CONFIGS["GPT-3B"]), 3.1e9), (lambda: VAR(VARConfig(depth=16)), 310e6),
             (lambda: VAR(VARConfig(depth=20)), 600e6), (lambda: VAR(VARConfig(depth=24)), 1.0e9),
             (lambda: VAR(VARConfig(depth=30)), 2.0e9)]


@pytest.mark.parametrize("build,count", PUBLISHED)
def test_released_configurations_have_the_published_parameter_counts(build, count):
    with torch.device("meta"):
        params = sum(p.numel() for p in build().parameters())
    assert abs(params - count) / count < 0.035


# Names and shapes read from the upstream definitions (LlamaGen gpt.py / vq_model.py, VAR var.py /
# basic_var.py / basic_vae.py / quant.py), written out by hand at the released configurations.
UPSTREAM = {
    "GPT-B": (lambda: LlamaGenGPT(GPT_CONFIGS["GPT-B"]), 88, {
        "cls_embedding.embedding_table.weight": (1001, 768), "tok_embeddings.weight": (16384, 768),
        "layers.0.attention.wqkv.weight": (2304, 768), "layers.11.attention.wo.weight": (768, 768),
        "layers.3.feed_forward.w1.weight": (2048, 768), "layers.3.feed_forward.w3.weight": (2048, 768),
        "layers.3.feed_forward.w2.weight": (768, 2048), "layers.5.attention_norm.weight": (768,),
        "layers.5.ffn_norm.weight": (768,), "norm.weight": (768,), "output.weight": (16384, 768)}),
    "GPT-XXL": (lambda: LlamaGenGPT(dataclasses.replace(GPT_CONFIGS["GPT-XXL"], block_size=576)), 340, {
        "layers.47.feed_forward.w1.weight": (4096, 1536), "layers.47.attention.wqkv.weight": (4608, 1536)}),
    "VQ-16": (VQDecoder, 197, {
        "quantize.embedding.weight": (16384, 8), "post_quant_conv.weight": (256, 8, 1, 1),
        "decoder.conv_in.weight": (512, 256, 3, 3), "decoder.mid.1.q.weight": (512, 512, 1, 1),
        "decoder.mid.2.conv2.weight": (512, 512, 3, 3), "decoder.conv_blocks.0.attn.2.proj_out.weight": (512, 512, 1, 1),
        "decoder.conv_blocks.1.res.0.nin_shortcut.weight": (256, 512, 1, 1),
        "decoder.conv_blocks.3.upsample.conv.weight": (128, 128, 3, 3),
        "decoder.conv_blocks.4.res.2.conv1.weight": (128, 128, 3, 3), "decoder.norm_out.weight": (128,),
        "decoder.conv_out.weight": (3, 128, 3, 3)}),
    "VAR-d16": (lambda: VAR(VARConfig(depth=16)), 220, {
        "word_embed.weight": (1024, 32), "class_emb.weight": (1001, 1024), "pos_start": (1, 1, 1024),
        "pos_1LC": (1, 680, 1024), "lvl_embed.weight": (10, 1024), "lvl_1L": (1, 680),
        "attn_bias_for_masking": (1, 1, 680, 680), "blocks.0.attn.mat_qkv.weight": (3072, 1024),
        "blocks.0.attn.q_bias": (1024,), "blocks.0.attn.v_bias": (1024,), "blocks.0.attn.zero_k_bias": (1024,),
        "blocks.0.attn.scale_mul_1H11": (1, 16, 1, 1), "blocks.15.attn.proj.weight": (1024, 1024),
        "blocks.15.ffn.fc1.weight": (4096, 1024), "blocks.15.ffn.fc2.bias": (1024,),
        "blocks.15.ada_lin.1.weight": (6144, 1024), "head_nm.ada_lin.1.weight": (2048, 1024),
        "head.weight": (4096, 1024), "head.bias": (4096,)}),
    "VQVAE-ch160": (VQVAEDecoder, 189, {
        "quantize.embedding.weight": (4096, 32), "quantize.quant_resi.qresi_ls.3.weight": (32, 32, 3, 3),
        "post_quant_conv.weight": (32, 32, 3, 3), "decoder.conv_in.weight": (640, 32, 3, 3),
        "decoder.mid.block_1.conv1.weight": (640, 640, 3, 3), "decoder.mid.attn_1.qkv.weight": (1920, 640, 1, 1),
        "decoder.up.4.attn.2.proj_out.weight": (640, 640, 1, 1), "decoder.up.4.upsample.conv.weight": (640, 640, 3, 3),
        "decoder.up.1.block.0.nin_shortcut.weight": (160, 320, 1, 1), "decoder.up.0.block.2.conv2.weight": (160, 160, 3, 3),
        "decoder.conv_out.weight": (3, 160, 3, 3)}),
}


@pytest.mark.parametrize("arch", list(UPSTREAM))
def test_parameter_names_and_shapes_match_upstream(arch):
    build, count, expected = UPSTREAM[arch]
    shapes = meta_shapes(build)
    assert len(shapes) == count
    for name, shape in expected.items():
        assert shapes.get(name) == shape, name
    assert "rope" not in shapes and "decoder.conv_blocks.4.upsample.conv.weight" not in shapes


def test_released_checkpoint_layout_is_accepted_and_a_renamed_one_listed():
    """A state dict shaped like `vq_ds16_c2i.pt` (decoder + the encoder half we skip) matches; a wrong one
    is described by its first mismatches."""
    decoder = meta_shapes(VQDecoder)
    state = {k: torch.empty(s, device="meta") for k, s in decoder.items()}
    state.update({"encoder.conv_in.weight": torch.empty(128, 3, 3, 3, device="meta"),
                  "quant_conv.weight": torch.empty(8, 256, 1, 1, device="meta"),
                  "quantize.codebook_used": torch.empty(65536, device="meta")})
    assert mismatches(decoder, state, ENCODER_PREFIXES) == []
    assert mismatches(meta_shapes(VQVAEDecoder),
                      {**{k: torch.empty(s, device="meta") for k, s in meta_shapes(VQVAEDecoder).items()},
                       "quantize.ema_vocab_hit_SV": torch.empty(10, 4096, device="meta")}, VAE_ENCODER_PREFIXES) == []
    gpt = meta_shapes(lambda: LlamaGenGPT(GPT_CONFIGS["GPT-B"]))
    xl = {k: torch.empty(s, device="meta") for k, s in meta_shapes(lambda: LlamaGenGPT(GPT_CONFIGS["GPT-XL"])).items()}
    problems = mismatches(gpt, xl)
    assert "tok_embeddings.weight has shape (16384, 1280), expected (16384, 768)" in problems
    assert any(p.startswith("unexpected layers.35.") for p in problems)


def small_gpt() -> LlamaGenGPT:
    return LlamaGenGPT(GPTConfig(dim=32, n_layer=2, n_head=4, multiple_of=16, num_classes=10, vocab_size=16,
                                 block_size=16))


def test_loading_reads_wrapped_files_and_refuses_mismatches_with_one_message(tmp_path):
    source = small_gpt()
    path = tmp_path / "c2i_tiny.pt"
    torch.save({"model": source.state_dict(), "steps": torch.tensor(5)}, path)
    target = small_gpt()
    load_into(target, read_state_dict(path), "tiny")
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    state = dict(source.state_dict())
    state["layers.0.attention.wqkv.weight"] = torch.zeros(5, 32)
    state["layers.9.attention.wo.weight"] = torch.zeros(32, 32)
    del state["norm.weight"]
    with pytest.raises(ArbenchError) as err:
        load_into(small_gpt(), state, "llamagen-b (c2i_B_256.pt)")
    message = str(err.value)
    assert "llamagen-b (c2i_B_256.pt): the checkpoint does not match" in message
    assert "layers.0.attention.wqkv.weight has shape (5, 32), expected (96, 32)" in message
    assert "missing norm.weight (32,)" in message and "unexpected layers.9.attention.wo.weight" in message


class Payload:  # a pickled object that is not a tensor: weights_only loading must refuse it
    pass


def test_untrusted_pickles_are_not_unpickled(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, path)
    with pytest.raises(ArbenchError, match="could not be read as a checkpoint"):
        read_state_dict(path)


def test_methods_are_registered_with_weight_specs_and_refuse_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path))
    names = METHODS.names()
    for name in ["llamagen-b", "llamagen-l", "llamagen-xl-384", "llamagen-3b-384", "var-d16", "var-d30",
                 "digits-ar-raster", "digits-ar-par"]:
        assert name in names and METHODS.get(name).modality == "class-to-image"
    assert LLAMAGEN_VQ.url.startswith("https://huggingface.co/FoundationVision/LlamaGen/")
    assert VAR_VAE.url.startswith("https://huggingface.co/FoundationVision/var/")
    with pytest.raises(MissingAssetError, match="c2i_B_256.pt"):
        METHODS.get("llamagen-b")().checkpoint_sha256()
    with pytest.raises(MissingAssetError, match="var_d16.pth"):
        METHODS.get("var-d16")().checkpoint_sha256()
    settings = METHODS.get("llamagen-xl-384")().settings()
    assert settings["cfg_scale"] == 1.75 and settings["image_size_eval"] == 256 and "gpt_weights" not in settings
    assert METHODS.get("var-d16")().settings() == {"cfg": 1.5, "cfg_schedule": "linear", "top_k": 900, "top_p": 0.96,
                                                   "more_smooth": False, "to_uint8": "truncate"}
    with pytest.raises(ArbenchError, match="linear"):
        build_config(METHODS.get("var-d16").Config, {"cfg_schedule": "constant"}, "var-d16")


def test_llamagen_and_var_methods_generate_uint8_at_the_eval_size():
    """The method plumbing around small random networks: labels, per-request seeds, resize, uint8."""
    requests = [Request(i, str(i), 40 + i, {"label": i % 10}) for i in range(3)]
    llamagen = METHODS.get("llamagen-b")()
    llamagen.num_classes = 10
    llamagen._model = small_gpt().eval()
    llamagen._vq = VQDecoder(VQConfig(codebook_size=16, ch=32, z_channels=32, ch_mult=(1, 1))).eval()
    llamagen._loaded = True  # networks injected: no weight files to read
    images = llamagen.generate(requests)  # 4x4 codes -> 8x8 pixels -> bicubic to 256
    assert images.shape == (3, 256, 256, 3) and images.dtype == np.uint8
    # same tokens; the float convolutions may round differently with the batch, so allow one grey level
    alone = llamagen.generate(requests[1:2]).astype(int)
    assert np.abs(alone - images[1:2]).max() <= 1 and (alone != images[1:2]).mean() < 1e-3
    var = METHODS.get("var-d16")()
    var.num_classes = 10
    patch = (1, 2, 4)
    var._model = VAR(VARConfig(depth=2, num_classes=10, vocab_size=16, patch_nums=patch, width_per_depth=16)).eval()
    var._vae = VQVAEDecoder(VQVAEConfig(vocab_size=16, ch=32, ch_mult=(1, 2), patch_nums=patch)).eval()
    var._loaded = True  # networks injected: no weight files to read
    images = var.generate(requests)
    assert images.shape == (3, 8, 8, 3) and images.dtype == np.uint8
    with pytest.raises(ArbenchError, match="labels"):
        var.generate([Request(0, "0", 1, {"label": 12})])
