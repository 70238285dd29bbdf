"""The offline text-to-image toy: a tiny LlamaGen-t2i-architecture GPT over 16 x 16 palette cells of rendered shapes.

The network is `LlamaGenT2I` (the project's LlamaGen text-conditional GPT: caption prefix, 2D RoPE, raster decoding
with classifier-free guidance by `generate_t2i`) at a toy size; what stands in for FLAN-T5 is a learned word
embedding over the shapes grammar's vocabulary (`harness.datasets.shapes.VOCABULARY`), laid out as LlamaGen lays out
T5 states (padded on the left, padded columns masked), and the learned unconditional caption is a parameter of
`cls_token_num` rows. The tokenizer stands in for LlamaGen's VQ: each 2x2 patch of palette cells (0 white, 1..4 red,
green, blue, yellow) is one of 61 codes (all white, or one colour on a non-empty subset of the 4 cells; a patch
with two colours keeps its majority colour), so a 16 x 16-cell scene is 8 x 8 = 64 tokens; decoding is the code's
patch, the palette lookup and a 2x nearest upscale to 32 px.

Trained by `train_shapes_t2i.py` in this folder on scenes rendered from the grammar; weights bundled in
`weights/shapes_t2i.safetensors`. The method `shapes-ar-t2i` answers the `shapes-t2i` task (not GenEval).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from baselines.imagegen.checkpoints import load_into, read_state_dict
from baselines.imagegen.llamagen_gpt import GPTConfig
from baselines.imagegen.llamagen_t2i import LlamaGenT2I, generate_t2i, left_pad_layout
from baselines.imagegen.sampling import SamplerConfig, request_generators
from harness.api import Request
from harness.datasets import shapes
from harness.errors import ArbenchError
from harness.protocols.text_to_image import TextToImage
from harness.provenance import sha256_file
from harness.registry import register_method
from harness.settings import NonNegativeFloat, PositiveFloat, TopK, TopP

WEIGHTS = Path(__file__).with_name("weights") / "shapes_t2i.safetensors"
CAPTION_TOKENS = 12  # the grammar's longest prompt has 10 words
CAPTION_DIM = 32
PATCH = 2
COLORS = len(shapes.PALETTE) - 1
CODES = 1 + COLORS * 15
CONFIG = GPTConfig(dim=64, n_layer=4, n_head=4, multiple_of=32, num_classes=1, class_dropout_prob=0.1,
                   vocab_size=CODES, cls_token_num=CAPTION_TOKENS, block_size=(shapes.GRID // PATCH) ** 2)
_BITS = np.array([1, 2, 4, 8])  # patch cells in raster order (top-left, top-right, bottom-left, bottom-right)


def cells_to_tokens(cells: np.ndarray) -> np.ndarray:
    """(N, GRID, GRID) palette cells -> (N, 64) codes in raster order of the 8 x 8 patches."""
    n, g = len(cells), shapes.GRID // PATCH
    patches = np.asarray(cells).reshape(n, g, PATCH, g, PATCH).transpose(0, 1, 3, 2, 4).reshape(n, g * g, 4)
    counts = np.stack([(patches == c).sum(-1) for c in range(1, COLORS + 1)], -1)  # (N, 64, COLORS)
    color = counts.argmax(-1) + 1  # majority colour (the lower index on ties)
    mask = ((patches == color[..., None]) * _BITS).sum(-1)
    return np.where(mask > 0, 1 + (color - 1) * 15 + (mask - 1), 0)


def tokens_to_cells(tokens: np.ndarray) -> np.ndarray:
    """(N, 64) codes -> (N, GRID, GRID) palette cells."""
    tokens = np.asarray(tokens)
    n, g = len(tokens), shapes.GRID // PATCH
    color = np.where(tokens > 0, (tokens - 1) // 15 + 1, 0)
    mask = np.where(tokens > 0, (tokens - 1) % 15 + 1, 0)
    patches = ((mask[..., None] & _BITS) > 0) * color[..., None]  # (N, 64, 4)
    return patches.reshape(n, g, g, PATCH, PATCH).transpose(0, 1, 3, 2, 4).reshape(n, shapes.GRID, shapes.GRID)


class ShapesT2I(LlamaGenT2I):
    """`LlamaGenT2I` with a word-embedding text encoder and a learned unconditional caption of `cls_token_num` rows."""

    def __init__(self, config: GPTConfig = CONFIG, caption_dim: int = CAPTION_DIM):
        super().__init__(config, caption_dim)
        self.text_embedding = nn.Embedding(len(shapes.VOCABULARY), caption_dim)
        # a parameter (LlamaGen's is a buffer of 120 rows learned upstream and released with the checkpoint)
        self.cls_embedding.uncond_embedding = nn.Parameter(torch.zeros(config.cls_token_num, caption_dim))

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Laid-out caption states (B, T, C) and mask (B, T), as `left_pad_layout` lays out T5's."""
        t = self.config.cls_token_num
        ids = torch.zeros(len(prompts), t, dtype=torch.long)
        mask = torch.zeros(len(prompts), t, dtype=torch.long)
        for i, prompt in enumerate(prompts):
            words = shapes.tokenize(prompt, t)
            ids[i, :len(words)] = torch.tensor(words)
            mask[i, :len(words)] = 1
        device = self.text_embedding.weight.device
        return left_pad_layout(self.text_embedding(ids.to(device)), mask.to(device))


def tokens_to_images(tokens: torch.Tensor) -> np.ndarray:
    """(N, 64) codes -> uint8 (N, 32, 32, 3)."""
    return shapes.cells_to_image(tokens_to_cells(tokens.cpu().numpy()))


def file_metadata(path: Path = WEIGHTS) -> dict:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {k: json.loads(v) for k, v in meta.items()}


@dataclass
class ShapesT2ISettings:
    cfg_scale: NonNegativeFloat = 3.0
    temperature: PositiveFloat = 1.0
    top_k: TopK = 0
    top_p: TopP = 1.0


@register_method("shapes-ar-t2i")
class ShapesART2I(TextToImage):
    """Bundled toy text-to-image GPT for the offline `shapes-t2i` task (trained by train_shapes_t2i.py)."""

    description = ("offline toy LlamaGen-t2i-architecture GPT (0.2M) over 8x8 patch codes of rendered shapes, "
                   "raster AR + CFG; answers shapes-t2i only (not GenEval)")
    family = "raster-ar"
    Config = ShapesT2ISettings

    def __init__(self, config=None, device: str = "cpu"):
        super().__init__(config, device)
        self._model: ShapesT2I | None = None

    def checkpoint_sha256(self) -> str | None:
        return sha256_file(WEIGHTS)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "tokens": "8x8 codes of 2x2 palette cells"}

    def load(self) -> None:
        if not WEIGHTS.is_file():
            raise ArbenchError(f"{WEIGHTS} is missing; it ships with the project. Retrain it with "
                               "`python -m baselines.imagegen.train_shapes_t2i`.")
        model = ShapesT2I()
        load_into(model, read_state_dict(WEIGHTS), f"{self.name} ({WEIGHTS.name})")
        self._model = model.to(self.device).eval()

    def sampler(self) -> SamplerConfig:
        c = self.config
        return SamplerConfig(c.cfg_scale, -1, c.temperature, c.top_k, c.top_p)

    def check_prompts(self, requests: Sequence[Request]) -> list[str]:
        prompts = [r.condition.get("prompt") for r in requests]
        bad = []
        for r, p in zip(requests, prompts):
            try:
                shapes.tokenize(p, CAPTION_TOKENS) if isinstance(p, str) else bad.append((r.id, "no prompt"))
            except ValueError as exc:
                bad.append((r.id, str(exc)))
        if bad:
            raise ArbenchError(f"{self.name} only knows the shapes grammar of the shapes-t2i task; {len(bad)} "
                               f"request(s) it cannot take, first {bad[:3]}. Run it on `shapes-t2i`.")
        return prompts

    @torch.no_grad()
    def generate(self, requests: Sequence[Request]) -> np.ndarray:
        prompts = self.check_prompts(requests)
        if self._model is None:
            self.load()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a 0.2M-parameter network: more threads cost more than they save
        try:
            caption, mask = self._model.encode(prompts)
            tokens = generate_t2i(self._model, caption, mask, request_generators([r.seed for r in requests]),
                                  self.sampler())
        finally:
            torch.set_num_threads(threads)
        return tokens_to_images(tokens)
