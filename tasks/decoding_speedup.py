"""Decoding speedup: a strategy timed against plain autoregressive decoding of the same model, on the
same device, in the same process, interleaved, and checked against what AR decoding produces.

Protocol (docs/decoding.md):
* fixed prompts, fixed stop rules (EOS or `max_new_tokens`, trimmed after EOS), tokens counted once
  from the final ids;
* the baseline is AR decoding with KV cache of the same target model with the same sampling settings;
  a strategy that brings its own model (`brings_models`, e.g. sigma-GPT, which needs a model trained in
  shuffled order) is timed against AR decoding of *that* model instead (a self-speedup), and exactness and
  quality are judged under that model;
* `harness.timing.compare`: warm-up excluded, device synchronised around each call, baseline and
  strategy interleaved over `rounds`; speedup = total baseline time / total strategy time with a
  paired bootstrap 95% interval over prompts; batch size 1 and a sweep (`batch_sizes`);
* lossless greedy strategies: every output is teacher-forced through the target; a token that is not
  the target's argmax by more than `near_tie` (logit gap) fails the run; exact match against the AR
  output and the first divergence position are stored. Lossy strategies get a quality track
  (target NLL of their output next to the baseline's);
* the hardware fingerprint and every strategy hyperparameter are in the signature: compare
  speedups only between rows with the same fingerprint and baseline.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from harness import provenance
from harness.api import Method, Request, SubmissionSpec, Task
from harness.errors import ArbenchError
from harness.metrics.base import MetricValue
from harness.protocols.decoding.bundled import BUNDLED_SUITE, load_model, read_prompts
from harness.protocols.decoding.generation import GenerationResult, validate_result
from harness.protocols.decoding.interface import ARModel
from harness.protocols.decoding.strategy import MODALITY, DecodingStrategy, Models
from harness.registry import METHODS, register_task
from harness.settings import Annotated, BatchSizes, Field, NonNegativeFloat
from harness.signature import Signature
from harness.timing import TimingConfig, TimingResult, compare

TIMING_VERSION = "1"


@dataclass
class DecodingSpeedupConfig:
    """`model`/`draft_model`: bundled name, GPT .safetensors file or HF folder; `prompts`: JSONL path."""

    model: str = "tiny-kjv-target"
    draft_model: str = "tiny-kjv-draft"
    prompts: str = ""
    max_new_tokens: Annotated[int, Field(ge=1, le=32_768)] = 128
    max_prompts: Annotated[int, Field(ge=0, le=1_000_000, description="0: all prompts")] = 0
    batch_sizes: BatchSizes = (1, 4, 16)
    warmup: Annotated[int, Field(ge=0, le=1000)] = 2
    rounds: Annotated[int, Field(ge=1, le=1000)] = 3
    near_tie: NonNegativeFloat = 1e-3
    threads: Annotated[int, Field(ge=1, le=1024)] = 1


@dataclass
class MiniConfig(DecodingSpeedupConfig):
    prompts: str = str(BUNDLED_SUITE)
    max_new_tokens: int = 32
    max_prompts: int = 0
    batch_sizes: BatchSizes = (1, 4)
    warmup: int = 1
    rounds: int = 2


def teacher_forced_violation(model: ARModel, prompt: Sequence[int], tokens: Sequence[int],
                             near_tie: float) -> tuple[int, float] | None:
    """(position, logit gap) of the first output token that is not the target's greedy choice by more
    than `near_tie`, or None. One forward pass over prompt + output."""
    if not tokens:
        return None
    ids = torch.tensor([list(prompt) + list(tokens)[:-1]], dtype=torch.long)
    cache = model.new_cache(1, ids.shape[1])
    logits = model.forward(ids, cache).logits[0, len(prompt) - 1:].float()
    chosen = logits.gather(1, torch.tensor(tokens)[:, None])[:, 0]
    gaps = logits.max(-1).values - chosen
    bad = (gaps > near_tie).nonzero()
    if bad.numel() == 0:
        return None
    pos = int(bad[0, 0])
    return pos, float(gaps[pos])


def nll_per_token(model: ARModel, prompt: Sequence[int], tokens: Sequence[int]) -> tuple[float, int]:
    """Sum of -log p(token) under the target (teacher-forced) and the token count."""
    if not tokens:
        return 0.0, 0
    ids = torch.tensor([list(prompt) + list(tokens)[:-1]], dtype=torch.long)
    logits = model.forward(ids, model.new_cache(1, ids.shape[1])).logits[0, len(prompt) - 1:].float()
    logp = torch.log_softmax(logits, -1).gather(1, torch.tensor(tokens)[:, None])
    return float(-logp.sum()), len(tokens)


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@register_task("decoding-speedup")
class DecodingSpeedup(Task):
    """Users bring a target model (and a draft model where the strategy needs one) and prompts."""

    version = "1"
    modality = MODALITY
    submission = SubmissionSpec(MODALITY, "a DecodingStrategy (harness.protocols.decoding.strategy) subclass: "
                                "decode(models, prompt_ids, max_new_tokens, seeds) -> GenerationResult, on the "
                                "task's target model; timed against AR decoding inside the sandbox", timing_study=True)
    description = ("speedup of a decoding strategy over AR decoding of the same model, interleaved in one process, "
                   "with exactness checks for lossless strategies")
    primary_metric = "speedup"
    Config = DecodingSpeedupConfig
    #: the file its run() reads in a submission's sandbox that the worker has already parsed as prompts (requests());
    #: `model` and `draft_model` are not copied (a submitter chooses task settings, and the worker does not check
    #: that such a file is a model): give a bundled name or a file under $ARBENCH_HOME/weights, which is shown
    input_settings = ("prompts",)

    # -- inputs --------------------------------------------------------------------------------
    def prompt_rows(self) -> list[dict]:
        if not self.config.prompts:
            raise ArbenchError(f"{self.name} needs prompts: --set prompts=<file.jsonl> (one {{\"id\", \"category\", "
                               f"\"prompt\"}} per line; Spec-Bench-style categories). The offline variant "
                               f"decoding-speedup-mini ships its own.")
        rows = read_prompts(Path(self.config.prompts), self.config.model)
        return rows[:self.config.max_prompts] if self.config.max_prompts > 0 else rows

    def requests(self) -> list[Request]:
        return [Request(i, row["id"], i, {"prompt_ids": row["ids"], "category": row["category"],
                                          "max_new_tokens": self.config.max_new_tokens})
                for i, row in enumerate(self.prompt_rows())]

    def _file_sha(self, spec: str) -> str:
        path = Path(spec)
        if path.is_file():
            return provenance.sha256_file(path)
        from harness.protocols.decoding.bundled import BUNDLED_MODELS

        if spec in BUNDLED_MODELS and BUNDLED_MODELS[spec].is_file():
            return provenance.sha256_file(BUNDLED_MODELS[spec])
        return spec

    def signature(self) -> Signature:
        sig = super().signature()
        rows = self.prompt_rows()
        sig.add("prompts_sha256", hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16])
        sig.add("model_sha256", self._file_sha(self.config.model)[:16])
        sig.add("draft_sha256", self._file_sha(self.config.draft_model)[:16])
        sig.add("timing", TIMING_VERSION)
        sig.add("hardware", self.hardware_fingerprint("cuda" if torch.cuda.is_available() else "cpu"))
        return sig

    def hardware_fingerprint(self, device: str) -> str:
        """The fingerprint under the thread count the timing runs with (it is part of the fingerprint)."""
        return provenance.hardware_fingerprint(device, self.config.threads)

    def check_method(self, method: Method) -> None:
        super().check_method(method)
        if not isinstance(method, DecodingStrategy):
            raise ArbenchError(f"{method.name!r} is not a decoding strategy; run `arbench methods` to list them.")
        # Load and bind now, so a model lacking what the strategy needs is refused before a run is stored.
        method.bind(self.load_models(method))

    def load_models(self, method: DecodingStrategy) -> Models:
        if method.brings_models:  # a self-speedup: the strategy against AR decoding of its own model
            return method.own_models()
        draft = load_model(self.config.draft_model, method.device) if method.needs_draft else None
        return Models(load_model(self.config.model, method.device), draft)

    # -- the generate-then-score view (not used: this is a timing study) ------------------------
    def write_shard(self, outputs: Any, requests: Sequence[Request], directory: Path) -> None:
        (directory / "tokens.json").write_text(json.dumps({r.id: o for r, o in zip(requests, outputs)}))

    def read_generated(self, shard_dirs: Sequence[Path], requests: Sequence[Request]) -> Any:
        merged: dict[str, list[int]] = {}
        for d in shard_dirs:
            merged.update(json.loads((d / "tokens.json").read_text()))
        return [merged[r.id] for r in requests]

    def score(self, samples: Any, ctx) -> list[MetricValue]:
        raise ArbenchError(f"{self.name} is a timing study: its numbers come from "
                           f"`arbench run {self.name} <strategy>`, not from stored samples.")

    # -- the timing protocol ---------------------------------------------------------------------
    def run(self, method: Method, ctx) -> list[MetricValue]:
        assert isinstance(method, DecodingStrategy)
        if ctx.world_size > 1:
            raise ArbenchError(f"{self.name} times one process; run it without torchrun.")
        threads = torch.get_num_threads()
        torch.set_num_threads(self.config.threads)
        try:
            return self._timed(method, ctx)
        finally:
            torch.set_num_threads(threads)

    def _timed(self, method: DecodingStrategy, ctx) -> list[MetricValue]:
        device = ctx.device
        models = method.models if method.models is not None else method.bind(self.load_models(method)).models
        target = models.target
        baseline = _baseline_for(method)
        requests = self.requests()
        timing = TimingConfig(self.config.warmup, self.config.rounds, seed=0)
        max_new = self.config.max_new_tokens
        ctx.extra_provenance["hardware_fingerprint"] = self.hardware_fingerprint(device)
        ctx.extra_provenance["strategy"] = method.describe()
        ctx.extra_provenance["lossless"] = method.lossless  # declared by the strategy; the board ranks lossy apart
        ctx.extra_provenance["model"] = target.describe()
        if method.brings_models:
            ctx.log(f"{method.name} brings its own model {target.name!r}: the baseline is AR decoding of that model "
                    f"(the task's model={self.config.model!r} is not used)")
        ctx.log(f"timing {method.name} against AR on {len(requests)} prompts, batch sizes {self.config.batch_sizes}")

        metrics: list[MetricValue] = []
        peaks: dict[str, int] = {}
        for batch_size in self.config.batch_sizes:
            groups = _batches(requests, batch_size)
            if not groups:
                continue
            callables = {"ar": self._runner(baseline, models, max_new),
                         "strategy": self._runner(method, models, max_new)}
            result = compare(callables, groups, timing, device)
            self._validate(result, groups, method, target, max_new)
            for name, peak in (result.peak_bytes or {}).items():
                peaks[name] = max(peaks.get(name, 0), peak)
            if batch_size == 1:
                metrics += self._batch1_metrics(result, groups, method, target)
                if result.device_times is not None:
                    e = result.speedup("strategy", "ar", clock="device")
                    metrics.append(MetricValue(
                        "speedup_cuda_events", e.value, True, "x", TIMING_VERSION, e.ci_low, e.ci_high,
                        "the batch-1 speedup by CUDA events on the stream (GPU time only; `speedup` is wall clock, "
                        "which includes host-side launch overhead)"))
            else:
                s = result.speedup("strategy", "ar")
                what = f"speedup at batch size {batch_size} (prompts cut to equal length; lockstep acceptance)"
                metrics.append(MetricValue(f"speedup_bs{batch_size}", s.value, True, "x", TIMING_VERSION, s.ci_low,
                                           s.ci_high, what))
                metrics.append(_rate(result, "strategy", f"tokens_per_s_bs{batch_size}", f"batch size {batch_size}"))
        if peaks:  # CUDA: the allocator's peak during each side's own timed calls (weights included)
            metrics += [MetricValue("peak_memory_mb", peaks["strategy"] / 2**20, False, "MB", "2",
                                    description="peak GPU memory allocated during the strategy's timed calls"),
                        MetricValue("baseline_peak_memory_mb", peaks["ar"] / 2**20, False, "MB", "2",
                                    description="the same for the AR baseline's timed calls")]
        else:
            metrics += [MetricValue("peak_memory_mb", provenance.peak_memory()["peak_rss_mb"], False, "MB", "2",
                                    description="peak resident memory of the whole process (CPU: not per strategy)")]
        return metrics

    def _runner(self, strategy: DecodingStrategy, models: Models, max_new: int):
        def run(group: list[Request]) -> GenerationResult:
            prompt = torch.tensor([_prompt(r, group) for r in group], dtype=torch.long)
            return strategy.decode(models, prompt, max_new, [r.seed for r in group])
        return run

    def _validate(self, result: TimingResult, groups, method, target: ARModel, max_new: int) -> None:
        for name, strategy_name in (("ar", "ar"), ("strategy", method.name)):
            for group, out in zip(groups, result.outputs[name]):
                validate_result(out, len(group), max_new, target.vocab_size, target.eos_id, strategy_name)
        if not (method.lossless and method.greedy):
            return
        for group, out in zip(groups, result.outputs["strategy"]):
            for request, tokens in zip(group, out.tokens):
                bad = teacher_forced_violation(target, _prompt(request, group), tokens, self.config.near_tie)
                if bad is not None:
                    raise ArbenchError(
                        f"{method.name} is lossless but its output for {request.id} is not the target's greedy "
                        f"choice at generated token {bad[0]} (logit gap {bad[1]:.4g} > near_tie "
                        f"{self.config.near_tie}). The strategy is broken or not lossless with these settings.")

    def _batch1_metrics(self, result: TimingResult, groups, method: DecodingStrategy,
                        target: ARModel) -> list[MetricValue]:
        requests = [g[0] for g in groups]
        outs: list[GenerationResult] = result.outputs["strategy"]
        base: list[GenerationResult] = result.outputs["ar"]
        tokens = [o.tokens[0] for o in outs]
        n_tokens = sum(len(t) for t in tokens)
        s = result.speedup("strategy", "ar")
        metrics = [MetricValue("speedup", s.value, True, "x", TIMING_VERSION, s.ci_low, s.ci_high,
                               "total AR time / total strategy time at batch size 1 (median of rounds per prompt), "
                               "paired bootstrap 95% CI over prompts")]
        for category, cs in result.speedup_by_group("strategy", "ar",
                                                    [r.condition["category"] for r in requests]).items():
            metrics.append(MetricValue(f"speedup_{category}", cs.value, True, "x", TIMING_VERSION, cs.ci_low,
                                       cs.ci_high, f"speedup on the {category!r} prompts, batch size 1"))
        lat = result.latency("strategy")
        ttft = [o.first_token_s for o in outs]
        tpot = [(t - o.first_token_s) / (len(o.tokens[0]) - 1)
                for t, o in zip(result.per_item("strategy"), outs) if len(o.tokens[0]) > 1]
        steps = sum(o.steps for o in outs)
        metrics += [
            _rate(result, "strategy", "tokens_per_s", "batch size 1"),
            _rate(result, "ar", "baseline_tokens_per_s", "AR baseline, batch size 1"),
            MetricValue("ttft_ms", 1e3 * float(np.median(ttft)), False, "ms", "1",
                        description="median time to first token (prefill + first choice), last round"),
            MetricValue("tpot_ms", 1e3 * float(np.median(tpot)) if tpot else None, False, "ms", "1",
                        description="median (latency - TTFT) / (tokens - 1) per prompt"),
            MetricValue("latency_p50_ms", 1e3 * lat["p50"], False, "ms", "1", description="per-request latency p50"),
            MetricValue("latency_p90_ms", 1e3 * lat["p90"], False, "ms", "1", description="per-request latency p90"),
            MetricValue("forward_passes_per_token", sum(o.target_passes for o in outs) / n_tokens, False, "passes",
                        "1", description="target-model forward calls (prefill included) per generated token"),
            MetricValue("draft_passes_per_token", sum(o.draft_passes for o in outs) / n_tokens, False, "passes",
                        "1", description="draft-model forward calls per generated token (0 without a draft)"),
            MetricValue("mean_accepted_tokens", (n_tokens - len(outs)) / steps if steps else None, True, "tokens",
                        "1", description="tokens emitted per decoding step after the prefill, INCLUDING the "
                                         "target's correction/bonus token (AR = 1.0)"),
            MetricValue("generated_tokens", float(n_tokens), True, "tokens", "1",
                        description="tokens counted from the final ids (up to and including EOS)"),
        ]
        if method.greedy:
            ref = [o.tokens[0] for o in base]
            div = [first_divergence(a, b) for a, b in zip(tokens, ref)]
            first = [d for d in div if d is not None]
            metrics += [
                MetricValue("exact_match_rate", sum(d is None for d in div) / len(div), True, "", "1",
                            description="fraction of prompts whose output equals greedy AR token for token"),
                MetricValue("first_divergence_position", float(min(first)) if first else None, True, "tokens", "1",
                            description="earliest generated position where an output differs from greedy AR "
                                        "(empty when none differs); lossless strategies may differ only at near-ties"),
            ]
        if not method.lossless:
            nll = [nll_per_token(target, r.condition["prompt_ids"], t) for r, t in zip(requests, tokens)]
            ref_nll = [nll_per_token(target, r.condition["prompt_ids"], o.tokens[0]) for r, o in zip(requests, base)]
            per = sum(x for x, _ in nll) / max(1, sum(n for _, n in nll))
            ref_per = sum(x for x, _ in ref_nll) / max(1, sum(n for _, n in ref_nll))
            metrics += [
                MetricValue("quality_target_nll", per, False, "nats/token", "1",
                            description="lossy track: mean negative log-likelihood of the output under the target "
                                        "model (teacher-forced)"),
                MetricValue("quality_target_nll_baseline", ref_per, False, "nats/token", "1",
                            description="the same for the AR baseline's output"),
            ]
        return metrics


@register_task("decoding-speedup-mini")
class DecodingSpeedupMini(DecodingSpeedup):
    """Offline: the bundled tiny-kjv target/draft pair on the bundled suite (`suite-kjv.jsonl`: 10 held-out
    King James prompts in 5 categories, one of them Spec-Bench-RAG-like `retrieval`)."""

    description = ("decoding-speedup on the bundled byte-level King James models (CPU, offline): timing is real, "
                   "on a tiny model, so speedups show the method's mechanics, not what a large model gets")
    Config = MiniConfig
    offline = True
    demo_methods = ("speculative", "blockwise", "jacobi", "early-exit", "prompt-lookup", "lookahead", "medusa",
                    "eagle", "eagle-2", "recycle-gpt", "ffn-skip", "sigma-gpt-burst-l2r", "sigma-gpt-burst")


#: The registered method the protocol times every strategy against (baselines/decoding/ar.py): AR decoding
#: with KV cache, looked up by name so that the task does not import a method.
BASELINE_METHOD = "ar"


def _baseline_for(method: DecodingStrategy) -> DecodingStrategy:
    cls = METHODS.get(BASELINE_METHOD)
    sampling = getattr(method, "sampling", None)
    values = {"temperature": sampling.temperature, "top_k": sampling.top_k,
              "top_p": sampling.top_p} if sampling is not None else {}
    return cls(cls.Config(**values), method.device)


def _batches(requests: list[Request], size: int) -> list[list[Request]]:
    """Consecutive groups of `size` (a partial last group is dropped for sizes > 1)."""
    if size == 1:
        return [[r] for r in requests]
    return [requests[i:i + size] for i in range(0, len(requests) - size + 1, size)]


def _prompt(request: Request, group: list[Request]) -> list[int]:
    """The prompt as decoded in its batch: cut from the left to the batch's shortest prompt."""
    length = min(len(r.condition["prompt_ids"]) for r in group)
    return list(request.condition["prompt_ids"][-length:])


def _rate(result: TimingResult, name: str, metric: str, what: str) -> MetricValue:
    outs = result.outputs[name]
    n = sum(len(t) for o in outs for t in o.tokens)
    return MetricValue(metric, n / result.total(name), True, "tokens/s", TIMING_VERSION,
                       description=f"generated tokens / time ({what}; median of rounds per request)")
