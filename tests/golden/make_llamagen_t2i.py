"""Golden outputs of upstream LlamaGen's text-to-image GPT on seeded random weights (tests/golden/llamagen_t2i/),
for tests/test_imagegen_llamagen_t2i.py.

Upstream: FoundationVision/LlamaGen @ ce98ec41803a74a90ce68c40ababa9eaeffeb4ec (2024-06-30).
Usage: python tests/golden/make_llamagen_t2i.py /path/to/LlamaGen-checkout

Nothing is stubbed: upstream's `autoregressive/models/gpt.py` (model_type "t2i") and `generate.py` run as they are
(CPU, float32). Caption states are random tensors fed to both sides in place of FLAN-T5-XL outputs (the encoder is
transformers' `T5EncoderModel`, delegated, not re-implemented); the left-padding layout is the few lines inlined in
upstream's `autoregressive/sample/sample_t2i.py` main(), written out below as they are there.

A tiny t2i GPT (dim 64, 2 layers, 4 heads, multiple_of 32, vocabulary 64, 4x4 tokens, caption_dim 32,
cls_token_num 120) gets every float parameter perturbed with seeded noise (1-D: + U(-0.1, 0.1); others:
N(0, 1/fan_in)) and its `uncond_embedding` buffer redrawn from a seeded generator, all rounded to float16 (the
file's storage type; upstream computes with the rounded values in float32). Saved in the released layout:
{"model": state_dict} (as `t2i_XL_stage1_256.pt`, with the `cls_embedding.uncond_embedding` buffer).
Outputs: the caption layout, teacher-forced logits (eval mode, upstream's mask: causal, padded caption columns
hidden, diagonal open) for two token sequences, and a deterministic guided sample (cfg 7.5, top-k 1) with the
logits upstream's `sample` saw at every step; also GPT-XL's t2i names and shapes at 256 and 512 px (meta device)
in released_shapes.json.gz; and upstream's caption cleaning (`language/t5.py` T5Embedder.text_preprocessing: clean_caption
twice; needs ftfy and beautifulsoup4, e.g. `pip install --target DIR beautifulsoup4` and DIR in PYTHONPATH) of
GenEval's 553 prompts and a few others in cleaned_prompts.json.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_npp import perturb as perturb_parameters  # noqa: E402 - the same seeded rule as the other goldens

OUT = Path(__file__).resolve().parent / "llamagen_t2i"
CAPTION_DIM = 32
GPT_ARGS = dict(dim=64, n_layer=2, n_head=4, multiple_of=32, vocab_size=64, block_size=16, cls_token_num=120,
                caption_dim=CAPTION_DIM, model_type="t2i", class_dropout_prob=0.1, token_dropout_p=0.0,
                attn_dropout_p=0.0, resid_dropout_p=0.0, ffn_dropout_p=0.0, drop_path_rate=0.0)


def perturb(module: torch.nn.Module, seed: int) -> None:
    """make_npp.py's rule for the parameters, then the `uncond_embedding` buffer redrawn, rounded to float16."""
    perturb_parameters(module, seed)
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        uncond = module.cls_embedding.uncond_embedding
        uncond.copy_((torch.randn(uncond.shape, generator=gen) / uncond.shape[1] ** 0.5).half().float())


def upstream_layout(caption_embs: torch.Tensor, emb_masks: torch.Tensor):
    """sample_t2i.py main(), the `not args.no_left_padding` branch, then `c_indices = ... * mask`."""
    new_emb_masks = torch.flip(emb_masks, dims=[-1])
    new_caption_embs = []
    for idx, (caption_emb, emb_mask) in enumerate(zip(caption_embs, emb_masks)):
        valid_num = int(emb_mask.sum().item())
        new_caption_emb = torch.cat([caption_emb[valid_num:], caption_emb[:valid_num]])
        new_caption_embs.append(new_caption_emb)
    new_caption_embs = torch.stack(new_caption_embs)
    return new_caption_embs * new_emb_masks[:, :, None], new_emb_masks


def main(checkout: str) -> None:
    sys.path.insert(0, checkout)
    from autoregressive.models import generate as upstream_generate
    from autoregressive.models.gpt import GPT_models, ModelArgs, Transformer

    torch.manual_seed(0)
    OUT.mkdir(exist_ok=True)
    model = Transformer(ModelArgs(**GPT_ARGS))
    perturb(model, 1)
    model.eval()
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"model": state}, OUT / "t2i_tiny.pt")

    gen = torch.Generator().manual_seed(4)
    states = torch.randn(3, 120, CAPTION_DIM, generator=gen)  # T5 states, right-padded to 120 tokens
    lengths = [7, 13, 120]
    masks = torch.zeros(3, 120, dtype=torch.long)
    for i, n in enumerate(lengths):
        masks[i, :n] = 1
    caption, emb_mask = upstream_layout(states, masks)
    tokens = torch.randint(0, 64, (3, 16), generator=gen)
    tokens_b = torch.randint(0, 64, (3, 16), generator=gen)
    out = {"states": states, "masks": masks, "caption": caption, "emb_mask": emb_mask, "tokens": tokens,
           "tokens_b": tokens_b}
    with torch.no_grad():
        s = 120 + 16 - 1
        mask = torch.tril(torch.ones(s, s, dtype=torch.bool)).unsqueeze(0).repeat(3, 1, 1)
        mask[:, :, :120] = mask[:, :, :120] * emb_mask.unsqueeze(1)  # as upstream's generate builds it
        eye = torch.eye(s, s)
        mask[:] = mask * (1 - eye) + eye
        pos = torch.arange(s)
        for name, toks in (("logits", tokens), ("logits_b", tokens_b)):
            logits, _ = model(idx=toks[:, :-1], cond_idx=caption, input_pos=pos, mask=mask[:, None])
            out[name] = logits[:, 119:]
        # a caption the model must read: same tokens, other caption -> other logits
        logits_c, _ = model(idx=tokens[:, :-1], cond_idx=caption.flip(0), input_pos=pos,
                            mask=mask.flip(0)[:, None])
        out["logits_other_caption"] = logits_c[:, 119:]

        seen = []
        original = upstream_generate.sample

        def recording(logits, **kwargs):
            seen.append(logits[:, -1, :].clone())
            return original(logits, **kwargs)

        upstream_generate.sample = recording
        out["sample_tokens"] = upstream_generate.generate(model, caption, 16, emb_mask, cfg_scale=7.5,
                                                          temperature=1.0, top_k=1, top_p=1.0, sample_logits=True)
        upstream_generate.sample = original
        out["sample_logits"] = torch.stack(seen, dim=1)
    save_file({k: v.contiguous() for k, v in out.items()}, OUT / "outputs.safetensors")

    # GPT-XL as sample_t2i.py builds it (cls_token_num 120, model_type t2i), 16x16 and 32x32 tokens
    shapes = {}
    linspace = torch.linspace  # upstream reads drop-path rates with .item(), which meta tensors refuse
    torch.linspace = lambda *a, **k: linspace(*a, **{**k, "device": "cpu"})
    for size, block in (("GPT-XL-256", 256), ("GPT-XL-512", 1024)):
        with torch.device("meta"):
            gpt = GPT_models["GPT-XL"](block_size=block, cls_token_num=120, model_type="t2i")
        shapes[size] = {k: list(v.shape) for k, v in gpt.state_dict().items()}
    torch.linspace = linspace
    with gzip.GzipFile(OUT / "released_shapes.json.gz", "wb", mtime=0) as f:
        f.write(json.dumps(shapes).encode())
    # upstream's text cleaning (the instance is only needed for its class attributes: no model is loaded)
    from language.t5 import T5Embedder
    embedder = T5Embedder.__new__(T5Embedder)
    embedder.use_text_preprocessing = True
    metadata = Path(__file__).resolve().parents[1] / "data" / "geneval_evaluation_metadata.jsonl"
    prompts = [json.loads(line)["prompt"] for line in metadata.read_text().splitlines()]
    prompts += ["  A Photo of  a Dog ", "A PHOTO OF A RED CAR"]
    cleaned = {p: embedder.text_preprocessing(p) for p in prompts}
    (OUT / "cleaned_prompts.json").write_text(json.dumps(cleaned, indent=0, sort_keys=True) + "\n")
    for k, v in out.items():
        print(k, tuple(v.shape), float(v.float().abs().mean()))
    print("sample tokens", out["sample_tokens"].tolist())
    scale = out["logits"].abs().mean()
    np.testing.assert_array_less(1e-2, (out["logits"] - out["logits_b"]).abs().mean() / scale)
    np.testing.assert_array_less(1e-2, (out["logits"] - out["logits_other_caption"]).abs().mean() / scale)


if __name__ == "__main__":
    main(sys.argv[1])
