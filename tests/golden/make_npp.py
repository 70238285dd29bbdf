"""Golden outputs of upstream NPP on seeded random weights (tests/golden/npp/), for tests/test_imagegen_npp.py.

Upstream: PKU-YuanGroup/Next-Patch-Prediction @ e333f2c10fdc92aec25f2fd43cbbeea8f5c8e6ff (2025-01-02).
Usage: python tests/golden/make_npp.py /path/to/Next-Patch-Prediction-checkout

Nothing is stubbed: upstream's `autoregressive/models/gpt.py`, `generate.py`, `utils/patchify.py` and
`tokenizer/tokenizer_image/vq_model.py` run as they are (CPU, float32). A tiny GPT (dim 64, 2 layers, 4 heads,
vocabulary 64, 4x4 tokens, 10 classes) and a tiny VQ (ch 32, ch_mult (1, 1), 1 ResNet block per level, z 32, codebook 64 x 8) get every
float parameter perturbed with seeded noise (1-D: + U(-0.1, 0.1); others: N(0, 1/fan_in)), so no layer is zero, and rounded to float16, the
files' storage type (upstream computes with the rounded values in float32).
Saved in the released layouts: the GPT as NPP's training checkpoint {"model", "ema", "optimizer", "steps",
"args" (argparse.Namespace)} with "ema" different from "model" (upstream's sampler loads "model"), the VQ as
{"model": ...}. Outputs: token-level and 2x2-patch-level teacher-forced logits and NPP loss (training mode, dropouts 0, label dropout 0), a deterministic CFG sample (top-k 1, cfg 2.0) with the logits upstream's
`sample` saw at every step, and the VQ decoder's images and uint8 pixels (sample_c2i.py's mapping). Also the
names and shapes of GPT-B/L/XL/XXL as upstream's sampler builds them (meta device) in released_shapes.json.gz.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent / "npp"
GPT_ARGS = dict(dim=64, n_layer=2, n_head=4, multiple_of=32, vocab_size=64, block_size=16, num_classes=10,
                cls_token_num=1, class_dropout_prob=0.1, token_dropout_p=0.0, attn_dropout_p=0.0,
                resid_dropout_p=0.0, ffn_dropout_p=0.0, drop_path_rate=0.0)


def perturb(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() == 1:
                p.add_((torch.rand(p.shape, generator=gen) * 2 - 1) * 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
            p.copy_(p.half().float())  # stored as float16 (small files); upstream computes with these values


def half(state: dict) -> dict:
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def main(checkout: str) -> None:
    sys.path.insert(0, checkout)
    from autoregressive.models import generate as upstream_generate
    from autoregressive.models.gpt import ModelArgs, Transformer, precompute_freqs_cis_2d
    from tokenizer.tokenizer_image.vq_model import Decoder, Encoder, VQModel
    from tokenizer.tokenizer_image.vq_model import ModelArgs as VQArgs
    from utils.patchify import target_patchify

    torch.manual_seed(0)
    OUT.mkdir(exist_ok=True)
    model = Transformer(ModelArgs(**GPT_ARGS))
    perturb(model, 1)
    model.cls_embedding.dropout_prob = 0.0  # upstream drops labels at random in training mode
    ema = Transformer(ModelArgs(**GPT_ARGS))
    perturb(ema, 2)
    torch.save({"model": half(model.state_dict()), "ema": half(ema.state_dict()), "optimizer": {}, "steps": 0,
                "args": argparse.Namespace(gpt_model="tiny", patch_level=2, epoch_rate=0.5)}, OUT / "gpt.pt")

    vq = VQModel(VQArgs(codebook_size=64, codebook_embed_dim=8, encoder_ch_mult=[1, 1], decoder_ch_mult=[1, 1],
                        z_channels=32))
    vq.encoder = Encoder(ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=32)
    vq.decoder = Decoder(ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=32)
    perturb(vq, 3)
    vq.eval()
    torch.save({"model": half(vq.state_dict())}, OUT / "vq.pt")

    gen = torch.Generator().manual_seed(4)
    labels = torch.tensor([3, 7])
    tokens = torch.randint(0, 64, (2, 16), generator=gen)
    tokens_b = torch.randint(0, 64, (2, 16), generator=gen)
    out = {"labels": labels, "tokens": tokens, "tokens_b": tokens_b}
    with torch.no_grad():
        model.train()  # upstream's teacher-forced path is its training path (all dropouts are 0 here)
        out["logits_p1"], out["loss_p1"] = model(idx=tokens, cond_idx=labels, targets=tokens)
        out["logits_p1_b"], _ = model(idx=tokens_b, cond_idx=labels, targets=tokens_b)
        freqs = precompute_freqs_cis_2d(2, 64 // 4, 10000, 1)
        out["logits_p2"], _ = model(idx=tokens, cond_idx=labels, p=2, patch_size=4, freqs_cis=freqs)
        # upstream's loss for p > 1, written out: its target_patchify unfolds the Long targets, which CPU
        # im2col refuses, so the ids (< 64, exact in float32) go through it as floats and come back as Long
        targets = target_patchify(tokens.float(), p=2, patch_size=4).reshape(-1).long()
        logits = out["logits_p2"].reshape(-1, 64).unsqueeze(1).repeat(1, 4, 1)
        out["loss_p2"] = torch.nn.functional.cross_entropy(logits.view(-1, 64), targets)
        model.eval()
        seen = []
        original = upstream_generate.sample

        def recording(logits, **kwargs):
            seen.append(logits[:, -1, :].clone())
            return original(logits, **kwargs)

        upstream_generate.sample = recording
        out["sample_tokens"] = upstream_generate.generate(model, labels, 16, cfg_scale=2.0, cfg_interval=-1,
                                                          temperature=1.0, top_k=1, top_p=1.0, sample_logits=True)
        upstream_generate.sample = original
        out["sample_logits"] = torch.stack(seen, dim=1)
        images = vq.decode_code(out["sample_tokens"].long(), [2, 8, 4, 4])
        out["sample_images"] = images
        out["sample_uint8"] = torch.clamp(127.5 * images + 128.0, 0, 255).permute(0, 2, 3, 1).to(torch.uint8)
        out["decoded_b"] = vq.decode_code(tokens_b, [2, 8, 4, 4])
    save_file({k: v.contiguous() for k, v in out.items()}, OUT / "outputs.safetensors")
    # names and shapes of the released sizes, as upstream's sample_c2i_ddp.py builds them (meta device)
    from autoregressive.models.gpt import GPT_models
    shapes = {}
    linspace = torch.linspace  # upstream reads drop-path rates with .item(), which meta tensors refuse
    torch.linspace = lambda *a, **k: linspace(*a, **{**k, "device": "cpu"})
    for size in ("GPT-B", "GPT-L", "GPT-XL", "GPT-XXL"):
        with torch.device("meta"):
            gpt = GPT_models[size](vocab_size=16384, block_size=256, num_classes=1000, cls_token_num=1,
                                   model_type="c2i")
        shapes[size] = {k: list(v.shape) for k, v in gpt.state_dict().items()}
    torch.linspace = linspace
    with gzip.GzipFile(OUT / "released_shapes.json.gz", "wb", mtime=0) as f:  # reproducible bytes
        f.write(json.dumps(shapes).encode())
    for k, v in out.items():
        print(k, tuple(v.shape), float(v.float().abs().mean()))
    print("sample tokens", out["sample_tokens"].tolist())
    print("loss p1 %.6f p2 %.6f" % (out["loss_p1"], out["loss_p2"]))
    np.testing.assert_array_less(1e-2, (out["logits_p1"] - out["logits_p1_b"]).abs().mean() /
                                 out["logits_p1"].abs().mean())


if __name__ == "__main__":
    main(sys.argv[1])
