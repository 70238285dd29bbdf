"""Helpers shared by the image-generator tests."""

from __future__ import annotations

import torch


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere: the released architectures zero-initialise some layers (LlamaGen's output
    layer, RAR's adaLN), which would let a wrong wiring pass unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()
