"""Golden outputs of upstream Orthus on seeded random weights (tests/golden/orthus/), for tests/test_imagegen_orthus.py.

Upstream: zhijie-group/Orthus @ 609d968 (`models/modeling_orthus.py`, `models/diff_mlp.py`,
`models/configuration_chameleon.py`, and its vendored transformers fork 4.47.0.dev0 whose `generation/utils.py`
runs the continuous-image loop). Usage (a scratch venv; upstream's fork needs tokenizers 0.20 and the diffusers of
its requirements.txt):
    git --git-dir=/work/.mirror/zhijie-group+Orthus/repo archive HEAD models transformers/src | tar -x -C /tmp/up-orthus
    python -m venv --system-site-packages /tmp/venv-orthus
    /tmp/venv-orthus/bin/pip install "tokenizers>=0.20,<0.21" huggingface_hub==0.25.2 diffusers==0.31.0 einops==0.8.0
    PYTHONPATH=/tmp/up-orthus/transformers/src:/tmp/up-orthus /tmp/venv-orthus/bin/python tests/golden/make_orthus.py

Nothing is stubbed: upstream's `OrthusForConditionalGeneration` (its `OrthusModel`, Chameleon layers, soft VQ
embedding, `SimpleMLPAdaLN` head, DDIM sample scheduler, `decode_image_latents`) and its `generate()` in
"image-only" mode run as they are, on CPU in float32. The tiny configuration keeps what upstream hard-codes: 8192
image tokens at ids 4..8195, `<boi>` 8197, `<image>` 8711, 256-d features on a 32 x 32 grid (a 2-level VQ decoder
from 64 px), 100 DDIM steps; the transformer is 2 layers x 64 (4 heads), the head 2 blocks x 96. Every float tensor is
drawn by `golden_weights.seeded_state`, so the test rebuilds the weights from names; stored are the config as
upstream saves it (`config.json`, the released layout) and the outputs:
- backbone: a batch of two mixed text + image sequences (`<boi>`, five `<image>` placeholders with their continuous
  features, `<eoi>`, text; the second left-padded) -> last hidden states and the last position's logits;
- head: one call of `mlp_head` on fixed (x, t, z), and one continuous-mode forward (100 guided DDIM steps, cfg 5)
  whose starting noise is torch's global generator seeded 5;
- sample: upstream `generate()` on a (prompt, unconditional prompt) pair, cfg 5, greedy, `<boi>` forced by a logits
  processor (the released models emit it), global seed 7, stopped after 4 image features;
- decode: `decode_image_latents` of seeded features and the processor's `postprocess` to uint8.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_weights import save_golden, seeded_state  # noqa: E402

UPSTREAM = "zhijie-group/Orthus@609d968"
OUT = Path(__file__).resolve().parent / "orthus"
SEED, HEAD_WIDTH, HEAD_DEPTH, CFG = 21, 96, 2, 5.0
VOCAB = 8720
VQ = dict(embed_dim=256, num_embeddings=8192, latent_channels=32, resolution=64, base_channels=32,
          channel_multiplier=[1, 2], num_res_blocks=1, attn_resolutions=[32], in_channels=3, out_channels=3,
          double_latent=False, attn_type="vanilla", dropout=0.0)
TEXT = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=256, pad_token_id=1, bos_token_id=0, eos_token_id=2)
#: token rows (ids): a text prefix, <boi>, five <image>, <eoi>, text; the second row is shorter (left-padded)
MIXED = [[0, 8300, 8301, 8302, 8197] + [8711] * 5 + [8196, 8303, 8304],
         [0, 8305, 8197] + [8711] * 5 + [8196, 8306]]
PROMPT, UNCOND = [0, 8400, 8401, 8402, 8403, 8710], [0, 8404, 8710]
SAMPLE_TOKENS, SAMPLE_SEED, HEAD_SEED, DECODE_SEED = 4, 7, 5, 9


def vocabulary_map() -> dict[str, int]:
    """Chameleon's names: image token i is `IMGIMG` + its decimal digits as letters A..J + `Z`."""
    names = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for i in range(8192):
        names["IMGIMG" + "".join(chr(ord("A") + int(c)) for c in str(i)) + "Z"] = 4 + i
    names.update({"<racm3:break>": 8197, "<eoss>": 8196, "<reserved08706>": 8710, "<image>": 8711})
    return names


def left_pad(rows):
    longest = max(map(len, rows))
    ids = torch.tensor([[1] * (longest - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (longest - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def main() -> None:
    from models.configuration_chameleon import ChameleonConfig
    from models.modeling_orthus import OrthusForConditionalGeneration
    from transformers import LogitsProcessor
    from transformers.models.chameleon.image_processing_chameleon import ChameleonImageProcessor as ImageProcessor

    config = ChameleonConfig(**TEXT, vq_config=VQ, vocabulary_map=vocabulary_map())
    model = OrthusForConditionalGeneration(config, diffloss_w=HEAD_WIDTH, num_res_blocks=HEAD_DEPTH)
    model.load_state_dict(seeded_state(model.state_dict(), SEED), strict=True)
    model.eval()
    OUT.mkdir(parents=True, exist_ok=True)
    config.to_json_file(str(OUT / "config.json"))
    out = {"state_names": np.array(json.dumps({k: list(v.shape) for k, v in model.state_dict().items()}))}

    # backbone on a mixed text + image batch
    g = torch.Generator().manual_seed(3)
    latents = torch.randn(2, 5, 256, generator=g) * 0.05
    ids, mask = left_pad(MIXED)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    with torch.no_grad():
        base = model.model(input_ids=ids, image_latents=latents, attention_mask=mask, position_ids=positions,
                           use_cache=False, return_dict=True)
        full = model(input_ids=ids, image_latents=latents, attention_mask=mask, position_ids=positions,
                     use_cache=False, mode="discrete", return_dict=True)
    out.update(mixed_ids=ids.numpy(), mixed_mask=mask.numpy(), mixed_latents=latents.numpy(),
               mixed_hidden=base.last_hidden_state.numpy(), mixed_last_logits=full.logits[:, -1].numpy())

    # diffusion head: one network call, then one guided continuous-mode forward (100 DDIM steps)
    x = torch.randn(4, 256, generator=g)
    t = torch.tensor([999, 500, 17, 0])
    z = torch.randn(4, 64, generator=g)
    with torch.no_grad():
        out.update(head_x=x.numpy(), head_t=t.numpy(), head_z=z.numpy(), head_out=model.mlp_head(x, t, z).numpy())
        torch.manual_seed(HEAD_SEED)
        step = model(input_ids=ids, image_latents=latents, attention_mask=mask, position_ids=positions,
                     use_cache=False, mode="continuous", cfg_scale=CFG, diff_pos_id=1, return_dict=True)
    out["head_sample"] = step.next_image_latents[:1].numpy()

    # a short deterministic text-to-image sample through upstream's generate()
    class ForceBoi(LogitsProcessor):
        def __call__(self, input_ids, scores):
            forced = torch.full_like(scores, -float("inf"))
            forced[:, 8197] = 0
            return forced

    class Enough(Exception):
        pass

    collected = []
    original = OrthusForConditionalGeneration.forward

    def recording(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if kwargs.get("mode") == "continuous":
            collected.append(result.next_image_latents[:1].clone())
            if len(collected) == SAMPLE_TOKENS:
                raise Enough
        return result

    OrthusForConditionalGeneration.forward = recording
    ids, mask = left_pad([PROMPT, UNCOND])
    torch.manual_seed(SAMPLE_SEED)
    try:
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=mask, cfg_scale=CFG, multimodal_generation_mode="image-only",
                           use_cache=True, do_sample=False, max_new_tokens=1100, logits_processor=[ForceBoi()])
    except Enough:
        pass
    OrthusForConditionalGeneration.forward = original
    out.update(sample_ids=ids.numpy(), sample_mask=mask.numpy(), sample=torch.cat(collected).numpy())

    # decoding continuous features to pixels, then upstream's postprocessing
    feats = torch.randn(1024, 256, generator=torch.Generator().manual_seed(DECODE_SEED))
    with torch.no_grad():
        pixels = model.decode_image_latents(feats)
    processor = ImageProcessor()  # Chameleon's defaults: mean = std = 1, rescale 0.0078
    out.update(decode_pixels=pixels.numpy(), decode_uint8=processor.postprocess(pixels.clone()).numpy())
    save_golden(OUT, UPSTREAM, out)
    print({k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    main()
