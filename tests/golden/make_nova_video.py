"""Golden outputs of upstream NOVA's text-to-video rollout on seeded random weights (tests/golden/nova_video/), for
tests/test_imagegen_nova_video.py.

Upstream: baaivision/NOVA @ 2cd254afdedae8670ccb492c28c53caa08f7b5a0 (2025-09-06), package `diffnext`.
Usage (the scratch venv of tests/golden/make_nova.py: transformers 4.46.3, diffusers 0.32.2):
    /tmp/venv-nova/bin/python tests/golden/make_nova_video.py /path/to/NOVA-checkout

Upstream's `NOVAPipeline.__call__` -> `NOVATransformer3DModel` (`preprocess`, `Transformer3DModel.generate_video`
with the video encoder's key/value cache, `generate_frame`, `denoise`) runs as it is (CPU, float32), with
`output_type="latent"` (the released text-to-video VAE, upstream's `AutoencoderKLOpenSora`, is not compared here).
The tiny transformer is make_nova.py's (same registered tiny archs, 64 px, stride 8) with a temporal base of 4
latent frames (`video_base_size=[4, 2, 2]`, so the model has the motion embedding, as the released
`nova_d48w1024_osp480` with [16, 15, 24]); weights from `golden_weights.seeded_state` (seed 21). The text encoder
and tokenizer are make_nova.py's; the Phi states of each prompt are stored and the test feeds them to the sampler
(the text path is compared by the text-to-image golden test).

Recorded per prompt (batch of one, generator seeded 0 and 1, 3 latent frames, 4 set steps, 3 flow steps, guidance
5, motion flow 5): the context tokens after `preprocess` (text tokens, flow token, fps token, for the prompt and
the null prompt), every video-encoder call (its input tokens and output: frame 1 from BOS, frame 2 given frame 1
through the cache, frame 3), and the 3-frame latent sample. Then upstream's `AutoencoderKLOpenSora` (VAE3D below,
seeded weights) decodes random latents of 9 frames through the pipeline's `decode_latents` and `postprocess`:
the float video and its uint8 frames.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_weights import save_golden  # noqa: E402
from make_nova import (PHI, PROMPTS, SEEDS, TRANSFORMER, UPSTREAM, make_tokenizer, seeded,  # noqa: E402
                       tiny_transformer_module)

OUT = Path(__file__).resolve().parent / "nova_video"
VIDEO_TRANSFORMER = {**TRANSFORMER, "video_base_size": [4, 2, 2]}
SEED = 21
#: Upstream's AutoencoderKLOpenSora, tiny: four 3D levels of 32 channels (the released class's layout: two
#: temporal+spatial upsamplers, one spatial (1, 3, 3), none), 4 latent channels; decodes 9 latents of 2 x 2 into
#: 33 frames of 16 x 16 through the temporal tiling (windows of 5 overlapping by 1).
VAE3D = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock3D"] * 4,
             up_block_types=["UpDecoderBlock3D"] * 4, block_out_channels=[32, 32, 32, 32], layers_per_block=1,
             latent_channels=4, scaling_factor=0.18215)
VAE_SEED = 22
SAMPLE = dict(max_latent_length=3, num_inference_steps=4, num_diffusion_steps=3, guidance_scale=5.0, motion_flow=5)


def tiny_pipeline(checkout: str, vae=None):
    """Upstream's NOVAPipeline around the tiny seeded video transformer and text encoder (and `vae`, by default an
    unused 2D one); returns the pipeline and its tokenizer and text encoder."""
    sys.path.insert(0, checkout)
    from diffusers import FlowMatchEulerDiscreteScheduler
    from transformers import PhiConfig

    from diffnext.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffnext.models.text_encoders.phi import PhiEncoderModel
    from diffnext.pipelines.nova.pipeline_nova import NOVAPipeline

    tn = tiny_transformer_module()

    torch.manual_seed(0)
    tokenizer, vocab_size = make_tokenizer(Path(tempfile.mkdtemp()) / "tokenizer")
    text_encoder = seeded(PhiEncoderModel(PhiConfig(vocab_size=vocab_size, **PHI)), SEEDS["text_encoder"])
    transformer = seeded(tn.NOVATransformer3DModel(**VIDEO_TRANSFORMER), SEED)
    vae = vae or AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[32],
                               down_block_types=["DownEncoderBlock2D"], up_block_types=["UpDecoderBlock2D"])
    pipe = NOVAPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
                        text_encoder=text_encoder, tokenizer=tokenizer)
    return pipe, tokenizer, text_encoder


def main(checkout: str) -> None:
    pipe, tokenizer, text_encoder = tiny_pipeline(checkout)
    transformer = pipe.transformer

    calls: list = []
    original = transformer.video_encoder.forward

    def wrapped(x, c=None, *args, **kwargs):
        before = (x.detach().clone(), None if c is None else c.detach().clone())
        result = original(x, c, *args, **kwargs)
        calls.append((before, result.detach().clone()))
        return result
    transformer.video_encoder.forward = wrapped

    out: dict[str, np.ndarray] = {}
    for i, prompt in enumerate(PROMPTS):
        with torch.no_grad():
            ids = tokenizer(prompt, max_length=12, truncation=True).input_ids
            out[f"text_states_{i}"] = text_encoder(torch.as_tensor([ids])).last_hidden_state[0].numpy()
        calls.clear()
        gen = torch.Generator().manual_seed(i)
        latents = pipe(prompt, generator=gen, output_type="latent", disable_progress_bar=True, **SAMPLE).frames
        out[f"latents_{i}"] = latents.numpy()  # (1, 4, 3, 8, 8)
        assert len(calls) == SAMPLE["max_latent_length"]
        out[f"context_{i}"] = calls[0][0][1].numpy()  # (2, 12 + 2, 64): text, flow, fps; prompt then null
        for t, ((x, c), y) in enumerate(calls):
            assert (c is None) == (t > 0)
            out[f"temporal_in_{i}_{t}"], out[f"temporal_out_{i}_{t}"] = x.numpy(), y.numpy()
    from diffnext.models.autoencoders.autoencoder_kl_opensora import AutoencoderKLOpenSora

    vae3d = seeded(AutoencoderKLOpenSora(**VAE3D), VAE_SEED)
    latents = torch.randn(1, 4, 9, 2, 2, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():  # upstream's NOVAPipeline: decode_latents (vae_batch_size 1), then postprocess
        video = pipe.image_processor.decode_latents(vae3d, latents.clone(), 1)
    out["vae_latents"], out["vae_decoded"] = latents.numpy(), video.numpy()  # (1, 3, 33, 16, 16)
    out["vae_frames"] = pipe.image_processor.postprocess(video, "np")  # uint8 (1, 33, 16, 16, 3)
    save_golden(OUT, UPSTREAM, out)
    for k, v in sorted(out.items()):
        print(k, v.shape)


if __name__ == "__main__":
    main(sys.argv[1])
