"""EAGLE-1 decoding: the draft head and tree functions against upstream's own outputs (tests/golden/make_eagle.py,
SafeAILab/EAGLE@4a9cf3a, branch v1), exactness against greedy AR (random GPT, a tiny Llama through transformers,
the bundled target with its trained head), batch independence, acceptance, and the head file checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from golden.golden_weights import seeded_fill, seeded_tensor
from safetensors import safe_open

from baselines.decoding.ar import ar_decode
from baselines.decoding.eagle import (BUNDLED_HEAD, TREES, EagleHead, accept_greedy, draft_dynamic, draft_tree,
                                      eagle2_decode, eagle_decode, eagle_tree, tree_candidates)
from harness.errors import ArbenchError
from harness.protocols.decoding.bundled import BUNDLED_PROMPTS, load_model, read_prompts
from test_decoding_new_strategies import tiny_llama
from test_decoding_strategies import random_gpt

torch.set_num_threads(1)
GOLDEN = Path(__file__).parent / "golden" / "eagle" / "eagle.safetensors"
GOLDEN2 = Path(__file__).parent / "golden" / "eagle" / "eagle2.safetensors"
SMALL = [[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]]  # as make_eagle.py
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def golden():
    with safe_open(str(GOLDEN), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}


@pytest.fixture(scope="module")
def head_and_lm():
    """The golden head (hidden 32, 4 query / 2 key-value heads, MLP 64) and LM head, seeded as upstream's."""
    head = seeded_fill(EagleHead(32, 4, 2, 64), seed=0).eval()
    embed = torch.nn.Embedding(40, 32)
    # upstream's head holds the target's embedding as `embed_tokens`; here it is the target's, seeded the same way
    embed.weight.data = seeded_tensor("embed_tokens.weight", (40, 32), 0)
    lm_head = seeded_fill(torch.nn.Linear(32, 40, bias=False), seed=1).eval()
    return head, embed, lm_head


def test_head_forward_equals_upstream(golden, head_and_lm):
    head, embed, _ = head_and_lm
    feats, ids = golden["forward.features"][None], golden["forward.ids"][None]
    with torch.no_grad():
        out, _ = head(feats, embed(ids), torch.arange(ids.shape[1]))
    torch.testing.assert_close(out[0], golden["forward.out"], **TOL)


@pytest.mark.parametrize("tree", ["mc_sim_7b_63", "small"])
def test_tree_drafting_candidates_and_acceptance_equal_upstream(golden, head_and_lm, tree):
    head, embed, lm_head = head_and_lm
    g = {k[len(tree) + 1:]: v for k, v in golden.items() if k.startswith(tree + ".")}
    t = eagle_tree(TREES.get(tree, SMALL))
    assert torch.equal(t.attn_mask, g["tree_attn_mask"].bool())
    assert torch.equal(t.tree_indices, g["tree_indices"])
    assert torch.equal(t.position_ids, g["tree_position_ids"])
    assert torch.equal(t.retrieve_indices, g["retrieve_indices"])
    # topK_genrate twice: a prompt, then three accepted features through the head's context cache
    prompt = g["prompt"][None]
    rows, past = draft_tree(head, embed, lm_head, g["feats"][None], prompt[:, 1:], None, t)
    assert torch.equal(rows[0], g["draft1"])
    rows, past = draft_tree(head, embed, lm_head, g["feats2"][None], g["more"][None], past, t)
    assert torch.equal(rows[0], g["draft2"])
    assert past[0][0].shape[2] == prompt.shape[1] - 1 + 3  # the context only, never the tree
    paths, tree_tokens = tree_candidates(g["root"], rows, t)
    assert torch.equal(tree_tokens[0], g["tree"]) and torch.equal(paths[0], g["cart"])
    for case in range(3):
        best, accept = accept_greedy(g[f"case{case}.path_logits"], paths[0])
        assert [best, accept] == g[f"case{case}.best_accept"].tolist(), (tree, case)


@pytest.mark.parametrize("name,settings", [("a", (12, 3, 4)), ("b", (20, 4, 3))])  # as make_eagle2.py
def test_dynamic_tree_equals_upstream_eagle2(head_and_lm, name, settings):
    """EAGLE-2's `topK_genrate` (SafeAILab/EAGLE@cb7e084, cnets1.py) twice in a row through the context cache."""
    head, embed, lm_head = head_and_lm
    with safe_open(str(GOLDEN2), framework="pt") as fh:
        g = {k[len(name) + 1:]: fh.get_tensor(k) for k in fh.keys() if k.startswith(name + ".")}
    calls = [(g["feats"][None], g["prompt"][None, 1:]), (g["feats2"][None], g["more"][None])]
    past = None
    for call, (feats, tokens) in enumerate(calls, start=1):
        tree, past = draft_dynamic(head, embed, lm_head, feats, tokens, past, *settings)
        assert torch.equal(tree.tokens, g[f"{call}.tokens"]), call
        assert torch.equal(tree.attn_mask, g[f"{call}.tree_mask"].bool()), call
        assert torch.equal(tree.position_ids, g[f"{call}.position_ids"]), call
        assert torch.equal(tree.retrieve_indices, g[f"{call}.retrieve_indices"]), call


def random_head(hidden: int, heads: int, seed: int = 0) -> EagleHead:
    torch.manual_seed(seed)
    head = EagleHead(hidden, heads, heads, 2 * hidden)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return head.eval()


@pytest.mark.parametrize("batch", [1, 3])
def test_eagle_equals_greedy_on_a_random_gpt_and_is_batch_independent(batch):
    target = random_gpt(0, vocab_size=12)
    prompt = torch.randint(0, 12, (3, 16), generator=torch.Generator().manual_seed(0))[:batch]
    c = target.net.config
    head = random_head(c.d_model, c.n_heads)
    ref = ar_decode(target, prompt, 40)
    out = eagle_decode(target, head, prompt, 40, TREES["mc_sim_7b_63"])
    assert out.tokens == ref.tokens
    rows = [eagle_decode(target, head, prompt[i:i + 1], 40, TREES["mc_sim_7b_63"]).tokens[0] for i in range(batch)]
    assert rows == out.tokens
    assert eagle2_decode(target, head, prompt, 40, 12, 3, 4).tokens == ref.tokens  # EAGLE-2, a small dynamic tree


def test_eagle_equals_greedy_through_transformers():
    """The HF adapter's tree pass, embedding and LM head (post-norm last hidden state) with a tiny Llama."""
    from harness.protocols.decoding.hf import HFCausalLM

    target = HFCausalLM(tiny_llama(6), "llama", 3)
    ids = torch.randint(4, 16, (2, 9), generator=torch.Generator().manual_seed(2))
    out = target.forward(ids, target.new_cache(2, 9), want_hidden=True)
    torch.testing.assert_close(target.hidden_logits(out.hidden), out.logits, **TOL)
    head = random_head(32, 4, seed=1)
    ref = ar_decode(target, ids, 24).tokens
    assert eagle_decode(target, head, ids, 24, TREES["mc_sim_7b_63"]).tokens == ref
    assert eagle2_decode(target, head, ids, 24, 16, 4, 3).tokens == ref


def test_bundled_head_is_lossless_and_accepts_several_tokens_per_pass():
    target = load_model("tiny-kjv-target")
    head = EagleHead.load(BUNDLED_HEAD, target)
    passes = passes2 = ref_passes = 0
    for row in read_prompts(BUNDLED_PROMPTS)[::8][:3]:
        prompt = torch.tensor([row["ids"]])
        ref = ar_decode(target, prompt, 48)
        out = eagle_decode(target, head, prompt, 48, TREES["mc_sim_7b_63"])
        out2 = eagle2_decode(target, head, prompt, 48, 60, 7, 10)  # upstream's EAGLE-2 defaults
        assert out.tokens == ref.tokens and out2.tokens == ref.tokens
        passes, ref_passes = passes + out.target_passes, ref_passes + ref.target_passes
        passes2 += out2.target_passes
    assert passes < 0.6 * ref_passes  # a trained head: well over one token per target pass
    assert passes2 < passes  # the dynamic tree accepts more per pass than the static one


def test_head_file_is_refused_for_another_target_and_when_missing(tmp_path):
    target = load_model("tiny-kjv-target")
    other = load_model("tiny-kjv-draft")
    with pytest.raises(ArbenchError, match="trained for a target with sha256"):
        EagleHead.load(BUNDLED_HEAD, other)
    with pytest.raises(ArbenchError, match="train_eagle"):
        EagleHead.load(tmp_path / "none.safetensors", target)


def test_eagle_passes_the_task_exactness_check():
    from harness.registry import METHODS
    from run_context_double import FakeContext
    from tasks.decoding_speedup import DecodingSpeedupMini, MiniConfig

    task = DecodingSpeedupMini(MiniConfig(max_prompts=3, max_new_tokens=24, batch_sizes=(1, 2), rounds=1, warmup=0))
    eagle2 = METHODS.get("eagle-2")
    for method in (METHODS.get("eagle")(), eagle2(eagle2.Config(total_tokens=26, depth=5, top_k=8))):
        assert method.lossless
        task.check_method(method)
        values = {m.name: m.value for m in task.run(method, FakeContext())}
        assert values["exact_match_rate"] == 1.0 and values["first_divergence_position"] is None
        assert values["mean_accepted_tokens"] > 1.0 and "speedup_bs2" in values


def test_dynamic_tree_settings_are_checked():
    from harness.protocols.decoding.strategy import Models
    from harness.registry import METHODS

    cls = METHODS.get("eagle-2")
    method = cls(cls.Config(total_tokens=200, depth=2, top_k=4))
    with pytest.raises(ArbenchError, match="total_tokens <= 1 \\+ top_k"):
        method.check(Models(load_model("tiny-kjv-target")))


def test_a_target_without_embedding_and_lm_head_access_is_refused():
    from harness.protocols.decoding.strategy import Models
    from harness.registry import METHODS

    target = load_model("tiny-kjv-target")
    target.supports_features = False  # as an adapter that does not expose `embed` / `hidden_logits`
    with pytest.raises(ArbenchError, match="does not expose"):
        METHODS.get("eagle")().check(Models(target))
