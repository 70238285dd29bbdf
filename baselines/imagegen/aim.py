"""AiM (Li et al. 2024, "Scalable Autoregressive Image Generation with Mamba"), the project's own code.

As released in hp-l33/AiM @ 0a91c60 (`models/aim.py`, `models/stage2/{mixer_seq_simple,block,generation}.py`,
MIT) on mamba_ssm 2.2.2's Mamba-2 mixer (`baselines.imagegen.mamba2`). Names follow upstream's state dict below
its `mamba.` prefix (`backbone.layers.{i}.mixer.in_proj.weight`, ...). The network, per image of class c:

- input: the class embedding (a 1001-row table, the last row the "no class" of guidance), then the VQ tokens'
  embeddings plus a learned absolute position embedding (257 rows); the output head is tied to the token table;
- n_layer blocks, each: residual += h; h = gate * Mamba2(modulate(RMSNorm(residual), shift, scale)), with
  (shift, scale, gate) from the class embedding: per block `adaLN_modulation` (AiM-B), or adaLN-group (AiM-L/XL:
  one shared linear `adaln_group` giving `num_groups` sets, block i using set i mod num_groups, plus a learned
  per-block `scale_shift_table`);
- RMSNorm(residual + h) (`norm_f`), then a final adaLN (`final_layer`: RMSNorm, shift and scale from the class),
  then the logits over the 16384 codes.

Upstream's two position conventions are kept as they are: the teacher-forced forward (its training path,
`AiM.forward`) puts token j at position j, while its cached sampler (`generation.decode`) feeds token j at
position j + 1 (the step's `seqlen_offset`, which counts the class token). `forward(..., position_offset=1)` is the
full-sequence form of what the sampler computes, and `step` is one token of it.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
import torch.nn as nn

from baselines.imagegen.mamba2 import Mamba2, Mamba2Config
from baselines.imagegen.sampling import SamplerConfig, guided_logits, sample_tokens


@dataclasses.dataclass(frozen=True)
class AiMConfig:
    """Upstream `MambaConfig` (models/stage2/config_mamba.py) plus the Mamba2 defaults it keeps."""

    d_model: int = 768
    n_layer: int = 24
    vocab_size: int = 16384
    num_classes: int = 1000
    num_tokens: int = 256
    adaln_group: bool = False
    num_groups: int = 1
    d_state: int = 128
    headdim: int = 64
    chunk_size: int = 256  # the plain scan's chunk length (mamba_ssm's default); any value gives the same result
    eps: float = 1e-5

    @property
    def mixer(self) -> Mamba2Config:
        return Mamba2Config(self.d_model, d_state=self.d_state, headdim=self.headdim, chunk_size=self.chunk_size,
                            eps=self.eps)

    @property
    def grid_size(self) -> int:
        return int(round(self.num_tokens ** 0.5))


#: upstream `AiM_models` (models/aim.py); README: 148M / 350M / 763M parameters (without the VQ tokenizer).
AIM_CONFIGS = {
    "AiM-B": AiMConfig(d_model=768, n_layer=24),
    "AiM-L": AiMConfig(d_model=1024, n_layer=48, adaln_group=True, num_groups=4),
    "AiM-XL": AiMConfig(d_model=1536, n_layer=48, adaln_group=True, num_groups=4),
}


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def adaln(dim: int, factor: int) -> nn.Sequential:
    return nn.Sequential(nn.SiLU(), nn.Linear(dim, factor * dim))


class Block(nn.Module):
    def __init__(self, c: AiMConfig):
        super().__init__()
        self.norm = nn.RMSNorm(c.d_model, eps=c.eps)
        self.mixer = Mamba2(c.mixer)
        if c.adaln_group:
            self.scale_shift_table = nn.Parameter(torch.zeros(1, 3, c.d_model))
        else:
            self.adaLN_modulation = adaln(c.d_model, 3)

    def modulation(self, ada: torch.Tensor) -> list[torch.Tensor]:
        """(shift, scale, gate), each (B, d): from this block's linear (ada = class embedding) or the group's set
        (ada = (B, 3, d)) plus the block's table."""
        if hasattr(self, "scale_shift_table"):
            return list((self.scale_shift_table + ada).unbind(1))
        return list(self.adaLN_modulation(ada).chunk(3, dim=1))


class Backbone(nn.Module):
    """Upstream `MixerModel`: names `embeddings`, `cls_embed`, `adaln_group`, `layers`, `norm_f`, `final_layer`."""

    def __init__(self, c: AiMConfig):
        super().__init__()
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(c.vocab_size, c.d_model)
        self.embeddings.position_embeddings = nn.Embedding(c.num_tokens + 1, c.d_model)
        self.cls_embed = nn.Module()
        self.cls_embed.embedding_table = nn.Embedding(c.num_classes + 1, c.d_model)
        if c.adaln_group:
            self.adaln_group = adaln(c.d_model, 3 * c.num_groups)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.norm_f = nn.RMSNorm(c.d_model, eps=c.eps)
        self.final_layer = nn.Module()
        self.final_layer.norm_final = nn.RMSNorm(c.d_model, eps=c.eps)
        self.final_layer.adaLN_modulation = adaln(c.d_model, 2)


class AiM(nn.Module):
    """Upstream `MambaLMHeadModel` (AiM's second stage): `backbone` + `lm_head` tied to the token embeddings."""

    def __init__(self, config: AiMConfig):
        super().__init__()
        self.config = config
        self.backbone = Backbone(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.backbone.embeddings.word_embeddings.weight

    def conditioning(self, labels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Class embeddings (B, d) and each block's adaLN input."""
        c, bb = self.config, self.backbone
        cond = bb.cls_embed.embedding_table(labels)
        if c.adaln_group:
            sets = bb.adaln_group(cond).view(len(labels), c.num_groups * 3, c.d_model).chunk(c.num_groups, dim=1)
            return cond, [sets[i % c.num_groups] for i in range(c.n_layer)]
        return cond, [cond] * c.n_layer

    def token_inputs(self, tokens: torch.Tensor, first_position: int) -> torch.Tensor:
        emb = self.backbone.embeddings
        positions = torch.arange(first_position, first_position + tokens.shape[1], device=tokens.device)
        return emb.word_embeddings(tokens) + emb.position_embeddings(positions)

    def head(self, h: torch.Tensor, residual: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        final = self.backbone.final_layer
        h = self.backbone.norm_f(residual + h)
        shift, scale = final.adaLN_modulation(cond).chunk(2, dim=1)
        return self.lm_head(modulate(final.norm_final(h), shift, scale)).float()

    def forward(self, labels: torch.Tensor, tokens: torch.Tensor, position_offset: int = 0,
                scan: str = "plain") -> torch.Tensor:
        """Logits (B, 1 + L, V) after the class token and tokens (B, L); token j at position j + position_offset."""
        cond, ada = self.conditioning(labels)
        h = torch.cat([cond.unsqueeze(1), self.token_inputs(tokens, position_offset)], dim=1)
        residual = torch.zeros_like(h)
        for block, a in zip(self.backbone.layers, ada):
            residual = residual + h
            shift, scale, gate = block.modulation(a)
            h = gate.unsqueeze(1) * block.mixer(modulate(block.norm(residual), shift, scale), scan)
        return self.head(h, residual, cond)

    def training_logits(self, labels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Upstream `AiM.forward` (teacher forcing, no label dropout): logits (B, N, V) predicting tokens (B, N)."""
        return self.forward(labels, tokens[:, :-1])

    def new_cache(self, batch: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [block.mixer.new_cache(batch, device) for block in self.backbone.layers]

    def step(self, x: torch.Tensor, cond: torch.Tensor, ada: Sequence[torch.Tensor], cache, scan: str = "plain"):
        """One input (B, d) (the class embedding first, then token + position embeddings) -> logits (B, V)."""
        h, residual = x, torch.zeros_like(x)
        for block, a, layer_cache in zip(self.backbone.layers, ada, cache):
            residual = residual + h
            shift, scale, gate = block.modulation(a)
            normed = block.norm(residual)
            h = gate * block.mixer.step(normed * (1 + scale) + shift, layer_cache, scan)
        return self.head(h.unsqueeze(1), residual.unsqueeze(1), cond)[:, 0]


@torch.no_grad()
def generate_aim(model: AiM, labels: torch.Tensor, generators: Sequence[torch.Generator], sampler: SamplerConfig,
                 scan: str = "plain", teacher: torch.Tensor | None = None, record: list | None = None) -> torch.Tensor:
    """Tokens (B, num_tokens) as upstream's `AiM.generate`: conditional and "no class" halves decoded together
    from a cached state, guided logits uncond + cfg (cond - uncond) at every step, top-k then top-p; sample b
    draws only from generators[b]. `teacher` (B, N) feeds given tokens instead of sampling (upstream
    `decode(teacher_outputs=...)`); `record` receives the guided logits (B, V) of every step."""
    c = model.config
    b = len(labels)
    both = torch.cat([labels, torch.full_like(labels, c.num_classes)])
    cond, ada = model.conditioning(both)
    cache = model.new_cache(2 * b, labels.device)
    x, out = cond, []
    for i in range(c.num_tokens):
        logits = guided_logits(model.step(x, cond, ada, cache, scan), b, sampler.cfg_scale, True)
        if record is not None:
            record.append(logits)
        token = teacher[:, i] if teacher is not None else sample_tokens(logits[:, None], generators, sampler)[:, 0]
        out.append(token)
        x = model.token_inputs(token.repeat(2)[:, None], i + 1)[:, 0]
    return torch.stack(out, dim=1)
