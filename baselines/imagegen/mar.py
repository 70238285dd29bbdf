"""MAR (Li et al. 2024, "Autoregressive Image Generation without Vector Quantization"), the project's own
implementation of the released model (LTH14/mar, MIT) and of its sampler.

The model is an MAE-style encoder/decoder transformer over the 16x16 continuous latents of the KL-16 VAE.
The encoder sees `buffer_size` class-embedding tokens followed by the known (unmasked) latents; the decoder
fills the masked positions with a learned mask token and produces one condition vector z per position; a
small per-token diffusion network (`diffloss.net`, an MLP with adaLN) samples each latent given its z.
Generation (`generate_mar`) unmasks the tokens of a random order in `num_iter` steps on MaskGIT's cosine
schedule; classifier-free guidance runs the class and the "fake latent" (unconditional) embedding side by
side and mixes the diffusion network's epsilon with a scale that grows linearly with the number of known
tokens (Muse's schedule, upstream's default) or stays constant.

Parameter names match upstream's state dict (`encoder_blocks.{i}.attn.qkv.weight`, `mask_token`,
`diffloss.net.res_blocks.{i}.adaLN_modulation.1.weight`, ...), so released checkpoints load by name.

Randomness differs from upstream by design: upstream draws the orders and the diffusion noise from global
generators over the whole batch, so an image depends on its batch. Here every request owns a generator that
draws its order, then, at each step, the initial noise and the per-step noise of its own tokens; an image is
the same whatever batch or rank it is generated in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from baselines.imagegen.mar_diffusion import RespacedSchedule, p_sample, respaced_schedule
from baselines.imagegen.vit_layers import Attention, Mlp, modulate

CFG_SCHEDULES = ("linear", "constant")


@dataclass(frozen=True)
class MARConfig:
    """`models/mar.py`'s constructor arguments (encoder and decoder share width, depth and heads in all
    released models) plus the Diffusion Loss head's depth and width (`--diffloss_d`, `--diffloss_w`)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    diffloss_depth: int = 6
    diffloss_width: int = 1024
    img_size: int = 256
    vae_stride: int = 16
    patch_size: int = 1
    vae_embed_dim: int = 16
    buffer_size: int = 64
    num_classes: int = 1000

    @property
    def grid(self) -> int:
        return self.img_size // self.vae_stride // self.patch_size

    @property
    def seq_len(self) -> int:
        return self.grid ** 2

    @property
    def token_dim(self) -> int:
        return self.vae_embed_dim * self.patch_size ** 2


# The released models with the evaluation commands' head sizes (README: mar_base --diffloss_d 6 --diffloss_w 1024,
# mar_large 8 / 1280, mar_huge 12 / 1536).
MAR_CONFIGS = {
    "mar_base": MARConfig(768, 12, 12, diffloss_depth=6, diffloss_width=1024),
    "mar_large": MARConfig(1024, 16, 16, diffloss_depth=8, diffloss_width=1280),
    "mar_huge": MARConfig(1280, 20, 16, diffloss_depth=12, diffloss_width=1536),
}


# -- transformer ------------------------------------------------------------------------------------
class Block(nn.Module):
    """timm's pre-norm ViT `Block` (qkv bias, exact GELU, LayerNorm eps 1e-6, no layer scale); dropout is
    inactive at inference."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


# -- Diffusion Loss head ----------------------------------------------------------------------------
class TimestepEmbedder(nn.Module):
    """DiT's sinusoidal timestep features (cos half first, max period 10000) through a two-layer MLP."""

    def __init__(self, hidden: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        features = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(features.to(self.mlp[0].weight.dtype))  # as Orthus's copy; a no-op for float32 MAR


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(channels, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.SiLU(), nn.Linear(channels, channels))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 3 * channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.in_ln(x), shift, scale))


class FinalLayer(nn.Module):
    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(channels, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(channels, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 2 * channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class SimpleMLPAdaLN(nn.Module):
    """MAR's diffusion network: (noisy latent x, timestep t, condition z) -> (epsilon, variance values).
    Orthus's `diff_mlp.SimpleMLPAdaLN` is the same network with `out_channels = in_channels` (v-prediction,
    no learned variance)."""

    def __init__(self, in_channels: int, width: int, z_channels: int, depth: int, out_channels: int | None = None):
        super().__init__()
        self.in_channels = in_channels
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(z_channels, width)
        self.input_proj = nn.Linear(in_channels, width)
        self.res_blocks = nn.ModuleList([ResBlock(width) for _ in range(depth)])
        self.final_layer = FinalLayer(width, 2 * in_channels if out_channels is None else out_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.input_proj(x)
        y = self.time_embed(t) + self.cond_embed(c)
        for block in self.res_blocks:
            x = block(x, y)
        return self.final_layer(x, y)


class DiffLoss(nn.Module):
    """Holder of the diffusion network, named as upstream (`diffloss.net.*`)."""

    def __init__(self, config: MARConfig):
        super().__init__()
        self.net = SimpleMLPAdaLN(config.token_dim, config.diffloss_width, config.embed_dim, config.diffloss_depth)


# -- MAR ----------------------------------------------------------------------------------------------
class MAR(nn.Module):
    """The MAR encoder/decoder transformer and its diffusion head (inference only)."""

    def __init__(self, config: MARConfig = MAR_CONFIGS["mar_base"]):
        super().__init__()
        self.config = config
        d, n = config.embed_dim, config.seq_len + config.buffer_size
        self.class_emb = nn.Embedding(config.num_classes, d)
        self.fake_latent = nn.Parameter(torch.zeros(1, d))
        self.z_proj = nn.Linear(config.token_dim, d)
        self.z_proj_ln = nn.LayerNorm(d, eps=1e-6)
        self.encoder_pos_embed_learned = nn.Parameter(torch.zeros(1, n, d))
        self.encoder_blocks = nn.ModuleList([Block(d, config.num_heads, config.mlp_ratio) for _ in range(config.depth)])
        self.encoder_norm = nn.LayerNorm(d, eps=1e-6)
        self.decoder_embed = nn.Linear(d, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, n, d))
        self.decoder_blocks = nn.ModuleList([Block(d, config.num_heads, config.mlp_ratio) for _ in range(config.depth)])
        self.decoder_norm = nn.LayerNorm(d, eps=1e-6)
        self.diffusion_pos_embed_learned = nn.Parameter(torch.zeros(1, config.seq_len, d))
        self.diffloss = DiffLoss(config)

    def _with_buffer(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, L) True = masked -> (B, buffer + L) True = kept (the class buffer is always kept)."""
        buffer = torch.ones(mask.shape[0], self.config.buffer_size, dtype=torch.bool, device=mask.device)
        return torch.cat([buffer, ~mask], dim=1)

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor, class_embedding: torch.Tensor) -> torch.Tensor:
        """Latents (B, L, C), mask (B, L) bool (same count per row), class embeddings (B, D) -> (B, kept, D)."""
        x = self.z_proj(tokens)
        b, _, d = x.shape
        buffer = class_embedding.unsqueeze(1).expand(b, self.config.buffer_size, d)
        # cat promotes a float16 (autocast) projection to the class embedding's float32, as upstream's buffer
        x = self.z_proj_ln(torch.cat([buffer, x], dim=1) + self.encoder_pos_embed_learned)
        x = x[self._with_buffer(mask)].reshape(b, -1, d)
        for block in self.encoder_blocks:
            x = block(x)
        return self.encoder_norm(x)

    def decode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoder output and the same mask -> one condition vector per latent position (B, L, D)."""
        x = self.decoder_embed(x)
        kept = self._with_buffer(mask)
        full = self.mask_token.to(x.dtype).expand(kept.shape[0], kept.shape[1], -1).clone()
        full[kept] = x.reshape(-1, x.shape[-1])
        x = full + self.decoder_pos_embed_learned
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_norm(x)[:, self.config.buffer_size:]
        return x + self.diffusion_pos_embed_learned

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, C p^2) -> (B, C, grid p, grid p) as upstream's `unpatchify`."""
        c, p, g = self.config.vae_embed_dim, self.config.patch_size, self.config.grid
        x = tokens.reshape(tokens.shape[0], g, g, c, p, p)
        return torch.einsum("nhwcpq->nchpwq", x).reshape(tokens.shape[0], c, g * p, g * p)


# -- sampling -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MARSampler:
    """`sample_tokens` arguments (upstream evaluation: 256 iterations, 100 diffusion steps, linear CFG)."""

    num_iter: int = 256
    num_sampling_steps: int = 100
    cfg: float = 1.0
    cfg_schedule: str = "linear"
    temperature: float = 1.0

    def __post_init__(self):
        if self.cfg_schedule not in CFG_SCHEDULES:
            raise ValueError(f"cfg_schedule must be one of {', '.join(CFG_SCHEDULES)} (upstream evaluates with "
                             f"linear), not {self.cfg_schedule!r}")
        if self.num_iter < 1 or self.num_sampling_steps < 2 or self.temperature <= 0 or self.cfg < 0:
            raise ValueError("need num_iter >= 1, num_sampling_steps >= 2, temperature > 0 and cfg >= 0")

    def guidance(self, known_after_step: int, seq_len: int) -> float:
        """The step's CFG scale; `known_after_step` = seq_len - upstream's `mask_len` for the next round."""
        if self.cfg_schedule == "constant":
            return self.cfg
        return 1 + (self.cfg - 1) * known_after_step / seq_len


@dataclass(frozen=True)
class Step:
    """One generation step: the order positions [start, stop) are predicted; `mask_len` is upstream's
    next-round mask length (clamped to >= 1 even on the last step, where everything left is predicted)."""

    start: int
    stop: int
    mask_len: int


def step_plan(seq_len: int, num_iter: int) -> list[Step]:
    """MaskGIT's cosine schedule as MAR applies it: after step s, floor(L cos(pi/2 (s+1)/T)) tokens stay
    masked, at least one fewer than before and at least one, until the last step predicts the rest. The
    first `mask_len` entries of a request's order are the ones still masked."""
    if not 1 <= num_iter <= seq_len:
        raise ValueError(f"num_iter must be between 1 and the {seq_len} tokens, not {num_iter}")
    steps, masked = [], seq_len
    for step in range(num_iter):
        target = math.floor(seq_len * np.cos(math.pi / 2.0 * (step + 1) / num_iter))
        mask_len = max(1, min(masked - 1, target))
        start = 0 if step == num_iter - 1 else mask_len
        steps.append(Step(start, masked, mask_len))
        masked = start
    return steps


def draw_orders(seq_len: int, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """A random generation order per request, from that request's generator."""
    return torch.stack([torch.randperm(seq_len, generator=g) for g in generators])


def sample_latents(net: SimpleMLPAdaLN, z: torch.Tensor, schedule: RespacedSchedule, noise: torch.Tensor,
                   guidance: float | None, temperature: float) -> torch.Tensor:
    """DiffLoss.sample: z (N, D) conditions (cond rows, then as many uncond rows when guided), noise
    (steps + 1, N', C) with N' = N or N / 2 -> sampled latents (N', C).

    Guided, the network runs on [x; x] with [z_cond; z_uncond]; epsilon becomes uncond + s (cond - uncond)
    and the variance values stay the conditional ones (upstream's `forward_with_cfg`)."""
    x = noise[0]
    channels = x.shape[-1]
    for i in reversed(range(schedule.num_steps)):
        t = torch.full((z.shape[0],), int(schedule.timesteps[i]), dtype=torch.long, device=z.device)
        out = net(x if guidance is None else torch.cat([x, x]), t, z)
        eps, var_values = out[:, :channels], out[:, channels:]
        if guidance is not None:
            cond, uncond = eps.chunk(2)
            eps, var_values = uncond + guidance * (cond - uncond), var_values[: x.shape[0]]
        x = p_sample(schedule, i, x, eps, var_values, noise[i + 1], temperature)
    return x


@torch.no_grad()
def generate_mar(model: MAR, labels: torch.Tensor, generators: Sequence[torch.Generator],
                 sampler: MARSampler) -> torch.Tensor:
    """Class labels (B,) -> latents (B, C, grid, grid) in the VAE's scaled latent space.

    Request b draws, from generators[b] and in this order: its order (a permutation of the L positions),
    then at every step one (num_sampling_steps + 1, n, C) normal tensor (initial noise and per-step noise
    of its n new tokens, in ascending position order)."""
    cfg, device = model.config, labels.device
    batch, seq_len, channels = labels.shape[0], cfg.seq_len, cfg.token_dim
    if len(generators) != batch:
        raise ValueError(f"{len(generators)} generators for a batch of {batch}")
    schedule = respaced_schedule(sampler.num_sampling_steps)
    orders = draw_orders(seq_len, generators).to(device)
    guided = sampler.cfg != 1.0
    class_embedding = model.class_emb(labels)
    if guided:
        class_embedding = torch.cat([class_embedding, model.fake_latent.expand(batch, -1)])
    tokens = torch.zeros(batch, seq_len, channels, device=device)
    mask = torch.ones(batch, seq_len, dtype=torch.bool, device=device)
    for step in step_plan(seq_len, sampler.num_iter):
        tokens_in, mask_in = (torch.cat([tokens, tokens]), torch.cat([mask, mask])) if guided else (tokens, mask)
        z = model.decode(model.encode(tokens_in, mask_in, class_embedding), mask_in)
        positions = orders[:, step.start:step.stop].sort(dim=1).values  # (B, n)
        n = positions.shape[1]
        index = positions.repeat(2, 1) if guided else positions
        z_new = z.gather(1, index.unsqueeze(-1).expand(-1, -1, z.shape[-1]))
        noise = torch.stack([torch.randn(schedule.num_steps + 1, n, channels, generator=g) for g in generators])
        noise = noise.to(device).transpose(0, 1).reshape(schedule.num_steps + 1, batch * n, channels)
        guidance = sampler.guidance(seq_len - step.mask_len, seq_len) if guided else None
        z_rows = z_new.reshape(-1, z.shape[-1])  # cond rows (b, position), then uncond rows
        new = sample_latents(model.diffloss.net, z_rows, schedule, noise, guidance, sampler.temperature)
        tokens = tokens.scatter(1, positions.unsqueeze(-1).expand(-1, -1, channels),
                                new.reshape(batch, n, channels).to(tokens.dtype))
        mask = mask.scatter(1, positions, False)
    return model.unpatchify(tokens)
