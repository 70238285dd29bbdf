"""Golden outputs of upstream VAR (transformer, next-scale sampler, multi-scale VQVAE) on seeded weights.

Upstream: FoundationVision/VAR@78b95394fc5896192e3a003e4b295f8ea743c48f (`models/var.py`, `models/vqvae.py`,
`models/quant.py`, `models/basic_var.py`, `models/helpers.py`, `dist.py`). Run against a checkout:

    python tests/golden/make_var.py /path/to/VAR

Upstream's own `build_vae_var` builds the networks (depth 2, width 128, 3 scales (1, 2, 4), vocabulary 16,
VQVAE ch 32); weights from `golden_weights.seeded_fill` (VAR seed 30, VQVAE seed 31); `cond_drop_rate` is set to 0
(upstream drops labels at random in `forward` even in eval mode). Recorded: teacher-forced logits for given codes
(`forward` on `idxBl_to_var_input`), and for two cfg values the guided logits `autoregressive_infer_cfg` passes
to `sample_with_top_k_top_p_` at each scale, the codes it draws with top_k=1 (deterministic) and its image in
[0, 1]. Nothing is stubbed: huggingface_hub is installed; flash-attn and fused MLP are absent, so upstream takes
its plain PyTorch paths.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from golden_weights import layout, save_golden, seeded_fill  # noqa: E402

UPSTREAM = "FoundationVision/VAR@78b95394fc5896192e3a003e4b295f8ea743c48f"
OUT = Path(__file__).parent / "var"
PATCH_NUMS = (1, 2, 4)
VOCAB, NUM_CLASSES, DEPTH, VAE_CH = 16, 10, 2, 32
LABELS = [3, 7]
CFGS = [1.5, 4.0]


def main(checkout: Path) -> None:
    sys.path.insert(0, str(checkout))
    from models import build_vae_var
    from models import var as upstream_var

    vae, var = build_vae_var(device="cpu", patch_nums=PATCH_NUMS, V=VOCAB, Cvae=32, ch=VAE_CH, share_quant_resi=4,
                             num_classes=NUM_CLASSES, depth=DEPTH, shared_aln=False, attn_l2_norm=True,
                             flash_if_available=False, fused_if_available=False)
    seeded_fill(vae, 31)
    seeded_fill(var, 30)
    var.cond_drop_rate = 0.0
    labels = torch.tensor(LABELS)
    gen = torch.Generator().manual_seed(3)
    codes = [torch.randint(0, VOCAB, (len(LABELS), pn * pn), generator=gen) for pn in PATCH_NUMS]
    with torch.no_grad():
        teacher = var(labels, vae.quantize.idxBl_to_var_input(codes))
        other = var(labels, vae.quantize.idxBl_to_var_input([torch.roll(c, 1, 0) for c in codes]))
    assert (teacher - other)[:, 1:].abs().max() > 0.01 * teacher.abs().max(), "logits ignore the codes"
    out = {"labels": labels.numpy(), "teacher_logits": teacher.numpy(),
           "var_layout": np.array(layout(var)), "vae_layout": np.array(layout(vae)),
           **{f"codes_scale{i}": c.numpy() for i, c in enumerate(codes)}}
    for k, cfg in enumerate(CFGS):
        seen = []
        original = upstream_var.sample_with_top_k_top_p_

        def recording(logits_BlV, **kwargs):
            seen.append(logits_BlV.detach().clone())
            drawn = original(logits_BlV, **kwargs)
            seen_codes.append(drawn[:, :, 0].clone())
            return drawn

        seen_codes = []
        upstream_var.sample_with_top_k_top_p_ = recording
        try:
            with torch.no_grad():
                image = var.autoregressive_infer_cfg(len(LABELS), labels, g_seed=0, cfg=cfg, top_k=1, top_p=0.0)
        finally:
            upstream_var.sample_with_top_k_top_p_ = original
        out[f"sample{k}_cfg"] = np.array(cfg)
        out[f"sample{k}_image01"] = image.numpy()
        for si, (logits, drawn) in enumerate(zip(seen, seen_codes)):
            out[f"sample{k}_scale{si}_logits"] = logits.numpy()
            out[f"sample{k}_scale{si}_codes"] = drawn.numpy()
    save_golden(OUT, UPSTREAM, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
