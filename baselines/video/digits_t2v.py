"""`digits-t2v-mini`: a tiny autoregressive text-to-video model for the offline moving-digits suite
(`moving-digits-t2v-mini`, NOT VBench), trained by `train_digits_t2v.py` in this folder (weights beside it).

- **Text**: the prompt's words ("a 3 moving left") from a 18-word vocabulary, embedded and used as a prefix of up to
  `max_words` tokens (left-padded); a word outside the vocabulary is refused, naming it.
- **Video tokens**: each frame is the 16x16 canvas (the video's 32x32 halved) at 4 grey levels, cut into 2x2 patches:
  64 tokens a frame from a codebook of 4^4 = 256 exact patch codes (no learned VQ: the codebook is the lookup).
- **Order (frame-by-frame autoregression)**: the first frame is decoded token by token in raster order (64 steps);
  each later frame is then predicted in one parallel step from the text and the frame before it (its 64 slots carry
  the previous frame's tokens at the new frame's positions and attend to the text and to each other: a first-order,
  Markov, frame model). 8 frames take 1 + 64 + 7 = 72 network passes. One decoder (pre-norm, GELU MLP, learned
  frame/row/column position embeddings), trained with exactly the masks decoding uses (a test checks that greedy
  decoding reproduces the argmax of the teacher-forced logits).
- **Seeds**: each request draws its uniforms for inverse-CDF sampling from its own generator (`Request.seed`), so a
  video does not depend on its batch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.api import Request
from harness.datasets import digits_t2v as suite
from harness.errors import ArbenchError, MissingAssetError
from harness.protocols.text_to_video import TextToVideo
from harness.provenance import sha256_file
from harness.registry import register_method
from harness.settings import Annotated, Field

WEIGHTS_PATH = Path(__file__).resolve().parent / "digits_t2v_mini.safetensors"
WORDS = ("<pad>", "a", *(str(d) for d in range(10)), "moving", *suite.DIRECTIONS, "standing", suite.STILL)
LEVELS = 4
PATCH = 2


@dataclass(frozen=True)
class T2VConfig:
    dim: int = 64
    n_layer: int = 4
    n_head: int = 4
    max_words: int = 6
    frames: int = suite.NUM_FRAMES
    grid: int = suite.CANVAS.canvas // PATCH  # 8 x 8 patch tokens a frame

    @property
    def vocab(self) -> int:
        return LEVELS ** (PATCH * PATCH)

    @property
    def frame_tokens(self) -> int:
        return self.grid * self.grid


# -- tokens --------------------------------------------------------------------------------------


def encode_prompt(prompt: str, max_words: int) -> list[int]:
    """Word ids, left-padded to `max_words`; refuses words outside the vocabulary."""
    words = prompt.lower().split()
    unknown = [w for w in words if w not in WORDS[1:]]
    if unknown or not words or len(words) > max_words:
        raise ArbenchError(f"digits-t2v-mini reads prompts of at most {max_words} words from its vocabulary "
                           f"({', '.join(WORDS[1:])}), e.g. 'a 3 moving left'; got {prompt!r}"
                           + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return [0] * (max_words - len(words)) + [WORDS.index(w) for w in words]


def videos_to_tokens(videos: np.ndarray) -> np.ndarray:
    """uint8 ``[N, T, 32, 32, 3]`` videos -> int64 ``[N, T, 64]`` patch codes (grey levels of the 16x16 canvas)."""
    canvas = np.asarray(videos)[:, :, ::suite.UPSCALE, ::suite.UPSCALE].astype(np.float64).mean(axis=-1)
    levels = np.clip(np.rint(canvas / 255.0 * (LEVELS - 1)), 0, LEVELS - 1).astype(np.int64)
    n, t, h, w = levels.shape
    patches = levels.reshape(n, t, h // PATCH, PATCH, w // PATCH, PATCH).transpose(0, 1, 2, 4, 3, 5)
    weights = LEVELS ** np.arange(PATCH * PATCH)
    return (patches.reshape(n, t, (h // PATCH) * (w // PATCH), PATCH * PATCH) * weights).sum(axis=-1)


def tokens_to_videos(tokens: np.ndarray, grid: int) -> np.ndarray:
    """int ``[N, T, grid*grid]`` patch codes -> uint8 ``[N, T, 32, 32, 3]`` videos (inverse of `videos_to_tokens`)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    n, t = tokens.shape[:2]
    digits = (tokens[..., None] // LEVELS ** np.arange(PATCH * PATCH)) % LEVELS  # [N, T, G*G, 4]
    levels = digits.reshape(n, t, grid, grid, PATCH, PATCH).transpose(0, 1, 2, 4, 3, 5)
    grey = np.rint(levels.reshape(n, t, grid * PATCH, grid * PATCH) * 255.0 / (LEVELS - 1)).astype(np.uint8)
    return suite.upscale(np.repeat(grey[..., None], 3, axis=-1))


# -- the network ---------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache: list | None, layer: int) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            if len(cache) > layer:
                k, v = torch.cat([cache[layer][0], k], dim=2), torch.cat([cache[layer][1], v], dim=2)
                cache[layer] = (k, v)
            else:
                cache.append((k, v))
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class FrameARTransformer(nn.Module):
    """Text prefix, then frames: raster AR inside the first frame, one parallel step for each later frame."""

    def __init__(self, config: T2VConfig = T2VConfig()):
        super().__init__()
        c = self.config = config
        self.word_emb = nn.Embedding(len(WORDS), c.dim)
        self.word_pos = nn.Parameter(torch.zeros(c.max_words, c.dim))
        self.tok_emb = nn.Embedding(c.vocab + 1, c.dim)  # + the start token of the first frame
        self.frame_pos = nn.Parameter(torch.zeros(c.frames, c.dim))
        self.row_pos = nn.Parameter(torch.zeros(c.grid, c.dim))
        self.col_pos = nn.Parameter(torch.zeros(c.grid, c.dim))
        self.blocks = nn.ModuleList(Block(c.dim, c.n_head) for _ in range(c.n_layer))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.vocab)
        for p in (self.word_pos, self.frame_pos, self.row_pos, self.col_pos):
            nn.init.normal_(p, std=0.02)

    @property
    def start_token(self) -> int:
        return self.config.vocab

    def position(self, frame: int, index: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """Position embeddings of frame `frame`'s token slots `index` (raster over the grid)."""
        grid = self.config.grid
        rows = self.row_pos.repeat_interleave(grid, dim=0)
        cols = self.col_pos.repeat(grid, 1)
        return (self.frame_pos[frame] + rows + cols)[index]

    def prefix(self, words: torch.Tensor) -> torch.Tensor:
        return self.word_emb(words) + self.word_pos

    def run(self, h: torch.Tensor, mask: torch.Tensor, cache: list | None = None) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            h = block(h, mask, cache, i)
        return self.head(self.norm(h))

    def position_table(self) -> torch.Tensor:
        """[frames, 64, dim] position embeddings of every token slot."""
        return torch.stack([self.position(t) for t in range(self.config.frames)])

    def training_logits(self, words: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """[B, frames, 64, vocab] logits of every token, teacher-forced, with the masks decoding uses: the text and
        the first frame causal; frame t > 0 a block over [text, frame t-1's tokens at frame t's slots]."""
        c = self.config
        b, p, f = len(tokens), c.max_words, c.frame_tokens
        start = torch.full((b, 1), self.start_token, dtype=torch.long)
        first = torch.cat([start, tokens[:, 0, :-1]], dim=1)  # raster: slot i carries token i-1
        inputs = torch.cat([first[:, None], tokens[:, :-1]], dim=1)  # frame t>0: slots carry frame t-1
        video = self.tok_emb(inputs) + self.position_table()  # [B, T, 64, D]
        prefix = self.prefix(words)[:, None].expand(b, c.frames, p, c.dim)
        sequences = torch.cat([prefix, video], dim=2).reshape(b * c.frames, p + f, c.dim)
        masks = torch.stack([_sequence_mask(p, f, t == 0) for t in range(c.frames)])  # [T, L, L]
        masks = masks[None].expand(b, -1, -1, -1).reshape(b * c.frames, 1, p + f, p + f)
        logits = self.run(sequences, masks)[:, p:]
        return logits.reshape(b, c.frames, f, c.vocab)


def _sequence_mask(prefix: int, block: int, causal: bool) -> torch.Tensor:
    """bool [prefix + block]^2 (True = attend): the text causal; the block causal (first frame) or whole."""
    length = prefix + block
    idx = torch.arange(length)
    limit = idx.clone() if causal else torch.where(idx < prefix, idx, torch.full_like(idx, length - 1))
    return idx[None, :] <= limit[:, None]


def _step_mask(new: int, past: int, causal: bool) -> torch.Tensor:
    if not causal:
        return torch.ones(new, past + new, dtype=torch.bool)
    return torch.arange(past + new)[None, :] <= (past + torch.arange(new))[:, None]


def _draw(logits: torch.Tensor, uniforms: torch.Tensor, temperature: float) -> torch.Tensor:
    """Inverse-CDF sampling with per-request uniforms (argmax at temperature 0). logits [B, n, V], uniforms [B, n]."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    cdf = torch.softmax(logits.double() / temperature, dim=-1).cumsum(dim=-1)
    index = torch.searchsorted(cdf, (uniforms.double() * cdf[..., -1]).unsqueeze(-1)).squeeze(-1)
    return index.clamp(max=logits.shape[-1] - 1)


@torch.inference_mode()
def generate(model: FrameARTransformer, words: torch.Tensor, generators: Sequence[torch.Generator],
             first_temperature: float = 1.0, later_temperature: float = 1.0) -> torch.Tensor:
    """int64 [B, frames, 64] patch codes for the word ids [B, max_words]."""
    c = model.config
    b, f = len(words), c.frame_tokens
    uniforms = torch.stack([torch.rand(c.frames * f, generator=g) for g in generators])
    positions = model.position_table()
    text: list = []
    model.run(model.prefix(words), _step_mask(c.max_words, 0, True), text)
    cache = list(text)
    tokens = torch.zeros(b, c.frames, f, dtype=torch.long)
    previous = torch.full((b,), model.start_token, dtype=torch.long)
    for i in range(f):  # the first frame, token by token
        h = (model.tok_emb(previous) + positions[0, i])[:, None]
        logits = model.run(h, _step_mask(1, c.max_words + i, True), cache)
        previous = tokens[:, 0, i] = _draw(logits, uniforms[:, i:i + 1], first_temperature)[:, 0]
    block = _step_mask(f, c.max_words, False)
    for t in range(1, c.frames):  # each later frame in one step, from the text and the frame before
        h = model.tok_emb(tokens[:, t - 1]) + positions[t]
        logits = model.run(h, block, list(text))
        tokens[:, t] = _draw(logits, uniforms[:, t * f:(t + 1) * f], later_temperature)
    return tokens


@lru_cache(maxsize=2)
def load_model(path: str = str(WEIGHTS_PATH)) -> FrameARTransformer:
    """The bundled trained model (eval mode); the architecture is read from the file's metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise MissingAssetError(f"the bundled text-to-video model is missing at {path}; recreate it with "
                                f"`python -m baselines.video.train_digits_t2v`")
    with safe_open(path, framework="pt") as f:
        config = T2VConfig(**json.loads((f.metadata() or {})["config"]))
    model = FrameARTransformer(config)
    model.load_state_dict(load_file(path))
    return model.eval().requires_grad_(False)


def config_metadata(config: T2VConfig) -> str:
    return json.dumps(asdict(config))


# -- the registered method -----------------------------------------------------------------------


@dataclass
class DigitsT2VSettings:
    """Sampling temperatures of the first frame (raster) and of each later frame (parallel)."""

    first_temperature: Annotated[float, Field(ge=0.0, le=10.0)] = 1.0
    later_temperature: Annotated[float, Field(ge=0.0, le=10.0)] = 1.0


@register_method("digits-t2v-mini")
class DigitsT2VMini(TextToVideo):
    description = ("offline tiny text-to-video AR model on moving digits: raster first frame, then one parallel "
                   "step per frame (72 passes for 8 frames)")
    family = "frame-ar"
    Config = DigitsT2VSettings

    def checkpoint_sha256(self) -> str | None:
        return sha256_file(WEIGHTS_PATH)

    def generate(self, requests: Sequence[Request]) -> np.ndarray:
        model = load_model()
        want = {"num_frames": suite.NUM_FRAMES, "height": suite.SIZE, "width": suite.SIZE, "fps": suite.FPS}
        bad = [(r.id, k, r.condition.get(k)) for r in requests for k, v in want.items()
               if k in r.condition and r.condition[k] != v]
        if bad:
            raise ArbenchError(f"{self.name} makes {want['num_frames']} frames of {suite.SIZE}x{suite.SIZE} at "
                               f"{suite.FPS} fps; request {bad[0][0]} asks {bad[0][1]}={bad[0][2]}")
        words = torch.tensor([encode_prompt(r.condition["prompt"], model.config.max_words) for r in requests])
        generators = [torch.Generator().manual_seed(int(r.seed)) for r in requests]
        c = self.config
        # a 0.24 M-parameter network stepping one token at a time: on the CPU, more threads cost more than they save
        # (a batch of 16 took 20 s on two loaded threads, 0.6 s on one)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            tokens = generate(model, words, generators, c.first_temperature, c.later_temperature)
        finally:
            torch.set_num_threads(threads)
        return tokens_to_videos(tokens.numpy(), model.config.grid)
