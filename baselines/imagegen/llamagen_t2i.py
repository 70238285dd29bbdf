"""LlamaGen's text-conditional GPT (Sun et al. 2024, "t2i" model type), the project's own implementation.

Same Llama decoder as the class-conditional model (`baselines.imagegen.llamagen_gpt`, reused by import); what
differs, as released in FoundationVision/LlamaGen `autoregressive/models/gpt.py` (model_type 't2i', MIT):

- the condition prefix is `cls_token_num` = 120 caption tokens: FLAN-T5-XL encoder states (2048-d) projected
  by `cls_embedding.cap_proj` (Linear 2048 -> dim, tanh-GELU, Linear dim -> dim, no biases);
- the unconditional input for classifier-free guidance is the learned `cls_embedding.uncond_embedding`
  (120 x 2048, a persistent buffer of the released checkpoints), projected the same way;
- the caption layout of `sample_t2i.py`: T5 states padded to 120 tokens on the right are moved to the
  *left* (valid tokens last), padded rows zeroed, and the attention mask hides padded caption columns from
  every query except the padded row itself (upstream sets the mask's diagonal). The unconditional half of
  the guided batch uses the same mask as its conditional half, as upstream's `generate` does;
- the caption prefix is rotated by a table of zeros (as the class prefix of c2i), so its queries and keys
  are zero.

Sampling follows upstream's `generate`: guided logits uncond + s (cond - uncond), the first token from the
prefill, then one token per step with a KV cache; `cfg_interval` k >= 0 guides the first k + 2 tokens
(the prefill token plus decode steps 0..k), -1 guides all.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.imagegen.llamagen_gpt import GPTConfig, KVCache, LlamaGenGPT
from baselines.imagegen.sampling import SamplerConfig, guided_logits, sample_tokens

#: FLAN-T5-XL's hidden size (`caption_dim` in upstream `ModelArgs`) and the caption length of the released
#: models (`--cls-token-num 120`, `--t5-feature-max-len 120`; `CaptionEmbedder(token_num=120)`).
CAPTION_DIM = 2048
CAPTION_TOKENS = 120


class CaptionMLP(nn.Module):
    """Upstream's `MLP`: fc1 -> GELU(tanh) -> fc2, no biases."""

    def __init__(self, in_features: int, hidden: int, out_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class CaptionEmbedder(nn.Module):
    """`cls_embedding` of a t2i model: the caption projection and the learned unconditional caption."""

    def __init__(self, caption_dim: int, dim: int, token_num: int = CAPTION_TOKENS):
        super().__init__()
        self.cap_proj = CaptionMLP(caption_dim, dim, dim)
        self.register_buffer("uncond_embedding", torch.zeros(token_num, caption_dim))


class LlamaGenT2I(LlamaGenGPT):
    """The t2i network: `LlamaGenGPT` with the caption embedder in place of the class table."""

    def __init__(self, config: GPTConfig, caption_dim: int = CAPTION_DIM):
        if config.cls_token_num > CAPTION_TOKENS:
            raise ValueError(f"cls_token_num {config.cls_token_num} exceeds the {CAPTION_TOKENS} caption tokens")
        super().__init__(config)
        self.caption_dim = caption_dim
        self.cls_embedding = CaptionEmbedder(caption_dim, config.dim)

    def embed_caption(self, caption: torch.Tensor) -> torch.Tensor:
        """(B, cls_token_num, D) prefix from laid-out caption states (B, T, caption_dim)."""
        return self.cls_embedding.cap_proj(caption)[:, : self.config.cls_token_num]

    def uncond_caption(self, like: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(like) + self.cls_embedding.uncond_embedding.to(like.dtype)


def left_pad_layout(states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`sample_t2i.py`'s caption layout: right-padded (B, T, C) states and (B, T) mask -> the valid tokens
    moved to the end, padded rows zeroed, and the flipped mask."""
    new_mask = torch.flip(mask, dims=[-1])
    rows = []
    for state, m in zip(states, mask):
        valid = int(m.sum().item())
        rows.append(torch.cat([state[valid:], state[:valid]]))
    laid_out = torch.stack(rows) * new_mask[:, :, None].to(states.dtype)
    return laid_out, new_mask


def attention_mask(emb_mask: torch.Tensor, total: int) -> torch.Tensor:
    """(B, 1, total, total) boolean mask: causal, caption columns hidden where `emb_mask` is 0, diagonal open."""
    b, t = emb_mask.shape
    mask = torch.ones(total, total, dtype=torch.bool, device=emb_mask.device).tril().repeat(b, 1, 1)
    mask[:, :, :t] &= emb_mask.bool()[:, None, :]
    mask |= torch.eye(total, dtype=torch.bool, device=emb_mask.device)
    return mask[:, None]


def teacher_forced_logits(model: LlamaGenT2I, caption: torch.Tensor, emb_mask: torch.Tensor,
                          tokens: torch.Tensor) -> torch.Tensor:
    """Logits (B, block_size, V) for laid-out captions and given image tokens: position t predicts token t."""
    t = model.config.cls_token_num
    h = torch.cat([model.embed_caption(caption), model.tok_embeddings(tokens[:, :-1])], dim=1)
    s = h.shape[1]
    logits = model(h, torch.arange(s, device=h.device), mask=attention_mask(emb_mask[:, :t], s))
    return logits[:, t - 1:]


@torch.no_grad()
def generate_t2i(model: LlamaGenT2I, caption: torch.Tensor, emb_mask: torch.Tensor,
                 generators: Sequence[torch.Generator], sampler: SamplerConfig,
                 forced: torch.Tensor | None = None, record: list | None = None,
                 additions: Callable[[int, int], dict[int, torch.Tensor]] | None = None) -> torch.Tensor:
    """Raster-order token ids (B, block_size) for laid-out captions (B, 120, C) and their mask (B, 120).

    `forced` feeds given tokens instead of sampled ones; `record` collects each step's guided logits;
    `additions(step, fed)` gives the per-layer additions (`LlamaGenGPT.forward`) for decoding step `step`
    (0 = the prefill) over the `fed` positions given to the network at that step (ControlAR).
    """
    c = model.config
    batch = caption.shape[0]
    use_cfg = sampler.cfg_scale > 1.0
    cond = torch.cat([caption, model.uncond_caption(caption)]) if use_cfg else caption
    masks = torch.cat([emb_mask, emb_mask]) if use_cfg else emb_mask
    t = c.cls_token_num
    full = attention_mask(masks[:, :t], t + c.block_size)
    cache = KVCache(c.n_layer)
    h = model.embed_caption(cond)
    position = torch.arange(t, device=caption.device)
    tokens = []
    for step in range(c.block_size):
        adds = additions(step, h.shape[1]) if additions is not None else None
        logits = model(h, position, cache, mask=full[:, :, position[0]:position[-1] + 1, :position[-1] + 1],
                       additions=adds)[:, -1:]
        # upstream: the prefill token is always guided; decode step i = step - 1 is guided while i <= cfg_interval
        guide = use_cfg and (sampler.cfg_interval < 0 or step - 1 <= sampler.cfg_interval)
        logits = guided_logits(logits, batch, sampler.cfg_scale if guide else 1.0, use_cfg)
        if record is not None:
            record.append(logits)
        nxt = forced[:, step:step + 1] if forced is not None else sample_tokens(logits, generators, sampler)
        tokens.append(nxt)
        h = model.tok_embeddings(torch.cat([nxt, nxt]) if use_cfg else nxt)
        position = torch.tensor([t + step], device=caption.device)
    return torch.cat(tokens, dim=1)


def t2i_config(gpt: GPTConfig, image_size: int) -> GPTConfig:
    """A released GPT size as a t2i model at `image_size` px (VQ downsample 16)."""
    return replace(gpt, block_size=(image_size // 16) ** 2, cls_token_num=CAPTION_TOKENS)
