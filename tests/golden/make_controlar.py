"""Golden outputs of upstream ControlAR on seeded random weights (tests/golden/controlar/golden.npz), for
tests/test_imagegen_controlar.py.

Upstream: hustvl/ControlAR @ 87e32e97416277fcecf9c03a998263399a4af331 (2025-04-24).
Usage: python tests/golden/make_controlar.py /path/to/ControlAR-checkout

Nothing of the network is stubbed: upstream's `autoregressive/models/gpt_t2i.py` (with `dinov2_adapter.py`) and
`autoregressive/models/generate.py` run as they are (CPU, float32). The one replacement is where upstream reads
DINOv2-small from disk (`AutoModel.from_pretrained('autoregressive/models/dinov2-small')`): it gets transformers'
`Dinov2Model` built from facebook/dinov2-small's config with one layer instead of 12 (width 384 is kept: upstream
hard-codes `adapter_mlp` to 384 inputs for the small adapter). Weights: `golden_weights.seeded_state` of the whole
state dict (both caption and control `uncond_embedding` buffers included), so they need not be stored.

A tiny t2i GPT (dim 64, 3 layers: control injected before every layer, 4 heads, multiple_of 32, vocabulary 64,
4x4 tokens, caption_dim 32, cls_token_num 120) with control type canny (nearest resize) and hed (bicubic).
Inputs: two right-padded caption state sets (lengths 5 and 120) laid out as `sample_t2i.py` does, 64x64 control
images in [-1, 1] (a binary edge map for canny, a smooth map for hed). Outputs: the control features
(`adapter_mlp(adapter(control))`, what `generate` computes first), and for each control type a guided sample
(cfg 4, top-k 1: deterministic; canny with control_strength 0.6, hed with 1.0) with the logits upstream's `sample`
saw at every step (step 0 = the prefill), and an unguided sample (cfg 1) the same way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_weights import layout, save_golden, seeded_state  # noqa: E402

UPSTREAM = "hustvl/ControlAR@87e32e97416277fcecf9c03a998263399a4af331"
OUT = Path(__file__).resolve().parent / "controlar"
CAPTION_DIM = 32
SEED = 20
GPT_ARGS = dict(dim=64, n_layer=3, n_head=4, multiple_of=32, vocab_size=64, block_size=16, cls_token_num=120,
                caption_dim=CAPTION_DIM, model_type="t2i", class_dropout_prob=0.1, token_dropout_p=0.0,
                attn_dropout_p=0.0, resid_dropout_p=0.0, ffn_dropout_p=0.0, drop_path_rate=0.0, adapter_size="small")
DINOV2_SMALL_ONE_LAYER = dict(hidden_size=384, num_hidden_layers=1, num_attention_heads=6, mlp_ratio=4, patch_size=14,
                              image_size=518, layer_norm_eps=1e-6, layerscale_value=1.0, qkv_bias=True,
                              hidden_act="gelu", drop_path_rate=0.0, use_swiglu_ffn=False)


def upstream_layout(caption_embs: torch.Tensor, emb_masks: torch.Tensor):
    """sample_t2i.py main(): the left-padding lines, then `c_indices = ... * mask`."""
    new_emb_masks = torch.flip(emb_masks, dims=[-1])
    new_caption_embs = []
    for caption_emb, emb_mask in zip(caption_embs, emb_masks):
        valid_num = int(emb_mask.sum().item())
        new_caption_embs.append(torch.cat([caption_emb[valid_num:], caption_emb[:valid_num]]))
    return torch.stack(new_caption_embs) * new_emb_masks[:, :, None], new_emb_masks


def recorded(upstream_generate, model, caption, emb_mask, control, cfg: float, strength: float):
    """Upstream's `generate` (top-k 1: deterministic) and the logits its `sample` saw at every step."""
    seen = []
    original = upstream_generate.sample
    upstream_generate.sample = lambda logits, **kw: (seen.append(logits[:, -1, :].clone()), original(logits, **kw))[1]
    try:
        tokens = upstream_generate.generate(model, caption, 16, emb_mask, condition=control, cfg_scale=cfg,
                                            temperature=1.0, top_k=1, top_p=1.0, sample_logits=True,
                                            control_strength=strength)
    finally:
        upstream_generate.sample = original
    return tokens, torch.stack(seen, dim=1)


def main(checkout: str) -> None:
    sys.path.insert(0, checkout)
    from transformers import Dinov2Config, Dinov2Model

    from autoregressive.models import dinov2_adapter
    from autoregressive.models import generate as upstream_generate
    from autoregressive.models.gpt_t2i import ModelArgs, Transformer

    layers = {"n": 1}

    class TinyDinov2:  # in place of the weights folder upstream reads; the network is transformers' Dinov2Model
        @staticmethod
        def from_pretrained(path):
            assert path == "autoregressive/models/dinov2-small", path
            return Dinov2Model(Dinov2Config(**{**DINOV2_SMALL_ONE_LAYER, "num_hidden_layers": layers["n"]}))

    dinov2_adapter.AutoModel = TinyDinov2
    gen = torch.Generator().manual_seed(7)
    states = torch.randn(2, 120, CAPTION_DIM, generator=gen)
    masks = torch.zeros(2, 120, dtype=torch.long)
    for i, n in enumerate((5, 120)):
        masks[i, :n] = 1
    caption, emb_mask = upstream_layout(states, masks)
    edges = (torch.rand(2, 1, 64, 64, generator=gen) < 0.15).float().repeat(1, 3, 1, 1)  # 0/255 edge map
    smooth = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 64, 64, generator=gen), 5, 1, 2)
    controls = {"canny": 2 * (edges - 0.5), "hed": 2 * (smooth - 0.5)}
    out: dict[str, np.ndarray] = {"states": states.numpy(), "masks": masks.numpy()}
    for kind, strength in (("canny", 0.6), ("hed", 1.0)):
        torch.manual_seed(0)
        model = Transformer(ModelArgs(**GPT_ARGS, condition_type=kind))
        state = seeded_state(model.state_dict(), SEED)
        model.load_state_dict(state, strict=True)
        model.eval()
        out["layout"] = np.array(layout(model))
        control = controls[kind]
        out[f"{kind}_control"] = control.numpy()
        with torch.no_grad():
            out[f"{kind}_features"] = model.adapter_mlp(model.adapter(control)).numpy()
            for name, cfg in (("guided", 4.0), ("unguided", 1.0)):
                tokens, logits = recorded(upstream_generate, model, caption, emb_mask, control, cfg, strength)
                out[f"{kind}_{name}_tokens"] = tokens.long().numpy()
                out[f"{kind}_{name}_logits"] = logits.numpy()
                print(kind, name, tokens.tolist())
            # the control must matter: another control image gives other logits
            other = recorded(upstream_generate, model, caption, emb_mask, control.flip(0), 4.0, strength)[1].numpy()
        ref = out[f"{kind}_guided_logits"]
        assert np.abs(other - ref).mean() > 1e-2 * np.abs(ref).mean(), "the control image does not change the logits"
    out["strengths"] = np.array([0.6, 1.0])
    # the released GPT-XL at 512 px with the 12-layer DINOv2-small encoder (names and shapes only, meta device)
    from autoregressive.models.gpt_t2i import GPT_models
    layers["n"] = 12
    linspace = torch.linspace  # upstream reads drop-path rates with .item(), which meta tensors refuse
    torch.linspace = lambda *a, **k: linspace(*a, **{**k, "device": "cpu"})
    with torch.device("meta"):
        xl = GPT_models["GPT-XL"](block_size=1024, cls_token_num=120, model_type="t2i", condition_type="canny",
                                  adapter_size="small")
    torch.linspace = linspace
    out["layout_xl_512"] = np.array(layout(xl))
    save_golden(OUT, UPSTREAM, out)
    print(json.dumps({k: list(v.shape) for k, v in out.items()}))


if __name__ == "__main__":
    main(sys.argv[1])
