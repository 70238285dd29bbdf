"""ControlAR (Li et al., ICLR 2025): spatial control for LlamaGen's text-to-image GPT, the project's own implementation.

As released in hustvl/ControlAR `autoregressive/models/gpt_t2i.py`, `dinov2_adapter.py` and `generate.py`
(Apache-2.0), on top of the LlamaGen t2i network (`baselines.imagegen.llamagen_t2i`, reused by import):

- **control encoder** (`adapter`): a control image (B, 3, H, W) in [-1, 1] is resized to (H/16*14, W/16*14)
  (nearest for canny and segmentation maps, bicubic with align_corners for depth, HED and lineart) and encoded
  by a DINOv2 ViT (patch 14: one feature per 16x16 image token), the CLS token dropped. The DINOv2 network is
  transformers' `Dinov2Model` (delegated, as upstream builds it with `AutoModel.from_pretrained`), small
  (384-d) or base (768-d); the ControlAR checkpoints carry its fine-tuned weights under `adapter.model.`;
- `adapter_mlp` (ViT width -> dim -> dim), then `condition_mlp.cap_proj` (dim -> dim -> dim), then three
  `condition_layers` MLPs give three control sequences, one per injection point (MLPs as upstream's: no
  biases, tanh-GELU);
- **conditional decoding**: before layers 0, L/3 and 2L/3 (every `n_layer // 3`-th layer), the hidden state of
  the position that predicts image token j gets `control_strength` x control token j of that layer's sequence
  added (the last caption position predicts token 0);
- classifier-free guidance pairs the learned unconditional caption with an all-zero control (upstream zeroes
  the control after `adapter_mlp`; with the bias-free MLPs every control token is then zero).

Upstream sets `control_strength` only on the guided path: without guidance (cfg <= 1) it is 1 whatever is
asked; `generate_controlar` does the same.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.imagegen.llamagen_gpt import GPTConfig
from baselines.imagegen.llamagen_t2i import CAPTION_DIM, CaptionMLP, LlamaGenT2I, generate_t2i
from baselines.imagegen.sampling import SamplerConfig

#: Control types of the released models and how the control encoder resizes each (upstream `to_patch14`).
NEAREST_TYPES = ("canny", "seg")
SMOOTH_TYPES = ("depth", "hed", "lineart")
CONTROL_TYPES = NEAREST_TYPES + SMOOTH_TYPES
#: facebook/dinov2-small and facebook/dinov2-base as their config.json describe them (upstream loads them from
#: `autoregressive/models/dinov2-{small,base}`); the ControlAR checkpoints replace every weight.
DINOV2_SIZES = {"small": (384, 6), "base": (768, 12)}
#: Parameters of upstream's module that inference never reads (`condition_embeddings`, the control dropout's
#: `condition_mlp.uncond_embedding`): accepted in a checkpoint, not built.
UNUSED_PREFIXES = ("condition_embeddings.", "condition_mlp.uncond_embedding")


def dinov2_config(size: str = "small", **overrides):
    """transformers' `Dinov2Config` of facebook/dinov2-{size} (518 px positions, patch 14, LayerScale 1.0)."""
    from transformers import Dinov2Config  # delegated: transformers' DINOv2 is what upstream runs

    hidden, heads = DINOV2_SIZES[size]
    values = dict(hidden_size=hidden, num_hidden_layers=12, num_attention_heads=heads, mlp_ratio=4, patch_size=14,
                  image_size=518, layer_norm_eps=1e-6, layerscale_value=1.0, qkv_bias=True, hidden_act="gelu",
                  drop_path_rate=0.0, use_swiglu_ffn=False)
    values.update(overrides)
    return Dinov2Config(**values)


class ControlEncoder(nn.Module):
    """Upstream's `Dinov2_Adapter`: resize to patch-14 size, DINOv2, patch tokens (B, H/16 * W/16, width)."""

    def __init__(self, config, condition_type: str):
        super().__init__()
        from transformers import Dinov2Model

        if condition_type not in CONTROL_TYPES:
            raise ValueError(f"condition type {condition_type!r}: ControlAR has {', '.join(CONTROL_TYPES)}")
        self.condition_type = condition_type
        self.model = Dinov2Model(config)

    def to_patch14(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[2] // 16 * 14, x.shape[3] // 16 * 14)
        if self.condition_type in NEAREST_TYPES:
            return F.interpolate(x, size=size, mode="nearest")
        return F.interpolate(x, size=size, mode="bicubic", align_corners=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=self.to_patch14(x)).last_hidden_state[:, 1:]


class ConditionEmbedder(nn.Module):
    """Upstream's `ConditionEmbedder` at inference: only its projection `cap_proj` is used."""

    def __init__(self, dim: int):
        super().__init__()
        self.cap_proj = CaptionMLP(dim, dim, dim)


class ControlAR(LlamaGenT2I):
    """The LlamaGen t2i GPT with ControlAR's control encoder and injection MLPs (upstream parameter names)."""

    def __init__(self, config: GPTConfig, adapter_config, condition_type: str, caption_dim: int = CAPTION_DIM):
        if config.n_layer < 3 or (config.n_layer - 1) // (config.n_layer // 3) > 2:
            raise ValueError(f"n_layer {config.n_layer}: ControlAR injects at every n_layer // 3-th layer into three "
                             "control sequences, which needs n_layer to be a multiple of 3")
        super().__init__(config, caption_dim)
        self.condition_type = condition_type
        self.adapter = ControlEncoder(adapter_config, condition_type)
        self.adapter_mlp = CaptionMLP(adapter_config.hidden_size, config.dim, config.dim)
        self.condition_mlp = ConditionEmbedder(config.dim)
        self.condition_layers = nn.ModuleList(CaptionMLP(config.dim, config.dim, config.dim) for _ in range(3))

    @property
    def injection_layers(self) -> dict[int, int]:
        """{transformer layer: control sequence} (upstream: `i % (n_layer // 3) == 0`, sequence `i // (n_layer // 3)`)."""
        every = self.config.n_layer // 3
        return {i: i // every for i in range(0, self.config.n_layer, every)}

    def control_features(self, control: torch.Tensor) -> torch.Tensor:
        """(B, N, dim): `adapter_mlp(adapter(control))` for control images (B, 3, H, W) in [-1, 1]."""
        return self.adapter_mlp(self.adapter(control))

    def control_sequences(self, features: torch.Tensor) -> list[torch.Tensor]:
        """The three (B, N, dim) sequences injected into the decoder."""
        token = self.condition_mlp.cap_proj(features)
        return [layer(token) for layer in self.condition_layers]


@torch.no_grad()
def generate_controlar(model: ControlAR, caption: torch.Tensor, emb_mask: torch.Tensor, control: torch.Tensor,
                       generators: Sequence[torch.Generator], sampler: SamplerConfig, control_strength: float = 1.0,
                       forced: torch.Tensor | None = None, record: list | None = None) -> torch.Tensor:
    """Raster-order token ids (B, block_size) for laid-out captions, their mask and control images (B, 3, H, W).

    Decoding is LlamaGen's (`generate_t2i`: guidance, KV cache, caption mask); each step adds control token
    `step` (step 0 = the prefill, whose last position predicts token 0) before the injection layers.
    """
    use_cfg = sampler.cfg_scale > 1.0
    features = model.control_features(control)
    if features.shape[1] != model.config.block_size:
        raise ValueError(f"control images {tuple(control.shape[2:])} give {features.shape[1]} control tokens; the "
                         f"model decodes {model.config.block_size} image tokens (control side = 16 x token side)")
    if use_cfg:
        features = torch.cat([features, torch.zeros_like(features)])
    sequences = model.control_sequences(features)
    strength = control_strength if use_cfg else 1.0  # upstream's prefill without guidance ignores the strength
    layers = model.injection_layers

    def additions(step: int, fed: int) -> dict[int, torch.Tensor]:
        adds = {}
        for layer, k in layers.items():
            token = strength * sequences[k][:, step:step + 1]
            adds[layer] = F.pad(token, (0, 0, fed - 1, 0)) if fed > 1 else token  # prefill: the last position only
        return adds

    return generate_t2i(model, caption, emb_mask, generators, sampler, forced, record, additions)
