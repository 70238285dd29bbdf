"""Golden outputs of upstream FlowAR on seeded random weights (tests/golden/flowar/), for tests/test_imagegen_flowar.py.

Upstream: OliverRensu/FlowAR @ 21835c01810251b1a466dfb2a697c412927e9c69 (2025-05-01; the code landed in c02e06d,
2024-12-22). The stored snapshot of OliverRensu/FlowAR stops at the README-only commit b41bd49, so the checkout
is taken from the fork wangqiang9/FlowAR, which carries upstream's commits unchanged up to 21835c0 (its own
later commit only adds requirements.txt).
Usage: python tests/golden/make_flowar.py /path/to/FlowAR-checkout

Run on CPU, float32: `torch.Tensor.cuda` is patched to return the tensor (upstream calls `.cuda()` in RoPE and
sampling); nothing else of upstream is changed. Two tiny FlowARs over the real 5 scales (1, 2, 4, 8, 16; 341
tokens): width 32, 1 encoder + 1 decoder block, 2 heads, a 64-wide flow head of 1 block, one with `Block_v1`
(as FlowAR-S) and one with `Block_v2` cross-attention (as FlowAR-L/H); a tiny KL VAE decoder (MAR's
`AutoencoderKL` code with ch 32, ch_mult (1, 1), 1 ResNet block). Every float parameter is perturbed with seeded
noise (1-D: + U(-0.1, 0.1); embeddings and position tables N(0, 0.5^2); others N(0, 1/fan_in)) and rounded to
float16, which is how the files are stored (flat state dicts as upstream's eval.py loads them, buffers `mask` and
`*.rope.freqs` included; the freqs stay float32); upstream computes with the rounded values in float32.

Outputs per model: the teacher-forced condition z of all 341 tokens (upstream's training-mode encoder/decoder
with its block-causal mask; the scale inputs are built by the same interpolation lines as upstream's `forward`,
written out here because `forward` returns only the loss); the flow head's velocity on fixed inputs; a full
sample (`sample_tokens`, 6 Euler steps (t = 1, .65, .3, .25, .1667, .0833: 166.7 truncates to 166), cfg 3.0, guidance 0.9) with every scale's condition and sample (v2 only; the AR stacks are the same code in both), upstream's
`torch.randn` replaced by the per-request streams ARBench draws (each sample's generator seeded by its request
seed, (s*s, 16) per scale; zeros for the unconditional half, which upstream's sampler never lets reach the
conditional half); the VAE's images and uint8 pixels (engine.py's mapping) for that sample. Also the parameter names and shapes of
flowar_small/large/huge as upstream builds them (meta device) in released_shapes.json.gz.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent / "flowar"
SEEDS = [0, 1]


def perturb(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 1:
                p.add_((torch.rand(p.shape, generator=gen) * 2 - 1) * 0.1)
            elif "pos_embed" in name or "class_emb" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
            p.copy_(p.half().float())


def stored(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: (v if k.endswith("rope.freqs") else v.half()).contiguous() for k, v in module.state_dict().items()}


def request_noise(shape):
    """What upstream's `torch.randn([2B or B, N, 16])` returns here: ARBench's per-request draws."""
    rows = torch.stack([torch.randn(shape[1], shape[2], generator=g) for g in GENERATORS])
    return torch.cat([rows, torch.zeros_like(rows)]) if shape[0] == 2 * len(GENERATORS) else rows


GENERATORS: list[torch.Generator] = []


def main(checkout: str) -> None:
    sys.path.insert(0, checkout)
    torch.Tensor.cuda = lambda self, *a, **k: self  # CPU run
    import models.sampler as upstream_sampler
    from models import flowar
    from models.vae import AutoencoderKL, Decoder, Encoder

    OUT.mkdir(exist_ok=True)
    torch.manual_seed(0)  # default initialisations (conv biases) under the 1-D perturbation
    gen = torch.Generator().manual_seed(10)
    labels = torch.tensor([3, 7])
    latents = torch.randn(2, 16, 16, 16, generator=gen)
    out = {"labels": labels, "latents": latents, "latents_b": torch.randn(2, 16, 16, 16, generator=gen)}

    vae = AutoencoderKL(embed_dim=16, ch_mult=(1, 1))
    vae.encoder = Encoder(ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=16)
    vae.decoder = Decoder(ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=16)
    perturb(vae, 5)
    vae.eval()
    torch.save({"model": stored(vae)}, OUT / "vae.ckpt")

    for tag, cross, seed in (("v1", False, 1), ("v2", True, 2)):
        model = flowar.FlowAR(encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=2, decoder_embed_dim=32,
                              decoder_depth=1, decoder_num_heads=2, mlp_ratio=4, class_num=10, attn_dropout=0.0,
                              proj_dropout=0.0, diffloss_d=1, diffloss_w=64, cross=cross)
        perturb(model, seed)
        torch.save(stored(model), OUT / f"flowar_{tag}.pth")
        with torch.no_grad():
            # teacher forcing, as upstream's forward builds its inputs (no label dropout, no loss)
            model.train()
            scale = model.scale
            gts = [latents] + [F.interpolate(latents, (i, i), mode="area") for i in scale[::-1][1:]]
            gts = gts[::-1]
            x_input = [F.interpolate(F.interpolate(gts[i], (16, 16), mode="bicubic"), (s, s), mode="area")
                       for i, s in enumerate(scale[1:])]
            x_input = torch.cat([model.patchify(i) for i in x_input], dim=1)
            cls = model.class_emb(labels)
            x = torch.cat([cls.unsqueeze(1), model.z_proj(x_input)], dim=1)
            z = model.forward_mae_decoder(model.forward_mae_encoder(x, cls, model.mask), cls, model.mask)
            if cross:
                out[f"{tag}_teacher_z"] = z
            model.eval()
            # the flow head alone: scale-4 tokens (16), two times, the teacher-forced condition
            xt = torch.randn(2, 16, 16, generator=gen)
            t = torch.tensor([0.93, 0.3337])  # 333.7 -> 333: upstream truncates
            out[f"{tag}_head_x"], out[f"{tag}_head_t"] = xt, t
            out[f"{tag}_head_v"] = model.flownet(xt, t, z[:, 5:21])
            # a full sample with ARBench's per-request noise
            GENERATORS[:] = [torch.Generator().manual_seed(s) for s in SEEDS]
            seen = []
            original_sampler, original_randn = upstream_sampler.euler_sampler, torch.randn

            def recording(model_, latents_, condition, **kwargs):
                result = original_sampler(model_, latents_, condition, **kwargs)
                seen.append((condition[:2].clone(), result[:2].float().clone()))
                return result

            flowar.sampler.euler_sampler = recording
            torch.randn = lambda shape, *a, **k: request_noise(shape) if isinstance(shape, list) else \
                original_randn(shape, *a, **k)
            try:
                tokens = model.sample_tokens(num_steps=6, guidance=0.9, cfg=3.0, labels=labels)
            finally:
                torch.randn = original_randn
                flowar.sampler.euler_sampler = original_sampler
            out[f"{tag}_sample"] = tokens
            if cross:  # the AR stacks are the same code in both models: record their steps once
                for k, (cond, res) in enumerate(seen[:-1]):
                    out[f"{tag}_z{k}"], out[f"{tag}_s{k}"] = cond, res
                out[f"{tag}_z{len(seen) - 1}"] = seen[-1][0]
            images = vae.decode(tokens / 0.2325)
            out[f"{tag}_images"] = images
            unit = ((images + 1) / 2).numpy().transpose(0, 2, 3, 1)
            out[f"{tag}_uint8"] = torch.from_numpy(np.round(np.clip(unit * 255, 0, 255)).astype(np.uint8))
        print(tag, "sample mean |x|", float(tokens.abs().mean()), "scales", len(seen))
    with torch.no_grad():
        out["vae_decoded_b"] = vae.decode(out["latents_b"] / 0.2325)
    save_file({k: v.contiguous() for k, v in out.items()}, OUT / "outputs.safetensors")
    # names and shapes of every released size, from upstream's model functions with the README's head flags
    shapes = {}
    for arch, depth, width in (("flowar_small", 2, 1024), ("flowar_large", 12, 1024), ("flowar_huge", 12, 1536)):
        with torch.device("meta"):
            model = flowar.__dict__[arch](diffloss_d=depth, diffloss_w=width)
        shapes[arch] = {k: list(v.shape) for k, v in model.state_dict().items()}
    with gzip.GzipFile(OUT / "released_shapes.json.gz", "wb", mtime=0) as f:  # reproducible bytes
        f.write(json.dumps(shapes).encode())
    for k, v in out.items():
        print(k, tuple(v.shape), float(v.float().abs().mean()))


if __name__ == "__main__":
    main(sys.argv[1])
