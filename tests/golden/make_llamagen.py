"""Golden outputs of upstream LlamaGen (class-conditional GPT, its sampler, the VQ decoder) on seeded weights.

Upstream: FoundationVision/LlamaGen@ce98ec41803a74a90ce68c40ababa9eaeffeb4ec
(`autoregressive/models/gpt.py`, `autoregressive/models/generate.py`, `tokenizer/tokenizer_image/vq_model.py`).
Run against a checkout (nothing of it is copied here):

    python tests/golden/make_llamagen.py /path/to/LlamaGen

Writes tests/golden/llamagen/golden.npz. The weights are not stored: both sides build them from
`golden_weights.seeded_state` (GPT seed 16, VQ seed 17), and the test writes them in the layout LlamaGen's
training script saves ({"model", "optimizer", "steps", "args": argparse.Namespace}, with upstream's `freqs_cis`
table, stored here, as an entry of "model") to load them through ARBench's reader.

Upstream is run as is; only the configuration is small (GPT dim 64, 2 layers, 4 heads, 4x4 tokens, 64 codes,
10 classes; VQ decoder ch_mult [1, 2], z 64). Dropout rates are 0 and the label embedder's `dropout_prob` is set
to 0 after construction for the teacher-forced pass (it runs in training mode, where upstream drops labels at
random). Recorded: teacher-forced logits, and for two sampler settings the per-step logits upstream's `sample`
receives (after guidance) and the tokens it picks with top_k=1 (deterministic), then those tokens decoded by the
VQ decoder and mapped to uint8 as `sample_c2i_ddp.py` does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from golden_weights import layout, save_golden, seeded_fill  # noqa: E402

UPSTREAM = "FoundationVision/LlamaGen@ce98ec41803a74a90ce68c40ababa9eaeffeb4ec"
OUT = Path(__file__).parent / "llamagen"
GPT_ARGS = dict(dim=64, n_layer=2, n_head=4, vocab_size=64, block_size=16, num_classes=10, cls_token_num=1,
                class_dropout_prob=0.1, token_dropout_p=0.0, attn_dropout_p=0.0, resid_dropout_p=0.0,
                ffn_dropout_p=0.0, drop_path_rate=0.0)
VQ_ARGS = dict(codebook_size=64, codebook_embed_dim=8, encoder_ch_mult=[1, 2], decoder_ch_mult=[1, 2], z_channels=64)
#: (cfg_scale, cfg_interval) of the recorded samples: interval 2 guides steps 0..3 upstream.
SAMPLERS = [(2.0, 2), (1.5, -1)]
#: image_size_eval of each recorded sample (the decoder gives 8 px; 12 exercises the bicubic resize).
EVAL_SIZES = [12, 8]
LABELS = [3, 7]
SEED = 16


def main(checkout: Path) -> None:
    sys.path.insert(0, str(checkout))
    from autoregressive.models import generate as upstream_generate
    from autoregressive.models.gpt import ModelArgs, Transformer
    from tokenizer.tokenizer_image.vq_model import ModelArgs as VQArgs, VQModel

    torch.manual_seed(0)
    gpt = Transformer(ModelArgs(**GPT_ARGS))
    seeded_fill(gpt, SEED)
    gpt_layout = layout(gpt)  # before generate() adds its KV-cache buffers
    labels = torch.tensor(LABELS)
    tokens = torch.randint(0, GPT_ARGS["vocab_size"], (len(LABELS), GPT_ARGS["block_size"]),
                           generator=torch.Generator().manual_seed(1))
    gpt.train()
    gpt.cls_embedding.dropout_prob = 0.0  # no random label dropping in the teacher-forced pass
    with torch.no_grad():
        teacher, _ = gpt(tokens[:, :-1], labels)
    other, _ = gpt(torch.roll(tokens, 1, dims=1)[:, :-1], labels)
    assert (teacher - other).abs().max() > 0.01 * teacher.abs().max(), "logits ignore the tokens"
    gpt.eval()

    out = {"labels": labels.numpy(), "tokens": tokens.numpy(), "teacher_logits": teacher.numpy(),
           "gpt_layout": np.array(gpt_layout)}
    for k, (scale, interval) in enumerate(SAMPLERS):
        seen = []
        original = upstream_generate.sample

        def recording(logits, **kwargs):
            seen.append(logits[:, -1].detach().clone())
            return original(logits, **kwargs)

        upstream_generate.sample = recording
        try:
            sample = upstream_generate.generate(gpt, labels, GPT_ARGS["block_size"], cfg_scale=scale,
                                                cfg_interval=interval, temperature=1.0, top_k=1, top_p=1.0)
        finally:
            upstream_generate.sample = original
        out[f"sample{k}_cfg"] = np.array([scale, interval], dtype=np.float64)
        out[f"sample{k}_tokens"] = sample.long().numpy()
        out[f"sample{k}_step_logits"] = torch.stack(seen, 1).numpy()  # (B, steps, V) after guidance

    vq = VQModel(VQArgs(**VQ_ARGS))
    seeded_fill(vq, SEED + 1)
    out["vq_layout"] = np.array(layout(vq))
    vq.eval()
    codes = torch.randint(0, VQ_ARGS["codebook_size"], (2, 4, 4), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        images = vq.decode_code(codes.flatten(), (2, VQ_ARGS["codebook_embed_dim"], 4, 4))
    out.update(codes=codes.numpy(), vq_images=images.numpy())
    # end to end as sample_c2i_ddp.py: decode the sampled tokens, resize to image_size_eval (bicubic), uint8
    for k, size in enumerate(EVAL_SIZES):
        with torch.no_grad():
            samples = vq.decode_code(torch.from_numpy(out[f"sample{k}_tokens"]), (2, VQ_ARGS["codebook_embed_dim"], 4, 4))
        if size != samples.shape[-1]:
            samples = torch.nn.functional.interpolate(samples, size=(size, size), mode="bicubic")
        out[f"sample{k}_uint8"] = torch.clamp(127.5 * samples + 128.0, 0, 255).permute(0, 2, 3, 1).to(
            "cpu", dtype=torch.uint8).numpy()

    out["freqs_cis"] = gpt.freqs_cis.numpy()
    save_golden(OUT, UPSTREAM, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
