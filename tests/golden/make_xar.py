"""Golden outputs of upstream xAR on seeded random weights (tests/golden/xar/), for tests/test_imagegen_xar.py.

Upstream: OliverRensu/xAR @ 121e9c93df32295ebe79a52b4402a86a63f321f9 (2025-03-02).
Usage: python tests/golden/make_xar.py /path/to/xAR-checkout   (after make_flowar.py: it reuses tests/golden/flowar/vae.ckpt)

Run on CPU, float32. Stubbed: the `flash_attn` module (imported by models/xar.py, never called); `torch.Tensor.cuda`
returns the tensor. A tiny xAR with the real token layout (16x16 latents, 4 cells of 8x8, which upstream hard-codes):
width 32, 1 encoder + 1 decoder block, 2 heads. Every float parameter is perturbed with seeded noise (1-D:
+ U(-0.1, 0.1); embeddings and position tables N(0, 0.5^2); others N(0, 1/fan_in)) and rounded to float16, the
storage type of the flat state dict (eval.py's layout, buffers `mask` and `*.rope.freqs*` included; the RoPE buffers
stay float32); upstream computes with the rounded values in float32.

Outputs: upstream's `clusterify`/`unclusterify` of a latent; the teacher-forced velocity of all 4 noisy cells at
per-cell times (upstream's training-mode encoder/decoder with its block-causal mask and its condition
`class_emb.repeat(4) + time_embed(long(t * 1000))`, as its `forward` builds it without label dropout and loss); a
full sample (`sample_tokens`, 4 SDE steps, cfg 3.0) with each cell's result, upstream's `torch.randn` (each cell's
start) and `torch.randn_like` (each step's noise) replaced by the per-request streams ARBench draws (each sample's
generator seeded by its request seed: (64, 16) float32 per cell start, (64, 16) float64 per step); the VAE's
images and uint8 pixels (engine_xar.py's mapping) for that sample.
"""

from __future__ import annotations

import gzip
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch
from make_flowar import perturb  # the same seeded perturbation and float16 rounding (tests/golden/make_flowar.py)
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
OUT = HERE / "xar"
SEEDS = [0, 1]
GENERATORS: list[torch.Generator] = []


def main(checkout: str) -> None:
    sys.path.insert(0, checkout)
    sys.modules["flash_attn"] = types.SimpleNamespace(flash_attn_func=None)  # imported, never called
    torch.Tensor.cuda = lambda self, *a, **k: self
    import models.sampler as upstream_sampler
    from models import xar
    from models.vae import AutoencoderKL, Decoder, Encoder

    OUT.mkdir(exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(20)
    labels = torch.tensor([3, 7])
    out = {"labels": labels}

    model = xar.xAR(encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=2, decoder_embed_dim=32,
                    decoder_depth=1, decoder_num_heads=2, mlp_ratio=4, class_num=10, attn_dropout=0.0,
                    proj_dropout=0.0)
    perturb(model, 3)
    torch.save({k: (v if ".rope.freqs" in k else v.half()).contiguous() for k, v in model.state_dict().items()},
               OUT / "xar_tiny.pth")

    vae = AutoencoderKL(embed_dim=16, ch_mult=(1, 1))
    vae.encoder = Encoder(ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=16)
    vae.decoder = Decoder(ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=16)
    vae.load_state_dict({k: v.float() for k, v in torch.load(HERE / "flowar" / "vae.ckpt")["model"].items()})
    vae.eval()

    with torch.no_grad():
        latents = torch.randn(2, 16, 16, 16, generator=gen)
        out["latents"] = latents
        cells = torch.stack(model.clusterify(latents), dim=1).reshape(2, -1, 16)
        out["cells"] = cells
        out["uncells"] = model.unclusterify(cells)
        # teacher forcing: noisy cells at per-cell times, as upstream's forward conditions them
        model.train()
        times = torch.tensor([[0.9, 0.6, 0.3337, 0.05], [0.75, 0.5, 0.25, 0.125]])
        noisy = torch.randn(2, 256, 16, generator=gen)
        out["times"], out["noisy"] = times, noisy
        time_input = times.t().reshape(-1)  # cluster-major rows, as upstream's chunked logit-normal draw
        condition = model.class_emb(labels).repeat(4, 1) + model.time_embed((time_input * 1000).long())
        x = model.forward_mae_encoder(model.z_proj(noisy), condition, model.mask)
        out["teacher_v"] = model.forward_mae_decoder(x, condition, model.mask)
        noisy_b = torch.randn(2, 256, 16, generator=gen)
        x = model.forward_mae_encoder(model.z_proj(noisy_b), condition, model.mask)
        out["noisy_b"], out["teacher_v_b"] = noisy_b, model.forward_mae_decoder(x, condition, model.mask)
        # a full sample with ARBench's per-request noise
        model.eval()
        GENERATORS[:] = [torch.Generator().manual_seed(s) for s in SEEDS]
        original_randn, original_randn_like = torch.randn, torch.randn_like
        original_sde = upstream_sampler.euler_maruyama_sampler
        seen = []

        def randn(shape, *a, **k):
            if isinstance(shape, list):
                return torch.stack([original_randn(shape[1], shape[2], generator=g) for g in GENERATORS])
            return original_randn(shape, *a, **k)

        def randn_like(x, *a, **k):
            return torch.stack([original_randn(x.shape[1], x.shape[2], generator=g, dtype=torch.float64)
                                for g in GENERATORS])

        def recording(*a, **k):
            result = original_sde(*a, **k)
            seen.append(result.float().clone())
            return result

        torch.randn, torch.randn_like, xar.sampler.euler_maruyama_sampler = randn, randn_like, recording
        try:
            tokens = model.sample_tokens(num_steps=4, cfg=3.0, label=labels)
        finally:
            torch.randn, torch.randn_like = original_randn, original_randn_like
            xar.sampler.euler_maruyama_sampler = original_sde
        out["sample"] = tokens
        for k, cell in enumerate(seen):
            out[f"cell{k}"] = cell
        images = vae.decode(tokens / 0.2325)
        out["images"] = images
        unit = ((images + 1) / 2).numpy().transpose(0, 2, 3, 1)
        out["uint8"] = torch.from_numpy(np.round(np.clip(unit * 255, 0, 255)).astype(np.uint8))
        # names and shapes of every released size (meta device)
        shapes = {}
        for arch in ("xar_base", "xar_large", "xar_huge"):
            with torch.device("meta"):
                shapes[arch] = {k: list(v.shape) for k, v in xar.__dict__[arch]().state_dict().items()}
    save_file({k: v.contiguous() for k, v in out.items()}, OUT / "outputs.safetensors")
    with gzip.GzipFile(OUT / "released_shapes.json.gz", "wb", mtime=0) as f:  # reproducible bytes
        f.write(json.dumps(shapes).encode())
    for k, v in out.items():
        print(k, tuple(v.shape), float(v.float().abs().mean()))
    print({k: sum(np.prod(s) for s in v.values()) / 1e6 for k, v in shapes.items()})


if __name__ == "__main__":
    main(sys.argv[1])
