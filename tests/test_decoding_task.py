"""The decoding-speedup task end to end: stored metrics and signatures, exactness enforcement, refusals."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from baselines.decoding.ar import ar_decode
from harness.errors import ArbenchError
from harness.protocols.decoding.generation import GenerationResult
from harness.protocols.decoding.strategy import DecodingStrategy
from harness.provenance import hardware_fingerprint
from harness.runner import RunOptions, Runner
from harness.store import Store
from run_context_double import FakeContext
from tasks.decoding_speedup import DecodingSpeedupMini, MiniConfig

SMALL = {"max_prompts": 4, "max_new_tokens": 16, "batch_sizes": [1, 2], "rounds": 1, "warmup": 0}


def _runner(results: Path) -> Runner:
    return Runner(Store(f"sqlite:///{results / 'arbench.db'}"), RunOptions(progress=False, device="cpu"))


def test_mini_run_stores_metrics_with_full_signature(results_dir):
    result = _runner(results_dir).run("decoding-speedup-mini", "speculative", {**SMALL, "k": 3})
    values = {m.name: m for m in result.metrics}
    for name in ("speedup", "speedup_poetry", "speedup_bs2", "tokens_per_s", "baseline_tokens_per_s", "ttft_ms",
                 "tpot_ms", "latency_p50_ms", "latency_p90_ms", "forward_passes_per_token",
                 "draft_passes_per_token", "mean_accepted_tokens", "exact_match_rate", "peak_memory_mb"):
        assert name in values, name
    assert values["exact_match_rate"].value == 1.0
    assert values["first_divergence_position"].value is None
    assert values["generated_tokens"].value == 4 * 16
    assert values["speedup"].ci_low <= values["speedup"].value <= values["speedup"].ci_high
    assert values["forward_passes_per_token"].value < 1.0 and values["mean_accepted_tokens"].value > 1.0
    (record,) = Store(f"sqlite:///{results_dir / 'arbench.db'}").records()
    assert record["status"] == "finished"
    sig = record["signature"]
    torch.set_num_threads(1)  # the task times with one thread (its `threads` setting)
    assert f"hardware:{hardware_fingerprint('cpu')}" in sig
    for key in ("method.k:3", "method.temperature:0.0", "model_sha256:", "draft_sha256:", "prompts_sha256:",
                "task.max_new_tokens:16"):
        assert key in sig, key
    assert record["provenance"]["hardware_fingerprint"] == hardware_fingerprint("cpu")


def test_lossy_strategy_gets_a_quality_track(results_dir):
    result = _runner(results_dir).run("decoding-speedup-mini", "early-exit",
                                      {**SMALL, "batch_sizes": [1], "min_layers": 2, "decay_tokens": 8,
                                       "full_depth_tokens": 0})
    names = {m.name for m in result.metrics}
    assert {"quality_target_nll", "quality_target_nll_baseline", "exact_match_rate"} <= names


@dataclass
class BrokenConfig:
    flip_at: int = 5


class BrokenLossless(DecodingStrategy):
    """Claims to be lossless but changes one token: the run must fail."""

    name = "broken-lossless"
    Config = BrokenConfig

    @property
    def lossless(self) -> bool:
        return True

    def decode(self, models, prompt, max_new_tokens, seeds) -> GenerationResult:
        out = ar_decode(models.target, prompt, max_new_tokens)
        rows = [row[:self.config.flip_at] + [(row[self.config.flip_at] + 1) % 256] + row[self.config.flip_at + 1:]
                for row in out.tokens]
        return GenerationResult(rows, out.target_passes)


def test_lossless_strategy_that_diverges_fails_the_run():
    task = DecodingSpeedupMini(MiniConfig(**{**SMALL, "batch_sizes": (1,)}))
    with pytest.raises(ArbenchError, match="not the target's greedy choice at generated token 5"):
        task.run(BrokenLossless(), FakeContext())


def test_models_without_what_a_strategy_needs_are_refused_up_front(results_dir):
    with pytest.raises(ArbenchError, match="proposal heads"):
        _runner(results_dir).run("decoding-speedup-mini", "blockwise", {**SMALL, "model": "tiny-kjv-draft"})
    with pytest.raises(ArbenchError, match="no(ne| intermediate)"):
        _runner(results_dir).run("decoding-speedup-mini", "early-exit", {**SMALL, "model": "tiny-kjv-draft",
                                                                          "max_layers": 1, "min_layers": 1,
                                                                          "decay_tokens": 4, "full_depth_tokens": 0})
    assert not Store(f"sqlite:///{results_dir / 'arbench.db'}").records()  # refused before anything is stored


def test_user_task_needs_prompts_and_validates_them(tmp_path):
    from tasks.decoding_speedup import DecodingSpeedup

    with pytest.raises(ArbenchError, match="needs prompts"):
        DecodingSpeedup().requests()
    bad = tmp_path / "prompts.jsonl"
    bad.write_text(json.dumps({"id": "a", "category": "qa", "prompt_ids": [1, -2]}) + "\n")
    with pytest.raises(ArbenchError, match="prompt_ids must be"):
        DecodingSpeedup(DecodingSpeedup.Config(prompts=str(bad))).requests()
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"id": "a", "category": "qa", "prompt": "In the beginning"}) + "\n")
    (request,) = DecodingSpeedup(DecodingSpeedup.Config(prompts=str(good))).requests()
    assert request.condition["prompt_ids"] == list(b"In the beginning") and request.condition["category"] == "qa"
    assert torch.tensor(request.condition["prompt_ids"]).max() < 256


def test_user_brings_hugging_face_models_and_prompt_ids(results_dir, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    folders = []
    for layers, seed in ((2, 0), (1, 1)):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                             eos_token_id=3, bos_token_id=1, pad_token_id=0))
        folder = tmp_path / f"llama-{layers}"
        model.save_pretrained(folder)
        folders.append(str(folder))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "category": "qa" if i % 2 else "math",
                                           "prompt_ids": [5 + i, 17, 40 + i, 9]}) + "\n" for i in range(4)))
    settings = {"model": folders[0], "draft_model": folders[1], "prompts": str(prompts), "max_new_tokens": 12,
                "batch_sizes": [1, 2], "rounds": 1, "warmup": 0}
    result = _runner(results_dir).run("decoding-speedup", "speculative", settings)
    values = {m.name: m.value for m in result.metrics}
    assert values["exact_match_rate"] == 1.0 and {"speedup_qa", "speedup_math", "speedup_bs2"} <= set(values)
    with pytest.raises(ArbenchError, match="proposal heads"):
        _runner(results_dir).run("decoding-speedup", "blockwise", settings)
