"""RAR and its MaskGIT-VQ decoder: released names and shapes, refusal of mismatching checkpoints, the forward
pass, sampler, guidance schedule and decoder against upstream's own outputs (tests/golden/make_rar.py), KV cache
against full recomputation, per-sample determinism across batch sizes, and the method plumbing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from baselines.imagegen.checkpoints import load_into, mismatches, read_state_dict
from baselines.imagegen.maskgit_vq import ENCODER_PREFIXES, MaskGITVQConfig, MaskGITVQDecoder, to_uint8
from baselines.imagegen.rar import RAR, RAR_CONFIGS, RARConfig, RARSampler, generate_rar, guidance_at
from baselines.imagegen.rar_methods import MASKGIT_VQ
from baselines.imagegen.sampling import request_generators
from harness.api import Request, build_config
from harness.errors import ArbenchError, MissingAssetError
from harness.registry import METHODS
from golden.golden_weights import seeded_module_state
from imagegen_fixtures import randomised

torch.set_num_threads(1)
SMALL = RARConfig(dim=32, depth=2, heads=4, intermediate_size=48, image_seq_len=16, codebook_size=11,
                  num_classes=10, pos_table_extra=4, timestep_table_extra=3)
LABELS = torch.tensor([3, 0, 7, 3])
SEEDS = [21, 22, 23, 24]


def meta_shapes(build) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in build().state_dict().items()}


def meta_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


@pytest.fixture(scope="module")
def rar():
    return randomised(RAR(SMALL))


# -- released configurations -------------------------------------------------------------------------
@pytest.mark.parametrize("size,count", [("RAR-B", 261e6), ("RAR-L", 461e6), ("RAR-XL", 955e6), ("RAR-XXL", 1.5e9)])
def test_released_sizes_have_the_published_parameter_counts(size, count):
    with torch.device("meta"):
        params = sum(p.numel() for p in RAR(RAR_CONFIGS[size]).parameters())
    assert abs(params - count) / count < 0.005


# Read from upstream modeling/rar.py at RAR-B (hidden 768, 24 layers, 16 heads, intermediate 3072,
# image_seq_len 256, codebook 1024, 1000 classes), written out by hand.
RAR_B_UPSTREAM = {
    "cls_token": (1, 1, 768), "embeddings.weight": (1024 + 1 + 1000 + 1, 768),
    "pos_embed": (1, 256 + 1024, 768), "target_aware_pos_embed": (1, 256 + 1024, 768),
    "timesteps_embeddings": (1, 256 + 100, 768),
    "blocks.0.norm1.weight": (768,), "blocks.0.norm1.bias": (768,),
    "blocks.0.attn.qkv.weight": (2304, 768), "blocks.0.attn.qkv.bias": (2304,),
    "blocks.0.attn.q_norm.weight": (48,), "blocks.0.attn.q_norm.bias": (48,),
    "blocks.0.attn.k_norm.weight": (48,), "blocks.0.attn.k_norm.bias": (48,),
    "blocks.23.attn.proj.weight": (768, 768), "blocks.23.attn.proj.bias": (768,),
    "blocks.23.norm2.weight": (768,), "blocks.23.mlp.fc1.weight": (3072, 768), "blocks.23.mlp.fc1.bias": (3072,),
    "blocks.23.mlp.fc2.weight": (768, 3072), "blocks.23.mlp.fc2.bias": (768,),
    "blocks.11.adaLN_modulation.1.weight": (4608, 768), "blocks.11.adaLN_modulation.1.bias": (4608,),
    "adaln_before_head.adaLN_modulation.1.weight": (1536, 768),
    "adaln_before_head.adaLN_modulation.1.bias": (1536,),
    "lm_head.weight": (1024, 768), "lm_head.bias": (1024,),
}


def test_rar_b_names_and_shapes_match_upstream():
    shapes = meta_shapes(lambda: RAR(RAR_CONFIGS["RAR-B"]))
    # 18 tensors per block (2 norms, qkv, q/k norms, proj, fc1, fc2, adaLN; weight + bias each) + 9 others
    assert len(shapes) == 24 * 18 + 9
    for name, shape in RAR_B_UPSTREAM.items():
        assert shapes.get(name) == shape, name
    # the final LayerNorm has no affine parameters and the causal mask is not persisted upstream
    assert not any(k.startswith("adaln_before_head.norm_final") or "mask" in k for k in shapes)
    assert meta_shapes(lambda: RAR(RAR_CONFIGS["RAR-XXL"]))["blocks.39.mlp.fc1.weight"] == (6144, 1408)


def test_the_released_layout_is_accepted_and_renamed_or_reshaped_keys_are_refused():
    expected = meta_shapes(lambda: RAR(RAR_CONFIGS["RAR-B"]))
    assert mismatches(expected, meta_state(expected)) == []
    bad = meta_state(expected)
    bad["blocks.3.mlp.fc_1.weight"] = bad.pop("blocks.3.mlp.fc1.weight")
    bad["lm_head.weight"] = torch.empty(16384, 768, device="meta")
    with torch.device("meta"):
        target = RAR(RAR_CONFIGS["RAR-B"])
    with pytest.raises(ArbenchError) as err:
        load_into(target, bad, "rar-b (rar_b.bin)")
    message = str(err.value)
    assert message.startswith("rar-b (rar_b.bin): the checkpoint does not match this architecture")
    assert "missing blocks.3.mlp.fc1.weight (3072, 768)" in message
    assert "lm_head.weight has shape (16384, 768), expected (1024, 768)" in message
    assert "unexpected blocks.3.mlp.fc_1.weight (3072, 768)" in message
    # an RAR-L file offered to rar-b is refused too, starting with the first differing tensor
    problems = mismatches(expected, meta_state(meta_shapes(lambda: RAR(RAR_CONFIGS["RAR-L"]))))
    assert problems[0] == "cls_token has shape (1, 1, 1024), expected (1, 1, 768)"


def test_a_saved_state_dict_round_trips_through_the_safe_reader(tmp_path, rar):
    path = tmp_path / "rar_tiny.bin"
    torch.save(rar.state_dict(), path)  # upstream's .bin files are plain state dicts
    target = RAR(SMALL)
    load_into(target, read_state_dict(path), "tiny")
    assert all(torch.equal(a, b) for a, b in zip(rar.state_dict().values(), target.state_dict().values()))


# Read from upstream modeling/modules/maskgit_vqgan.py + titok.py PretrainedTokenizer (hidden 128,
# channel_mult 1,1,2,2,4, 2 res blocks, z 256, codebook 1024 x 256), written out by hand.
MASKGIT_UPSTREAM = {
    "quantize.embedding.weight": (1024, 256), "decoder.conv_in.weight": (512, 256, 3, 3),
    "decoder.conv_in.bias": (512,),
    "decoder.mid.1.conv2.weight": (512, 512, 3, 3), "decoder.mid.0.norm1.weight": (512,),
    "decoder.up.4.block.0.conv1.weight": (512, 512, 3, 3), "decoder.up.4.upsample_conv.weight": (512, 512, 3, 3),
    "decoder.up.4.upsample_conv.bias": (512,), "decoder.up.3.block.0.conv1.weight": (256, 512, 3, 3),
    "decoder.up.3.block.0.nin_shortcut.weight": (256, 256, 1, 1), "decoder.up.2.block.1.norm2.bias": (256,),
    "decoder.up.1.block.0.nin_shortcut.weight": (128, 128, 1, 1), "decoder.up.1.upsample_conv.weight": (128, 128, 3, 3),
    "decoder.up.0.block.1.conv2.weight": (128, 128, 3, 3), "decoder.norm_out.weight": (128,),
    "decoder.conv_out.weight": (3, 128, 3, 3), "decoder.conv_out.bias": (3,),
}


def test_maskgit_vq_names_and_shapes_match_the_released_tokenizer():
    shapes = meta_shapes(MaskGITVQDecoder)
    assert len(shapes) == 89
    for name, shape in MASKGIT_UPSTREAM.items():
        assert shapes.get(name) == shape, name
    # bias-free ResNet convolutions, no upsampling at the finest level, no post-quant convolution
    assert not any(k.endswith(("conv1.bias", "conv2.bias", "nin_shortcut.bias")) for k in shapes)
    assert "decoder.up.0.upsample_conv.weight" not in shapes and "post_quant_conv.weight" not in shapes
    released = meta_state(shapes)
    released.update({"encoder.conv_in.weight": torch.empty(128, 3, 3, 3, device="meta"),
                     "encoder.down.0.block.0.conv1.weight": torch.empty(128, 128, 3, 3, device="meta"),
                     "encoder.conv_out.weight": torch.empty(256, 512, 1, 1, device="meta")})
    assert mismatches(shapes, released, ENCODER_PREFIXES) == []
    assert mismatches(shapes, released) == [f"unexpected {k} {tuple(released[k].shape)}"
                                            for k in released if k.startswith("encoder.")]


def test_maskgit_vq_decodes_raster_codes_to_unit_range_images():
    config = MaskGITVQConfig(codebook_size=16, z_channels=32, hidden_channels=32, channel_mult=(1, 2))
    vq = randomised(MaskGITVQDecoder(config), seed=3)
    codes = torch.randint(0, 16, (2, 4, 4), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        grid, raster = vq(codes), vq(codes.flatten(1))
    assert grid.shape == (2, 3, 8, 8) and torch.equal(grid, raster)
    assert grid.min() >= 0 and grid.max() <= 1
    pixels = to_uint8(torch.tensor([0.0, 0.5, 0.999, 1.0, 1.7]).view(1, 1, 1, 5).expand(1, 3, 1, 5))
    assert pixels.shape == (1, 1, 5, 3) and pixels[0, 0, :, 0].tolist() == [0, 127, 254, 255, 255]  # truncation


# -- against upstream's own outputs (tests/golden/make_rar.py, bytedance/1d-tokenizer@942a96f) --------------
GOLDEN_CONFIG = RARConfig(dim=64, depth=2, heads=4, intermediate_size=128, image_seq_len=16, codebook_size=16,
                          num_classes=10)  # upstream's spare table rows (+1024, +100) kept
GOLDEN_VQ = MaskGITVQConfig(codebook_size=16, z_channels=32, hidden_channels=32, channel_mult=(1, 2))


@pytest.fixture(scope="module")
def golden():
    with np.load(Path(__file__).parent / "golden" / "rar" / "golden.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def golden_rar(golden, tmp_path_factory):
    """Seeded weights saved as the released flat `rar_b.bin` and read back through the safe reader."""
    model = RAR(GOLDEN_CONFIG)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {
        k: tuple(v) for k, v in json.loads(str(golden["rar_layout"])).items()}
    path = tmp_path_factory.mktemp("rar") / "rar_tiny.bin"
    torch.save(seeded_module_state(model, 40), path)
    load_into(model, read_state_dict(path), "tiny RAR")
    return model.eval()


def test_forward_equals_upstream_forward_fn(golden, golden_rar):
    """Upstream's `forward_fn` (raster orders, eval) on the same weights: its logits 0..n-1 predict tokens 0..n-1."""
    with torch.no_grad():
        ours = golden_rar.teacher_forced_logits(torch.from_numpy(golden["labels"]), torch.from_numpy(golden["tokens"]))
    np.testing.assert_allclose(ours.numpy(), golden["teacher_logits"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [0, 1])
def test_sampler_sees_upstreams_logits_at_every_step(golden, golden_rar, k):
    """Upstream `generate` at temperature 1e-3 (greedy): its softmax input at each step (guided logits /
    temperature, power-cosine ramp from 1 at step 0) and its tokens; guidance 4.0 / power 2.75, and off."""
    scale, power, temperature = golden[f"sample{k}_setting"]
    record: list = []
    tokens = generate_rar(golden_rar, torch.from_numpy(golden["labels"]), request_generators([0, 1]),
                          RARSampler(float(scale), float(power), float(temperature)), record=record)
    np.testing.assert_array_equal(tokens.numpy(), golden[f"sample{k}_tokens"])
    np.testing.assert_allclose(torch.cat(record, 1).numpy() / np.float32(temperature),
                               golden[f"sample{k}_softmax_inputs"], rtol=1e-5, atol=1e-5 / temperature)


def test_guidance_schedule_equals_upstream_generate():
    """The scale upstream's `generate` applies at each of 256 steps for the released settings (and pow 0, its
    "constant cfg": 0 ** 0 = 1, so every step, the first included, uses g), read off upstream's own loop."""
    with np.load(Path(__file__).parent / "golden" / "rar" / "golden.npz") as data:
        settings, schedules = data["released_settings"], data["released_schedules"]
    for (scale, power), expected in zip(settings, schedules):
        ours = np.array([guidance_at(step, 256, float(scale), float(power)) for step in range(256)], np.float32)
        np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=0)


def test_maskgit_vq_decoder_equals_upstream(golden):
    """PretrainedTokenizer.decode: clamp(decoder(quantize.get_codebook_entry(codes)), 0, 1)."""
    vq = MaskGITVQDecoder(GOLDEN_VQ)
    assert {k: tuple(v.shape) for k, v in vq.state_dict().items()} == {
        k: tuple(v) for k, v in json.loads(str(golden["vq_layout"])).items() if not k.startswith(ENCODER_PREFIXES)}
    state = seeded_module_state(vq, 41)
    vq.load_state_dict(state)
    with torch.no_grad():
        images = vq.eval()(torch.from_numpy(golden["codes"]))
    # conv stacks summed in a different order: 3e-6 seen on [0, 1] values (1e-3 of a grey level)
    np.testing.assert_allclose(images.numpy(), golden["vq_images"], rtol=1e-5, atol=1e-5)


def test_generation_makes_one_step_per_token_with_valid_ids(rar):
    record: list = []
    tokens = generate_rar(rar, LABELS, request_generators(SEEDS), RARSampler(4.0, 1.5, 1.02))
    assert tokens.shape == (4, SMALL.image_seq_len) and tokens.dtype == torch.long
    assert tokens.min() >= 0 and tokens.max() < SMALL.codebook_size
    generate_rar(rar, LABELS, request_generators(SEEDS), RARSampler(4.0, 1.5, 1.02), forced=tokens, record=record)
    assert len(record) == SMALL.image_seq_len and record[0].shape == (4, 1, SMALL.codebook_size)


@pytest.mark.parametrize("guidance,power", [(0.0, 0.0), (5.0, 2.75)])
def test_kv_cache_equals_full_recomputation(rar, guidance, power):
    sampler = RARSampler(guidance, power, 1.0)
    tokens = generate_rar(rar, LABELS, request_generators(SEEDS), sampler)
    record: list = []
    generate_rar(rar, LABELS, request_generators(SEEDS), sampler, forced=tokens, record=record)
    cached = torch.cat(record, dim=1)
    with torch.no_grad():
        full = rar.teacher_forced_logits(LABELS, tokens)
        if guidance:
            uncond = rar.teacher_forced_logits(torch.full_like(LABELS, SMALL.null_class), tokens)
            scales = torch.tensor([guidance_at(s, SMALL.image_seq_len, guidance, power)
                                   for s in range(SMALL.image_seq_len)]).view(1, -1, 1)
            full = uncond + (full - uncond) * scales
    torch.testing.assert_close(cached, full, atol=2e-5, rtol=1e-4)


def test_samples_do_not_depend_on_the_batch(rar):
    sampler = RARSampler(6.9, 1.5, 1.02)
    together = generate_rar(rar, LABELS, request_generators(SEEDS), sampler)
    apart = torch.cat([generate_rar(rar, LABELS[:1], request_generators(SEEDS[:1]), sampler),
                       generate_rar(rar, LABELS[1:], request_generators(SEEDS[1:]), sampler)])
    assert torch.equal(together, apart)
    other = generate_rar(rar, LABELS, request_generators([s + 100 for s in SEEDS]), sampler)
    assert not torch.equal(together, other)


def test_temperature_divides_the_guided_logits(rar):
    """A very low temperature makes sampling greedy on the guided logits."""
    record: list = []
    tokens = generate_rar(rar, LABELS, request_generators(SEEDS), RARSampler(3.0, 1.0, 1e-4))
    generate_rar(rar, LABELS, request_generators(SEEDS), RARSampler(3.0, 1.0, 1e-4), forced=tokens, record=record)
    assert torch.equal(torch.cat(record, dim=1).argmax(-1), tokens)


# -- registered methods -----------------------------------------------------------------------------
def test_methods_are_registered_with_readme_settings_and_weight_specs(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path))
    expected = {"rar-b": (16.0, 2.75, 1.0), "rar-l": (15.5, 2.5, 1.02), "rar-xl": (6.9, 1.5, 1.02),
                "rar-xxl": (8.0, 1.2, 1.02)}
    for name, (g, pw, t) in expected.items():
        method = METHODS.get(name)
        assert method.modality == "class-to-image" and method.family == "raster-ar"
        assert method().settings() == {"guidance_scale": g, "guidance_scale_pow": pw, "randomize_temperature": t}
        assert method.rar_spec.url == f"https://huggingface.co/yucornetto/RAR/resolve/main/{name.replace('-', '_')}.bin"
        assert "research purposes only" in method.rar_spec.license and "Apache-2.0" in method.rar_spec.license
    assert MASKGIT_VQ.url == "https://huggingface.co/fun-research/TiTok/resolve/main/maskgit-vqgan-imagenet-f16-256.bin"
    with pytest.raises(MissingAssetError, match="rar_b.bin"):
        METHODS.get("rar-b")().checkpoint_sha256()
    config = METHODS.get("rar-b").Config
    with pytest.raises(ArbenchError, match="Did you mean: guidance_scale"):
        build_config(config, {"guidance_scal": 3}, "rar-b")
    with pytest.raises(ArbenchError, match="randomize_temperature=0: Input should be greater than 0"):
        build_config(config, {"randomize_temperature": 0}, "rar-b")
    assert build_config(config, {"guidance_scale": "4"}, "rar-b").guidance_scale == 4.0


def test_checkpoint_digest_covers_generator_and_tokenizer(tmp_path):
    (tmp_path / "g.bin").write_bytes(b"generator")
    (tmp_path / "t.bin").write_bytes(b"tokenizer")
    (tmp_path / "t2.bin").write_bytes(b"another tokenizer")
    method = METHODS.get("rar-b")
    first = method(method.Config(rar_weights=str(tmp_path / "g.bin"), tokenizer_weights=str(tmp_path / "t.bin")))
    second = method(method.Config(rar_weights=str(tmp_path / "g.bin"), tokenizer_weights=str(tmp_path / "t2.bin")))
    assert len(first.checkpoint_sha256()) == 64 and first.checkpoint_sha256() != second.checkpoint_sha256()
    assert "rar_weights" not in first.settings()


def test_method_generates_uint8_images_per_request(rar):
    method = METHODS.get("rar-b")()
    method.num_classes = SMALL.num_classes
    method._model = rar
    method._vq = randomised(MaskGITVQDecoder(MaskGITVQConfig(codebook_size=SMALL.codebook_size, z_channels=32,
                                                             hidden_channels=32, channel_mult=(1, 2))), seed=5)
    method._loaded = True  # networks injected: no weight files to read
    requests = [Request(i, str(i), 90 + i, {"label": i % 10}) for i in range(3)]
    images = method.generate(requests)  # 4x4 tokens -> 8x8 pixels
    assert images.shape == (3, 8, 8, 3) and images.dtype == np.uint8
    alone = method.generate(requests[2:]).astype(int)
    # same tokens; float convolutions may round differently with the batch, so allow one grey level
    assert np.abs(alone - images[2:]).max() <= 1
    with pytest.raises(ArbenchError, match="labels"):
        method.generate([Request(0, "0", 1, {"label": 10})])
