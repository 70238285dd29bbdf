"""Decoding strategies: exactness against greedy AR (random-init and bundled models, HF adapter),
the speculative-sampling distribution, the KV cache, the exit schedule, and the stop rules."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from baselines.decoding.ar import ar_decode
from baselines.decoding.blockwise import blockwise_decode
from harness.protocols.decoding.bundled import BUNDLED_PROMPTS, load_model, read_prompts
from baselines.decoding.early_exit import EarlyExitConfig, early_exit_decode, exit_schedule
from harness.protocols.decoding.generation import GenerationResult, SamplingConfig, validate_result, warp
from harness.protocols.decoding.gpt import GPTConfig, GPTModel, init_gpt
from harness.protocols.decoding.interface import ARModel, ModelOutput
from baselines.decoding.jacobi import jacobi_decode
from baselines.decoding.speculative import speculative_decode
from harness.errors import ArbenchError

torch.set_num_threads(1)


def random_gpt(seed: int, **overrides) -> GPTModel:
    """A random GPT whose greedy output is varied (large weights), not one repeated token."""
    config = GPTConfig(**{"d_model": 32, "n_layers": 4, "n_heads": 2, "exit_layers": (2,), "num_draft_heads": 3,
                          **overrides})
    net = init_gpt(config, seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 2:
                p.normal_(std=0.4)
    return GPTModel(net, f"random-{seed}")


@pytest.fixture(scope="module")
def target() -> GPTModel:
    return random_gpt(0)


@pytest.fixture(scope="module")
def prompts() -> torch.Tensor:
    return torch.randint(0, 256, (3, 9), generator=torch.Generator().manual_seed(0))


def test_random_model_output_is_varied_and_matches_full_recompute(target, prompts):
    ref = ar_decode(target, prompts, 40)
    assert all(len(set(row)) >= 5 for row in ref.tokens)
    assert ref.target_passes == 40
    ids = torch.cat([prompts, torch.tensor(ref.tokens)], 1)
    with torch.no_grad():
        full = target.net.logits(target.net.forward_train(ids)[-1])  # no cache: recompute everything
    assert torch.equal(full[:, prompts.shape[1] - 1:-1].argmax(-1), torch.tensor(ref.tokens))


@pytest.mark.parametrize("batch", [1, 3])
def test_lossless_strategies_equal_greedy_on_random_models(target, prompts, batch):
    prompt = prompts[:batch]
    ref = ar_decode(target, prompt, 40).tokens
    other_draft = random_gpt(7, n_layers=1, num_draft_heads=0)
    assert speculative_decode(target, other_draft, prompt, 40, k=4).tokens == ref
    self_draft = speculative_decode(target, target, prompt, 40, k=4)
    assert self_draft.tokens == ref
    assert self_draft.accepted[:3] == [5, 5, 5]  # all k accepted + the bonus token
    assert blockwise_decode(target, prompt, 40, block=4).tokens == ref
    jacobi = jacobi_decode(target, prompt, 40, window=5)
    assert jacobi.tokens == ref and jacobi.target_passes <= 41
    full_depth = EarlyExitConfig(max_layers=4, min_layers=4, full_depth_tokens=0, decay_tokens=8)
    assert early_exit_decode(target, prompt, 40, full_depth).tokens == ref


def test_blockwise_top_k_mode_accepts_at_least_as_much(target, prompts):
    exact = blockwise_decode(target, prompts[:1], 40, block=4, top_k=1)
    approx = blockwise_decode(target, prompts[:1], 40, block=4, top_k=20)
    assert approx.target_passes <= exact.target_passes


def test_early_exit_schedule_is_monotone_and_cache_guard(target, prompts):
    schedule = EarlyExitConfig(max_layers=4, min_layers=2, full_depth_tokens=2, decay_tokens=10)
    depths = exit_schedule(schedule, [2, 4], 30)
    assert depths[:2] == [4, 4] and depths[-1] == 2
    assert all(a >= b for a, b in zip(depths, depths[1:]))
    out = early_exit_decode(target, prompts[:1], 30, EarlyExitConfig(4, 2, 2, 10))
    assert len(out.tokens[0]) == 30
    cache = target.new_cache(1, 20)
    target.forward(prompts[:1], cache)
    target.forward(prompts[:1, :1], cache, exit_layer=2)
    with pytest.raises(ArbenchError, match="must not increase"):
        target.forward(prompts[:1, :1], cache, exit_layer=4)


def test_capabilities_are_refused_up_front():
    plain = random_gpt(3, exit_layers=(), num_draft_heads=0)
    with pytest.raises(ArbenchError, match="proposal heads"):
        plain.require_draft_heads(3, "blockwise")
    with pytest.raises(ArbenchError, match="exits only after"):
        plain.require_exits([2], "early-exit")
    other_vocab = random_gpt(4, vocab_size=300)
    with pytest.raises(ArbenchError, match="same tokenizer"):
        plain.require_compatible_draft(other_vocab, "speculative")


@pytest.mark.parametrize("name", ["speculative", "blockwise", "jacobi"])
def test_bundled_models_lossless(name):
    target = load_model("tiny-kjv-target")
    rows = read_prompts(BUNDLED_PROMPTS)[::8][:3]
    for row in rows:
        prompt = torch.tensor([row["ids"]])
        ref = ar_decode(target, prompt, 32)
        if name == "speculative":
            out = speculative_decode(target, load_model("tiny-kjv-draft"), prompt, 32, k=4)
        elif name == "blockwise":
            out = blockwise_decode(target, prompt, 32, block=4)
        else:
            out = jacobi_decode(target, prompt, 32, window=4)
        assert out.tokens == ref.tokens
        assert out.target_passes < ref.target_passes


def test_hf_adapter_matches_transformers_generate_and_runs_strategies():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.protocols.decoding.hf import HFCausalLM

    def llama(layers: int, seed: int):
        torch.manual_seed(seed)
        return LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                            eos_token_id=3, bos_token_id=1, pad_token_id=0))

    model = llama(2, 0)
    target, draft = HFCausalLM(model, "llama", 3), HFCausalLM(llama(1, 1), "llama-draft", 3)
    prompt = torch.randint(4, 97, (2, 7), generator=torch.Generator().manual_seed(1))
    ref = ar_decode(target, prompt, 24)
    hf = model.generate(prompt, max_new_tokens=24, do_sample=False, eos_token_id=3, pad_token_id=0)
    for row, out in zip(hf[:, 7:].tolist(), ref.tokens):
        assert row[:len(out)] == out
    assert speculative_decode(target, draft, prompt, 24, k=3).tokens == ref.tokens
    assert jacobi_decode(target, prompt, 24, window=3).tokens == ref.tokens
    with pytest.raises(ArbenchError, match="proposal heads"):
        target.require_draft_heads(3, "blockwise")


class BigramModel(ARModel):
    """A fake LM whose next-token logits depend only on the last token: exact distributions are known."""

    def __init__(self, table: torch.Tensor, eos_id: int | None = None):
        self.table, self.vocab_size, self.eos_id = table, table.shape[0], eos_id
        self.num_layers, self.name = 1, "bigram"

    def new_cache(self, batch, max_len):
        return [0]

    def cache_length(self, cache):
        return cache[0]

    def crop(self, cache, length):
        cache[0] = min(cache[0], length)

    def forward(self, ids, cache, *, exit_layer=None, want_hidden=False):
        cache[0] += ids.shape[1]
        return ModelOutput(self.table[ids])


def test_speculative_sampling_preserves_the_target_distribution():
    gen = torch.Generator().manual_seed(0)
    vocab = 4
    p_table, q_table = torch.randn(vocab, vocab, generator=gen) * 1.5, torch.randn(vocab, vocab, generator=gen) * 1.5
    target, draft = BigramModel(p_table), BigramModel(q_table)
    sampling = SamplingConfig(temperature=0.8, top_k=3)
    prompt = torch.tensor([[1], [2]])
    counts = {b: np.zeros(vocab ** 3) for b in range(2)}
    n_draws = 1500
    for seed in range(n_draws):
        out = speculative_decode(target, draft, prompt, 3, k=2, sampling=sampling, seeds=[seed, 10**6 + seed])
        for b, row in enumerate(out.tokens):
            counts[b][row[0] * vocab ** 2 + row[1] * vocab + row[2]] += 1
    p = warp(p_table, sampling)  # (vocab, vocab): next-token distribution after each token
    for b, start in enumerate([1, 2]):
        expected = np.array([float(p[start, a] * p[a, c] * p[c, d])
                             for a, c, d in itertools.product(range(vocab), repeat=3)]) * n_draws
        keep = expected > 0
        assert counts[b][~keep].sum() == 0  # top-k cut tokens never appear
        expected = expected[keep] * counts[b].sum() / expected[keep].sum()  # float32 rounding
        assert chisquare(counts[b][keep], expected).pvalue > 1e-3


def test_warp_top_k_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.allclose(warp(logits, SamplingConfig(1.0, top_k=2)), torch.tensor([[0.625, 0.375, 0, 0]]))
    assert torch.allclose(warp(logits, SamplingConfig(1.0, top_p=0.8)), torch.tensor([[0.625, 0.375, 0, 0]]))
    assert torch.allclose(warp(logits, SamplingConfig(1.0, top_p=0.81)), torch.tensor([[0.5, 0.3, 0.15, 0]]) / 0.95)


def test_stop_rules_eos_trim_and_length():
    table = torch.full((6, 6), -10.0)
    table[1, 2] = table[2, 3] = table[3, 5] = table[5, 4] = table[4, 4] = 10.0  # 1 -> 2 -> 3 -> EOS(5) -> ...
    model = BigramModel(table, eos_id=5)
    out = ar_decode(model, torch.tensor([[1]]), 10)
    assert out.tokens == [[2, 3, 5]]
    spec = speculative_decode(model, model, torch.tensor([[1], [1]]), 10, k=4)
    assert spec.tokens == [[2, 3, 5], [2, 3, 5]]
    assert ar_decode(model, torch.tensor([[1]]), 2).tokens == [[2, 3]]
    for tokens, message in [([[2, 5, 3]], "EOS"), ([[5, 5]], "EOS"), ([[2, 3, 4]], "over the limit"),
                            ([[2, 9]], "outside the vocabulary")]:
        with pytest.raises(ArbenchError, match=message):
            validate_result(GenerationResult(tokens, 1), 1, 2 if message == "over the limit" else 5, 6, 5, "broken")


def test_draft_with_another_tokenizer_of_the_same_size_is_refused(tmp_path):
    """Equal vocabulary sizes are not enough: the token-to-id mappings of target and draft folders are compared."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from harness.protocols.decoding.hf import HFCausalLM

    def folder(name: str, words: list[str]) -> HFCausalLM:
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                             eos_token_id=1, bos_token_id=0, pad_token_id=0))
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>")),
            unk_token="<unk>", eos_token="</s>")
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
        return HFCausalLM.load(tmp_path / name)

    base = ["<unk>", "</s>"] + [f"w{i}" for i in range(14)]
    target = folder("target", base)
    same = folder("same", base)
    other = folder("other", base[:2] + list(reversed(base[2:])))  # 16 ids, 14 of them meaning other words
    assert target.tokenizer_digest == same.tokenizer_digest and target.tokenizer_digest != other.tokenizer_digest
    target.require_compatible_draft(same, "speculative")
    with pytest.raises(ArbenchError, match="another tokenizer"):
        target.require_compatible_draft(other, "speculative")


def test_rope_tables_follow_the_positions_device():
    """The frequencies are built where the positions live (a CUDA run fed CUDA positions to CPU frequencies)."""
    from harness.protocols.decoding.gpt import rope_tables

    cos, sin = rope_tables(8, torch.arange(4, device="meta"), 10000.0)
    assert cos.device.type == sin.device.type == "meta" and cos.shape == (4, 4)
    cpu_cos, _ = rope_tables(8, torch.arange(4), 10000.0)
    assert torch.allclose(cpu_cos[1], torch.cos(torch.tensor([1.0, 0.1, 0.01, 0.001])))
