"""Prompt lookup, lookahead and FFN-skip decoding: reference behaviour (transformers' prompt lookup),
exactness against greedy AR on random and bundled models, batch independence, and acceptance."""

from __future__ import annotations

import os

import pytest
import torch

from baselines.decoding.ar import ar_decode
from baselines.decoding.prompt_lookup import lookup_candidates, prompt_lookup_decode
from harness.protocols.decoding.bundled import BUNDLED_PROMPTS, load_model, read_prompts
from test_decoding_strategies import random_gpt

torch.set_num_threads(1)


def tiny_llama(seed: int, vocab: int = 16, layers: int = 2):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                        eos_token_id=3, bos_token_id=1, pad_token_id=0)).eval()


def record_calls(model) -> list[tuple[int, int]]:
    """(cached positions, fed positions) of every forward call of an HF model."""
    calls: list[tuple[int, int]] = []

    def hook(module, args, kwargs):
        cache = kwargs.get("past_key_values", kwargs.get("cache"))
        calls.append((int(cache.get_seq_length()) if cache is not None else 0, kwargs["input_ids"].shape[1]))

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


# -- prompt lookup -----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,num_tokens,max_ngram", [(1, 4, 2), (2, 10, 2), (6, 3, 3), (8, 6, 1), (10, 2, 4)])
def test_prompt_lookup_matches_transformers(seed, num_tokens, max_ngram):
    """Same tokens, same forward calls (cache length and fed length each call, hence same accepted
    counts) as `generate(prompt_lookup_num_tokens=...)` on a seeded random Llama."""
    from harness.protocols.decoding.hf import HFCausalLM

    model = tiny_llama(seed)
    calls = record_calls(model)
    prompt = torch.randint(4, 16, (1, 20), generator=torch.Generator().manual_seed(seed))
    hf = model.generate(prompt, max_new_tokens=40, do_sample=False, prompt_lookup_num_tokens=num_tokens,
                        max_matching_ngram_size=max_ngram, eos_token_id=3, pad_token_id=0)
    hf_calls = list(calls)
    calls.clear()
    out = prompt_lookup_decode(HFCausalLM(model, "llama", 3), prompt, 40, num_tokens, max_ngram)
    assert out.tokens[0] == hf[0, 20:].tolist()
    assert calls == hf_calls
    assert max(out.accepted) > 1  # the comparison exercised accepted drafts, not only AR steps
    assert out.target_passes == len(hf_calls)


def test_lookup_candidates_rules():
    seq = [1, 2, 9, 1, 2, 7, 7, 1, 2]
    assert lookup_candidates(seq, 3, 2, 99, None) == [9, 1, 2]  # leftmost match of the 2-gram
    assert lookup_candidates(seq, 3, 2, 99, eos_id=1) == [9]  # cut before EOS
    assert lookup_candidates(seq, 3, 2, 4, None) == [9, 1]  # no copy from positions >= max_length (upstream)
    assert lookup_candidates(seq, 3, 2, len(seq) + 1, None) == []  # only the target's token fits
    assert lookup_candidates([4, 5, 6, 3, 6], 2, 2, 99, None) == [3, 6]  # falls back to the 1-gram


@pytest.mark.parametrize("batch", [1, 3])
def test_prompt_lookup_equals_greedy_on_random_gpt(batch):
    target = random_gpt(0, vocab_size=12)
    prompt = torch.randint(0, 12, (3, 16), generator=torch.Generator().manual_seed(0))[:batch]
    ref = ar_decode(target, prompt, 40)
    out = prompt_lookup_decode(target, prompt, 40, num_tokens=5)
    assert out.tokens == ref.tokens
    if batch == 1:
        assert out.target_passes < ref.target_passes
    rows = [prompt_lookup_decode(target, prompt[i:i + 1], 40, num_tokens=5).tokens[0] for i in range(batch)]
    assert rows == out.tokens  # a row's output does not depend on the batch it is in


def test_prompt_lookup_bundled_model():
    target = load_model("tiny-kjv-target")
    for row in read_prompts(BUNDLED_PROMPTS)[::8][:3]:
        prompt = torch.tensor([row["ids"]])
        ref = ar_decode(target, prompt, 48)
        out = prompt_lookup_decode(target, prompt, 48)
        assert out.tokens == ref.tokens and out.target_passes < ref.target_passes


# -- through the task ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,settings", [("prompt-lookup", {"num_tokens": 6})])
def test_training_free_lossless_strategies_pass_the_task_exactness_check(name, settings):
    from harness.registry import METHODS
    from run_context_double import FakeContext
    from tasks.decoding_speedup import DecodingSpeedupMini, MiniConfig

    task = DecodingSpeedupMini(MiniConfig(max_prompts=3, max_new_tokens=24, batch_sizes=(1, 2), rounds=1, warmup=0))
    cls = METHODS.get(name)
    method = cls(cls.Config(**settings))
    assert method.lossless
    task.check_method(method)
    values = {m.name: m.value for m in task.run(method, FakeContext())}
    assert values["exact_match_rate"] == 1.0 and values["first_divergence_position"] is None
    assert values["mean_accepted_tokens"] > 1.0 and "speedup_bs2" in values
