"""LlamaGen GPT, PAR and VAR built small with random weights: shapes, step counts, KV cache against full
recomputation, PAR order and mask, VAR scale schedule, per-sample determinism across batch sizes."""

from __future__ import annotations

import pytest
import torch

from baselines.imagegen.llamagen_gpt import GPTConfig, LlamaGenGPT, generate_raster
from baselines.imagegen.par import PARConfig, PARGPT, block_mask, decode_schedule, generate_par, region_order
from baselines.imagegen.sampling import SamplerConfig, filter_logits, request_generators
from baselines.imagegen.var import (PATCH_NUMS, VAR, VARConfig, VARSampler, VQVAEConfig, VQVAEDecoder, cfg_ramp,
                                    generate_var, scale_schedule)
from baselines.imagegen.vq_decoder import VQConfig, VQDecoder
from imagegen_fixtures import randomised

torch.set_num_threads(1)
SMALL = GPTConfig(dim=32, n_layer=2, n_head=4, multiple_of=16, num_classes=10, vocab_size=11, block_size=16)


@pytest.fixture(scope="module")
def gpt():
    return randomised(LlamaGenGPT(SMALL))


@pytest.fixture(scope="module")
def par():
    return randomised(PARGPT(SMALL, PARConfig(regions_per_side=2)))


LABELS = torch.tensor([3, 0, 7, 3, 9])
SEEDS = [11, 12, 13, 14, 15]


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_raster_kv_cache_equals_full_recomputation(gpt, cfg):
    sampler = SamplerConfig(cfg_scale=cfg)
    tokens = generate_raster(gpt, LABELS, request_generators(SEEDS), sampler)
    assert tokens.shape == (5, 16) and tokens.min() >= 0 and tokens.max() < SMALL.vocab_size
    record: list = []
    generate_raster(gpt, LABELS, request_generators(SEEDS), sampler, forced=tokens, record=record)
    assert len(record) == SMALL.block_size  # one step per token
    cached = torch.cat(record, dim=1)
    with torch.no_grad():
        cond = gpt.training_logits(LABELS, tokens)
        full = cond if cfg == 1.0 else gpt.training_logits(torch.full_like(LABELS, 10), tokens) * (1 - cfg) + cond * cfg
    torch.testing.assert_close(cached, full, atol=2e-5, rtol=1e-4)


def test_class_prefix_rotary_rows_are_zero_as_upstream():
    from baselines.imagegen.llamagen_gpt import rope_table_2d

    table = rope_table_2d(GPTConfig(dim=64, n_head=4, block_size=16, cls_token_num=1))
    assert table.shape == (17, 8, 2) and table[0].abs().sum() == 0
    # row 1 is grid (0, 0): cos 1, sin 0; rows advance the first half of the pairs with y, the second with x
    torch.testing.assert_close(table[1, :, 0], torch.ones(8))
    assert torch.equal(table[2, :4], table[1, :4]) and not torch.equal(table[2, 4:], table[1, 4:])
    assert torch.equal(table[5, 4:], table[1, 4:]) and not torch.equal(table[5, :4], table[1, :4])


def test_par_order_visits_every_position_once_and_groups_regions():
    order = region_order(8, 2)
    assert sorted(order.tolist()) == list(range(64))
    # group 0 = first token of each 4x4 region, in region raster order
    assert order[:4].tolist() == [0, 4, 32, 36]
    assert order[4:8].tolist() == [1, 5, 33, 37]
    schedule = decode_schedule(64, 4)
    flat = [i for step in schedule for i in step]
    assert flat == list(range(64)) and len(schedule) == 4 + 15
    assert all(len(step) == 1 for step in schedule[:4]) and all(len(step) == 4 for step in schedule[4:])
    # the paper's step counts on 24x24 tokens: 147 (2x2 regions) and 51 (4x4 regions)
    assert len(decode_schedule(576, 4)) == 147 and len(decode_schedule(576, 16)) == 51
    with pytest.raises(ValueError):
        region_order(10, 4)


def test_par_mask_is_causal_then_block_causal():
    mask = block_mask(cls_tokens=1, num_tokens=16, regions=4)
    assert mask.shape == (16, 16)
    expected = torch.zeros(16, 16, dtype=torch.bool)
    for q in range(4):  # class token and p0..p2: causal
        expected[q, : q + 1] = True
    for start in (4, 8, 12):  # transition block, then groups 1 and 2: see themselves and the past
        expected[start:start + 4, : start + 4] = True
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("cfg", [1.0, 2.5])
def test_par_cached_decoding_equals_teacher_forced_logits(par, cfg):
    sampler = SamplerConfig(cfg_scale=cfg)
    tokens = generate_par(par, LABELS, request_generators(SEEDS), sampler)
    assert tokens.shape == (5, 16)
    record: list = []
    again = generate_par(par, LABELS, request_generators(SEEDS), sampler, forced=tokens, record=record)
    assert torch.equal(again, tokens)
    assert [r.shape[1] for r in record] == [1, 1, 1, 1, 4, 4, 4]  # 4 sequential + 3 parallel steps
    cached = torch.cat(record, dim=1)
    with torch.no_grad():
        cond = par.training_logits(LABELS, tokens)
        full = cond if cfg == 1.0 else par.training_logits(torch.full_like(LABELS, 10), tokens) * (1 - cfg) + cond * cfg
    torch.testing.assert_close(cached, full, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("decode", ["raster", "par"])
def test_cfg_interval_guides_the_first_interval_plus_two_steps(gpt, par, decode):
    """As upstream LlamaGen's prefill + decode_n_tokens (checked on upstream's own outputs in
    test_golden_imagegen.py): cfg_interval k guides decoding steps 0..k+1, then the conditional logits alone."""
    model, fn = (gpt, generate_raster) if decode == "raster" else (par, generate_par)
    tokens = fn(model, LABELS, request_generators(SEEDS), SamplerConfig(cfg_scale=3.0))
    guided: list = []
    limited: list = []
    fn(model, LABELS, request_generators(SEEDS), SamplerConfig(cfg_scale=3.0), forced=tokens, record=guided)
    fn(model, LABELS, request_generators(SEEDS), SamplerConfig(cfg_scale=3.0, cfg_interval=1), forced=tokens,
       record=limited)
    with torch.no_grad():  # the conditional logits of every step, from one teacher-forced pass
        plain = model.training_logits(LABELS, tokens)
    start = 0
    for step, (g, l) in enumerate(zip(guided, limited)):
        cond = plain[:, start:start + l.shape[1]]
        start += l.shape[1]
        if step <= 2:
            assert torch.equal(l, g), step
        else:
            torch.testing.assert_close(l, cond, atol=2e-5, rtol=1e-4)
            assert not torch.allclose(g, cond, atol=1e-3), step


@pytest.mark.parametrize("decode", ["raster", "par"])
def test_samples_do_not_depend_on_the_batch(gpt, par, decode):
    model, fn = (gpt, generate_raster) if decode == "raster" else (par, generate_par)
    sampler = SamplerConfig(cfg_scale=2.0, top_k=6, top_p=0.9, temperature=0.9)
    whole = fn(model, LABELS, request_generators(SEEDS), sampler)
    parts = torch.cat([fn(model, LABELS[i:i + 2], request_generators(SEEDS[i:i + 2]), sampler) for i in (0, 2, 4)])
    assert torch.equal(whole, parts)
    other = fn(model, LABELS, request_generators([s + 100 for s in SEEDS]), sampler)
    assert not torch.equal(whole, other)


def test_top_k_top_p_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2, top_p=1.0)).tolist() == [[False, False, True, True]]
    # nucleus keeps tokens up to and including the one crossing 0.7
    assert torch.isinf(filter_logits(logits, top_k=0, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_k=0, top_p=0.85)).tolist() == [[False, False, False, True]]
    assert not torch.isinf(filter_logits(logits, top_k=0, top_p=1.0)).any()


def test_vq_decoder_upsamples_by_16():
    vq = randomised(VQDecoder(VQConfig(codebook_size=32, ch=32, z_channels=32)))
    with torch.no_grad():
        images = vq(torch.randint(0, 32, (2, 3, 4)))
    assert images.shape == (2, 3, 48, 64)


def test_var_scale_schedule_and_cfg_ramp():
    spans = scale_schedule(PATCH_NUMS)
    assert spans[0] == (0, 1) and spans[-1] == (424, 680) and VARConfig().length == 680
    assert all(spans[i][1] == spans[i + 1][0] for i in range(9))
    ramp = cfg_ramp(1.5, 10)
    assert ramp[0] == 0.0 and ramp[-1] == pytest.approx(1.5) and ramp == sorted(ramp)


def test_var_generates_every_scale_and_caches_like_the_masked_pass():
    patch = (1, 2, 4)
    cfg = VARConfig(depth=2, num_classes=10, vocab_size=16, patch_nums=patch, width_per_depth=16)
    model = randomised(VAR(cfg))  # parameters only: the level and mask buffers stay as built
    vae = randomised(VQVAEDecoder(VQVAEConfig(vocab_size=16, ch=32, ch_mult=(1, 2), patch_nums=patch)))
    sampler = VARSampler(cfg=1.5, top_k=8, top_p=0.95)
    record: list = []
    images, codes = generate_var(model, vae, LABELS, request_generators(SEEDS), sampler, record=record)
    assert images.shape == (5, 3, 8, 8) and [c.shape[1] for c in codes] == [1, 4, 16]
    assert images.abs().max() <= 1
    # the cached, scale-by-scale pass equals one pass over the whole pyramid with upstream's training mask
    with torch.no_grad():
        labels2 = torch.cat([LABELS, torch.full_like(LABELS, 10)])
        cond = model.class_emb(labels2)
        lvl_pos = model.level_positions()
        f_hat = torch.zeros(5, 32, 4, 4)
        inputs = [cond.unsqueeze(1) + model.pos_start + lvl_pos[:, :1]]
        for si, (begin, end) in enumerate(scale_schedule(patch)[1:]):
            f_hat, nxt = vae.quantize.add_scale(si, f_hat, codes[si])
            x = model.word_embed(nxt.flatten(2).transpose(1, 2)) + lvl_pos[:, begin:end]
            inputs.append(torch.cat([x, x]))
        logits = model.logits(torch.cat(inputs, dim=1), cond, None, model.attn_bias_for_masking)
    for si, (begin, end) in enumerate(scale_schedule(patch)):
        t = cfg_ramp(1.5, 3)[si]
        guided = (1 + t) * logits[:5, begin:end] - t * logits[5:, begin:end]
        torch.testing.assert_close(record[si], guided, atol=2e-5, rtol=1e-4)
    # per-sample streams: the same images in smaller batches
    again = torch.cat([generate_var(model, vae, LABELS[i:i + 2], request_generators(SEEDS[i:i + 2]), sampler)[0]
                       for i in (0, 2, 4)])
    torch.testing.assert_close(again, images, atol=1e-5, rtol=1e-5)
