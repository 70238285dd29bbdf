"""sigma-GPT (Pannatier, Courdier and Fleuret 2024, "σ-GPTs: A New Approach to Autoregressive Models", arXiv
2404.09562): a GPT trained on sequences in shuffled order, and its burst sampling (token-based rejection sampling).

Written from the paper; the authors' code is AGPL-3.0 and was not read.

The model. A causal Transformer over the sequence *in the order σ*: input t carries the token x_σ(t), its
position σ(t) and the position σ(t+1) of the token it must predict (the paper's "double positional encoding").
The loss is the usual next-token cross-entropy along σ. With σ the identity it is a plain causal LM: input t carries
(x_t, t, t+1) and predicts x_{t+1}; `SigmaGPTModel` is that left-to-right view, an `ARModel` that every
strategy and the AR baseline can decode.

Burst sampling (`burst_decode`), one iteration:
1. draft: with the known tokens committed in the KV cache, query every open position j at once (copies of the
   last committed token, each with next position j, attending to the cache and to itself only) and draw a
   token at each from q_j = p(x_j | known);
2. verify: choose an order ρ of the drafted positions (`random`, as in the paper, or `left-to-right`) and
   feed the drafts along ρ in one causal pass, which gives p_i = p(x_ρi | known, drafts ρ1..ρ(i-1));
3. accept: the first draft always (p_1 = q_1); draft i with probability min(1, p_i(d)/q_i(d)) (greedy: when
   it is p_i's argmax); at the first rejection the token is drawn from the residual norm(max(0, p_i - q_i))
   (greedy: p_i's argmax) and the burst ends. The accepted tokens are exact draws of the model's chain along
   ρ (the speculative-sampling argument, with q_j as the draft distributions), so every iteration emits at least
   one token and the result follows the model's any-order chain in the order the positions were fixed.

What "lossless" means here: the protocol's baseline is left-to-right AR decoding of the same sigma-GPT. With the
`left-to-right` verification order, burst output is that of the baseline: greedy equals greedy AR (up to
near-ties), sampling follows the model's left-to-right distribution. With the paper's `random` order the output
follows the model's chain along a random order, which for a trained (imperfect) model is not its left-to-right
distribution, and greedy output differs from greedy AR: that method is declared lossy and the task reports the
model's left-to-right NLL of its output beside the baseline's.

Deviations from the paper, on purpose: (a) the paper trains on fully shuffled orders with a curriculum from
left-to-right to random; here a sequence is either left-to-right or a left-to-right prefix of random length
followed by a random order of the rest or of the next 8 positions, with the left-to-right share falling from 1
to 1/2 (decoding always starts from a left-to-right prompt, the baseline decodes left to right, bursts draft
near positions, and the training budget is minutes on a CPU); (b) a `window` bounds how many open positions
one burst drafts (0: all of them, as in the paper); (c) the encoding is multiplied by a learned scalar gain
started at 0.03 (unscaled, it drowns the token embeddings and training stalls); (d) the paper adds sinusoidal
encodings of both positions to the input; here the token's own position is its rotary position in attention (as
in the project's GPT) and the next position enters as a sinusoidal encoding of its offset from the own position,
the same information: with both absolute encodings added, the minutes-long CPU training left the model blind to
the next position (its queries for positions n, n+1, ... from the same prefix gave one distribution).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from baselines.decoding.addons import read_tensors
from harness.errors import ArbenchError
from harness.protocols.decoding.generation import GenerationResult, SamplingConfig, row_generators, sample, warp
from harness.protocols.decoding.gpt import BYTE_VOCAB, EOS_ID, Block, GPTCache, GPTConfig
from harness.protocols.decoding.interface import ARModel, ModelOutput
from harness.protocols.decoding.strategy import DecodingStrategy, Models
from harness.provenance import sha256_file
from harness.registry import register_method
from harness.settings import Annotated, Field, Temperature, TopK, TopP

BUNDLED = Path(__file__).resolve().parent / "weights" / "sigma-gpt-kjv.safetensors"
TRAIN_COMMAND = "python -m baselines.decoding.train_sigma_gpt"


@dataclass(frozen=True)
class SigmaConfig:
    vocab_size: int = BYTE_VOCAB + 1
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_ratio: int = 4
    #: Positions 0..max_len-1 were trained; longer sequences are refused.
    max_len: int = 256

    def blocks(self) -> GPTConfig:
        return GPTConfig(self.vocab_size, self.d_model, self.n_layers, self.n_heads, self.mlp_ratio, exit_layers=())


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Standard sinusoidal encoding (Vaswani et al.) of integer positions (...,) -> (..., dim)."""
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, device=positions.device).float() / dim)
    angles = positions.float()[..., None] * freq
    return torch.stack([angles.sin(), angles.cos()], -1).flatten(-2)


class SigmaGPT(nn.Module):
    """The network: the project GPT's blocks (`gpt.Block`: pre-LN, causal attention) and tied LM head; a token's
    own position enters as its rotary position in attention, the position of the token it predicts as a
    sinusoidal encoding of the offset (next position - own position) added to its embedding."""

    def __init__(self, config: SigmaConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config.blocks()) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        # A learned gain on the encoding, started where its entries (RMS 0.7) match the token embedding's
        # (std 0.02): unscaled, it drowns the tokens after the first LayerNorm and training stalls.
        self.pos_gain = nn.Parameter(torch.tensor(0.03))

    def embed(self, ids: torch.Tensor, pos: torch.Tensor, next_pos: torch.Tensor) -> torch.Tensor:
        return self.tok_emb(ids) + self.pos_gain * sinusoid(next_pos - pos, self.config.d_model)

    def rotation(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary tables for the tokens' own positions: (t, hd/2) for shared positions (t,), (B, 1, T, hd/2)
        for per-row positions (B, T)."""
        hd = self.config.d_model // self.config.n_heads  # the tables of gpt.rope_tables, made on pos's device
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float32, device=pos.device) / hd))
        angles = pos.float()[..., None] * inv_freq
        if pos.dim() == 1:
            return angles.cos(), angles.sin()
        return angles.cos()[:, None], angles.sin()[:, None]

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h) @ self.tok_emb.weight.T

    def forward_order(self, x: torch.Tensor, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass along per-row orders (B, T) (permutations of 0..T-1): logits (B, T-1, V) for the
        tokens x[order[:, 1:]] and those targets."""
        tokens = x.gather(1, order)
        h = self.embed(tokens[:, :-1], order[:, :-1], order[:, 1:])
        cos, sin = self.rotation(order[:, :-1])
        for block in self.blocks:
            h = block(h, cos, sin)
        return self.logits(h), tokens[:, 1:]

    def step(self, ids: torch.Tensor, pos: torch.Tensor, next_pos: torch.Tensor, cache: GPTCache, start: int,
             mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, t, V) for inputs (B, t) with positions and next positions (t,), written to the cache at
        `start`..`start+t`; `mask` (t, start+t) bool: what each input sees (default: causal)."""
        if start + ids.shape[1] > cache.max_len:
            raise ArbenchError(f"sigma-GPT cache overflow: {start + ids.shape[1]} > {cache.max_len} allocated.")
        h = self.embed(ids, pos[None].expand_as(ids), next_pos[None].expand_as(ids))
        cos, sin = self.rotation(pos)
        extra = () if mask is None else (mask,)
        for layer, block in enumerate(self.blocks):
            h = block(h, cos, sin, (cache.keys[layer], cache.values[layer], start, *extra))
        cache.lengths = [start + ids.shape[1]] * len(cache.lengths)
        return self.logits(h)

    @classmethod
    def from_file(cls, path: str | Path) -> tuple["SigmaGPT", dict[str, Any]]:
        """The network and the file's metadata (`training`), from a safetensors file saved by `save`."""
        path = Path(path)
        if not path.is_file():
            raise ArbenchError(f"no sigma-GPT checkpoint at {path}; run `{TRAIN_COMMAND}` to train the bundled one.")
        meta, state = read_tensors(path)
        if meta.get("kind") != "sigma-gpt" or "config" not in meta:
            raise ArbenchError(f"{path} is not a sigma-GPT checkpoint (no kind=sigma-gpt config in its metadata); "
                               f"train one with `{TRAIN_COMMAND}`.")
        net = cls(SigmaConfig(**json.loads(meta["config"])))
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ArbenchError(f"{path} does not hold a sigma-GPT: missing {missing[:4]}, unexpected {unexpected[:4]}.")
        return net.eval(), meta

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().to(torch.float16).contiguous() for k, v in self.state_dict().items()}
        meta = {"kind": "sigma-gpt", "config": json.dumps(asdict(self.config)),
                **{k: json.dumps(v) for k, v in (extra or {}).items()}}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path), metadata=meta)


class SigmaGPTModel(ARModel):
    """The left-to-right view of a sigma-GPT (input t: token x_t, position t, next position t+1): what the AR
    baseline decodes, what teacher-forced checks and NLLs are computed with."""

    def __init__(self, net: SigmaGPT, name: str = "sigma-gpt", sha256: str | None = None, device: str = "cpu"):
        self.net = net.to(device).eval()
        self.name, self._sha256, self.device = name, sha256, torch.device(device)
        c = net.config
        self.vocab_size, self.eos_id, self.num_layers = c.vocab_size, EOS_ID, c.n_layers
        self.tokenizer_digest = f"utf8-bytes+eos{EOS_ID}"

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "SigmaGPTModel":
        net, _ = SigmaGPT.from_file(path)
        return cls(net, Path(path).stem, sha256_file(path), device)

    def checkpoint_sha256(self) -> str | None:
        return self._sha256

    def new_cache(self, batch: int, max_len: int) -> GPTCache:
        return GPTCache(self.net.config.blocks(), batch, max_len, torch.float32, self.device)

    def cache_length(self, cache: GPTCache) -> int:
        return cache.lengths[0]

    def crop(self, cache: GPTCache, length: int) -> None:
        cache.lengths = [min(n, length) for n in cache.lengths]

    def require_positions(self, n: int) -> None:
        if n > self.net.config.max_len:
            raise ArbenchError(f"sigma-GPT {self.name!r} was trained on {self.net.config.max_len} positions, and "
                               f"prompt + max_new_tokens needs {n}; lower max_new_tokens or use shorter prompts.")

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, cache: GPTCache, *, exit_layer: int | None = None,
                want_hidden: bool = False) -> ModelOutput:
        if exit_layer is not None and exit_layer != self.num_layers:
            raise ArbenchError(f"sigma-GPT {self.name!r} has no intermediate exits.")
        start, t = cache.lengths[0], ids.shape[1]
        self.require_positions(start + t)
        pos = torch.arange(start, start + t, device=ids.device)
        return ModelOutput(self.net.step(ids, pos, pos + 1, cache, start))


def accept(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor,
           generators: list[torch.Generator]) -> torch.Tensor:
    """(B, k) bool: draft d_i (drawn from q_i) is kept with probability min(1, p_i(d)/q_i(d)); one uniform per
    draft from the row's generator (Leviathan et al. 2023, Chen et al. 2023; the paper's token-based rule)."""
    pd = p.gather(-1, drafts[..., None])[..., 0].cpu()
    qd = q.gather(-1, drafts[..., None])[..., 0].cpu()
    u = torch.stack([torch.rand(drafts.shape[1], generator=g) for g in generators])
    return (u * qd <= pd).to(drafts.device)


def residual_draw(p: torch.Tensor, q: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A token from norm(max(0, p - q)) (V,), the distribution of a rejected draft's replacement that makes the
    kept-or-replaced token an exact draw from p; p itself when p <= q everywhere (then p = q up to rounding)."""
    residual = (p - q).clamp_min(0)
    total = float(residual.sum())
    return sample((residual / total if total > 0 else p)[None], [generator])[0]


@torch.inference_mode()
def burst_decode(model: SigmaGPTModel, prompt: torch.Tensor, max_new_tokens: int, order: str, window: int,
                 sampling: SamplingConfig = SamplingConfig(), seeds: Sequence[int] = (), device: str = "cpu",
                 trace: list | None = None) -> GenerationResult:
    """Burst sampling (module docstring) of a batch of equal-length prompts; all rows commit the same positions
    per iteration (the smallest acceptance of the batch, which keeps each row's tokens exact draws). `trace`, if
    given, receives the positions each iteration fixed, in order."""
    start_time = time.perf_counter()
    net, eos = model.net, model.eos_id
    batch, n = prompt.shape
    total = n + max_new_tokens
    model.require_positions(total)
    seeds = list(seeds) or [0] * batch
    generators = None if sampling.greedy else row_generators(seeds)
    order_gen = torch.Generator().manual_seed(int(seeds[0]) + 1)
    canvas = torch.full((batch, total), -1, dtype=torch.long)
    canvas[:, :n] = prompt
    known = torch.zeros(total, dtype=torch.bool)
    known[:n] = True
    cache = model.new_cache(batch, total + (window or max_new_tokens) + 1)
    committed = n - 1  # inputs in the cache: (x_p, p, p+1) for p < n-1; the last prompt token is pending
    pend, pend_pos = prompt[:, -1].to(device), n - 1
    passes = steps = 0
    accepted: list[int] = []
    first_token_s = 0.0

    def draft_inputs(open_pos: torch.Tensor, prefix: torch.Tensor | None):
        """(ids, pos, next_pos, mask) that query each open position from the pending token, after `prefix`."""
        k = len(open_pos)
        ids = pend[:, None].expand(batch, k)
        pos, nxt = torch.full((k,), pend_pos, device=device), open_pos.to(device)
        mask = torch.cat([torch.ones(k, committed, dtype=torch.bool), torch.eye(k, dtype=torch.bool)], 1)
        if prefix is None:
            return ids, pos, nxt, mask.to(device)
        p = prefix.shape[1]  # the prompt's own inputs, fed in the same pass (causal among themselves)
        causal = torch.ones(p, p, dtype=torch.bool).tril()
        top = torch.cat([causal, torch.zeros(p, k, dtype=torch.bool)], 1)
        bottom = torch.cat([torch.ones(k, p, dtype=torch.bool), torch.eye(k, dtype=torch.bool)], 1)
        ar = torch.arange(p, device=device)
        return (torch.cat([prefix.to(device), ids], 1), torch.cat([ar, pos]), torch.cat([ar + 1, nxt]),
                torch.cat([top, bottom]).to(device))

    def choose_open() -> torch.Tensor:
        open_pos = (~known).nonzero()[:, 0]
        if order == "random":
            open_pos = open_pos[torch.randperm(len(open_pos), generator=order_gen)]
        return open_pos[:window] if window else open_pos

    def finished() -> bool:
        if bool(known.all()):
            return True
        gap = int((~known).nonzero()[0, 0])  # the first open position: rows with an EOS before it are complete
        return bool((canvas[:, n:gap] == eos).any(1).all())

    first = True
    while not finished():
        open_pos = choose_open()
        k = len(open_pos)
        if first:  # the prefill and the first draft share one pass
            ids, pos, nxt, mask = draft_inputs(open_pos, prompt[:, :-1] if committed else None)
            logits = net.step(ids, pos, nxt, cache, 0, mask)[:, -k:]
            first = False
        else:
            ids, pos, nxt, mask = draft_inputs(open_pos, None)
            logits = net.step(ids, pos, nxt, cache, committed, mask)
        passes += 1
        model.crop(cache, committed)
        if sampling.greedy:
            q = None
            drafts = logits.argmax(-1)
        else:
            q = warp(logits, sampling)
            drafts = torch.stack([sample(q[:, i], generators) for i in range(k)], 1)
        # verify along the order: [pending -> ρ1, d_ρ1 -> ρ2, ..., d_ρ(k-1) -> ρk]
        ids = torch.cat([pend[:, None], drafts[:, :-1]], 1)
        pos = torch.cat([torch.tensor([pend_pos], device=device), open_pos[:-1].to(device)])
        p_logits = net.step(ids, pos, open_pos.to(device), cache, committed)
        passes += 1
        steps += 1
        if sampling.greedy:
            ok = p_logits.argmax(-1) == drafts
        else:
            p = warp(p_logits, sampling)
            ok = accept(p, q, drafts, generators)
        ok[:, 0] = True  # p_1 = q_1 (the same input): the first draft is always accepted
        rejected = (~ok).float().argmax(1)  # first rejection per row (0 when none)
        stop = torch.where(ok.all(1), torch.full_like(rejected, k), rejected + 1)  # tokens each row would commit
        m = int(stop.min())
        last = m - 1
        tokens = drafts[:, :m].clone()
        for b in (~ok[:, last]).nonzero()[:, 0].tolist():  # rows whose last token was rejected: the correction
            tokens[b, last] = (p_logits[b, last].argmax() if sampling.greedy
                               else residual_draw(p[b, last], q[b, last], generators[b]))
        canvas[:, open_pos[:m]] = tokens.cpu()
        known[open_pos[:m]] = True
        if not first_token_s and bool(known[n]):
            first_token_s = time.perf_counter() - start_time
        accepted.append(m)
        if trace is not None:
            trace.append(open_pos[:m].tolist())
        committed += m  # inputs 0..m-1 of the verify pass had accepted tokens and the right next positions
        model.crop(cache, committed)
        pend, pend_pos = tokens[:, last], int(open_pos[last])
    rows = []
    for row in canvas[:, n:].tolist():
        row = row[:row.index(-1)] if -1 in row else row
        if eos in row:
            row = row[:row.index(eos) + 1]
        rows.append(row)
    return GenerationResult(rows, passes, 0, steps, first_token_s, accepted)


@dataclass
class SigmaBurstConfig:
    """`model`: a sigma-GPT checkpoint (default: the bundled one); `window`: open positions drafted per burst
    (0: every open position, as in the paper)."""

    model: str = ""
    window: Annotated[int, Field(ge=0, le=4096)] = 8
    temperature: Temperature = 0.0
    top_k: TopK = 0
    top_p: TopP = 1.0


@dataclass
class SigmaBurstPaperConfig(SigmaBurstConfig):
    window: Annotated[int, Field(ge=0, le=4096)] = 0  # the paper drafts every open position


class SigmaBurstDecoding(DecodingStrategy):
    """Burst sampling of a sigma-GPT. It brings its own model (`brings_models`): the task times it against
    left-to-right AR decoding of that same model, not of the task's target."""

    paper = "Pannatier, Courdier and Fleuret 2024, σ-GPTs (arXiv 2404.09562)"
    Config = SigmaBurstConfig
    brings_models = True
    #: The verification order: "random" (the paper's) or "left-to-right".
    order: str = "random"

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.config.temperature, self.config.top_k, self.config.top_p)

    @property
    def greedy(self) -> bool:
        return self.sampling.greedy

    def model_path(self) -> Path:
        return Path(self.config.model).expanduser() if self.config.model else BUNDLED

    def own_models(self) -> Models:
        return Models(SigmaGPTModel.load(self.model_path(), self.device))

    def checkpoint_sha256(self) -> str | None:
        """The sigma-GPT file's digest, so the run's signature names the model that was timed (the task's own
        `model_sha256` is its target's, which this strategy does not use)."""
        path = self.model_path()
        return sha256_file(path) if path.is_file() else None

    def check(self, models: Models) -> None:
        super().check(models)
        if not isinstance(models.target, SigmaGPTModel):
            raise ArbenchError(f"{self.name} decodes a sigma-GPT (double positional encoding, trained in shuffled "
                               f"order), not {type(models.target).__name__} {models.target.name!r}; give one with "
                               f"model=<file> or train the bundled one with `{TRAIN_COMMAND}`.")

    def describe(self) -> dict[str, Any]:
        path = self.model_path()
        return {**super().describe(), "order": self.order,
                "model_sha256": sha256_file(path) if path.is_file() else None}

    def decode(self, models: Models, prompt, max_new_tokens, seeds) -> GenerationResult:
        return burst_decode(models.target, prompt, max_new_tokens, self.order, self.config.window, self.sampling,
                            seeds, self.device)


@register_method("sigma-gpt-burst")
class SigmaBurstRandomOrder(SigmaBurstDecoding):
    description = ("sigma-GPT burst sampling as in the paper: draft every open position at once, verify in a random "
                   "order with token-based rejection sampling; lossy against left-to-right AR of the same model")
    order = "random"
    Config = SigmaBurstPaperConfig

    @property
    def lossless(self) -> bool:
        return False  # its output follows the model's chain along random orders, not the left-to-right one


@register_method("sigma-gpt-burst-l2r")
class SigmaBurstLeftToRight(SigmaBurstDecoding):
    description = ("sigma-GPT burst sampling verified left to right: the model drafts the next `window` positions "
                   "from the prefix alone; lossless against left-to-right AR of the same model")
    order = "left-to-right"

    @property
    def lossless(self) -> bool:
        return True
