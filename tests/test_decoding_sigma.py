"""sigma-GPT: the double positional encoding with the identity order is a plain causal LM; the cached pass along
any order equals the training pass; parallel queries equal single ones; the token-based rejection rule turns
drafts from q into exact draws from p; burst decoding verified left to right equals greedy AR of the same model,
and in random order every token is the model's choice along the order it was fixed in; the task times it against
AR decoding of its own model."""

from __future__ import annotations

import pytest
import torch

from baselines.decoding.ar import ar_decode
from baselines.decoding.sigma_gpt import (BUNDLED, SigmaConfig, SigmaGPT, SigmaGPTModel, accept, burst_decode,
                                          residual_draw)
from harness.errors import ArbenchError
from harness.protocols.decoding.generation import SamplingConfig

torch.set_num_threads(1)
CONFIG = SigmaConfig(vocab_size=257, d_model=32, n_layers=2, n_heads=4, max_len=64)


def random_sigma(seed: int = 0) -> SigmaGPTModel:
    torch.manual_seed(seed)
    net = SigmaGPT(CONFIG)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return SigmaGPTModel(net.eval(), "random-sigma")


def tokens(seed: int, shape) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed))


def test_identity_order_is_a_causal_lm():
    model = random_sigma()
    x = tokens(0, (2, 20))
    with torch.no_grad():
        full, targets = model.net.forward_order(x, torch.arange(20).expand(2, 20))
    assert torch.equal(targets, x[:, 1:])
    cache = model.new_cache(2, 20)
    stepwise = torch.cat([model.forward(x[:, :7], cache).logits] +
                         [model.forward(x[:, t:t + 1], cache).logits for t in range(7, 19)], 1)
    torch.testing.assert_close(stepwise, full, atol=1e-4, rtol=1e-4)
    changed = x.clone()
    changed[:, 12:] = tokens(1, (2, 8))  # a causal LM's outputs before position 12 cannot see it
    with torch.no_grad():
        again, _ = model.net.forward_order(changed, torch.arange(20).expand(2, 20))
    torch.testing.assert_close(again[:, :11], full[:, :11], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(again[:, 11:], full[:, 11:])


def test_cached_pass_along_any_order_equals_the_training_pass():
    model = random_sigma(1)
    x = tokens(2, (1, 24))
    order = torch.randperm(24, generator=torch.Generator().manual_seed(3))[None]
    with torch.no_grad():
        full, _ = model.net.forward_order(x, order)
        cache = model.new_cache(1, 24)
        seq, o = x[0, order[0]], order[0]
        parts, start = [], 0
        for end in (5, 6, 15, 23):  # chunks of several inputs and single ones, through the KV cache
            parts.append(model.net.step(seq[None, start:end], o[start:end], o[start + 1:end + 1], cache, start))
            start = end
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-4, rtol=1e-4)
    # the next-position encoding matters: the same inputs asked for other positions give other outputs
    with torch.no_grad():
        other = model.net.step(seq[None, :5], o[:5], o[:5].flip(0), model.new_cache(1, 24), 0)
    assert not torch.allclose(other, full[:, :5])


def test_parallel_queries_equal_single_queries():
    model = random_sigma(2)
    x = tokens(4, (1, 10))
    open_pos = torch.tensor([10, 17, 12, 30])
    with torch.no_grad():
        cache = model.new_cache(1, 20)
        model.forward(x[:, :-1], cache)
        k = len(open_pos)
        mask = torch.cat([torch.ones(k, 9, dtype=torch.bool), torch.eye(k, dtype=torch.bool)], 1)
        together = model.net.step(x[:, -1:].expand(1, k), torch.full((k,), 9), open_pos, cache, 9, mask)
        alone = [model.net.step(x[:, -1:], torch.tensor([9]), open_pos[i:i + 1], cache, 9) for i in range(k)]
    torch.testing.assert_close(together, torch.cat(alone, 1), atol=1e-5, rtol=1e-5)


def test_rejection_rule_turns_drafts_from_q_into_draws_from_p():
    p = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05])
    q = torch.tensor([0.1, 0.2, 0.3, 0.2, 0.2])
    n = 20000
    gen = torch.Generator().manual_seed(0)
    drafts = torch.multinomial(q, n, replacement=True, generator=gen)[None]
    ok = accept(p.expand(1, n, 5), q.expand(1, n, 5), drafts, [gen])[0]
    # acceptance probability of a draft d is min(1, p(d)/q(d))
    for d in range(5):
        rate = ok[drafts[0] == d].float().mean()
        assert abs(float(rate) - min(1.0, float(p[d] / q[d]))) < 0.03
    out = drafts[0].clone()
    for i in (~ok).nonzero()[:, 0].tolist():
        out[i] = residual_draw(p, q, gen)
    freq = torch.bincount(out, minlength=5).float() / n
    assert (freq - p).abs().max() < 0.015  # 4 standard errors
    # the drafts themselves follow q, far from p: the test would catch a rule that keeps every draft
    assert (torch.bincount(drafts[0], minlength=5).float() / n - p).abs().max() > 0.1


@pytest.mark.parametrize("window", [0, 4])
def test_left_to_right_bursts_equal_greedy_ar(window):
    model = random_sigma(3)
    prompt = tokens(5, (3, 12))
    ar = ar_decode(model, prompt, 30)
    out = burst_decode(model, prompt, 30, "left-to-right", window)
    assert out.tokens == ar.tokens
    assert out.target_passes == 2 * out.steps and sum(out.accepted) == 30
    rows = [burst_decode(model, prompt[i:i + 1], 30, "left-to-right", window).tokens[0] for i in range(3)]
    assert rows == ar.tokens


def test_random_order_tokens_are_the_models_choices_along_their_order():
    model = random_sigma(4)
    prompt = tokens(6, (2, 10))
    trace: list[list[int]] = []
    out = burst_decode(model, prompt, 24, "random", 0, seeds=[7, 8], trace=trace)
    filled = [p for step in trace for p in step]
    assert sorted(filled) == list(range(10, 34)) and filled != sorted(filled)  # every position once, not in order
    assert all(len(row) == 24 for row in out.tokens)  # no EOS from these weights
    order = torch.tensor(list(range(10)) + filled)
    seq = torch.cat([prompt, torch.tensor(out.tokens)], 1)
    with torch.no_grad():
        logits, _ = model.net.forward_order(seq, order.expand(2, -1))
    choice = logits.argmax(-1)  # input t predicts the token at order[t + 1]
    for t in range(9, 33):
        assert torch.equal(choice[:, t], seq[:, order[t + 1]]), t
    assert not torch.equal(seq[:, 10:], torch.tensor(ar_decode(model, prompt, 24).tokens))


def test_left_to_right_sampling_follows_the_left_to_right_distribution():
    """Both new tokens drafted from the prompt alone in one burst: the second one's marginal matches the exact
    sum_x1 p(x1) p(x2 | x1) (top-3 sampling: at most 9 values), not its draft distribution q = p(x2 | prompt)."""
    from harness.protocols.decoding.generation import warp

    model = random_sigma(5)
    sampling = SamplingConfig(1.0, top_k=3)
    prompt = tokens(7, (1, 8))
    with torch.no_grad():
        cache = model.new_cache(1, 10)
        p1 = warp(model.forward(prompt, cache).logits[:, -1], sampling)[0]
        firsts = p1.nonzero()[:, 0]
        seqs = torch.cat([prompt.expand(len(firsts), 8), firsts[:, None]], 1)
        p2 = warp(model.forward(seqs, model.new_cache(len(firsts), 10)).logits[:, -1], sampling)
        model.crop(cache, 7)
        q2 = warp(model.net.step(prompt[:, -1:], torch.tensor([7]), torch.tensor([9]), cache, 7)[:, -1], sampling)[0]
    exact = (p1[firsts, None] * p2).sum(0)
    n = 3000  # one burst per row: both positions are committed in the first iteration whatever is accepted
    out = burst_decode(model, prompt.expand(n, 8), 2, "left-to-right", 2, sampling, list(range(n)))
    assert out.steps == 1
    counts = torch.bincount(torch.tensor([row[1] for row in out.tokens]), minlength=257).float()
    assert 0.5 * float((counts / n - exact).abs().sum()) < 0.05  # total variation; about 0.02 from noise
    assert 0.5 * float((q2 - exact).abs().sum()) > 0.2  # what keeping every draft would give is far from it


@pytest.mark.skipif(not BUNDLED.is_file(), reason="bundled sigma-GPT not trained")
def test_bundled_model_through_the_task_is_timed_against_its_own_ar():
    from harness.registry import METHODS
    from run_context_double import FakeContext
    from tasks.decoding_speedup import DecodingSpeedupMini, MiniConfig

    model = SigmaGPTModel.load(BUNDLED)
    x = torch.tensor([list(b"And God said, Let there be light: and there was light. And God saw the light")])
    n = x.shape[1]
    with torch.no_grad():  # the trained model reads the next position: queries for n, n+1, n+2 differ
        cache = model.new_cache(1, n + 3)
        model.forward(x[:, :-1], cache)
        mask = torch.cat([torch.ones(3, n - 1, dtype=torch.bool), torch.eye(3, dtype=torch.bool)], 1)
        probs = model.net.step(x[:, -1:].expand(1, 3), torch.full((3,), n - 1), torch.arange(n, n + 3), cache,
                               n - 1, mask)[0].softmax(-1)
    assert (probs[0] - probs[1]).abs().sum() > 0.1 and (probs[1] - probs[2]).abs().sum() > 0.1  # blind: < 1e-4
    task = DecodingSpeedupMini(MiniConfig(max_prompts=2, max_new_tokens=16, batch_sizes=(1, 2), rounds=1, warmup=0))
    lossless = METHODS.get("sigma-gpt-burst-l2r")()
    assert lossless.lossless and lossless.brings_models
    task.check_method(lossless)
    assert isinstance(lossless.models.target, SigmaGPTModel)
    ctx = FakeContext()
    values = {m.name: m.value for m in task.run(lossless, ctx)}
    assert values["exact_match_rate"] == 1.0 and "speedup_bs2" in values
    assert ctx.extra_provenance["model"]["sha256"] == lossless.describe()["model_sha256"]
    assert lossless.checkpoint_sha256() == lossless.describe()["model_sha256"]  # so the run's signature names it
    lossy = METHODS.get("sigma-gpt-burst")()
    assert not lossy.lossless
    task.check_method(lossy)
    values = {m.name: m.value for m in task.run(lossy, FakeContext())}
    assert values["quality_target_nll"] > 0 and values["quality_target_nll_baseline"] > 0


def test_models_that_are_not_sigma_gpts_are_refused(tmp_path):
    from harness.protocols.decoding.bundled import BUNDLED_MODELS, load_model
    from harness.protocols.decoding.strategy import Models
    from harness.registry import METHODS

    method = METHODS.get("sigma-gpt-burst-l2r")()
    with pytest.raises(ArbenchError, match="decodes a sigma-GPT"):
        method.check(Models(load_model("tiny-kjv-target")))
    with pytest.raises(ArbenchError, match="not a sigma-GPT checkpoint"):
        SigmaGPTModel.load(BUNDLED_MODELS["tiny-kjv-target"])
    with pytest.raises(ArbenchError, match="train_sigma_gpt"):
        SigmaGPTModel.load(tmp_path / "none.safetensors")
    model = random_sigma()
    with pytest.raises(ArbenchError, match="trained on 64 positions"):
        burst_decode(model, tokens(0, (1, 40)), 30, "left-to-right", 4)
