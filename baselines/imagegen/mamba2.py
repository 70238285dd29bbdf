"""The Mamba-2 mixer (Dao & Gu 2024, state-spaces/mamba `mamba_ssm/modules/mamba2.py`), the project's own code.

Parameter names are mamba_ssm's (`in_proj`, `conv1d`, `dt_bias`, `A_log`, `D`, `norm`, `out_proj`), so released
checkpoints load by name. One layer, per token t and head h (headdim p, state size n, one B/C group):

    z, xBC, dt = split(in_proj(u))              xBC -> depthwise causal conv (width 4) -> SiLU -> x, B, C
    dt = softplus(dt + dt_bias)                 A = -exp(A_log)          (one scalar per head)
    S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T  y_t = S_t C_t + D x_t    (S: p x n per head)
    out = out_proj(RMSNorm(y * SiLU(z)))        (gated RMSNorm, norm after the gate, eps 1e-5)

Two interchangeable ways to run the scan, chosen per call (`scan`):

- "plain": PyTorch only, any device. The full sequence uses the chunked form of the recurrence (`ssd_scan`,
  the paper's listing 1: exact within a chunk as a masked matrix product, states passed between chunks),
  cached decoding the recurrence itself (`ssd_step`, mamba_ssm's `selective_state_update_ref`).
- "fused": mamba_ssm's Triton kernels `mamba_chunk_scan_combined` (full sequence) and `selective_state_update`
  (one step), used only when `mamba_ssm` imports and the tensors are on CUDA (`resolve_scan`). The causal conv1d
  and the norms stay plain PyTorch on both paths (they are a small share of the time).

The plain path is what the CPU tests compare with upstream (tests/test_imagegen_aim.py). The fused path cannot run
on this CPU-only project machine: only its dispatch is tested here.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.errors import InputError

ScanPath = Literal["auto", "plain", "fused"]


@dataclasses.dataclass(frozen=True)
class Mamba2Config:
    """mamba_ssm `Mamba2` constructor arguments (its defaults, as AiM uses them)."""

    d_model: int
    d_state: int = 128
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    chunk_size: int = 256
    eps: float = 1e-5

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.ngroups * self.d_state


def fused_kernels():
    """mamba_ssm's (chunk scan, state update) kernels, or None where mamba_ssm is not importable."""
    try:
        combined = importlib.import_module("mamba_ssm.ops.triton.ssd_combined")
        update = importlib.import_module("mamba_ssm.ops.triton.selective_state_update")
    except Exception:  # noqa: BLE001 - not installed, or installed without its compiled parts: no fused path
        return None
    return combined.mamba_chunk_scan_combined, update.selective_state_update


def resolve_scan(requested: str, device: str | torch.device) -> str:
    """The scan path a run uses: "fused" where asked (or "auto") and possible, else "plain".

    >>> resolve_scan("auto", "cpu")
    'plain'
    """
    if requested not in ("auto", "plain", "fused"):
        raise InputError(f"scan must be auto, plain or fused, not {requested!r}")
    on_cuda = torch.device(device).type == "cuda"
    if requested == "plain" or (requested == "auto" and not on_cuda):
        return "plain"
    if fused_kernels() is None or not on_cuda:
        if requested == "fused":
            raise InputError("scan=fused needs the mamba-ssm package (pip install mamba-ssm) and a CUDA device; "
                             "use scan=plain (or auto) to run the PyTorch scan")
        return "plain"
    return "fused"


def _heads(t: torch.Tensor, nheads: int) -> torch.Tensor:
    """(..., groups, n) -> (..., heads, n): each group's B or C shared by its heads."""
    return t.repeat_interleave(nheads // t.shape[-2], dim=-2)


def _segsum(x: torch.Tensor) -> torch.Tensor:
    """(..., T) -> (..., T, T): sum of x[j+1..i] below the diagonal, -inf above (log of the decay from j to i)."""
    t = x.shape[-1]
    x = x[..., None].expand(*x.shape, t)
    x = x.masked_fill(~torch.ones(t, t, dtype=torch.bool, device=x.device).tril(-1), 0).cumsum(dim=-2)
    return x.masked_fill(~torch.ones(t, t, dtype=torch.bool, device=x.device).tril(), float("-inf"))


def ssd_scan(x, dt, A, B, C, chunk_size: int, state: torch.Tensor | None = None):
    """The recurrence over a whole sequence, in chunks (plain PyTorch, float32).

    x (b, l, h, p), dt (b, l, h) after softplus, A (h,), B and C (b, l, g, n); state (b, h, p, n) or None (zeros).
    Returns y (b, l, h, p) without the D skip, and the final state (b, h, p, n).
    """
    b, length, h, p = x.shape
    pad = -length % chunk_size
    xs, a, bs, cs = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in
                     (x * dt[..., None], A * dt, _heads(B, h), _heads(C, h)))  # padding: dt = 0, no change
    chunks = xs.shape[1] // chunk_size
    xs, bs, cs = (t.reshape(b, chunks, chunk_size, h, -1) for t in (xs, bs, cs))
    a = a.reshape(b, chunks, chunk_size, h).permute(0, 3, 1, 2)  # (b, h, c, l)
    a_cum = a.cumsum(dim=-1)
    # within each chunk: y_i = sum_{j <= i} C_i . B_j exp(a_{j+1} + ... + a_i) x_j dt_j
    y = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", cs, bs, torch.exp(_segsum(a)), xs)
    # state at the end of each chunk from that chunk alone, then passed on through the chunks
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", bs, torch.exp(a_cum[..., -1:] - a_cum), xs)
    start = torch.zeros_like(states[:, :1]) if state is None else state[:, None].to(states.dtype)
    states = torch.cat([start, states], dim=1)
    passed = torch.einsum("bhzc,bchpn->bzhpn", torch.exp(_segsum(F.pad(a_cum[..., -1], (1, 0)))), states)
    states, final = passed[:, :-1], passed[:, -1]
    y = y + torch.einsum("bclhn,bchpn,bhcl->bclhp", cs, states, torch.exp(a_cum))
    return y.reshape(b, chunks * chunk_size, h, p)[:, :length], final


def ssd_step(state: torch.Tensor, x, dt, A, B, C) -> torch.Tensor:
    """One step of the recurrence, updating state (b, h, p, n) in place; x (b, h, p), dt (b, h) after softplus,
    B and C (b, g, n). Returns y (b, h, p) without the D skip."""
    h = x.shape[1]
    B, C = _heads(B, h), _heads(C, h)
    state.mul_(torch.exp(dt * A)[..., None, None]).add_(torch.einsum("bh,bhp,bhn->bhpn", dt, x, B))
    return torch.einsum("bhpn,bhn->bhp", state, C)


class GatedRMSNorm(nn.Module):
    """mamba_ssm's `layernorm_gated.RMSNorm` with norm_before_gate=False: RMSNorm(y * SiLU(z)) per group."""

    def __init__(self, dim: int, group_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.group_size, self.eps = group_size, eps

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        g = (y.float() * F.silu(z.float())).unflatten(-1, (-1, self.group_size))
        g = g * torch.rsqrt(g.square().mean(dim=-1, keepdim=True) + self.eps)
        return (g.flatten(-2) * self.weight.float()).to(y.dtype)


class Mamba2(nn.Module):
    """One Mamba-2 mixer; `forward` runs a whole sequence from a zero state, `step` one token from a cache."""

    def __init__(self, c: Mamba2Config):
        super().__init__()
        self.c = c
        self.in_proj = nn.Linear(c.d_model, 2 * c.d_inner + 2 * c.ngroups * c.d_state + c.nheads, bias=False)
        self.conv1d = nn.Conv1d(c.conv_dim, c.conv_dim, c.d_conv, groups=c.conv_dim, padding=c.d_conv - 1)
        self.dt_bias = nn.Parameter(torch.zeros(c.nheads))
        self.A_log = nn.Parameter(torch.zeros(c.nheads))
        self.D = nn.Parameter(torch.ones(c.nheads))
        self.norm = GatedRMSNorm(c.d_inner, c.d_inner // c.ngroups, c.eps)
        self.out_proj = nn.Linear(c.d_inner, c.d_model, bias=False)

    def _split(self, zxbcdt: torch.Tensor):
        c = self.c
        return torch.split(zxbcdt, [c.d_inner, c.conv_dim, c.nheads], dim=-1)

    def _xbc(self, xbc: torch.Tensor):
        c = self.c
        x, B, C = torch.split(xbc, [c.d_inner, c.ngroups * c.d_state, c.ngroups * c.d_state], dim=-1)
        return x.unflatten(-1, (c.nheads, c.headdim)), B.unflatten(-1, (c.ngroups, c.d_state)), \
            C.unflatten(-1, (c.ngroups, c.d_state))

    def forward(self, u: torch.Tensor, scan: str = "plain") -> torch.Tensor:
        """u (b, l, d_model) -> (b, l, d_model)."""
        c = self.c
        z, xbc, dt = self._split(self.in_proj(u))
        xbc = F.silu(self.conv1d(xbc.transpose(1, 2))[..., :u.shape[1]].transpose(1, 2))
        x, B, C = self._xbc(xbc)
        A = -torch.exp(self.A_log.float())
        if scan == "fused":
            chunk_scan, _ = fused_kernels()
            y = chunk_scan(x, dt, A, B, C, chunk_size=c.chunk_size, D=self.D, dt_bias=self.dt_bias, dt_softplus=True)
        else:
            delta = F.softplus(dt.float() + self.dt_bias.float())
            y, _ = ssd_scan(x.float(), delta, A, B.float(), C.float(), c.chunk_size)
            y = (y + x.float() * self.D.float()[:, None]).to(u.dtype)
        return self.out_proj(self.norm(y.flatten(-2), z))

    def new_cache(self, batch: int, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(conv window (b, conv_dim, d_conv), SSM state (b, h, p, n)), zeros: the state before any token."""
        c = self.c
        return (torch.zeros(batch, c.conv_dim, c.d_conv, device=device, dtype=dtype),
                torch.zeros(batch, c.nheads, c.headdim, c.d_state, device=device, dtype=torch.float32))

    def step(self, u: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor], scan: str = "plain") -> torch.Tensor:
        """u (b, d_model), one token; updates the cache in place -> (b, d_model)."""
        c = self.c
        conv_state, ssm_state = cache
        z, xbc, dt = self._split(self.in_proj(u))
        conv_state.copy_(torch.roll(conv_state, -1, dims=-1))
        conv_state[:, :, -1] = xbc
        xbc = F.silu((conv_state * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias)
        x, B, C = self._xbc(xbc)
        A = -torch.exp(self.A_log.float())
        if scan == "fused":
            _, update = fused_kernels()
            p, n = c.headdim, c.d_state
            y = update(ssm_state, x, dt[..., None].expand(-1, -1, p), A[:, None, None].expand(-1, p, n), B, C,
                       self.D[:, None].expand(-1, p), dt_bias=self.dt_bias[:, None].expand(-1, p), dt_softplus=True)
        else:
            delta = F.softplus(dt.float() + self.dt_bias.float())
            y = ssd_step(ssm_state, x.float(), delta, A, B.float(), C.float())
            y = (y + x.float() * self.D.float()[:, None]).to(u.dtype)
        return self.out_proj(self.norm(y.flatten(-2), z))
