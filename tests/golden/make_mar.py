"""Golden outputs of upstream MAR (MAE encoder/decoder, Diffusion Loss sampler, step schedule) and its KL-16 VAE.

Upstream: LTH14/mar@fe470ac24afbee924668d8c5c83e9fec60af3a73 (`models/mar.py`, `models/diffloss.py`,
`models/vae.py`, `diffusion/`). Run against a checkout:

    python tests/golden/make_mar.py /path/to/mar

CPU only: `torch.Tensor.cuda` is patched to return the tensor. Nothing else is stubbed. Sizes: 64 px images
(4x4 tokens of 16 channels), width 64, 2 encoder and 2 decoder blocks, 4 heads, buffer 4, 10 classes, Diffusion
Loss depth 2 width 64 with 10 respaced steps; VAE ch_mult (1, 2). Weights: `golden_weights.seeded_fill`
(MAR seed 60, VAE seed 61), saved by the test in upstream's `checkpoint-last.pth` layout.

Recorded:
- the MAE encoder + decoder output (`forward_mae_encoder`, `forward_mae_decoder`) for given latents, mask and class;
- `DiffLoss.sample` guided (cfg 3.0, temperature 0.95) and unguided (temperature 1.0), with the Gaussian noise it
  drew (`torch.randn` for the start, `torch.randn_like` at each step; recorded by wrapping both), so the test
  feeds the same noise;
- `sample_tokens`' schedule at the released sizes (256 tokens; 256 and 64 iterations; cfg 2.9, linear): the
  number of tokens predicted and the guidance scale at each step, read by replacing `diffloss.sample` on a small
  probe model with a recorder;
- the VAE decoding `AutoencoderKL.decode(latents / 0.2325)` as upstream's `main_mar.py` evaluation calls it.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from golden_weights import layout, save_golden, seeded_fill  # noqa: E402

UPSTREAM = "LTH14/mar@fe470ac24afbee924668d8c5c83e9fec60af3a73"
OUT = Path(__file__).parent / "mar"
SMALL = dict(img_size=64, vae_stride=16, patch_size=1, encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=4,
             decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=4, mlp_ratio=4.0, vae_embed_dim=16,
             class_num=10, buffer_size=4, diffloss_d=2, diffloss_w=64, num_sampling_steps="10")
SCHEDULES = [(256, 2.9), (64, 2.9)]  # (num_iter, cfg) at 256 tokens


def main(checkout: Path) -> None:
    sys.path.insert(0, str(checkout))
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    from models.mar import MAR
    from models.vae import AutoencoderKL

    layer_norm = partial(torch.nn.LayerNorm, eps=1e-6)
    mar = seeded_fill(MAR(norm_layer=layer_norm, **SMALL), 60)
    gen = torch.Generator().manual_seed(7)
    labels = torch.tensor([3, 7])
    tokens = torch.randn(2, 16, 16, generator=gen)
    mask = torch.zeros(2, 16)
    mask[0, torch.randperm(16, generator=gen)[:9]] = 1
    mask[1, torch.randperm(16, generator=gen)[:9]] = 1
    with torch.no_grad():
        z = mar.forward_mae_decoder(mar.forward_mae_encoder(tokens, mask, mar.class_emb(labels)), mask)
    out = {"mar_layout": np.array(layout(mar)), "labels": labels.numpy(), "tokens": tokens.numpy(),
           "mask": mask.numpy(), "z": z.numpy()}

    randn, randn_like = torch.randn, torch.randn_like
    for k, (cfg, temperature) in enumerate([(3.0, 0.95), (1.0, 1.0)]):
        drawn = []
        torch.randn = lambda *a, **kw: drawn.append(randn(*a, **kw)) or drawn[-1]
        torch.randn_like = lambda *a, **kw: drawn.append(randn_like(*a, **kw)) or drawn[-1]
        try:
            torch.manual_seed(k)
            cond = torch.randn(3, 64, generator=gen)
            rows = torch.cat([cond, mar.fake_latent.detach().expand(3, -1)]) if cfg != 1.0 else cond
            drawn.clear()
            with torch.no_grad():
                sampled = mar.diffloss.sample(rows, temperature, cfg)
        finally:
            torch.randn, torch.randn_like = randn, randn_like
        out[f"diff{k}_setting"] = np.array([cfg, temperature])
        out[f"diff{k}_z"] = rows.numpy()
        out[f"diff{k}_noise_start"] = drawn[0].numpy()  # torch.randn: the conditional rows' start
        out[f"diff{k}_noise_steps"] = torch.stack(drawn[1:]).numpy()  # randn_like per step, all (2N if guided) rows
        out[f"diff{k}_sampled"] = sampled.numpy()

    probe = MAR(norm_layer=layer_norm, img_size=256, vae_stride=16, encoder_embed_dim=16, encoder_depth=1,
                encoder_num_heads=1, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=1, class_num=10,
                diffloss_d=1, diffloss_w=16, num_sampling_steps="2").eval()
    calls = []

    def recorder(z, temperature, cfg):
        calls.append((z.shape[0], float(cfg)))
        return torch.zeros(z.shape[0], 16)

    probe.diffloss.sample = recorder
    for k, (num_iter, cfg) in enumerate(SCHEDULES):
        calls.clear()
        np.random.seed(0)
        with torch.no_grad():
            probe.sample_tokens(1, num_iter=num_iter, cfg=cfg, cfg_schedule="linear", labels=torch.tensor([1]))
        out[f"schedule{k}_setting"] = np.array([num_iter, cfg])
        out[f"schedule{k}_predicted"] = np.array([n // 2 for n, _ in calls])  # guided: [cond; uncond] rows
        out[f"schedule{k}_cfg"] = np.array([c for _, c in calls], dtype=np.float64)

    vae = seeded_fill(AutoencoderKL(embed_dim=16, ch_mult=(1, 2)), 61)
    latents = torch.randn(2, 16, 4, 4, generator=gen) * 0.3
    with torch.no_grad():
        images = vae.decode(latents / 0.2325)
    out.update(vae_layout=np.array(layout(vae)), latents=latents.numpy(), vae_images=images.numpy())
    save_golden(OUT, UPSTREAM, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
