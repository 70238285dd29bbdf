"""Orthus (zhijie-group/Orthus, Kou et al. 2024): a Chameleon-7B backbone over discrete text tokens and continuous
image features, with a per-token diffusion head for the image features. The project's own code for what upstream
adds to Chameleon; the Chameleon transformer itself is delegated to transformers' `ChameleonModel`.

Upstream (zhijie-group/Orthus@609d968, `models/modeling_orthus.py`, `models/diff_mlp.py`, and the generation loop in
its vendored transformers fork, `generation/utils.py` `_sample` with `generate_wo_quant=True`):
- **backbone**: Chameleon's decoder (`model.embed_tokens`, `model.layers.*`, `model.norm`, qk-LayerNorm, RoPE),
  upstream's copy of transformers' Chameleon code. Delegated to transformers' `ChameleonModel` (same parameter
  names; the golden test runs upstream's own class on the same weights and compares hidden states and logits);
- **soft VQ embedding** (`OrthusModel.forward`): a continuous image feature x (256-d, the VQ encoder's output before
  quantisation) enters the transformer as softmax(-||x - c_j||^2) @ E[4:8196], c_j the rows of the trained copy of the
  codebook `model.codebook_in` and E Chameleon's token embedding (rows 4..8195 are the 8192 image tokens), at the
  positions of the placeholder token `<image>` (id 8711);
- **diffusion head** (`mlp_head`, `diff_mlp.SimpleMLPAdaLN`): MAR's MLP with AdaLN (`baselines.imagegen.mar`, the
  same network with 256 outputs: v-prediction), conditioned on the backbone's last hidden state; sampled with
  diffusers' `DDIMScheduler` in upstream's configuration (scaled-linear betas 0.00085..0.012, v-prediction, zero-SNR
  rescale, trailing spacing, 100 steps), classifier-free guidance on the head's output (cond vs the unconditional
  prompt "Generate an image."), the latent scaled by 1/0.1 after sampling;
- **decoder**: Chameleon's VQGAN decoder applied to the continuous 32x32x256 features: `vqmodel.post_quant_conv`
  (transformers' ChameleonVQVAE has it) and `vqmodel.decoder`, the project's own code (transformers' Chameleon has
  no VQ decoder) with upstream's names: the taming decoder of `baselines.imagegen.rqvae`.

One deviation, stated: upstream samples the first token after the prompt under Chameleon's "image-only" logits
processors and switches to continuous mode when it is `<boi>`; here `<boi>` is appended to the prompt (the path
upstream takes whenever the model emits `<boi>`, as the released models do for a T2I prompt).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.imagegen.mar import SimpleMLPAdaLN
from baselines.imagegen.rqvae import RQDecoder, RQVAEConfig

LATENT_DIM = 256  # upstream hard-codes the image feature width (view(-1, 256), the head's in/out channels)
LATENT_SCALE = 0.1  # features are multiplied by 0.1 for the diffusion head (training) and divided after sampling
IMAGE_TOKENS = slice(4, 8196)  # E[4:8196]: the 8192 image-token rows of Chameleon's embedding, as upstream
BOI, IMAGE_PLACEHOLDER = 8197, 8711
UNCONDITIONAL_PROMPT = "Generate an image."
#: OrthusForConditionalGeneration's defaults: diffloss_w=1536, num_res_blocks=3.
HEAD_WIDTH, HEAD_DEPTH = 1536, 3
#: `OrthusForConditionalGeneration.sample_scheduler` (diffusers DDIMScheduler) and the 100 steps of its forward.
DDIM_CONFIG = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000,
                   clip_sample=False, prediction_type="v_prediction", set_alpha_to_one=True, steps_offset=1,
                   trained_betas=None, timestep_spacing="trailing", rescale_betas_zero_snr=True)


def chameleon_vq_decoder(vq: dict) -> nn.Module:
    """Chameleon's VQGAN decoder (upstream's `ChameleonVQVAEDecoder`: conv_in, mid.block_1/attn_1/block_2,
    up.{level}.block/attn/upsample, norm_out, conv_out; `UpsampleDeterministic` is nearest x2) is the taming decoder
    of `baselines.imagegen.rqvae.RQDecoder`, same names and computation, configured from the VQ config."""
    if vq.get("attn_type", "vanilla") != "vanilla" or vq.get("double_latent"):
        raise ValueError(f"vq_config attn_type={vq.get('attn_type')!r} / double_latent={vq.get('double_latent')!r}: "
                         "only Chameleon's released VQGAN (vanilla attention, single latent) is implemented")
    side = grid_side(vq)
    return RQDecoder(RQVAEConfig(z_channels=vq["latent_channels"], resolution=vq["resolution"],
                                 out_ch=vq["out_channels"], ch=vq["base_channels"],
                                 ch_mult=tuple(vq["channel_multiplier"]), num_res_blocks=vq["num_res_blocks"],
                                 attn_resolutions=tuple(vq.get("attn_resolutions") or ()),
                                 code_shape=(side, side, 1), latent_shape=(side, side, vq["embed_dim"])))


def grid_side(vq: dict) -> int:
    """Side of the latent grid: `quant_state_dims` = resolution // 2^(levels - 1) (32 for the released model)."""
    return vq["resolution"] // 2 ** (len(vq["channel_multiplier"]) - 1)


class Orthus(nn.Module):
    """`OrthusForConditionalGeneration` minus training: `model` (transformers' ChameleonModel, whose `vqmodel`
    holds the encoder half and the codebook), `codebook_in`, `lm_head`, `mlp_head` and the VQ pixel decoder.
    `split_state` maps the released checkpoint's names onto these modules."""

    def __init__(self, config, vq: dict | None = None, head_width: int = HEAD_WIDTH, head_depth: int = HEAD_DEPTH):
        """config: transformers' ChameleonConfig; vq: the `vq_config` of the released config.json as written
        (transformers' VQ config drops the decoder's fields, e.g. `out_channels`)."""
        super().__init__()
        from transformers import ChameleonModel  # delegated: Chameleon's transformer, same names as upstream's copy

        self.config = config
        self.model = ChameleonModel(config)
        vq = {"out_channels": 3, **config.vq_config.to_dict(), **(vq or {})}
        self.codebook_in = nn.Embedding(vq["num_embeddings"], vq["embed_dim"])
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.mlp_head = SimpleMLPAdaLN(LATENT_DIM, head_width, config.hidden_size, head_depth, out_channels=LATENT_DIM)
        self.pixel_decoder = chameleon_vq_decoder(vq)
        self.grid = grid_side(vq)

    @staticmethod
    def split_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Released names -> this module's: `model.codebook_in.*` -> `codebook_in.*`, the VQ decoder
        (`model.vqmodel.decoder.*`, absent from transformers' ChameleonVQVAE) -> `pixel_decoder.*`; the rest
        (transformers' ChameleonVQVAE keeps `post_quant_conv`) as is."""
        out = {}
        for key, value in state.items():
            if key.startswith("model.codebook_in."):
                key = key[len("model."):]
            elif key.startswith("model.vqmodel.decoder."):
                key = "pixel_decoder." + key[len("model.vqmodel.decoder."):]
            out[key] = value
        return out

    def soft_embeddings(self, latents: torch.Tensor) -> torch.Tensor:
        """Upstream's soft replacement of the VQ: (N, 256) features -> (N, hidden) input embeddings."""
        codebook = self.codebook_in.weight
        x = latents.reshape(-1, codebook.shape[1]).to(codebook.dtype)
        distances = (x.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1)
                     - torch.tensor(2, dtype=x.dtype, device=x.device) * torch.einsum("bd,dn->bn", x, codebook.t()))
        weights = F.softmax(-distances, dim=-1)
        table = self.model.embed_tokens.weight
        return weights.to(table.dtype) @ table[IMAGE_TOKENS]

    def backbone(self, inputs_embeds, attention_mask, position_ids, cache=None):
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                         cache=cache, use_cache=cache is not None)
        return out.last_hidden_state

    def embed(self, input_ids: torch.Tensor, image_latents: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with each `<image>` position replaced by the soft embedding of the next latent
        (image_latents: (B, n_image, 256), one row per placeholder in order)."""
        embeds = self.model.embed_tokens(input_ids)
        if image_latents is not None:
            mask = input_ids == IMAGE_PLACEHOLDER
            for row in range(input_ids.shape[0]):
                n = int(mask[row].sum())
                if n:
                    embeds[row, mask[row]] = self.soft_embeddings(image_latents[row, :n]).to(embeds.dtype)
        return embeds

    def head_sample(self, z: torch.Tensor, noise: torch.Tensor, scheduler, cfg_scale: float,
                    steps: int) -> torch.Tensor:
        """One image feature per request: z = (2B, hidden) [conditional rows; unconditional rows], noise (B, 256).
        Upstream's continuous-mode forward: DDIM on the head's v-prediction with guidance, result / 0.1."""
        scheduler.set_timesteps(steps)
        x = noise * scheduler.init_noise_sigma
        autocast = torch.autocast("cuda", dtype=torch.float16, enabled=z.is_cuda)  # upstream: torch.cuda.amp.autocast
        for t in scheduler.timesteps:
            x = scheduler.scale_model_input(x, t)
            with autocast:
                t_rows = torch.as_tensor([t], device=z.device).repeat(z.shape[0])
                rows = torch.cat([x, x]).to(z.device)
                if not z.is_cuda:  # no autocast off CUDA: feed the head its own dtype (float32 noise, bf16 head)
                    head = self.mlp_head.input_proj.weight.dtype
                    rows, z = rows.to(head), z.to(head)
                pred = self.mlp_head(rows, t_rows, z)
                cond, uncond = pred.chunk(2)
                pred = uncond + cfg_scale * (cond - uncond)
                x = scheduler.step(pred, t, x).prev_sample
        return x / LATENT_SCALE

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, grid^2, 256) generated features -> pixels in [-1, 1] (upstream's `decode_image_latents`:
        `vqmodel.post_quant_conv` then `vqmodel.decoder`)."""
        conv = self.model.vqmodel.post_quant_conv
        z = latents.reshape(latents.shape[0], self.grid, self.grid, -1).permute(0, 3, 1, 2).contiguous()
        return self.pixel_decoder(conv(z.to(conv.weight.dtype)))


@dataclass
class Prompts:
    """Left-padded token rows: [conditional prompts; unconditional prompts], each ending in `<boi>`."""

    ids: torch.Tensor
    mask: torch.Tensor


def layout(rows: Sequence[Sequence[int]], pad_id: int) -> Prompts:
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(rows), longest), dtype=torch.int64)
    for i, r in enumerate(rows):
        ids[i, longest - len(r):] = torch.as_tensor(list(r))
        mask[i, longest - len(r):] = 1
    return Prompts(ids, mask)


def prompt_rows(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Upstream's processor: the text plus the tokenizer's sep token (`<reserved08706>`, Chameleon's chat
    convention), tokenised with the tokenizer's own BOS; then `<boi>`. Unconditional rows follow."""
    texts = list(prompts) + [UNCONDITIONAL_PROMPT] * len(prompts)
    return [list(tokenizer(t + tokenizer.sep_token).input_ids) + [BOI] for t in texts]


@torch.no_grad()
def generate_latents(model: Orthus, prompts: Prompts, noises, scheduler, cfg_scale: float = 5.0,
                     steps: int = 100, num_tokens: int | None = None) -> torch.Tensor:
    """Upstream's continuous-mode loop for B requests at once (2B rows). `noises(k)` gives the (B, 256) starting
    noise of token k (each request's from its own generator). Returns (B, num_tokens, 256)."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    num_tokens = num_tokens or model.grid ** 2
    ids, mask = prompts.ids.to(device), prompts.mask.to(device)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    cache = DynamicCache(config=model.config)
    hidden = model.backbone(model.embed(ids), mask, positions, cache)
    out = []
    for k in range(num_tokens):
        latent = model.head_sample(hidden[:, -1], noises(k).to(device), scheduler, cfg_scale, steps)
        out.append(latent)
        if k == num_tokens - 1:
            break
        step = model.soft_embeddings(latent).to(hidden.dtype)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        positions = positions[:, -1:] + 1
        hidden = model.backbone(torch.cat([step, step])[:, None], mask, positions, cache)
    return torch.stack(out, dim=1)


def to_uint8(pixels: torch.Tensor, preprocessor: dict) -> np.ndarray:
    """Upstream's `postprocess_pixel_values` (ChameleonImageProcessor.postprocess): x * std + mean, times
    1 / rescale_factor (0.0078 in Chameleon's config), clipped to [0, 255], truncated to uint8; NHWC. Computed in the
    pixels' own dtype, as upstream (bfloat16 in its script: the rounding to bfloat16 before truncation is kept)."""
    def channel(values):
        return torch.as_tensor(values, dtype=pixels.dtype, device=pixels.device).view(1, -1, 1, 1)

    x = pixels * channel(preprocessor.get("image_std", [1.0, 1.0, 1.0])) + channel(
        preprocessor.get("image_mean", [1.0, 1.0, 1.0]))
    x = x * (1.0 / preprocessor.get("rescale_factor", 0.0078))
    return torch.clip(x, 0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def read_preprocessor(path: Path) -> dict:
    return json.loads(Path(path).read_text())
