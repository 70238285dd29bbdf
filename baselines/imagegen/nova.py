"""NOVA's autoregressive transformer (baaivision/NOVA @ 2cd254a, `diffnext/models/`): temporal layers, spatial
set-by-set layers and the per-token diffusion MLP, with the released parameter names.

NOVA ("Autoregressive Video Generation without Vector Quantization", ICLR 2025) factors generation into
- temporal frame-by-frame prediction: the *video encoder* (`video_encoder`, a bidirectional ViT over the text
  tokens followed by the previous frame's latent patches; for an image, the patches are all the BOS token);
- spatial set-by-set prediction: the *image encoder* (`image_encoder`, a ViT over the video encoder's output
  followed by the latent patches, masked MAR-style; its first half sees only the patches already generated, the
  second half all patches, with mask tokens where nothing is known yet);
- per-token diffusion: the *diffusion MLP* (`image_decoder`, AdaLN-modulated residual MLP blocks) denoising each
  newly predicted patch from Gaussian noise by flow matching, conditioned on the image encoder's output there.

The sampler (`generate_image`) is upstream's `Transformer3DModel.generate_video` for one latent frame plus
`generate_frame` and `denoise`; the flow-matching steps are diffusers' `FlowMatchEulerDiscreteScheduler` (the
released `model_index.json` names that class: delegated, not re-implemented). Differences, on purpose: every
request draws its set order and its noise from its own generator (the project's per-request seeds; upstream
draws a batch from one generator), in float32 on the CPU; and the diffusion MLP runs on the newly predicted
patches only (upstream runs it on all and keeps those, which gives the same values there).

Video (issue 21): the modules below are the whole network, including the temporal position embedding
(`VideoPosEmbed`) and the motion embedding of the text-to-video model; `generate_video` is upstream's temporal
rollout (motion-flow and fps tokens after the text, the video encoder's key/value cache over earlier frames, the
previous latent frame as the temporal input, one patch order per video) around the same `generate_frame`
(`image_context` is its first temporal step for an image model). Not implemented here: rotary position embeddings (`rotary_pos_embed`, false in every released
config) and the AdaLN video mixer (`video_mixer_rank`, absent from every released config); both are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.errors import ArbenchError


# -- configuration ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViTConfig:
    """One of upstream's registered ViTs (`transformer_nova.py` VIDEO_ENCODERS / IMAGE_ENCODERS)."""

    depth: int
    embed_dim: int
    num_heads: int
    mlp_ratio: int = 4


@dataclass(frozen=True)
class DiffusionMLPConfig:
    """One of upstream's registered diffusion MLPs (IMAGE_DECODERS)."""

    depth: int
    embed_dim: int


#: Upstream's registry, name -> architecture (transformer_nova.py, the decorators above each builder).
VIT_ARCHS = {
    "vit_d16w768": ViTConfig(16, 768, 12), "vit_d16w1024": ViTConfig(16, 1024, 16),
    "vit_d16w1536": ViTConfig(16, 1536, 16), "vit_d32w768": ViTConfig(32, 768, 12),
    "vit_d32w1024": ViTConfig(32, 1024, 16), "vit_d32w1536": ViTConfig(32, 1536, 16),
}
MLP_ARCHS = {
    "mlp_d3w1280": DiffusionMLPConfig(3, 1280), "mlp_d6w768": DiffusionMLPConfig(6, 768),
    "mlp_d6w1024": DiffusionMLPConfig(6, 1024), "mlp_d6w1536": DiffusionMLPConfig(6, 1536),
}


@dataclass(frozen=True)
class NOVAConfig:
    """`NOVATransformer3DModel`'s constructor arguments (the released `transformer/config.json`), resolved."""

    video_encoder: ViTConfig
    image_encoder: ViTConfig
    image_decoder: DiffusionMLPConfig
    image_size: tuple[int, int] = (512, 512)  # pixels (height, width)
    image_dim: int = 4  # VAE latent channels
    image_stride: int = 8  # VAE downsampling
    text_token_dim: int = 2560  # Phi-2 hidden size
    text_token_len: int = 256
    image_base_size: tuple[int, int] = (32, 32)  # patches: the number the mask schedule spreads over
    video_base_size: tuple[int, int, int] = (1, 16, 16)  # (frames, rows, columns) of the temporal patches
    arch: tuple[str, str, str] = field(default=("", "", ""), compare=False)

    @property
    def patch_size(self) -> int:
        return 15 // self.image_stride + 1  # upstream: 2 for a stride-8 VAE

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.image_size[0] // self.image_stride, self.image_size[1] // self.image_stride

    @property
    def num_patches(self) -> int:
        return int(np.prod(self.image_base_size))

    @classmethod
    def from_upstream(cls, config: Mapping[str, Any], where: str = "transformer/config.json") -> "NOVAConfig":
        """From the released `transformer/config.json`; refuses what this implementation does not build."""
        if config.get("rotary_pos_embed"):
            raise ArbenchError(f"{where}: rotary_pos_embed is true; ARBench's NOVA implements the absolute position "
                               "embeddings of the released models only")
        if config.get("video_mixer_rank"):
            raise ArbenchError(f"{where}: video_mixer_rank is set; ARBench's NOVA does not implement the AdaLN mixer")
        if not config.get("text_token_dim"):
            raise ArbenchError(f"{where}: no text_token_dim (a class-conditional NOVA); only text-to-image is built")
        arch = tuple(config["arch"])
        unknown = [a for a, table in zip(arch, (VIT_ARCHS, VIT_ARCHS, MLP_ARCHS)) if a not in table]
        if unknown:
            raise ArbenchError(f"{where}: unknown arch {unknown}; upstream registers {sorted(VIT_ARCHS)} and "
                               f"{sorted(MLP_ARCHS)}")
        size = config["image_size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        grid = [s // int(config["image_stride"]) // (15 // int(config["image_stride"]) + 1) for s in size]
        if list(config["image_base_size"]) != grid:  # the mask schedule and position table assume the full grid
            raise ArbenchError(f"{where}: image_base_size {config['image_base_size']} is not the patch grid {grid} of "
                               f"{size[0]}x{size[1]} px images; ARBench samples at the trained size only")
        return cls(VIT_ARCHS[arch[0]], VIT_ARCHS[arch[1]], MLP_ARCHS[arch[2]], size, int(config["image_dim"]),
                   int(config["image_stride"]), int(config["text_token_dim"]), int(config["text_token_len"]),
                   tuple(config["image_base_size"]), tuple(config["video_base_size"]), arch)


# -- layers (upstream names) ----------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """Conv patch embedding plus upstream's patchify/unpatchify ((B, C, H, W) <-> (B, H/p * W/p, p * p * C))."""

    def __init__(self, image_dim: int, embed_dim: int, patch_size: int):
        super().__init__()
        self.image_dim, self.patch_size = image_dim, patch_size
        self.proj = nn.Conv2d(image_dim, embed_dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.patch_size
        x = x.view(b, c, h // p, p, w // p, p)
        return x.permute(0, 2, 4, 3, 5, 1).flatten(1, 2).flatten(2, 4)

    def unpatchify(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        p, (h, w) = self.patch_size, hw
        x = x.reshape(-1, h, w, p, p, self.image_dim)
        return x.permute(0, 5, 1, 3, 2, 4).flatten(2, 3).flatten(3, 4)


def sincos_2d(dim: int, base_size: Sequence[int]) -> torch.Tensor:
    """Upstream's `PosEmbed.get_space_embed`: [sin w, cos w, sin h, cos h], each dim/4 frequencies."""
    h, w = base_size
    freq = 1 / (10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4)))
    grid_w, grid_h = torch.meshgrid(torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32),
                                    indexing="xy")
    fw, fh = (g.reshape(-1, 1) * freq.unsqueeze(0) for g in (grid_w, grid_h))
    return torch.cat([fw.sin(), fw.cos(), fh.sin(), fh.cos()], dim=-1)


def sincos_1d(values: torch.Tensor, freq_dim: int = 256) -> torch.Tensor:
    """[sin, cos] of values x 1/10000^(i/128): upstream's time and motion embeddings (VideoPosEmbed, MotionEmbed)."""
    freq = 1 / (10000 ** (torch.arange(freq_dim // 2, dtype=torch.float32).unsqueeze(0) / (freq_dim // 2)))
    angles = values.float().view(-1, 1, 1) * freq
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        #: Upstream's key/value cache of the video encoder's rollout: None (off), True (on, empty), or [k, v] of
        #: every token seen so far (text and earlier frames), to which each new frame's keys/values are appended.
        self.cache_kv: bool | list[torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        if isinstance(self.cache_kv, list):  # a later frame: attends to everything cached and to itself
            k = self.cache_kv[0] = torch.cat([self.cache_kv[0], k], dim=2)
            v = self.cache_kv[1] = torch.cat([self.cache_kv[1], v], dim=2)
        elif self.cache_kv:
            self.cache_kv = [k, v]
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))


class MLP(nn.Module):
    def __init__(self, dim: int, mlp_ratio: int = 4):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, dim * mlp_ratio), nn.Linear(dim * mlp_ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Upstream's ViT block: the LayerNorms normalise each branch's output (x + norm(f(x))), not its input."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, num_heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(self.attn(x)) + x
        return self.norm2(self.mlp(x)) + x


class VisionTransformer(nn.Module):
    """Upstream's `VisionTransformer`: context tokens `c` first; with `known` given (the image encoder), the first
    half of the blocks sees only the known patches, which are then put back among the masked ones."""

    def __init__(self, config: ViTConfig, patch_size: int, image_dim: int, pos_embed: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(image_dim, config.embed_dim, patch_size)
        self.blocks = nn.ModuleList(Block(config.embed_dim, config.num_heads, config.mlp_ratio)
                                    for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.embed_dim)
        self.encoder_depth = config.depth // 2
        self.register_buffer("pos_embed", pos_embed, persistent=False)  # image encoder only (PosEmbed)

    def enable_kvcache(self, mode: bool = True) -> None:
        """Upstream's switch: on, each call's keys/values are kept and later calls attend to them too."""
        for blk in self.blocks:
            blk.attn.cache_kv = mode

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None, known: torch.Tensor | None = None) -> torch.Tensor:
        if self.pos_embed is not None:
            x = x + self.pos_embed.to(x.dtype)
        n_c = 0 if c is None else c.shape[1]
        full = x
        if known is not None:
            x = x.gather(1, known.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = x if c is None else torch.cat([c, x], dim=1)
        for blk in self.blocks[: self.encoder_depth]:
            x = blk(x)
        if known is not None:
            c_out, x = x[:, :n_c], x[:, n_c:]
            x = full.to(x.dtype).scatter(1, known.unsqueeze(-1).expand(-1, -1, x.shape[-1]), x)
            x = torch.cat([c_out, x], dim=1)
        for blk in self.blocks[self.encoder_depth:]:
            x = blk(x)
        return self.norm(x[:, n_c:])


class Projector(nn.Module):
    def __init__(self, dim: int, mlp_dim: int, out_dim: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, mlp_dim), nn.Linear(mlp_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)))


class AdaLayerNormZero(nn.Module):
    """LayerNorm (eps 1e-6, no affine) scaled and shifted by a projection of SiLU(z); further chunks are gates."""

    def __init__(self, dim: int, num_stats: int):
        super().__init__()
        self.num_stats = num_stats
        self.proj = nn.Linear(dim, num_stats * dim)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        stats = self.proj(F.silu(z)).chunk(self.num_stats, dim=-1)
        return F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + stats[0]) + stats[1], stats[2:]


class DiffusionBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm1 = AdaLayerNormZero(dim, 3)
        self.proj, self.norm2 = Projector(dim, dim, dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h, (gate,) = self.norm1(x, z)
        return self.norm2(self.proj(h)) * gate + x


class TimeCondEmbed(nn.Module):
    def __init__(self, cond_dim: int, embed_dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.timestep_proj = Projector(freq_dim, embed_dim, embed_dim)
        self.condition_proj = Projector(cond_dim, embed_dim, embed_dim)

    def forward(self, timestep: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freq = torch.exp(torch.arange(half, dtype=torch.float32, device=z.device) * (-math.log(10000) / half))
        angles = timestep.float().unsqueeze(-1) * freq.unsqueeze(0)
        t = self.timestep_proj(torch.cat([angles.cos(), angles.sin()], dim=-1).to(z.dtype))
        return self.condition_proj(z) + t.unsqueeze(1)


class DiffusionMLP(nn.Module):
    """Upstream's `DiffusionMLP`: predicts the flow-matching velocity of each patch from its noisy value, the
    timestep and the image encoder's output at that patch."""

    def __init__(self, config: DiffusionMLPConfig, cond_dim: int, patch_size: int, image_dim: int):
        super().__init__()
        dim = config.embed_dim
        self.patch_embed = PatchEmbed(image_dim, dim, patch_size)
        self.time_cond_embed = TimeCondEmbed(cond_dim, dim)
        self.blocks = nn.ModuleList(DiffusionBlock(dim) for _ in range(config.depth))
        self.norm = AdaLayerNormZero(dim, 2)
        self.head = nn.Linear(dim, patch_size ** 2 * image_dim)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x: noisy patches (B, n, p*p*C) in patchify order; z: (B, n, cond_dim); timestep: (B,)."""
        w = self.patch_embed.proj.weight  # the conv over one patch = a linear map of the patchified values
        x = F.linear(x, w.permute(0, 2, 3, 1).flatten(1), self.patch_embed.proj.bias)
        z = self.time_cond_embed(timestep, z)
        for blk in self.blocks:
            x = blk(x, z)
        return self.head(self.norm(x, z)[0])


class TextEmbed(nn.Module):
    """Phi-2 token states (B, <=256, 2560) -> the transformer's text tokens. Positions past the prompt (and the
    whole unconditional prompt) take the learned rows of the `weight` buffer."""

    def __init__(self, token_dim: int, embed_dim: int, num_tokens: int):
        super().__init__()
        self.num_tokens = num_tokens
        self.proj, self.norm = nn.Linear(token_dim, embed_dim), nn.LayerNorm(embed_dim)
        self.register_buffer("weight", torch.zeros(512, token_dim))

    def fill(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        """Upstream's `encode_prompts` for precomputed states: each prompt's states, then the null rows."""
        x = self.weight[: self.num_tokens].expand(len(states), -1, -1).clone()
        for i, s in enumerate(states):
            n = min(s.shape[0], self.num_tokens)
            x[i, :n] = s[:n].to(x)
        return x

    def null(self, batch: int) -> torch.Tensor:
        return self.weight[: self.num_tokens].expand(batch, -1, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class MaskEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.bos_token = nn.Parameter(torch.zeros(1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))


class VideoPosEmbed(nn.Module):
    """Temporal position: sincos of the frame index (scaled to `base_t` frames) through an MLP and a LayerNorm,
    plus the 2D sincos table of the temporal patches."""

    def __init__(self, dim: int, base_size: Sequence[int]):
        super().__init__()
        self.base_t = base_size[0]
        self.time_proj = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.norm = nn.LayerNorm(dim)
        self.register_buffer("space_embed", sincos_2d(dim, base_size[1:]), persistent=False)

    def time_embed(self, num_frames: int) -> torch.Tensor:
        grid = torch.arange(num_frames, dtype=torch.float32) / (num_frames / self.base_t)
        w = self.time_proj[0].weight
        return self.norm(self.time_proj(sincos_1d(grid).to(w.device, w.dtype)))  # (T, 1, dim)


class MotionEmbed(nn.Module):
    """Motion flow and frames-per-second conditioning of the text-to-video model (two extra context tokens)."""

    def __init__(self, dim: int):
        super().__init__()
        self.flow_proj = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.fps_proj = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, flow: torch.Tensor, fps: torch.Tensor) -> torch.Tensor:
        w = self.flow_proj[0].weight
        return torch.cat([self.flow_proj(sincos_1d(flow).to(w.device, w.dtype)),
                          self.fps_proj(sincos_1d(fps).to(w.device, w.dtype))], dim=1)


class NOVATransformer(nn.Module):
    """`NOVATransformer3DModel` with the released state-dict names (text-conditioned, absolute positions)."""

    def __init__(self, config: NOVAConfig):
        super().__init__()
        self.config = config
        p, dim = config.patch_size, config.image_encoder.embed_dim
        self.video_encoder = VisionTransformer(config.video_encoder, 2 * p, config.image_dim)
        self.image_encoder = VisionTransformer(config.image_encoder, p, config.image_dim,
                                               sincos_2d(dim, config.image_base_size))
        self.image_decoder = DiffusionMLP(config.image_decoder, dim, p, config.image_dim)
        self.mask_embed = MaskEmbed(dim)
        self.text_embed = TextEmbed(config.text_token_dim, dim, config.text_token_len)
        self.video_pos_embed = VideoPosEmbed(config.video_encoder.embed_dim, config.video_base_size)
        self.motion_embed = MotionEmbed(config.video_encoder.embed_dim) if config.video_base_size[0] > 1 else None


# -- sampling -------------------------------------------------------------------------------------------------
def mask_schedule(num_steps: int, num_patches: int) -> list[int]:
    """Patches predicted at each step: upstream's cosine schedule, steps that predict nothing dropped."""
    ratios = np.cos(0.5 * np.pi * np.arange(num_steps + 1) / num_steps)
    lengths = np.round(ratios * num_patches).astype("int64")
    return [int(n) for n in lengths[:-1] - lengths[1:] if n > 0]


def text_context(model: NOVATransformer, states: Sequence[torch.Tensor], guided: bool) -> torch.Tensor:
    """Text tokens (2B with guidance: prompts, then the null prompt), as upstream's `encode_prompt` + `preprocess`."""
    x = model.text_embed.fill(states)
    if guided:
        x = torch.cat([x, model.text_embed.null(x.shape[0]).to(x)])
    return model.text_embed(x)


def image_context(model: NOVATransformer, text: torch.Tensor) -> torch.Tensor:
    """The temporal step for the first (only) frame: BOS patches + time and space embeddings, after the text."""
    enc, vpe = model.video_encoder, model.video_pos_embed
    h, w = model.config.latent_size
    n = (h // enc.patch_embed.patch_size) * (w // enc.patch_embed.patch_size)
    bos = model.mask_embed.bos_token.expand(text.shape[0], n, -1)
    c = bos + vpe.time_embed(1)[0] + vpe.space_embed.to(bos.dtype)
    return enc(c, text)


def denoise(model: NOVATransformer, scheduler, z: torch.Tensor, noise: torch.Tensor, guidance_scale: float,
            ) -> torch.Tensor:
    """Flow-matching sampling of the patches conditioned on z (2B with guidance, conditional half first)."""
    guided, x = z.shape[0] != noise.shape[0], noise
    scheduler._step_index = None  # as upstream: restart the scheduler's counter for every set
    for t in scheduler.timesteps:
        xin = torch.cat([x, x]) if guided else x
        pred = model.image_decoder(xin, torch.as_tensor(t, device=x.device).expand(xin.shape[0]), z)
        if guided:
            cond, uncond = pred.chunk(2)
            pred = uncond + (cond - uncond) * guidance_scale
        x = scheduler.step(pred, t, x).prev_sample
    return x


def draw_order(model: NOVATransformer, generators: Sequence[torch.Generator], device) -> torch.Tensor:
    """Per request, the random order of the patches (argsort of uniform draws, upstream's `get_pred_mask`)."""
    h, w = model.config.latent_size
    n = (h // model.config.patch_size) * (w // model.config.patch_size)
    return torch.stack([torch.rand(n, generator=g).argsort() for g in generators]).to(device)


@torch.no_grad()
def generate_frame(model: NOVATransformer, context: torch.Tensor, scheduler, generators: Sequence[torch.Generator],
                   num_steps: int, guidance_scale: float, order: torch.Tensor | None = None) -> torch.Tensor:
    """Set-by-set masked generation of one latent frame (B, C, h, w) given the temporal context (2B with guidance).

    Per request: a random order of the patches (argsort of uniform draws; a video passes the order of its first
    frame, as upstream keeps `mask_embed.pred_ids` for the whole rollout), then at every step fresh Gaussian noise
    for the whole latent (upstream's draws, per request) of which the step's patches are denoised and kept.
    """
    cfg, enc = model.config, model.image_encoder
    b, guided = len(generators), guidance_scale > 1
    device, dtype = context.device, context.dtype
    h, w = cfg.latent_size
    p = cfg.patch_size
    hw = (h // p, w // p)
    order = draw_order(model, generators, device) if order is None else order
    patches = torch.zeros(b, hw[0] * hw[1], p * p * cfg.image_dim, device=device, dtype=dtype)
    known = torch.zeros(b, 0, dtype=torch.long, device=device)
    mask_token = model.mask_embed.mask_token.to(dtype)
    pos = 0
    for n in mask_schedule(num_steps, cfg.num_patches):
        x = enc.patch_embed(enc.patch_embed.unpatchify(patches, hw))
        masked = torch.ones(b, x.shape[1], 1, device=device, dtype=dtype)
        masked.scatter_(1, known.unsqueeze(-1), 0)
        x = x * (1 - masked) + mask_token * masked
        pred_ids = order[:, pos: pos + n]
        pair = (lambda t: torch.cat([t, t])) if guided else (lambda t: t)
        z = enc(pair(x), context, pair(known))
        z = z.gather(1, pair(pred_ids).unsqueeze(-1).expand(-1, -1, z.shape[-1]))
        noise = torch.stack([torch.randn(cfg.image_dim, h, w, generator=g) for g in generators]).to(device, dtype)
        noise = enc.patch_embed.patchify(noise).gather(1, pred_ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        sample = denoise(model, scheduler, z, noise, guidance_scale)
        patches = patches.scatter(1, pred_ids.unsqueeze(-1).expand(-1, -1, patches.shape[-1]), sample)
        known, pos = torch.cat([known, pred_ids], dim=1), pos + n
    return enc.patch_embed.unpatchify(patches, hw)


@torch.no_grad()
def generate_image(model: NOVATransformer, scheduler, states: Sequence[torch.Tensor],
                   generators: Sequence[torch.Generator], num_steps: int, num_diffusion_steps: int,
                   guidance_scale: float) -> torch.Tensor:
    """Latents (B, C, h, w) for Phi-2 prompt states: upstream's pipeline for `max_latent_length=1`."""
    scheduler.set_timesteps(num_diffusion_steps)
    text = text_context(model, states, guidance_scale > 1)
    context = image_context(model, text)
    return generate_frame(model, context, scheduler, generators, num_steps, guidance_scale)


# -- video (the text-to-video model: video_base_size[0] > 1) --------------------------------------------------------
def motion_context(model: NOVATransformer, text: torch.Tensor, motion_flow: float, fps: float | None = None,
                   ) -> torch.Tensor:
    """Text tokens followed by the motion-flow and frame-rate tokens (upstream's `preprocess`: every row, the
    unconditional ones included, gets the same flow; fps defaults to MotionEmbed's base_fps 12, which the
    pipeline never overrides). Models without a motion embedding (text-to-image) get the text tokens alone."""
    if model.motion_embed is None:
        return text
    n = text.shape[0]
    flow = torch.full((n,), float(motion_flow))
    rate = torch.full((n,), float(MOTION_BASE_FPS if fps is None else fps))
    return torch.cat([text, model.motion_embed(flow, rate).to(text.dtype)], dim=1)


MOTION_BASE_FPS = 12  # upstream MotionEmbed(base_flow=5, base_fps=12)


def temporal_tokens(model: NOVATransformer, rows: int, previous: torch.Tensor | None, t: int,
                    time_embed: torch.Tensor) -> torch.Tensor:
    """The video encoder's input at temporal step t: the previous latent frame's patches (BOS tokens at t = 0)
    plus the time embedding of step t and the space table; `rows` = 2B with guidance (both halves see the same
    previous frame)."""
    enc, vpe = model.video_encoder, model.video_pos_embed
    if previous is None:
        h, w = model.config.latent_size
        n = (h // enc.patch_embed.patch_size) * (w // enc.patch_embed.patch_size)
        c = model.mask_embed.bos_token.expand(rows, n, -1)
    else:
        c = enc.patch_embed(previous)
        c = torch.cat([c] * (rows // c.shape[0]))
    return c + time_embed[t] + vpe.space_embed.to(c.dtype)


def temporal_step(model: NOVATransformer, text: torch.Tensor, previous: torch.Tensor | None, t: int,
                  time_embed: torch.Tensor) -> torch.Tensor:
    """One temporal step (upstream's loop body in `generate_video`): `temporal_tokens` through the video encoder,
    which with its key/value cache on attends to the text (given at t = 0 only) and every earlier step. Returns
    the context of frame t for the image encoder."""
    c = temporal_tokens(model, text.shape[0], previous, t, time_embed)
    return model.video_encoder(c, text if t == 0 else None)


@torch.no_grad()
def generate_video(model: NOVATransformer, scheduler, states: Sequence[torch.Tensor],
                   generators: Sequence[torch.Generator], num_latents: int, num_steps: int, num_diffusion_steps: int,
                   guidance_scale: float, motion_flow: float) -> torch.Tensor:
    """Latent videos (B, C, T, h, w), T = num_latents: upstream's `Transformer3DModel.generate_video` (temporal
    autoregression with the video encoder's key/value cache, each latent frame generated set by set by
    `generate_frame` from its temporal context, one patch order per video) for Phi-2 prompt states."""
    scheduler.set_timesteps(num_diffusion_steps)
    guided = guidance_scale > 1
    text = motion_context(model, text_context(model, states, guided), motion_flow)
    time_embed = model.video_pos_embed.time_embed(num_latents)
    order = draw_order(model, generators, text.device)
    frames, previous = [], None
    model.video_encoder.enable_kvcache(num_latents > 1)
    try:
        for t in range(num_latents):
            context = temporal_step(model, text, previous, t, time_embed)
            previous = generate_frame(model, context, scheduler, generators, num_steps, guidance_scale, order)
            frames.append(previous)
    finally:
        model.video_encoder.enable_kvcache(False)
    return torch.stack(frames, dim=2)
