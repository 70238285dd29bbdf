"""MAR: the mask schedule, the respaced cosine DDPM against its formulas, the sampling loop against a
transcription of upstream's batch-level `sample_tokens`, per-request determinism, released names and
shapes (MAR-B and the KL-16 VAE), safe EMA checkpoint reading and the registered methods' plumbing."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math

import numpy as np
import pytest
import torch

from baselines.imagegen.checkpoints import load_into, mismatches
from baselines.imagegen.kl_vae import ENCODER_PREFIXES, KLVAEConfig, KLVAEDecoder, to_uint8
from baselines.imagegen.mar import MAR, MAR_CONFIGS, MARConfig, MARSampler, generate_mar, step_plan
from baselines.imagegen.mar_diffusion import cosine_betas, p_sample, respaced_schedule, space_timesteps
from baselines.imagegen.mar_methods import MAR_VAE, read_mar_checkpoint
from baselines.imagegen.sampling import request_generators
from harness.api import Request, build_config
from harness.errors import ArbenchError, MissingAssetError
from harness.registry import METHODS

torch.set_num_threads(1)

TINY = MARConfig(embed_dim=32, depth=1, num_heads=2, diffloss_depth=2, diffloss_width=32, img_size=64,
                 buffer_size=4, num_classes=10)  # 4x4 latents, 16 tokens
SAMPLER = MARSampler(num_iter=5, num_sampling_steps=8, cfg=2.5, cfg_schedule="linear", temperature=0.9)


def tiny_mar(seed: int = 0) -> MAR:
    """Random weights everywhere (upstream zero-initialises the head's output, which would hide bugs)."""
    gen = torch.Generator().manual_seed(seed)
    model = MAR(TINY)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.05 if "final_layer" in name else 0.1))
    return model.eval()


def meta_shapes(module_cls, *args) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in module_cls(*args).state_dict().items()}


# -- schedules ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seq_len,num_iter", [(256, 256), (256, 64), (256, 7), (16, 1), (16, 16), (256, 200)])
def test_mask_schedule_predicts_every_token_exactly_once(seq_len, num_iter):
    plan = step_plan(seq_len, num_iter)
    assert len(plan) == num_iter
    visited = [i for step in plan for i in range(step.start, step.stop)]
    assert sorted(visited) == list(range(seq_len)) and all(step.stop > step.start for step in plan)
    masked = seq_len
    for s, step in enumerate(plan[:-1]):  # MaskGIT's cosine: floor(L cos(pi/2 (s+1)/T)), at least one fewer
        expected = max(1, min(masked - 1, math.floor(seq_len * math.cos(math.pi / 2 * (s + 1) / num_iter))))
        assert step.mask_len == step.start == expected
        masked = expected
    assert plan[-1].start == 0 and plan[-1].mask_len == 1


def test_mask_schedule_refuses_more_steps_than_tokens():
    with pytest.raises(ValueError, match="num_iter"):
        step_plan(16, 17)


def test_respaced_cosine_schedule_matches_its_formulas():
    alpha_bar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = cosine_betas()
    assert betas[0] == pytest.approx(1 - alpha_bar(0.001) / alpha_bar(0), rel=1e-12)
    assert betas[500] == pytest.approx(1 - alpha_bar(0.501) / alpha_bar(0.5), rel=1e-12)
    assert betas[-1] == 0.999  # capped
    kept = space_timesteps(1000, 100)  # stride 999/99, rounded: 0, 10, 20, 30, 40, 50, 61, ...
    assert len(kept) == 100 and kept[:7] == [0, 10, 20, 30, 40, 50, 61] and kept[-1] == 999
    assert space_timesteps(1000, 2) == [0, 999] and space_timesteps(10, 10) == list(range(10))
    sched = respaced_schedule(100)
    assert list(sched.timesteps) == kept
    # a kept step's cumulative alpha is the base process's: alpha_bar((t + 1) / T) / alpha_bar(0) (unclipped steps)
    for i in (0, 1, 6, 50, 98):
        assert sched.alphas_cumprod[i] == pytest.approx(alpha_bar((kept[i] + 1) / 1000) / alpha_bar(0), rel=1e-9)
    assert sched.betas[6] == pytest.approx(1 - sched.alphas_cumprod[6] / sched.alphas_cumprod[5], rel=1e-12)
    i = 30
    ac, prev = sched.alphas_cumprod[i], sched.alphas_cumprod[i - 1]
    assert sched.posterior_variance[i] == pytest.approx(sched.betas[i] * (1 - prev) / (1 - ac), rel=1e-12)
    assert sched.posterior_log_variance_clipped[0] == sched.posterior_log_variance_clipped[1]


def test_ddpm_sampler_with_the_exact_epsilon_matches_the_linear_gaussian_recursion():
    """For data N(mu, s^2) the ideal epsilon is linear in x, so each step is x <- A x + b + sigma T n and the
    output is Gaussian with a mean and variance given by a recursion written from IDDPM's formulas; the
    sampler must reproduce them (sampling error only) and land near N(mu, s^2)."""
    mu, s, n = 1.5, 0.5, 50000
    sched = respaced_schedule(50)
    ac, betas = sched.alphas_cumprod, sched.betas
    ac_prev = np.append(1.0, ac[:-1])
    post = betas * (1 - ac_prev) / (1 - ac)
    post_log = np.log(np.append(post[1], post[1:]))
    gen = torch.Generator().manual_seed(0)
    for temperature, var_value in [(1.0, -1.0), (1.0, 1.0), (0.5, 0.0)]:
        x = torch.randn(n, generator=gen, dtype=torch.float64)
        mean, var = 0.0, 1.0
        for i in reversed(range(sched.num_steps)):
            k = math.sqrt(1 - ac[i]) / (ac[i] * s * s + 1 - ac[i])  # eps = k (x - sqrt(ac) mu)
            eps = k * (x - math.sqrt(ac[i]) * mu)
            noise = torch.randn(n, generator=gen, dtype=torch.float64)
            x = p_sample(sched, i, x, eps, torch.full_like(x, var_value), noise, temperature)
            c_x0 = betas[i] * math.sqrt(ac_prev[i]) / (1 - ac[i])
            c_xt = (1 - ac_prev[i]) * math.sqrt(1 - betas[i]) / (1 - ac[i])
            r, rm1 = math.sqrt(1 / ac[i]), math.sqrt(1 / ac[i] - 1)
            a, b = c_x0 * (r - rm1 * k) + c_xt, c_x0 * rm1 * k * math.sqrt(ac[i]) * mu
            frac = (var_value + 1) / 2
            sigma2 = math.exp(frac * math.log(betas[i]) + (1 - frac) * post_log[i]) if i > 0 else 0.0
            mean, var = a * mean + b, a * a * var + sigma2 * temperature ** 2
        assert x.mean().item() == pytest.approx(mean, abs=0.01)
        assert x.std().item() == pytest.approx(math.sqrt(var), rel=0.01)
        assert mean == pytest.approx(mu, abs=0.01)
        if temperature == 1.0:
            assert math.sqrt(var) == pytest.approx(s, rel=0.08)


# -- sampling loop ------------------------------------------------------------------------------------
def upstream_sample_tokens(model: MAR, labels, generators, sampler: MARSampler) -> torch.Tensor:
    """A transcription of upstream's batch-level `MAR.sample_tokens` + `DiffLoss.sample` + IDDPM's
    `p_sample_loop` (mask_by_order with scatter, xor of masks, nonzero row order, cfg chunking), fed the
    same per-request noise; only the random draws are replaced."""
    cfg, bsz = model.config, labels.shape[0]
    seq_len, c = cfg.seq_len, cfg.token_dim
    sched = respaced_schedule(sampler.num_sampling_steps)
    betas, ac = sched.betas, sched.alphas_cumprod
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1 - ac_prev) / (1 - ac)
    post_log = np.log(np.append(post_var[1], post_var[1:]))
    f32 = lambda arr, t: torch.tensor(arr[t], dtype=torch.float32)  # noqa: E731  (_extract_into_tensor)
    orders = torch.stack([torch.randperm(seq_len, generator=g) for g in generators])
    mask = torch.ones(bsz, seq_len)
    tokens = torch.zeros(bsz, seq_len, c)
    guided = sampler.cfg != 1.0
    for step in range(sampler.num_iter):
        cur = tokens.clone()
        emb = model.class_emb(labels)
        if guided:
            tokens, mask = torch.cat([tokens, tokens]), torch.cat([mask, mask])
            emb = torch.cat([emb, model.fake_latent.repeat(bsz, 1)])
        z = model.decode(model.encode(tokens, mask.bool(), emb), mask.bool())
        mask_len = np.floor(seq_len * np.cos(math.pi / 2.0 * (step + 1) / sampler.num_iter))
        mask_len = max(1.0, min(mask.sum(-1)[0].item() - 1, mask_len))
        mask_next = torch.zeros(bsz, seq_len).scatter(-1, orders[:, :int(mask_len)], 1.0).bool()
        to_pred = mask[:bsz].bool() if step >= sampler.num_iter - 1 else torch.logical_xor(mask[:bsz].bool(), mask_next)
        mask = mask_next.float()
        rows = torch.cat([to_pred, to_pred]) if guided else to_pred
        zs = z[rows.nonzero(as_tuple=True)]
        scale = 1 + (sampler.cfg - 1) * (seq_len - mask_len) / seq_len if sampler.cfg_schedule == "linear" else sampler.cfg
        n = int(to_pred[0].sum())
        noise = torch.stack([torch.randn(sched.num_steps + 1, n, c, generator=g) for g in generators])
        noise = noise.transpose(0, 1).reshape(sched.num_steps + 1, bsz * n, c)
        x = torch.cat([noise[0], noise[0]]) if guided else noise[0]
        for i in reversed(range(sched.num_steps)):
            t = torch.full((x.shape[0],), int(sched.timesteps[i]))
            if guided:  # forward_with_cfg
                half = x[: len(x) // 2]
                out = model.diffloss.net(torch.cat([half, half]), t, zs)
                eps, rest = out[:, :c], out[:, c:]
                ce, ue = eps.chunk(2)
                out = torch.cat([torch.cat([ue + scale * (ce - ue)] * 2), rest], dim=1)
            else:
                out = model.diffloss.net(x, t, zs)
            eps, v = out[:, :c], out[:, c:]
            frac = (v + 1) / 2
            log_var = frac * f32(np.log(betas), i) + (1 - frac) * f32(post_log, i)
            x0 = f32(np.sqrt(1 / ac), i) * x - f32(np.sqrt(1 / ac - 1), i) * eps
            mean = f32(betas * np.sqrt(ac_prev) / (1 - ac), i) * x0 + \
                f32((1 - ac_prev) * np.sqrt(1 - betas) / (1 - ac), i) * x
            step_noise = torch.cat([noise[i + 1], noise[i + 1]]) if guided else noise[i + 1]
            x = mean + float(i != 0) * torch.exp(0.5 * log_var) * step_noise * sampler.temperature
        if guided:
            x = x.chunk(2)[0]
        cur[to_pred.nonzero(as_tuple=True)] = x
        tokens = cur.clone()
    return model.unpatchify(tokens)


@pytest.mark.parametrize("sampler", [SAMPLER, dataclasses.replace(SAMPLER, cfg_schedule="constant"),
                                     dataclasses.replace(SAMPLER, cfg=1.0, num_iter=16)])
def test_sampling_loop_matches_upstreams_batch_algorithm(sampler):
    model, labels, seeds = tiny_mar(), torch.tensor([3, 7, 1]), [11, 12, 13]
    with torch.no_grad():
        ours = generate_mar(model, labels, request_generators(seeds), sampler)
        ref = upstream_sample_tokens(model, labels, request_generators(seeds), sampler)
    assert ours.shape == (3, 16, 4, 4)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_samples_do_not_depend_on_the_batch_and_follow_the_seed():
    model, labels, seeds = tiny_mar(), torch.tensor([3, 7, 1, 7]), [5, 6, 7, 8]
    whole = generate_mar(model, labels, request_generators(seeds), SAMPLER)
    parts = torch.cat([generate_mar(model, labels[i:i + 1], request_generators(seeds[i:i + 1]), SAMPLER)
                       for i in range(4)])
    # float rounding only: the random tiny model's tokens reach ~7e4, where one float32 ulp is ~0.008, and batching
    # changes GEMM summation order; so the bound is relative to the tensor's scale (a wrong seed or class moves
    # elements by the scale itself, as the assertion below shows)
    scale = float(whole.abs().max())
    torch.testing.assert_close(whole, parts, atol=1e-6 * scale, rtol=0)
    assert not torch.allclose(whole[1], whole[3])  # same class, other seed
    again = generate_mar(model, labels, request_generators(seeds), SAMPLER)
    assert torch.equal(whole, again)


def test_encoder_decoder_match_upstreams_forward_with_timm_blocks():
    """Upstream's forward_mae_encoder / forward_mae_decoder transcribed over timm's ViT `Block` (the class
    upstream uses), loaded strictly with our blocks' weights: same names, same numbers."""
    timm_vit = pytest.importorskip("timm.models.vision_transformer")
    model = tiny_mar(1)
    d, buf = TINY.embed_dim, TINY.buffer_size

    def timm_blocks(ours):
        blocks = []
        for block in ours:
            ref = timm_vit.Block(d, TINY.num_heads, TINY.mlp_ratio, qkv_bias=True,
                                 norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6)).eval()
            ref.load_state_dict(block.state_dict(), strict=True)
            blocks.append(ref)
        return blocks

    gen = torch.Generator().manual_seed(3)
    tokens = torch.randn(2, TINY.seq_len, TINY.token_dim, generator=gen)
    orders = torch.stack([torch.randperm(TINY.seq_len, generator=gen) for _ in range(2)])
    mask = torch.zeros(2, TINY.seq_len).scatter(-1, orders[:, :9], 1.0)  # 9 of 16 masked
    emb = model.class_emb(torch.tensor([4, 9]))
    with torch.no_grad():
        x = model.z_proj(tokens)
        x = torch.cat([torch.zeros(2, buf, d), x], dim=1)
        with_buffer = torch.cat([torch.zeros(2, buf), mask], dim=1)
        x[:, :buf] = emb.unsqueeze(1)
        x = model.z_proj_ln(x + model.encoder_pos_embed_learned)
        x = x[(1 - with_buffer).nonzero(as_tuple=True)].reshape(2, -1, d)
        for block in timm_blocks(model.encoder_blocks):
            x = block(x)
        x = model.decoder_embed(model.encoder_norm(x))
        padded = model.mask_token.repeat(2, buf + TINY.seq_len, 1).clone()
        padded[(1 - with_buffer).nonzero(as_tuple=True)] = x.reshape(-1, d)
        x = padded + model.decoder_pos_embed_learned
        for block in timm_blocks(model.decoder_blocks):
            x = block(x)
        ref = model.decoder_norm(x)[:, buf:] + model.diffusion_pos_embed_learned
        ours = model.decode(model.encode(tokens, mask.bool(), emb), mask.bool())
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_diffusion_timestep_features_are_dits_cos_then_sin():
    net = tiny_mar().diffloss.net
    seen = []
    net.time_embed.mlp[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    t = torch.tensor([0, 37, 999])
    net(torch.zeros(3, TINY.token_dim), t, torch.zeros(3, TINY.embed_dim))
    freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float64) / 128)
    expected = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    torch.testing.assert_close(seen[0].double(), expected, atol=2e-4, rtol=0)


# -- released layouts -------------------------------------------------------------------------------------
# Names and shapes read from upstream's models/mar.py + models/diffloss.py (timm Block) at mar_base with
# --diffloss_d 6 --diffloss_w 1024, written out by hand.
MAR_B = {
    "class_emb.weight": (1000, 768), "fake_latent": (1, 768), "z_proj.weight": (768, 16), "z_proj_ln.bias": (768,),
    "encoder_pos_embed_learned": (1, 320, 768), "encoder_blocks.0.attn.qkv.weight": (2304, 768),
    "encoder_blocks.11.attn.proj.bias": (768,), "encoder_blocks.3.mlp.fc1.weight": (3072, 768),
    "encoder_blocks.3.norm2.weight": (768,), "encoder_norm.weight": (768,), "decoder_embed.weight": (768, 768),
    "mask_token": (1, 1, 768), "decoder_pos_embed_learned": (1, 320, 768), "decoder_blocks.11.mlp.fc2.weight": (768, 3072),
    "decoder_norm.bias": (768,), "diffusion_pos_embed_learned": (1, 256, 768),
    "diffloss.net.time_embed.mlp.0.weight": (1024, 256), "diffloss.net.time_embed.mlp.2.weight": (1024, 1024),
    "diffloss.net.cond_embed.weight": (1024, 768), "diffloss.net.input_proj.weight": (1024, 16),
    "diffloss.net.res_blocks.5.in_ln.weight": (1024,), "diffloss.net.res_blocks.5.mlp.2.weight": (1024, 1024),
    "diffloss.net.res_blocks.0.adaLN_modulation.1.weight": (3072, 1024),
    "diffloss.net.final_layer.linear.weight": (32, 1024),
    "diffloss.net.final_layer.adaLN_modulation.1.weight": (2048, 1024),
}
# 24 blocks x 12 + 16 MAR tensors + head (4 time, 2 cond, 2 input, 6 x 8 blocks, 4 final)
MAR_B_COUNT = 24 * 12 + 16 + 4 + 2 + 2 + 6 * 8 + 4


def test_mar_b_names_and_shapes_match_upstream_and_the_published_sizes():
    shapes = meta_shapes(MAR, MAR_CONFIGS["mar_base"])
    assert len(shapes) == MAR_B_COUNT and {k: shapes.get(k) for k in MAR_B} == MAR_B
    for arch, params in [("mar_base", 208e6), ("mar_large", 479e6), ("mar_huge", 943e6)]:  # README sizes
        with torch.device("meta"):
            count = sum(p.numel() for p in MAR(MAR_CONFIGS[arch]).parameters())
        assert abs(count - params) / params < 0.005


def test_mar_checkpoint_loads_ema_weights_and_refuses_mismatches(tmp_path):
    model = tiny_mar(0)
    ema = {k: v + 1.0 for k, v in model.state_dict().items()}
    path = tmp_path / "checkpoint-last.pth"
    torch.save({"model": model.state_dict(), "model_ema": ema, "epoch": 799,
                "args": argparse.Namespace(model="mar_base", diffloss_d=6)}, path)
    fresh = MAR(TINY)
    load_into(fresh, read_mar_checkpoint(path), "mar test")
    assert all(torch.equal(fresh.state_dict()[k], ema[k]) for k in ema)
    renamed = dict(ema)
    renamed["encoder_blocks.0.attn.qkv_proj.weight"] = renamed.pop("encoder_blocks.0.attn.qkv.weight")
    renamed["mask_token"] = torch.zeros(1, 1, 31)
    with pytest.raises(ArbenchError, match="does not match this architecture") as err:
        load_into(MAR(TINY), renamed, "mar test")
    for problem in ["missing encoder_blocks.0.attn.qkv.weight (96, 32)", "unexpected encoder_blocks.0.attn.qkv_proj",
                    "mask_token has shape (1, 1, 31), expected (1, 1, 32)"]:
        assert problem in str(err.value)
    # the released B layout is accepted by name and shape (no 800 MB tensors: compared on shapes)
    released = {k: torch.empty(s, device="meta") for k, s in meta_shapes(MAR, MAR_CONFIGS["mar_base"]).items()}
    assert mismatches(meta_shapes(MAR, MAR_CONFIGS["mar_base"]), released) == []
    no_ema = tmp_path / "no_ema.pth"
    torch.save({"model": model.state_dict()}, no_ema)
    with pytest.raises(ArbenchError, match="model_ema"):
        read_mar_checkpoint(no_ema)


class Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_untrusted_pickles_are_not_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model_ema": Payload()}, path)
    with pytest.raises(ArbenchError, match="could not be read"):
        read_mar_checkpoint(path)


# Names and shapes from upstream's models/vae.py (LDM Decoder) at embed_dim 16, ch_mult (1, 1, 2, 2, 4).
KL16 = {
    "post_quant_conv.weight": (16, 16, 1, 1), "decoder.conv_in.weight": (512, 16, 3, 3),
    "decoder.mid.block_1.conv1.weight": (512, 512, 3, 3), "decoder.mid.attn_1.q.weight": (512, 512, 1, 1),
    "decoder.mid.attn_1.proj_out.bias": (512,), "decoder.mid.block_2.norm2.weight": (512,),
    "decoder.up.4.block.0.conv1.weight": (512, 512, 3, 3), "decoder.up.4.upsample.conv.weight": (512, 512, 3, 3),
    "decoder.up.3.block.0.nin_shortcut.weight": (256, 512, 1, 1), "decoder.up.3.block.2.conv2.weight": (256, 256, 3, 3),
    "decoder.up.1.block.0.nin_shortcut.weight": (128, 256, 1, 1), "decoder.up.1.upsample.conv.weight": (128, 128, 3, 3),
    "decoder.up.0.block.2.norm1.weight": (128,), "decoder.norm_out.weight": (128,), "decoder.conv_out.weight": (3, 128, 3, 3),
}
# conv_in 2 + mid (8 + 10 + 8) + 5 levels x 3 blocks x 8 + 2 shortcuts x 2 + 4 upsamples x 2 + norm/conv out 4 + pqc 2
KL16_COUNT = 2 + 26 + 120 + 4 + 8 + 4 + 2


def test_kl16_vae_names_shapes_and_checkpoint_layout():
    shapes = meta_shapes(KLVAEDecoder)
    assert len(shapes) == KL16_COUNT and {k: shapes.get(k) for k in KL16} == KL16
    assert "decoder.up.0.upsample.conv.weight" not in shapes
    released = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    released.update({"encoder.conv_in.weight": torch.empty(128, 3, 3, 3, device="meta"),
                     "quant_conv.weight": torch.empty(32, 32, 1, 1, device="meta"),
                     "loss.logvar": torch.empty((), device="meta")})
    assert mismatches(shapes, released, ENCODER_PREFIXES) == []
    released["decoder.up.4.upsample.conv.weight"] = released.pop("decoder.up.4.upsample.conv.weight")[:256]
    assert mismatches(shapes, released, ENCODER_PREFIXES) == [
        "decoder.up.4.upsample.conv.weight has shape (256, 512, 3, 3), expected (512, 512, 3, 3)"]


def test_kl_vae_decodes_scaled_latents_by_16x():
    vae = KLVAEDecoder(KLVAEConfig(ch=32, ch_mult=(1, 2, 2))).eval()
    latents = torch.randn(2, 16, 3, 5)
    with torch.no_grad():
        images = vae(latents)
        assert images.shape == (2, 3, 12, 20)
        direct = vae.decoder(vae.post_quant_conv(latents / 0.2325))
    assert torch.equal(images, direct)


# -- registered methods -----------------------------------------------------------------------------------
def test_methods_are_registered_with_their_settings_and_weight_specs(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path))
    for name, cfg in [("mar-b", 2.9), ("mar-l", 3.0), ("mar-h", 3.2)]:
        method = METHODS.get(name)()
        assert method.modality == "class-to-image" and method.config.cfg == cfg
        assert method.mar_spec.url.startswith("https://www.dropbox.com/") and method.mar_spec.sha256 is None
    assert METHODS.get("mar-b")().settings() == {"num_iter": 256, "num_sampling_steps": 100, "cfg": 2.9,
                                                 "cfg_schedule": "linear", "temperature": 1.0,
                                                 "precision": "fp16-autocast"}
    assert MAR_VAE.filename == "kl16.ckpt" and "MIT" in MAR_VAE.license
    with pytest.raises(MissingAssetError, match="mar_base-checkpoint-last.pth"):
        METHODS.get("mar-b")().checkpoint_sha256()
    cls = METHODS.get("mar-l")
    with pytest.raises(ArbenchError, match="no setting 'cfg_scale'"):
        build_config(cls.Config, {"cfg_scale": 2}, "mar-l")
    with pytest.raises(ArbenchError, match="cfg_schedule"):
        build_config(cls.Config, {"cfg_schedule": "cosine"}, "mar-l")
    assert build_config(cls.Config, {"num_iter": "64", "cfg_schedule": "constant"}, "mar-l").num_iter == 64


def test_method_generates_uint8_images_independent_of_the_batch():
    method = METHODS.get("mar-b")(METHODS.get("mar-b").Config(num_iter=4, num_sampling_steps=6, precision="fp32"))
    method.num_classes = 10
    method._model = tiny_mar()
    method._vae = KLVAEDecoder(KLVAEConfig(ch=32, ch_mult=(1, 2))).eval()
    method._loaded = True  # networks injected: no weight files to read
    requests = [Request(i, str(i), 70 + i, {"label": i % 10}) for i in range(3)]
    images = method.generate(requests)
    assert images.shape == (3, 8, 8, 3) and images.dtype == np.uint8
    alone = method.generate(requests[2:]).astype(int)
    assert np.abs(alone - images[2:]).max() <= 1  # the float convolutions may round differently with the batch
    with pytest.raises(ArbenchError, match="labels"):
        method.generate([Request(0, "0", 1, {"label": 12})])
    cpu_fp16 = METHODS.get("mar-b")()
    with pytest.raises(ArbenchError, match="precision=fp32"):
        cpu_fp16.generate(requests)


# -- half precision (upstream evaluates under fp16 autocast) ---------------------------------------------
def test_a_float16_epsilon_is_promoted_before_the_first_ddpm_step():
    """At t = 999 sqrt(1 / alpha_bar - 1) is ~2e4; upstream multiplies the float16 epsilon by a float32
    coefficient tensor (float32 result), so |eps| > 3.3 must not overflow to inf here either."""
    sched = respaced_schedule(100)
    x = torch.linspace(-4.5, 4.5, 64).reshape(4, 16)
    eps, var_values, noise = x.half(), torch.zeros(4, 16, dtype=torch.float16), torch.randn(4, 16)
    out = p_sample(sched, sched.num_steps - 1, x, eps, var_values, noise, 1.0)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, p_sample(sched, sched.num_steps - 1, x, eps.float(), var_values.float(),
                                             noise, 1.0))


def test_the_class_buffer_enters_the_encoder_in_float32_under_autocast():
    """Upstream writes the float32 class embedding into a float32 buffer (cat promotes the half-precision
    projection), so autocast must not round the class embedding to half precision."""
    model, seen = tiny_mar(2), {}
    model.z_proj_ln.register_forward_hook(lambda module, args, out: seen.setdefault("input", args[0]))
    emb = model.class_emb(torch.tensor([4, 9]))
    tokens, mask = torch.randn(2, TINY.seq_len, TINY.token_dim), torch.ones(2, TINY.seq_len, dtype=torch.bool)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model.encode(tokens, mask, emb)
    buffer = seen["input"][:, :TINY.buffer_size]
    assert buffer.dtype == torch.float32
    torch.testing.assert_close(buffer, emb[:, None] + model.encoder_pos_embed_learned[:, :TINY.buffer_size],
                               atol=1e-6, rtol=0)


def test_pixels_are_mapped_in_the_decoders_precision_as_upstreams_evaluation():
    """engine_mar.evaluate maps the autocast (float16) VAE output with (x + 1) / 2 in torch, then
    np.round(np.clip(x * 255, 0, 255)) in numpy float16; float32 input is mapped in float32."""
    x = torch.linspace(-1.05, 1.05, 3 * 40 * 40).reshape(1, 3, 40, 40)
    for dtype in (torch.float16, torch.float32):
        images = x.to(dtype)
        unit = ((images + 1) / 2).numpy().transpose(0, 2, 3, 1)
        ref = np.round(np.clip(unit * 255, 0, 255)).astype(np.uint8)
        np.testing.assert_array_equal(to_uint8(images), ref)
    assert (to_uint8(x.half()) != to_uint8(x.half().float())).any()  # half precision does change pixels
