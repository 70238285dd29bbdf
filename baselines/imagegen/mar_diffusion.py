"""The DDPM sampler behind MAR's per-token diffusion head, the project's own implementation.

MAR (LTH14/mar, `diffusion/`, DiT's copy of OpenAI's IDDPM code) samples each token latent with a
1000-step cosine-schedule DDPM respaced to `num_sampling_steps` evenly spread steps; the network predicts
epsilon and a learned interpolation between the two IDDPM variances ("learned range"); x0 is not clipped;
the noise added at every step is scaled by a temperature. Written here rather than taken from diffusers
because IDDPM's respacing (`space_timesteps`: rounded fractional stride, kept steps re-derived as betas
from the cumulative alphas) and its learned-range variance differ from diffusers' timestep spacings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

TRAIN_STEPS = 1000
MAX_BETA = 0.999


def cosine_betas(num_steps: int = TRAIN_STEPS) -> np.ndarray:
    """IDDPM's cosine schedule: betas from alpha_bar(t) = cos((t + 0.008) / 1.008 * pi / 2)^2, capped at 0.999."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), MAX_BETA)
                     for i in range(num_steps)], dtype=np.float64)


def space_timesteps(num_steps: int, count: int) -> list[int]:
    """The `count` kept steps of IDDPM's `space_timesteps(num_steps, str(count))` (one section), ascending."""
    if not 1 <= count <= num_steps:
        raise ValueError(f"cannot respace {num_steps} diffusion steps into {count}")
    stride = 1 if count == 1 else (num_steps - 1) / (count - 1)
    # upstream accumulates the fractional index in floating point and rounds half to even (Python's round)
    steps, index = [], 0.0
    for _ in range(count):
        steps.append(round(index))
        index += stride
    return sorted(set(steps))


@dataclass(frozen=True)
class RespacedSchedule:
    """A respaced diffusion: `timesteps[i]` is the training step the network sees at sampling step i."""

    timesteps: np.ndarray
    betas: np.ndarray
    alphas_cumprod: np.ndarray

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    @property
    def alphas_cumprod_prev(self) -> np.ndarray:
        return np.append(1.0, self.alphas_cumprod[:-1])

    @property
    def posterior_variance(self) -> np.ndarray:
        return self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @property
    def posterior_log_variance_clipped(self) -> np.ndarray:
        """log of the posterior variance, its first (zero) entry replaced by the second, as upstream."""
        var = self.posterior_variance
        return np.log(np.append(var[1], var[1:])) if len(var) > 1 else np.array([])

    def coefficients(self, i: int) -> dict[str, float]:
        """Step i's float64 coefficients, cast to float32 as upstream's `_extract_into_tensor` does."""
        ac, ac_prev, beta = self.alphas_cumprod[i], self.alphas_cumprod_prev[i], self.betas[i]
        values = {"recip": np.sqrt(1.0 / ac), "recipm1": np.sqrt(1.0 / ac - 1),
                  "coef_x0": beta * np.sqrt(ac_prev) / (1.0 - ac),
                  "coef_xt": (1.0 - ac_prev) * np.sqrt(1.0 - beta) / (1.0 - ac),
                  "max_log": np.log(beta)}
        if i > 0:  # the variance is only used where noise is added
            values["min_log"] = self.posterior_log_variance_clipped[i]
        return {k: float(np.float32(v)) for k, v in values.items()}


def respaced_schedule(num_sampling_steps: int, num_train_steps: int = TRAIN_STEPS) -> RespacedSchedule:
    """`create_diffusion(str(num_sampling_steps), noise_schedule="cosine")`'s sampling process."""
    base_cumprod = np.cumprod(1.0 - cosine_betas(num_train_steps))
    kept = space_timesteps(num_train_steps, num_sampling_steps)
    betas, last = [], 1.0
    for step in kept:
        betas.append(1 - base_cumprod[step] / last)
        last = base_cumprod[step]
    betas = np.array(betas, dtype=np.float64)
    return RespacedSchedule(np.array(kept), betas, np.cumprod(1.0 - betas))


def p_sample(schedule: RespacedSchedule, i: int, x: torch.Tensor, eps: torch.Tensor, var_values: torch.Tensor,
             noise: torch.Tensor, temperature: float) -> torch.Tensor:
    """x_{i-1} from x_i: IDDPM's epsilon-prediction mean with the learned-range variance; noise * temperature
    is added except at the last step (i == 0). A half-precision network output (fp16 autocast) is promoted
    to float32 first, as upstream's float32 coefficient tensors promote it."""
    # Upstream's coefficients are float32 tensors, which promote a float16 epsilon to float32; a Python float
    # does not, and sqrt(1 / alpha_bar - 1) ~ 2e4 at t = 999 times |eps| > 3.3 overflows float16 to inf.
    dtype = torch.promote_types(x.dtype, torch.float32)
    eps, var_values = eps.to(dtype), var_values.to(dtype)
    c = schedule.coefficients(i)
    x0 = c["recip"] * x - c["recipm1"] * eps
    mean = c["coef_x0"] * x0 + c["coef_xt"] * x
    if i == 0:
        return mean
    frac = (var_values + 1) / 2
    log_variance = frac * c["max_log"] + (1 - frac) * c["min_log"]
    return mean + torch.exp(0.5 * log_variance) * noise * temperature
