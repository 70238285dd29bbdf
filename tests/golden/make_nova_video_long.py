"""Golden outputs of upstream NOVA's text-to-video rollout past its temporal base (tests/golden/nova_video_long/), for
tests/test_video_nova_long.py.

Upstream: baaivision/NOVA @ 2cd254afdedae8670ccb492c28c53caa08f7b5a0 (2025-09-06), package `diffnext`.
Usage (the scratch venv of tests/golden/make_nova.py: transformers 4.46.3, diffusers 0.32.2):
    /tmp/venv-nova/bin/python tests/golden/make_nova_video_long.py /path/to/NOVA-checkout

Upstream's only mechanism for a longer video is a longer rollout: `NOVAPipeline.__call__(max_latent_length=T)` ->
`Transformer3DModel.generate_video`, which keeps every earlier latent frame in the video encoder's key/value cache and
spreads the time embedding over the model's temporal base (`VideoPosEmbed.get_time_embed(T)`: positions
arange(T) * base_t / T). It runs here as it is (CPU, float32, `output_type="latent"`) on make_nova_video.py's tiny
transformer (temporal base 4 latent frames, seed 21) for 13 latent frames (more than three times the base), batch of
one, generator seeded 0 and 1, 4 set steps, 3 flow steps, guidance 5, motion flow 5. The 13 latents are then decoded
by upstream's `AutoencoderKLOpenSora` (make_nova_video.py's tiny VAE3D, seed 22) through the pipeline's
`decode_latents` (temporal tiling: 3 windows of 5 latents overlapping by 1 -> 49 frames of 64 x 64) and `postprocess`.
Recorded: the Phi states of each prompt (the text path is compared by the text-to-image golden test), the 13-frame
latents, and the uint8 frames of prompt 0's decoded video (the float video is left out to keep the file small).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_weights import save_golden  # noqa: E402
from make_nova import PROMPTS, UPSTREAM, seeded  # noqa: E402
from make_nova_video import VAE3D, VAE_SEED, tiny_pipeline  # noqa: E402

OUT = Path(__file__).resolve().parent / "nova_video_long"
SAMPLE = dict(max_latent_length=13, num_inference_steps=4, num_diffusion_steps=3, guidance_scale=5.0, motion_flow=5)


def main(checkout: str) -> None:
    sys.path.insert(0, checkout)
    from diffnext.models.autoencoders.autoencoder_kl_opensora import AutoencoderKLOpenSora

    vae3d = seeded(AutoencoderKLOpenSora(**VAE3D), VAE_SEED)
    pipe, tokenizer, text_encoder = tiny_pipeline(checkout, vae3d)
    out: dict[str, np.ndarray] = {}
    for i, prompt in enumerate(PROMPTS):
        with torch.no_grad():
            ids = tokenizer(prompt, max_length=12, truncation=True).input_ids
            out[f"text_states_{i}"] = text_encoder(torch.as_tensor([ids])).last_hidden_state[0].numpy()
        gen = torch.Generator().manual_seed(i)
        latents = pipe(prompt, generator=gen, output_type="latent", disable_progress_bar=True, **SAMPLE).frames
        out[f"latents_{i}"] = latents.numpy()  # (1, 4, 13, 8, 8)
    with torch.no_grad():  # upstream's NOVAPipeline: decode_latents (vae_batch_size 1), then postprocess
        video = pipe.image_processor.decode_latents(vae3d, torch.from_numpy(out["latents_0"]).clone(), 1)
    out["frames_0"] = pipe.image_processor.postprocess(video, "np")  # uint8 (1, 49, 64, 64, 3)
    save_golden(OUT, UPSTREAM, out)
    for k, v in sorted(out.items()):
        print(k, v.shape, v.dtype)


if __name__ == "__main__":
    main(sys.argv[1])
