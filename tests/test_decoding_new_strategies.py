"""Prompt lookup, lookahead and FFN-skip decoding: reference behaviour (transformers' prompt lookup),
exactness against greedy AR on random and bundled models, batch independence, and acceptance."""

from __future__ import annotations

import os

import pytest
import torch

from baselines.decoding.ar import ar_decode
from baselines.decoding.ffn_skip import FFNSkipConfig, SaturationGate, ffn_skip_decode
from baselines.decoding.lookahead import NGramPool, lookahead_decode, step_layout
from baselines.decoding.prompt_lookup import lookup_candidates, prompt_lookup_decode
from harness.errors import ArbenchError
from harness.protocols.decoding.bundled import BUNDLED_PROMPTS, load_model, read_prompts
from test_decoding_strategies import BigramModel, random_gpt

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


# -- lookahead ---------------------------------------------------------------------------------------
def _models():
    from harness.protocols.decoding.hf import HFCausalLM

    return [random_gpt(0, vocab_size=12), HFCausalLM(tiny_llama(6), "llama", 3)]


@pytest.mark.parametrize("which", [0, 1])
def test_forward_tree_and_keep_equal_plain_causal_decoding(which):
    """Two branches fed in one masked pass give each branch's plain causal logits; keeping one branch's
    keys/values leaves the cache as if only that branch had been fed."""
    model = _models()[which]
    prompt = torch.tensor([[4, 5, 6, 7, 8, 9, 10]])
    x, a, b = [11], [5, 6], [7, 8, 9]

    def plain(tokens):
        cache = model.new_cache(1, 32)
        model.forward(prompt, cache)
        return model.forward(torch.tensor([tokens]), cache).logits[0], cache

    cache = model.new_cache(1, 32)
    model.forward(prompt, cache)
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[:, 0] = True
    mask[1:3, 1:3] = torch.ones(2, 2, dtype=torch.bool).tril()
    mask[3:, 3:] = torch.ones(3, 3, dtype=torch.bool).tril()
    positions = torch.tensor([0, 1, 2, 1, 2, 3]) + 7
    tree = model.forward_tree(torch.tensor([x + a + b]), cache, positions, mask).logits[0]
    ref_a, _ = plain(x + a)
    ref_b, ref_cache = plain(x + b)
    torch.testing.assert_close(tree[[0, 1, 2]], ref_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tree[[0, 3, 4, 5]], ref_b, atol=1e-5, rtol=1e-5)
    model.keep(cache, 7, [[0, 3, 4, 5]])
    assert model.cache_length(cache) == 11
    nxt = torch.tensor([[3 if which == 0 else 12]])
    torch.testing.assert_close(model.forward(nxt, cache).logits, model.forward(nxt, ref_cache).logits,
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("which", [0, 1])
def test_lookahead_equals_greedy_and_is_batch_independent(which):
    model = _models()[which]
    prompt = torch.randint(4, 12, (3, 16), generator=torch.Generator().manual_seed(which))
    ref = ar_decode(model, prompt, 48)
    out = lookahead_decode(model, prompt, 48, ngram=4, window=5, guesses=5, seeds=[1, 2, 3])
    assert out.tokens == ref.tokens
    singles = [lookahead_decode(model, prompt[i:i + 1], 48, ngram=4, window=5, guesses=5, seeds=[i + 1])
               for i in range(3)]
    assert [s.tokens[0] for s in singles] == ref.tokens
    assert sum(s.target_passes for s in singles) < 3 * ref.target_passes


def test_lookahead_bundled_model():
    target = load_model("tiny-kjv-target")
    for row in read_prompts(BUNDLED_PROMPTS)[::8][:3]:
        prompt = torch.tensor([row["ids"]])
        ref = ar_decode(target, prompt, 48)
        out = lookahead_decode(target, prompt, 48, seeds=[0])
        assert out.tokens == ref.tokens and out.target_passes < ref.target_passes


class TreeBigram(BigramModel):
    """Next token depends only on the current token, so any attention mask gives the same logits."""

    supports_tree = True

    def forward_tree(self, ids, cache, positions, mask):
        return self.forward(ids, cache)

    def keep(self, cache, start, indices):
        cache[0] = start + len(indices[0])


def test_lookahead_acceptance_on_a_repetitive_text():
    """On a text that cycles through 6 tokens, every Jacobi column is a true n-gram of the output, so once
    the window is full and the pool holds the pending token, each step accepts N-1 tokens + the target's."""
    cycle = [4, 9, 2, 7, 5, 11]
    table = torch.zeros(12, 12)
    for a, b in zip(cycle, cycle[1:] + cycle[:1]):
        table[a, b] = 10.0
    model = TreeBigram(table)
    prompt = torch.tensor([cycle * 2])
    ref = ar_decode(model, prompt, 60)
    assert ref.tokens[0][:6] == cycle
    out = lookahead_decode(model, prompt, 60, ngram=4, window=6, guesses=3, seeds=[0])
    assert out.tokens == ref.tokens
    assert out.accepted[:2] == [1, 1]  # the window fills (N-2 = 2 steps) before any n-gram is pooled
    assert set(out.accepted[3:-1]) == {4}  # then N = 4 tokens per step
    wide = lookahead_decode(model, prompt, 60, ngram=6, window=6, guesses=3, seeds=[0])
    assert wide.tokens == ref.tokens and wide.target_passes < out.target_passes  # longer n-grams, fewer passes


def test_lookahead_layout_pool_and_refusal():
    offsets, mask = step_layout(levels=3, window=2, n_cand=2, cand_len=3)
    assert offsets.tolist() == [0, 1, 2, 2, 3, 3, 4, 1, 2, 3, 1, 2, 3]
    assert mask.diagonal().all() and mask[:, 0].all()
    assert not mask[7:10, 10:].any() and not mask[10:, 1:10].any()  # candidates see only x and themselves
    pool = NGramPool(2)
    for cont in [(1,), (2,), (1,), (3,)]:
        pool.add(0, cont)
    assert pool.get(0) == [(1,), (3,)]  # (1,) refreshed, (2,) the least recent, dropped
    with pytest.raises(ArbenchError, match="tree-masked"):
        BigramModel(torch.zeros(3, 3)).require_tree("lookahead")


# -- FFN skipping ------------------------------------------------------------------------------------
class FixedGate:
    """Skips the FFN of `layers` for the rows in `rows`; records what it saw."""

    def __init__(self, layers, rows, batch):
        self.layers, self.rows, self.batch, self.seen = set(layers), set(rows), batch, []

    def skip(self, layer):
        if layer not in self.layers:
            return None
        return torch.tensor([b in self.rows for b in range(self.batch)])

    def observe(self, layer, before, after):
        self.seen.append((layer, torch.equal(before, after)))


@pytest.mark.parametrize("which", [0, 1])
def test_ffn_gated_forward_skips_per_row_and_otherwise_equals_forward(which):
    model = _models()[which]
    prompt = torch.tensor([[4, 5, 6, 7, 8], [9, 10, 11, 4, 5]])

    def step(gate, rows=slice(None)):
        cache = model.new_cache(prompt[rows].shape[0], 16)
        model.forward(prompt[rows], cache)
        nxt = torch.tensor([[6], [7]])[rows]
        return model.forward(nxt, cache).logits if gate is None else model.forward_ffn_gated(nxt, cache, gate).logits

    plain = step(None)
    none = FixedGate([], [], 2)
    torch.testing.assert_close(step(none), plain, atol=1e-5, rtol=1e-5)
    assert len(none.seen) == model.num_layers and not any(equal for _, equal in none.seen)
    mixed = step(FixedGate([1], [0], 2))
    alone = step(FixedGate([1], [0], 1), slice(0, 1))
    torch.testing.assert_close(mixed[1:], plain[1:], atol=1e-5, rtol=1e-5)  # row 1 ran every FFN
    torch.testing.assert_close(mixed[:1], alone, atol=1e-5, rtol=1e-5)  # row 0 as if decoded alone
    assert not torch.allclose(mixed[:1], plain[:1])


def test_saturation_gate_rule():
    config = FFNSkipConfig(threshold=0.9, max_skip=2, cold_first=1, cold_last=1)
    gate = SaturationGate(config, num_layers=6, batch=2)
    same, diff = torch.ones(2, 1, 4), torch.tensor([[[1.0, 0, 0, 0]], [[0, 1.0, 0, 0]]])
    decisions = []
    for layer in range(6):
        skip = gate.skip(layer)
        decisions.append(None if skip is None else skip.tolist())
        # row 0 saturates at once (output = input); row 1 never does (orthogonal output)
        gate.observe(layer, same, torch.stack([same[0], diff[0] if layer % 2 else diff[1]]))
    assert decisions == [None, [False, False], [True, False], [True, False], [False, False], None]
    assert gate.skipped_blocks == 2 and gate.total_blocks == 12


@pytest.mark.parametrize("which", [0, 1])
def test_ffn_skip_without_budget_is_greedy_and_skips_with_one(which):
    model = _models()[which]
    prompt = torch.randint(4, 12, (2, 10), generator=torch.Generator().manual_seed(which))
    ref = ar_decode(model, prompt, 24)
    cold = 1 if model.num_layers > 2 else 0
    out, gate = ffn_skip_decode(model, prompt, 24, FFNSkipConfig(max_skip=0, cold_first=cold, cold_last=0))
    assert out.tokens == ref.tokens and gate.skipped_blocks == 0
    out, gate = ffn_skip_decode(model, prompt, 24, FFNSkipConfig(threshold=-1.0, max_skip=1, cold_first=0,
                                                                 cold_last=0, warmup_tokens=3))
    gated_tokens = sum(len(t) for t in ref.tokens) - 2 * 3  # the first 3 tokens per row run the full model
    assert gate.skipped_blocks == gated_tokens and gate.total_blocks == gated_tokens * model.num_layers
    singles = [ffn_skip_decode(model, prompt[i:i + 1], 24, FFNSkipConfig(threshold=-1.0, max_skip=1, cold_first=0,
                                                                         cold_last=0, warmup_tokens=3))[0].tokens[0]
               for i in range(2)]
    assert singles == out.tokens  # skipping is decided per row


def test_ffn_skip_refuses_models_without_the_layout():
    from transformers import GPT2Config, GPT2LMHeadModel

    from harness.protocols.decoding.hf import HFCausalLM

    gpt2 = HFCausalLM(GPT2LMHeadModel(GPT2Config(vocab_size=20, n_embd=16, n_layer=2, n_head=2)), "gpt2", None)
    with pytest.raises(ArbenchError, match="feed-forward"):
        gpt2.require_ffn_skip("ffn-skip")


def test_ffn_skip_task_reports_quality_beside_speed():
    from harness.registry import METHODS
    from run_context_double import FakeContext
    from tasks.decoding_speedup import DecodingSpeedupMini, MiniConfig

    task = DecodingSpeedupMini(MiniConfig(max_prompts=2, max_new_tokens=24, batch_sizes=(1,), rounds=1, warmup=0))
    method = METHODS.get("ffn-skip")()
    assert not method.lossless
    task.check_method(method)
    values = {m.name: m.value for m in task.run(method, FakeContext())}
    assert {"speedup", "exact_match_rate", "quality_target_nll", "quality_target_nll_baseline"} <= set(values)
    assert values["quality_target_nll"] > 0


# -- through the task ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,settings", [("prompt-lookup", {"num_tokens": 6}),
                                           ("lookahead", {"ngram": 4, "window": 5})])
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
