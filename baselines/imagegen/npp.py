"""Next Patch Prediction (NPP, Pang et al. 2024): LlamaGen's GPT trained on patch-aggregated tokens.

As released in PKU-YuanGroup/Next-Patch-Prediction (a LlamaGen fork; `autoregressive/models/gpt.py`,
`utils/patchify.py`, `autoregressive/train/train_c2i.py`). NPP adds no parameter and changes no sampler: a
released NPP checkpoint is a LlamaGen GPT (same names and shapes) sampled token by token exactly as LlamaGen
(`baselines.imagegen.llamagen_gpt.generate_raster`). What NPP changes is training:

- the patch schedule (`patch_schedule`): with `--patch-level 2 --epoch-rate 0.5` the first half of the epochs
  see 2x2 patches (4 tokens each), the rest single tokens; level 3 adds 4x4 patches, level 4 8x8;
- the aggregation (`aggregate_patches`): the input embeddings of the p x p tokens of a patch are averaged
  (upstream unfolds the 2D token grid with kernel = stride = p and takes the mean), giving (side/p)^2 patch
  embeddings with 2D rotary positions over the coarser grid;
- the objective (`npp_loss`): each patch position predicts every token of the next patch with one set of
  logits (cross entropy averaged over the p^2 tokens of each patch).

`patch_logits` is the teacher-forced patch-level forward pass (upstream's `forward(..., p, patch_size,
freqs_cis)` in training mode, dropout off), so the training path can be checked against upstream on the same
weights (tests/test_imagegen_npp.py); it also serves anyone fine-tuning a released checkpoint the NPP way.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from baselines.imagegen.llamagen_gpt import LlamaGenGPT, rope_table_2d

#: Patch sizes (tokens per patch) per `--patch-level`, coarsest first (upstream train_c2i.py).
PATCH_SIZES = {1: (1,), 2: (4, 1), 3: (16, 4, 1), 4: (64, 16, 4, 1)}


def patch_schedule(epochs: int, patch_level: int = 2, epoch_rate: float = 0.5) -> list[tuple[int, int]]:
    """(tokens per patch, first epoch that no longer uses it) for each training stage, coarsest first.

    Upstream: stage i of `patch_level` ends at epoch int(epochs * epoch_rate ** (patch_level - 1 - i)), so
    with 300 epochs and level 2 the first 150 epochs train on 2x2 patches.

    >>> patch_schedule(300, 3)
    [(16, 75), (4, 150), (1, 300)]
    """
    if patch_level not in PATCH_SIZES:
        raise ValueError(f"patch_level must be one of {sorted(PATCH_SIZES)} (upstream asserts <= 4), not {patch_level}")
    if patch_level == 1:
        return [(1, int(epochs))]
    ends = [int(epochs * epoch_rate ** i) for i in range(patch_level)][::-1]
    return list(zip(PATCH_SIZES[patch_level], ends))


def patch_size_at(epoch: int, schedule: list[tuple[int, int]]) -> int:
    """Tokens per patch in `epoch` (upstream `get_patch_size`)."""
    for size, end in schedule:
        if epoch < end:
            return size
    raise ValueError(f"epoch {epoch} is past the schedule's last epoch {schedule[-1][1]}")


def _blocks(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, N, C) raster grid -> (B, N/p^2, p^2, C): patches in raster order, tokens in raster order inside."""
    b, n, c = x.shape
    side = int(round(n ** 0.5))
    if side * side != n or side % p:
        raise ValueError(f"{n} tokens do not form a square grid divisible into {p}x{p} patches")
    x = x.reshape(b, side // p, p, side // p, p, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (side // p) ** 2, p * p, c)


def aggregate_patches(embeddings: torch.Tensor, p: int) -> torch.Tensor:
    """Mean of the embeddings (B, N, C) of each p x p patch of the token grid -> (B, N/p^2, C)."""
    return embeddings if p == 1 else _blocks(embeddings, p).mean(dim=2)


def patch_targets(tokens: torch.Tensor, p: int) -> torch.Tensor:
    """Token ids (B, N) grouped by patch -> (B, N/p^2, p^2) (upstream `target_patchify`)."""
    return _blocks(tokens.unsqueeze(-1), p).squeeze(-1)


def patch_logits(model: LlamaGenGPT, labels: torch.Tensor, tokens: torch.Tensor, p: int) -> torch.Tensor:
    """Teacher-forced patch-level logits (B, N/p^2, V): position j (class prefix, then patches 0..j-1) predicts
    patch j. p = 1 is LlamaGen's token-level `training_logits`."""
    c = model.config
    side = c.grid_size
    if side % p:
        raise ValueError(f"a {side}x{side} token grid cannot be split into {p}x{p} patches")
    patches = aggregate_patches(model.tok_embeddings(tokens), p)[:, :-1]
    h = torch.cat([model.embed_class(labels), patches], dim=1)
    rope = rope_table_2d(dataclasses.replace(c, block_size=(side // p) ** 2)).to(h.device)[: h.shape[1]]
    mask = torch.ones(h.shape[1], h.shape[1], dtype=torch.bool, device=h.device).tril()
    for i, layer in enumerate(model.layers):
        h = layer(h, rope, mask, None, i)
    return model.output(model.norm(h)).float()[:, c.cls_token_num - 1:]


def npp_loss(logits: torch.Tensor, tokens: torch.Tensor, p: int) -> torch.Tensor:
    """Cross entropy of each patch's logits against every token of that patch, averaged over all tokens."""
    targets = patch_targets(tokens, p)
    expanded = logits.unsqueeze(2).expand(-1, -1, p * p, -1)
    return F.cross_entropy(expanded.reshape(-1, logits.shape[-1]), targets.reshape(-1))
