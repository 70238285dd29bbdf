"""Golden outputs of upstream ImageFolder (VAR generator with a product-quantised tokenizer) on seeded weights,
for tests/test_imagegen_imagefolder.py.

Upstream: adobe-research/ImageFolder@47d36b21b75eb076050facb8bde8fa728ba53175 (2024-12-08; Adobe Research
License, non-commercial: the code is run from a checkout, never copied). Files used: `models/var.py`,
`models/basic_var.py`, `models/helpers.py`, `dist.py`, `tokenizer/tokenizer_image/quant.py`,
`tokenizer/tokenizer_image/msvq_model.py` (`VQModel`, `ModelArgs`), `tokenizer/tokenizer_image/dino_enc/dinov2.py`
(`DINOv2Decoder`), `dino_enc/vision_transformer.py` (its own timm ViT, registered over timm's), `dino_enc/to_pixel.py`.
Run with upstream's pinned timm 1.0.9 (environment.yml) first on the path:

    pip install --no-deps --target /tmp/if-site timm==1.0.9
    PYTHONPATH=/tmp/if-site python tests/golden/make_imagefolder.py /path/to/ImageFolder

Stubbed (import-only for the compared code): `peft` (used only by the LoRA tuning modes, the release uses 'full'),
`tokenizer.vqgan.cliploss` (absent from the repository; aliased to `tokenizer/tokenizer_image/cliploss.py`, a
training loss without parameters), `datasets.Denormalize` / `datasets.Normalize` (absent; training-only image
normalisation). `tokenizer/tokenizer_image` is put on sys.path for msvq_model's `from quant import ...`.

Upstream's inference path does not run as released: `models/var.py` calls `vae_local.Cvae`, `.vocab_size`,
`.get_next_autoregressive_input` and `.fhat_to_img` (and the trainer `img_to_idxBl`, `idxBl_to_var_input`), none of
which `VQModel` defines at this commit, and `build_vae_var` passes `test_model=` that `ModelArgs` rejects. The glue
is reconstructed here (`PQTokenizer` below) from what upstream does define: each branch is one upstream
`VectorQuantizer2` whose own `get_next_autoregressive_input` / `idxBl_to_var_input` run on its channel slice
(var.py splits the 2 x 32 channels in branch order and chunks the logits the same way), and `fhat_to_img` is
`VQModel.img_to_reconstructed_img`'s tail (`post_quant_conv` on the concatenated branches, `DINOv2Decoder`,
`clamp_(-1, 1)`), calling upstream's `VQModel.decode`. `Cvae` = 2 x 32 and `vocab_size` = 2 x 4096, as var.py's
`reshape(B, Cvae // N_pq, pn, pn)` and the trainer's `chunk(N_pq)` of V-wide logits require.

Tiny networks on the real code paths: VAR depth 2 (width 128, 2 heads), 10 classes, the released scales
(1, 1, 2, 3, 3, 4, 5, 6, 8, 11; 265 tokens), two branches of vocabulary 16 and 8 channels; the ViT decoder is
upstream's DINOv2Decoder over `vit_small_patch14_dinov2` with depth 2, width 64, 2 heads, patch 12 and image
144 (upstream's level index assumes img_size = patch_size^2, true of the released 256 = 16^2), so the 11 x 11
latent position table is resampled down from 12 x 12 (antialiased bicubic, as the released 16 x 16 -> 11 x 11).
Weights: `golden_weights.seeded_fill` (VAR seed 40, tokenizer seed 41); `cond_drop_rate` = 0.

Recorded: teacher-forced logits of `VAR.forward` on `idxBl_to_var_input(codes)`; for cfg 3.25 (the README's)
with top_k 1 (deterministic) the logits each branch's `sample_with_top_k_top_p_` receives at every scale, the codes
it draws, the image in [0, 1] (float32, the top 48 rows of image 0) and upstream's inference.py uint8 (`clamp(255 x, 0, 255).to(uint8)`);
the ViT decoder's output for a fixed latent (float16, and
float32 for the top 48 rows of image 0); and the parameter names and shapes of the released `vae_local` and
`var_wo_ddp` (README flags: DINOv2 ViT-B encoder and decoder, codebook 4096 x 32, 2 branches, 121 latent tokens,
abs_pos_embed, VAR depth 16; the tokenizer on the meta device, VAR uninitialised on the CPU) (timm's `create_model` with pretrained=False there: no
download; `torch.linspace` kept on the CPU, its values are read with .item()), in released_layout.json.gz.
"""

from __future__ import annotations

import gzip
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).parent))
from golden_weights import layout, save_golden, seeded_fill  # noqa: E402

UPSTREAM = "adobe-research/ImageFolder@47d36b21b75eb076050facb8bde8fa728ba53175"
OUT = Path(__file__).parent / "imagefolder"
PATCH_NUMS = (1, 1, 2, 3, 3, 4, 5, 6, 8, 11)
VOCAB, CDIM, PQ, NUM_CLASSES, DEPTH = 16, 8, 2, 10, 2
VIT = dict(img_size=144, patch_size=12, drop_path_rate=0.0, embed_dim=64, depth=2, num_heads=2)
LABELS = [3, 7]
CFG = 3.25
CROP = 48  # float32 rows kept of image 0 (4 patch rows; the full images are kept as float16 and uint8)


def stub_imports(checkout: Path) -> None:
    sys.path.insert(0, str(checkout))
    sys.path.insert(0, str(checkout / "tokenizer" / "tokenizer_image"))
    sys.modules["peft"] = types.ModuleType("peft")
    import tokenizer.tokenizer_image.cliploss as cliploss
    vqgan = types.ModuleType("tokenizer.vqgan")
    sys.modules["tokenizer.vqgan"], sys.modules["tokenizer.vqgan.cliploss"] = vqgan, cliploss
    datasets = types.ModuleType("datasets")

    class Normalize:  # training-only image normalisation
        def __init__(self, mean, std):
            self.mean, self.std = mean, std

    datasets.Normalize = datasets.Denormalize = Normalize
    sys.modules["datasets"] = datasets


def main(checkout: Path) -> None:
    stub_imports(checkout)
    import torch.distributed as tdist
    from tokenizer.tokenizer_image import msvq_model
    from tokenizer.tokenizer_image.dino_enc import dinov2
    from quant import VectorQuantizer2
    from models import var as upstream_var

    class PQTokenizer(nn.Module):
        """The decoding half of upstream's VQModel with the reconstructed VAR glue (see the docstring)."""

        decode = msvq_model.VQModel.decode  # upstream's own

        def __init__(self, vocab, cdim, vit_kwargs, latent_tokens):
            super().__init__()
            self.product_quant, self.dec_type = PQ, "dinov2"
            self.Cvae, self.vocab_size = cdim * PQ, vocab * PQ
            self.quantizes = nn.ModuleList([VectorQuantizer2(vocab, cdim, v_patch_nums=PATCH_NUMS,
                                                             num_latent_tokens=latent_tokens, share_quant_resi=4)
                                            for _ in range(PQ)])
            self.decoder = dinov2.DINOv2Decoder(
                in_channels=3, num_latent_tokens=latent_tokens, model_name="vit_small_patch14_dinov2.lvd142m",
                model_kwargs=dict(vit_kwargs), pretrained=False, tuning_method="full", to_pixel="linear",
                use_rope=False, cond_latent=False, abs_pos_embed=True)
            self.post_quant_conv = nn.Conv2d(cdim * PQ, self.decoder.embed_dim, 1)

        def get_next_autoregressive_input(self, si, SN, f_hat, h_BChw):
            outs = [q.get_next_autoregressive_input(si, SN, f, h) for q, f, h in
                    zip(self.quantizes, f_hat.chunk(PQ, dim=1), h_BChw.chunk(PQ, dim=1))]
            return torch.cat([o[0] for o in outs], dim=1), torch.cat([o[1] for o in outs], dim=1)

        def idxBl_to_var_input(self, codes_per_branch):
            return torch.cat([q.idxBl_to_var_input(c) for q, c in zip(self.quantizes, codes_per_branch)], dim=-1)

        def fhat_to_img(self, f_hat):
            return self.decode(f_hat).clamp_(-1, 1)

    torch.manual_seed(0)
    tok = seeded_fill(PQTokenizer(VOCAB, CDIM, VIT, PATCH_NUMS[-1] ** 2), 41)
    var = upstream_var.VAR(vae_local=tok, num_classes=NUM_CLASSES, depth=DEPTH, embed_dim=64 * DEPTH,
                           num_heads=DEPTH, norm_eps=1e-6, shared_aln=False, cond_drop_rate=0.0, attn_l2_norm=True,
                           patch_nums=PATCH_NUMS, flash_if_available=False, fused_if_available=False, p_drop=0.0)
    seeded_fill(var, 40)
    labels = torch.tensor(LABELS)
    gen = torch.Generator().manual_seed(3)
    codes = [[torch.randint(0, VOCAB, (len(LABELS), pn * pn), generator=gen) for pn in PATCH_NUMS]
             for _ in range(PQ)]
    with torch.no_grad():
        teacher = var(labels, tok.idxBl_to_var_input(codes))
        other = var(labels, tok.idxBl_to_var_input([[torch.roll(c, 1, 0) for c in b] for b in codes]))
        latent = torch.randn(len(LABELS), CDIM * PQ, PATCH_NUMS[-1], PATCH_NUMS[-1], generator=gen)
        decoded = tok.fhat_to_img(latent.clone())
    assert (teacher - other)[:, 1:].abs().max() > 0.01 * teacher.abs().max(), "logits ignore the codes"
    out = {"labels": labels.numpy(), "teacher_logits": teacher.numpy(),
           "latent": latent.numpy(), "decoded": decoded.numpy().astype(np.float16),
           "decoded_crop": decoded[0, :, :CROP].numpy(),
           "var_layout": np.array(layout(var)), "tok_layout": np.array(layout(tok)),
           **{f"codes_b{b}_s{s}": c.numpy().astype(np.int16) for b, cs in enumerate(codes) for s, c in enumerate(cs)}}
    seen, drawn_codes = [], []
    original = upstream_var.sample_with_top_k_top_p_

    def recording(logits_BlV, **kwargs):
        seen.append(logits_BlV.detach().clone())
        drawn = original(logits_BlV, **kwargs)
        drawn_codes.append(drawn[:, :, 0].clone())
        return drawn

    upstream_var.sample_with_top_k_top_p_ = recording
    try:
        with torch.no_grad():
            image = var.autoregressive_infer_cfg(len(LABELS), labels, g_seed=0, cfg=CFG, top_k=1, top_p=0.0)
    finally:
        upstream_var.sample_with_top_k_top_p_ = original
    assert len(seen) == PQ * len(PATCH_NUMS)
    out["sample_cfg"] = np.array(CFG)
    out["sample_image01_crop"] = image[0, :, :CROP].numpy()
    out["sample_uint8"] = torch.clamp(255 * image, 0, 255).permute(0, 2, 3, 1).to(torch.uint8).numpy()
    for k, (logits, drawn) in enumerate(zip(seen, drawn_codes)):
        si, b = divmod(k, PQ)
        out[f"sample_s{si}_b{b}_logits"] = logits.numpy()
        out[f"sample_s{si}_b{b}_codes"] = drawn.numpy().astype(np.int16)
    save_golden(OUT, UPSTREAM, out)
    released_layout(msvq_model, dinov2, tdist, upstream_var)


def released_layout(msvq_model, dinov2, tdist, upstream_var) -> None:
    """Names and shapes of the released `trainer.vae_local` / `trainer.var_wo_ddp` (README flags), meta device."""
    from timm.models import create_model

    def no_download(name, pretrained=False, **kwargs):
        return create_model(name, pretrained=False, **kwargs)

    msvq_model.create_model = dinov2.create_model = no_download
    tdist.get_rank, tdist.get_world_size = (lambda *a: 0), (lambda *a: 1)
    config = msvq_model.ModelArgs(
        codebook_size=4096, codebook_embed_dim=32, commit_loss_beta=0.25, entropy_loss_ratio=0.0, dropout_p=0.0,
        v_patch_nums=list(PATCH_NUMS), enc_type="dinov2", encoder_model="vit_base_patch14_dinov2.lvd142m",
        dec_type="dinov2", decoder_model="vit_base_patch14_dinov2.lvd142m", semantic_guide="dinov2",
        num_latent_tokens=121, abs_pos_embed=True, share_quant_resi=4, product_quant=2, half_sem=True)
    config.detail_loss_scale = 1.0  # read by __init__ but not a ModelArgs field at this commit
    linspace = torch.linspace  # stochastic-depth rates are read with .item(): keep them off the meta device
    torch.linspace = lambda *a, **k: linspace(*a, **{**k, "device": "cpu"})
    with torch.device("meta"):
        vae = msvq_model.VQModel(config)
        vae.Cvae, vae.vocab_size = 32 * 2, 4096 * 2
    torch.linspace = linspace
    # VAR reads a tensor's value (.item()) while building: build it on the CPU without initialising the big
    # matrices (upstream's build_vae_var switches reset_parameters off the same way)
    for cls in (nn.Linear, nn.LayerNorm):
        cls.reset_parameters = lambda self: None
    var = upstream_var.VAR(vae_local=vae, num_classes=1000, depth=16, embed_dim=1024, num_heads=16,
                           drop_path_rate=0.1 * 16 / 24, norm_eps=1e-6, shared_aln=False, attn_l2_norm=True,
                           patch_nums=PATCH_NUMS, flash_if_available=False, fused_if_available=False, p_drop=0.0)
    shapes = {"vae_local": {k: list(v.shape) for k, v in vae.state_dict().items()},
              "var_wo_ddp": {k: list(v.shape) for k, v in var.state_dict().items()}}
    with gzip.GzipFile(OUT / "released_layout.json.gz", "wb", mtime=0) as f:  # reproducible bytes
        f.write(json.dumps(shapes, sort_keys=True).encode())
    print("released: vae_local", len(shapes["vae_local"]), "entries,", sum(np.prod(s) for s in shapes["vae_local"].values()),
          "values; var_wo_ddp", len(shapes["var_wo_ddp"]), "entries,",
          sum(np.prod(s) for k, s in shapes["var_wo_ddp"].items() if k not in ("lvl_1L", "attn_bias_for_masking")),
          "values (parameters and the zero_k_bias buffers)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
