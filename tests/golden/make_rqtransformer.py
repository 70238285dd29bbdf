"""Golden outputs of upstream RQ-Transformer + RQ-VAE on seeded weights (tests/golden/rqtransformer/), for
tests/test_imagegen_rqtransformer.py.

Upstream: kakaobrain/rq-vae-transformer @ 341395e562ac347f5eb62db9f5f08b9f2cc42a60 (2024-01-03).
Usage: python tests/golden/make_rqtransformer.py /path/to/rq-vae-transformer-checkout
(needs upstream's omegaconf, easydict and tqdm: a scratch venv, not the project's).

Models are built as upstream's `main_sampling_fid.py` builds them (`load_config` + `augment_arch_defaults` +
`create_model`) from the tiny `stage1.yaml` / `stage2.yaml` written here beside the outputs: the released
ImageNet configs' flags (input/head embeddings from the RQ-VAE codebook, cumulative depth context, shared
codebook and classifier) at small sizes (RQ-Transformer width 64, 2 + 2 layers, 4 heads, 4 x 4 x 4 codes,
vocabulary 64, 10 classes; RQ-VAE ch 32, ch_mult (1, 1, 2), attention at resolution 4, 16 px). Weights:
`golden_weights.seeded_fill` (seed 1 for the transformer, 2 for the RQ-VAE; not stored, the test rebuilds them by
name). The RQ-VAE's four `quantizer.codebooks.{d}.weight` names are one shared module, which holds the last one
loaded (d = 3) on both sides.

Compared: teacher-forced logits (upstream `forward`, eval mode) on random codes; a deterministic cached sample
(`sample(..., top_k=1, cached=True)`, as main_sampling_fid calls it with amp off) with the logits upstream's
sampler saw at each of the 64 steps; upstream `sample_from_logits`'s top-k / top-p probabilities on random logits
(its `top_k_logits`, softmax and `top_p_probs`); `decode_code` of the sampled and of random codes.

Nothing upstream computes is stubbed. One compatibility shim: `rqvae/models/rqtransformer/configs.py` declares a
dataclass instance as another dataclass's default, which Python >= 3.11 refuses ("mutable default"); it is
imported with `dataclasses.dataclass` temporarily made `unsafe_hash=True` (the fields and defaults are unchanged).
Also written: the names and shapes of upstream's modules, tiny (the layout the test checks before loading) and
released (the four ImageNet stage-2 configs and the stage-1 config, built on the meta device), in
layouts.json.gz.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_weights import seeded_fill  # noqa: E402

UPSTREAM = "kakaobrain/rq-vae-transformer@341395e562ac347f5eb62db9f5f08b9f2cc42a60"
OUT = Path(__file__).resolve().parent / "rqtransformer"
STAGE1 = {"arch": {"type": "rq-vae", "code_hier": 1, "hparams": {
    "bottleneck_type": "rq", "embed_dim": 16, "n_embed": 64, "latent_shape": [4, 4, 16], "code_shape": [4, 4, 4],
    "shared_codebook": True, "decay": 0.99, "restart_unused_codes": True, "loss_type": "mse",
    "latent_loss_weight": 0.25}, "ddconfig": {
    "double_z": False, "z_channels": 32, "resolution": 16, "in_channels": 3, "out_ch": 3, "ch": 32,
    "ch_mult": [1, 1, 2], "num_res_blocks": 1, "attn_resolutions": [4], "dropout": 0.0}, "checkpointing": False}}
STAGE2 = {"dataset": {"type": "imagenet", "vocab_size": 64}, "arch": {
    "type": "rq-transformer", "block_size": [4, 4, 4], "embed_dim": 64, "input_embed_dim": 16,
    "shared_tok_emb": True, "shared_cls_emb": True, "input_emb_vqvae": True, "head_emb_vqvae": True,
    "cumsum_depth_ctx": True, "vocab_size_cond": 10, "block_size_cond": 1, "vocab_size": 64,
    "body": {"n_layer": 2, "block": {"n_head": 4}}, "head": {"n_layer": 2, "block": {"n_head": 4}}},
    "sampling": {"temp": 1.0, "top_k": [256], "top_p": [0.95]}}


def import_upstream(checkout: str):
    sys.path.insert(0, checkout)
    original = dataclasses.dataclass
    dataclasses.dataclass = functools.partial(original, unsafe_hash=True)  # see the docstring
    try:
        import rqvae.models.rqtransformer.configs  # noqa: F401
    finally:
        dataclasses.dataclass = original
    import rqvae.models.rqtransformer.transformers as transformers
    from rqvae.models import create_model
    from rqvae.utils.config import augment_arch_defaults, load_config
    from rqvae.utils.utils import sample_from_logits, top_k_logits, top_p_probs
    return transformers, create_model, augment_arch_defaults, load_config, sample_from_logits, top_k_logits, top_p_probs


def main(checkout: str) -> None:
    transformers, create_model, augment, load_config, sample_from_logits, top_k_logits, top_p_probs = \
        import_upstream(checkout)
    torch.manual_seed(0)
    OUT.mkdir(exist_ok=True)
    for name, config in (("stage1.yaml", STAGE1), ("stage2.yaml", STAGE2)):
        (OUT / name).write_text(yaml.safe_dump(config, sort_keys=False))

    def build(name):  # as main_sampling_fid.load_model, without torch.load
        config = load_config(OUT / name)
        return create_model(augment(config.arch), ema=False)[0]

    vae = seeded_fill(build("stage1.yaml"), 2)
    model = seeded_fill(build("stage2.yaml"), 1)
    gen = torch.Generator().manual_seed(3)
    labels = torch.tensor([3, 7])
    codes = torch.randint(0, 64, (2, 4, 4, 4), generator=gen)
    out = {"labels": labels, "codes": codes}
    with torch.no_grad():
        out["logits"] = model(codes, vae, cond=labels, amp=False)
        seen = []

        def recording(logits, **kwargs):
            seen.append(logits.float().clone())
            return sample_from_logits(logits, **kwargs)

        transformers.sample_from_logits = recording
        sample = model.sample(torch.zeros(2, 4, 4, 4, dtype=torch.long), vae, cond=labels, temperature=1.0,
                              top_k=[1], top_p=[0.95], amp=False, cached=True)
        transformers.sample_from_logits = sample_from_logits
        out["sample_codes"], out["sample_logits"] = sample, torch.stack(seen, dim=1)
        # the uncached path (full forward per step) gives the same codes
        assert torch.equal(model.sample(torch.zeros(2, 4, 4, 4, dtype=torch.long), vae, cond=labels, top_k=1,
                                        top_p=0.95, cached=False), sample)
        probe = torch.randn(6, 64, generator=gen) * 3
        probe[:, 5] = probe[:, 9]  # a tie at the top-k boundary region
        out["filter_logits"] = probe
        for name, (temp, k, p) in {"a": (1.0, 16, 0.9), "b": (0.7, 64, 0.5), "c": (1.3, 5, 1.0)}.items():
            probs = torch.softmax(top_k_logits(probe / temp, k), dim=-1)
            out[f"filter_probs_{name}"] = top_p_probs(probs, p)
        out["sample_images"] = vae.decode_code(sample)
        out["decoded"] = vae.decode_code(codes)
    save_file({k: v.contiguous() for k, v in out.items()}, OUT / "outputs.safetensors",
              metadata={"upstream": UPSTREAM})
    layouts = {"tiny-stage1": {k: list(v.shape) for k, v in vae.state_dict().items()},
               "tiny-stage2": {k: list(v.shape) for k, v in model.state_dict().items()}}
    configs = Path(checkout) / "configs/imagenet256"
    for size in ("480M", "800M", "1400M", "3800M"):
        config = load_config(configs / f"stage2/in256-rqtransformer-8x8x4-{size}.yaml")
        config.arch.vocab_size = config.dataset.vocab_size  # as upstream's augment_defaults for stage 2
        with torch.device("meta"):
            net = create_model(augment(config.arch), ema=False)[0]
        layouts[size] = {k: list(v.shape) for k, v in net.state_dict().items()}
    with torch.device("meta"):
        net = create_model(augment(load_config(configs / "stage1/in256-rqvae-8x8x4.yaml").arch), ema=False)[0]
    layouts["stage1"] = {k: list(v.shape) for k, v in net.state_dict().items()}
    with gzip.GzipFile(OUT / "layouts.json.gz", "wb", mtime=0) as f:  # reproducible bytes
        f.write(json.dumps(layouts).encode())
    for k, v in out.items():
        print(k, tuple(v.shape), float(v.float().abs().mean()))
    print("sample codes", sample.flatten().tolist())


if __name__ == "__main__":
    main(sys.argv[1])
