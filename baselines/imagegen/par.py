"""PAR region-parallel decoding (Wang et al. 2024, "Parallelized Autoregressive Visual Generation") on the
LlamaGen GPT, the project's own implementation of the algorithm described in the paper.

The token grid is cut into M x M regions (n = M^2). Tokens are reordered by *position inside the
region*, then region: group j holds the j-th token of every region. Decoding:

1. the first token of each region, one by one (n sequential steps: class prefix -> p0 -> p1 ...);
2. then one token per region per step: group j + 1 is predicted from group j in one forward pass
   (L/n - 1 parallel steps). Input k of a group is region k's token, so each region continues itself.

The step from the sequential to the parallel phase needs n inputs where only one new token exists, so
n - 1 learnable *transition tokens* stand in for regions 0..n-2 (region n-1's own first token is the
last input). Attention is causal through the sequential phase and block-causal afterwards: inputs of
one parallel group see each other and everything before. Every input carries the 2D rotary position of
the token it stands for, so the input for (region r, j) predicts (region r, j + 1).

Steps: n + L/n - 1 (16x16 tokens, 2x2 regions: 4 + 63 = 67 instead of 256; 24x24 tokens: 147 for
2x2 and 51 for 4x4 regions, the paper's step counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from baselines.imagegen.llamagen_gpt import GPTConfig, KVCache, LlamaGenGPT
from baselines.imagegen.sampling import SamplerConfig, guided_logits, guided_step, sample_tokens


def region_order(grid: int, regions_per_side: int) -> torch.Tensor:
    """order[i] = raster index of the i-th token in PAR order (group-major, region-minor)."""
    if grid % regions_per_side:
        raise ValueError(f"a {grid}x{grid} grid does not split into {regions_per_side}x{regions_per_side} regions")
    side = grid // regions_per_side
    order = []
    for j in range(side * side):
        for region in range(regions_per_side ** 2):
            row = (region // regions_per_side) * side + j // side
            col = (region % regions_per_side) * side + j % side
            order.append(row * grid + col)
    return torch.tensor(order)


def decode_schedule(num_tokens: int, regions: int) -> list[list[int]]:
    """Indices into the PAR-ordered sequence produced at each decoding step."""
    steps = [[i] for i in range(regions)]
    steps += [list(range(g * regions, (g + 1) * regions)) for g in range(1, num_tokens // regions)]
    return steps


def block_mask(cls_tokens: int, num_tokens: int, regions: int) -> torch.Tensor:
    """(S, S) boolean attention mask of the teacher-forced PAR input sequence (True = may attend).

    Inputs: the class prefix and p0..p(n-2) (causal), then blocks of n (transition block, groups 1..)
    that see themselves and everything before.
    """
    seq = cls_tokens - 1 + num_tokens
    start = cls_tokens - 1 + regions  # first input of the transition block
    last_visible = torch.arange(seq)
    last_visible[start:] = start + (torch.arange(seq - start) // regions + 1) * regions - 1
    return torch.arange(seq)[None, :] <= last_visible[:, None]


@dataclass(frozen=True)
class PARConfig:
    regions_per_side: int = 2

    @property
    def regions(self) -> int:
        return self.regions_per_side ** 2


class PARGPT(LlamaGenGPT):
    """A LlamaGen GPT trained in PAR order: the same parameters plus the n - 1 transition tokens."""

    def __init__(self, config: GPTConfig, par: PARConfig):
        super().__init__(config)
        self.par = par
        self.transition_tokens = nn.Parameter(torch.zeros(par.regions - 1, config.dim))
        self.register_buffer("order", region_order(config.grid_size, par.regions_per_side), persistent=False)

    def _rope_rows(self, raster: torch.Tensor) -> torch.Tensor:
        return raster + self.config.cls_token_num

    def input_layout(self) -> torch.Tensor:
        """Rotary rows of the teacher-forced inputs (after the class prefix)."""
        n, order = self.par.regions, self.order
        seq_rows = order[: n - 1]  # p0 .. p(n-2)
        transition = order[: n]  # transition tokens stand for regions 0..n-2, then p(n-1) itself
        groups = order[n: len(order) - n]  # groups 1 .. G-2 as inputs
        return self._rope_rows(torch.cat([seq_rows, transition, groups]))

    def training_logits(self, labels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, L, V) in PAR order: position i predicts token order[i]."""
        c, n = self.config, self.par.regions
        seq = tokens[:, self.order]
        b = tokens.shape[0]
        emb = self.tok_embeddings(seq)
        parts = [self.embed_class(labels), emb[:, : n - 1], self.transition_tokens.expand(b, -1, -1).to(emb.dtype),
                 emb[:, n - 1: n], emb[:, n: seq.shape[1] - n]]
        h = torch.cat(parts, dim=1)
        prefix = torch.arange(c.cls_token_num, device=h.device)
        rope_index = torch.cat([prefix, self.input_layout().to(h.device)])
        mask = block_mask(c.cls_token_num, seq.shape[1], n).to(h.device)
        return self.forward(h, rope_index, mask=mask)[:, c.cls_token_num - 1:]


@torch.no_grad()
def generate_par(model: PARGPT, labels: torch.Tensor, generators: Sequence[torch.Generator],
                 sampler: SamplerConfig, forced: torch.Tensor | None = None,
                 record: list | None = None) -> torch.Tensor:
    """Token ids (B, L) in raster layout, decoded in n + L/n - 1 steps with a KV cache.

    `forced` (B, L raster) feeds given tokens instead of sampled ones, and `record` collects each
    step's guided logits: together they check cached decoding against `training_logits`.
    """
    c, n = model.config, model.par.regions
    order = model.order.to(labels.device)
    batch = labels.shape[0]
    use_cfg = sampler.cfg_scale > 1.0
    cond = torch.cat([labels, torch.full_like(labels, model.null_class)]) if use_cfg else labels
    cache = KVCache(c.n_layer)
    seq = torch.zeros(batch, c.block_size, dtype=torch.long, device=labels.device)
    h = model.embed_class(cond)
    rows = torch.arange(c.cls_token_num, device=labels.device)
    mask = None
    for step, targets in enumerate(decode_schedule(c.block_size, n)):
        logits = model(h, rows, cache, mask)[:, -len(targets):]
        logits = guided_logits(logits, batch, sampler.cfg_scale if guided_step(sampler, step) else 1.0, use_cfg)
        if record is not None:
            record.append(logits)
        new = forced[:, order[targets]] if forced is not None else sample_tokens(logits, generators, sampler)
        seq[:, targets] = new
        if targets[-1] == c.block_size - 1:
            break
        if step < n - 1:  # still sequential: feed the token just drawn
            inputs, rows = model.tok_embeddings(new), model._rope_rows(order[targets])
        elif step == n - 1:  # transition: n - 1 learned tokens, then the last region's first token
            trans = model.transition_tokens.unsqueeze(0).expand(batch, -1, -1).to(new.device)
            inputs = torch.cat([trans, model.tok_embeddings(new)], dim=1)
            rows = model._rope_rows(order[:n])
        else:
            inputs, rows = model.tok_embeddings(new), model._rope_rows(order[targets])
        h = torch.cat([inputs, inputs]) if use_cfg else inputs
        mask = None  # a new block sees the cache and itself: causal within the block is wrong for groups
        if h.shape[1] > 1:
            mask = torch.ones(h.shape[1], cache.length + h.shape[1], dtype=torch.bool, device=h.device)
    return seq[:, torch.argsort(order.to(seq.device))]
