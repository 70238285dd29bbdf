"""Golden outputs of upstream NOVA's text-to-image pipeline on seeded random weights (tests/golden/nova/), for
tests/test_imagegen_nova.py.

Upstream: baaivision/NOVA @ 2cd254afdedae8670ccb492c28c53caa08f7b5a0 (2025-09-06), package `diffnext`.
Usage (upstream needs transformers 4.x for its PhiConfig fields and a diffusers of its time):
    python -m venv /tmp/venv-nova && /tmp/venv-nova/bin/pip install transformers==4.46.3 diffusers==0.32.2
    echo /work/main/.venv/lib/python3.11/site-packages > /tmp/venv-nova/lib/python3.11/site-packages/zz.pth
    /tmp/venv-nova/bin/python tests/golden/make_nova.py /path/to/NOVA-checkout

Nothing is stubbed: upstream's `NOVAPipeline.__call__`, `NOVATransformer3DModel` (`Transformer3DModel.generate_video`,
`generate_frame`, `denoise`), `PhiEncoderModel` and `AutoencoderKL` run as they are (CPU, float32), with diffusers'
`FlowMatchEulerDiscreteScheduler` (shift 3) as the released `model_index.json` names it. Tiny architectures are
added to upstream's own registries (`VIDEO_ENCODERS.register(...)` etc., the same builders as the released names):
video encoder 2 x 64 (4 heads), image encoder 4 x 64 (4 heads, encoder half 2), diffusion MLP 2 x 48, 64 px images
with a stride-8 latent (8 x 8 x 4: 16 spatial patches of 2 x 2, 4 temporal patches of 4 x 4), 12 text tokens of 32;
a Phi of 2 layers x 32 (4 heads, partial rotary 0.5); a VAE of two 32-channel levels (decodes 8 x 8 -> 16 x 16);
a word-level tokenizer (`PreTrainedTokenizerFast`, no special tokens, pad token) standing in for Phi-2's BPE (the
tokenizer is delegated to transformers on both sides). Every float tensor, the text-embedding `weight` buffer included,
is drawn by `golden_weights.seeded_state`, so the test rebuilds the same weights from names and only the configs,
the tokenizer and the outputs are stored.

Recorded by wrapping (calling through) upstream's methods: the Phi states of each prompt, the text tokens after
`text_embed` (prompt and null prompt), the temporal (video encoder) context, every image-encoder call (masked input,
known ids, output) and every diffusion-MLP call (noisy latent, timestep, condition, predicted ids, output), the
latents of a deterministic sample per prompt (batch of one, generator seeded 0 and 1, 6 set steps, 4 flow steps,
guidance 7) and their decoded uint8 images; also the state-dict names and shapes of the four released transformer
configs (the three `configs/nova_d48w*_sdxl1024.yaml` and the text-to-video `nova_d48w1024_osp480.yaml`) built on the
meta device.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_weights import save_golden, seeded_state  # noqa: E402

UPSTREAM = "baaivision/NOVA@2cd254afdedae8670ccb492c28c53caa08f7b5a0"
OUT = Path(__file__).resolve().parent / "nova"
SNAPSHOT = OUT / "snapshot"  # the released folder layout, configs only (weights rebuilt from seeds)
PROMPTS = ["a photo of a red bench", "a photo of two blue clocks"]
WORDS = sorted({w for p in PROMPTS + ["a photo of a green cat and a dog"] for w in p.split()})
TRANSFORMER = dict(image_dim=4, image_size=64, image_stride=8, text_token_dim=32, text_token_len=12,
                   image_base_size=[4, 4], video_base_size=[1, 2, 2], rotary_pos_embed=False,
                   arch=["vit_d2w64", "vit_d4w64", "mlp_d2w48"])
PHI = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
           partial_rotary_factor=0.5, max_position_embeddings=64)
VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
           up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 32], layers_per_block=1,
           latent_channels=4, norm_num_groups=32, sample_size=16, scaling_factor=0.18215)
SEEDS = {"transformer": 11, "text_encoder": 12, "vae": 13}
SAMPLE = dict(num_inference_steps=6, num_diffusion_steps=4, guidance_scale=7.0)
RELEASED = ("nova_d48w768_sdxl1024", "nova_d48w1024_sdxl1024", "nova_d48w1536_sdxl1024", "nova_d48w1024_osp480")


def make_tokenizer(folder: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")
    fast.save_pretrained(str(folder))
    for extra in ("special_tokens_map.json",):  # the released tokenizer/ has tokenizer.json + tokenizer_config.json
        (folder / extra).unlink(missing_ok=True)
    return fast, len(vocab)


def seeded(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    module.load_state_dict(seeded_state(module.state_dict(), seed), strict=True)
    return module.eval()


def tiny_transformer_module():
    """Upstream's `transformer_nova` with the tiny architectures added to its registries (its own builders)."""
    from diffnext.models.transformers import transformer_nova as tn

    tn.VIDEO_ENCODERS.register("vit_d2w64", depth=2, embed_dim=64, num_heads=4)(tn.video_encoder)
    tn.IMAGE_ENCODERS.register("vit_d4w64", depth=4, embed_dim=64, num_heads=4)(tn.image_encoder)
    tn.IMAGE_DECODERS.register("mlp_d2w48", depth=2, embed_dim=48)(tn.image_decoder)
    return tn


def main(checkout: str) -> None:
    sys.path.insert(0, checkout)
    import yaml
    from diffusers import FlowMatchEulerDiscreteScheduler
    from transformers import PhiConfig

    from diffnext.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffnext.models.text_encoders.phi import PhiEncoderModel
    from diffnext.pipelines.nova.pipeline_nova import NOVAPipeline

    tn = tiny_transformer_module()

    torch.manual_seed(0)
    SNAPSHOT.mkdir(parents=True, exist_ok=True)
    tokenizer, vocab_size = make_tokenizer(SNAPSHOT / "tokenizer")
    text_encoder = seeded(PhiEncoderModel(PhiConfig(vocab_size=vocab_size, **PHI)), SEEDS["text_encoder"])
    text_encoder.config.save_pretrained(str(SNAPSHOT / "text_encoder"))
    transformer = seeded(tn.NOVATransformer3DModel(**TRANSFORMER), SEEDS["transformer"])
    transformer.save_config(str(SNAPSHOT / "transformer"))
    vae = seeded(AutoencoderKL(**VAE), SEEDS["vae"])
    vae.save_config(str(SNAPSHOT / "vae"))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.save_config(str(SNAPSHOT / "scheduler"))
    index = {"_class_name": "NOVAPipeline", "tokenizer": ["transformers", "CodeGenTokenizerFast"],
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "vae": ["__vae__", "AutoencoderKL"],
             "text_encoder": ["__text_encoder__", "PhiEncoderModel"],
             "transformer": ["__transformer__", "NOVATransformer3DModel"]}
    (SNAPSHOT / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    pipe = NOVAPipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                        tokenizer=tokenizer)

    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for i, p in enumerate(PROMPTS):  # docs/evaluation.md step 1: unpadded, truncated to 256 (here 12)
            ids = tokenizer(p, max_length=12, truncation=True).input_ids
            out[f"text_states_{i}"] = text_encoder(torch.as_tensor([ids])).last_hidden_state[0].numpy()

    # record the calls of one sample per prompt (batch of one: upstream draws the batch from one generator)
    calls: dict[str, list] = {}

    def wrap(owner, attr, key, record):
        original = getattr(owner, attr)

        def wrapped(*args, **kwargs):
            before = record(args, kwargs)
            result = original(*args, **kwargs)
            calls.setdefault(key, []).append((before, result.detach().clone()))
            return result
        setattr(owner, attr, wrapped)

    clone = lambda t: None if t is None else t.detach().clone()  # noqa: E731
    wrap(transformer.text_embed, "forward", "text", lambda a, k: clone(a[0]) if torch.is_tensor(a[0]) else None)
    wrap(transformer.video_encoder, "forward", "video", lambda a, k: (clone(a[0]), clone(a[1])))
    wrap(transformer.image_encoder, "forward", "image", lambda a, k: (clone(a[0]), clone(a[1]), clone(a[2])))
    wrap(transformer.image_decoder, "forward", "mlp",
         lambda a, k: (clone(a[0]), clone(a[1]), clone(a[2]), clone(a[3])))
    for i, prompt in enumerate(PROMPTS):
        calls.clear()
        gen = torch.Generator().manual_seed(i)
        latents = pipe(prompt, generator=gen, output_type="latent", disable_progress_bar=True, **SAMPLE).frames
        out[f"latents_{i}"] = latents[:, :, 0].numpy()
        images = pipe.image_processor.decode_latents(vae, latents.clone(), 16)
        out[f"images_{i}"] = pipe.image_processor.postprocess(images, "np")
        out[f"text_tokens_{i}"] = calls["text"][0][1].numpy()  # (2, 12, 64): prompt, null prompt
        (v_in, v_text), v_out = calls["video"][0]
        out[f"video_in_{i}"], out[f"video_out_{i}"] = v_in.numpy(), v_out.numpy()
        image_calls, mlp_calls = calls["image"], calls["mlp"]
        out[f"num_sets_{i}"] = np.array(len(image_calls))
        for j in (0, 2):  # the first set (nothing known) and a later one
            (x, c, prev_ids), z = image_calls[j]
            out[f"image_in_{i}_{j}"], out[f"image_known_{i}_{j}"] = x.numpy(), prev_ids[..., 0].numpy()
            out[f"image_out_{i}_{j}"] = z.numpy()
        (x, t, z, pred_ids), pred = mlp_calls[SAMPLE["num_diffusion_steps"] * 2 + 1]  # set 2, second flow step
        out[f"mlp_x_{i}"], out[f"mlp_t_{i}"], out[f"mlp_z_{i}"] = x.numpy(), t.numpy(), z.numpy()
        out[f"mlp_ids_{i}"], out[f"mlp_out_{i}"] = pred_ids[..., 0].numpy(), pred.numpy()
        if i == 0:
            out["video_context_text"] = v_text.numpy()
    save_golden(OUT, UPSTREAM, {k: np.asarray(v) for k, v in out.items()})

    shapes = {}
    for name in RELEASED:  # upstream's training configs: pipeline.paths.module_config.transformer
        config = yaml.safe_load((Path(checkout) / "configs" / f"{name}.yaml").read_text())
        args = config["pipeline"]["paths"]["module_config"]["transformer"]
        with torch.device("meta"):
            model = tn.NOVATransformer3DModel(**args)
        shapes[name] = {"config": args, "state": {k: list(v.shape) for k, v in model.state_dict().items()}}
    with gzip.GzipFile(OUT / "released_shapes.json.gz", "wb", mtime=0) as f:
        f.write(json.dumps(shapes, sort_keys=True).encode())
    for k, v in sorted(out.items()):
        print(k, np.asarray(v).shape)


if __name__ == "__main__":
    main(sys.argv[1])
