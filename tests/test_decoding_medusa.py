"""Medusa-1 decoding: the tree functions against upstream's own outputs (tests/golden/make_medusa.py,
FasterDecoding/Medusa@e2a5d20), exactness against greedy AR (random GPT, a tiny Llama through transformers,
the bundled target with its trained heads), batch independence, acceptance, and the heads file checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from baselines.decoding.ar import ar_decode
from baselines.decoding.medusa import (BUNDLED_HEADS, TREES, MedusaHeads, accept_greedy, medusa_buffers,
                                       medusa_decode, tree_candidates)
from harness.errors import ArbenchError
from harness.protocols.decoding.bundled import BUNDLED_PROMPTS, load_model, read_prompts
from test_decoding_new_strategies import tiny_llama
from test_decoding_strategies import random_gpt

torch.set_num_threads(1)
GOLDEN = Path(__file__).parent / "golden" / "medusa" / "medusa.safetensors"


@pytest.fixture(scope="module")
def golden():
    with safe_open(str(GOLDEN), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}


@pytest.mark.parametrize("tree", ["kjv-31", "mc_sim_7b_63", "small"])
def test_tree_buffers_candidates_and_acceptance_equal_upstream(golden, tree):
    choices = TREES.get(tree, [[0], [1], [0, 0], [0, 1]])
    b = medusa_buffers(choices)
    assert torch.equal(b.attn_mask, golden[f"{tree}.attn_mask"].bool())
    assert torch.equal(b.tree_indices, golden[f"{tree}.tree_indices"])
    assert torch.equal(b.position_ids, golden[f"{tree}.medusa_position_ids"])
    assert torch.equal(b.retrieve_indices, golden[f"{tree}.retrieve_indices"])
    real = b.retrieve_indices >= 0
    for case in range(3):
        g = {k.split(".", 2)[2]: v for k, v in golden.items() if k.startswith(f"{tree}.case{case}.")}
        paths, nodes = tree_candidates(g["logits"], g["medusa_logits"], b)
        assert torch.equal(nodes, g["tree"])
        assert torch.equal(paths[real], g["cart"][real])  # upstream pads paths with token 0, ARBench with -1
        assert (paths[~real] == -1).all() and (g["cart"][~real] == 0).all()
        best, accept = accept_greedy(g["path_logits"], paths)
        assert [best, accept] == g["best_accept"].tolist(), (tree, case)


def test_tree_refuses_bad_choices():
    with pytest.raises(ArbenchError, match="parent"):
        medusa_buffers([[0], [1, 0]])
    with pytest.raises(ArbenchError, match=r"\[0, 10\)"):
        medusa_buffers([[10]])


def random_heads(hidden: int, vocab: int, seed: int = 0) -> MedusaHeads:
    torch.manual_seed(seed)
    heads = MedusaHeads(hidden, vocab, 4)
    for p in heads.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return heads.eval()


@pytest.mark.parametrize("batch", [1, 3])
def test_medusa_equals_greedy_on_a_random_gpt_and_is_batch_independent(batch):
    target = random_gpt(0, vocab_size=12)
    prompt = torch.randint(0, 12, (3, 16), generator=torch.Generator().manual_seed(0))[:batch]
    heads = random_heads(target.net.config.d_model, 12)
    ref = ar_decode(target, prompt, 40)
    out = medusa_decode(target, heads, prompt, 40, TREES["kjv-31"])
    assert out.tokens == ref.tokens
    rows = [medusa_decode(target, heads, prompt[i:i + 1], 40, TREES["kjv-31"]).tokens[0] for i in range(batch)]
    assert rows == out.tokens


def test_medusa_equals_greedy_through_transformers():
    """The HF adapter's tree pass (4D mask, explicit positions, hidden states) with a tiny Llama."""
    from harness.protocols.decoding.hf import HFCausalLM

    target = HFCausalLM(tiny_llama(6), "llama", 3)
    heads = random_heads(32, 16, seed=1)
    prompt = torch.randint(4, 16, (2, 9), generator=torch.Generator().manual_seed(2))
    assert medusa_decode(target, heads, prompt, 24, TREES["kjv-31"]).tokens == ar_decode(target, prompt, 24).tokens


def test_bundled_heads_are_lossless_and_accept_several_tokens_per_pass():
    target = load_model("tiny-kjv-target")
    heads = MedusaHeads.load(BUNDLED_HEADS, target)
    passes = ref_passes = 0
    for row in read_prompts(BUNDLED_PROMPTS)[::8][:3]:
        prompt = torch.tensor([row["ids"]])
        ref = ar_decode(target, prompt, 48)
        out = medusa_decode(target, heads, prompt, 48, TREES["kjv-31"])
        assert out.tokens == ref.tokens
        passes, ref_passes = passes + out.target_passes, ref_passes + ref.target_passes
    assert passes < 0.6 * ref_passes  # trained heads: well over one token per target pass


def test_heads_file_is_refused_for_another_target_and_when_missing(tmp_path):
    target = load_model("tiny-kjv-target")
    other = load_model("tiny-kjv-draft")
    with pytest.raises(ArbenchError, match="trained for a target with sha256"):
        MedusaHeads.load(BUNDLED_HEADS, other)
    with pytest.raises(ArbenchError, match="train_medusa"):
        MedusaHeads.load(tmp_path / "none.safetensors", target)


def test_medusa_passes_the_task_exactness_check():
    from harness.registry import METHODS
    from run_context_double import FakeContext
    from tasks.decoding_speedup import DecodingSpeedupMini, MiniConfig

    task = DecodingSpeedupMini(MiniConfig(max_prompts=3, max_new_tokens=24, batch_sizes=(1, 2), rounds=1, warmup=0))
    method = METHODS.get("medusa")()
    assert method.lossless
    task.check_method(method)
    values = {m.name: m.value for m in task.run(method, FakeContext())}
    assert values["exact_match_rate"] == 1.0 and values["first_divergence_position"] is None
    assert values["mean_accepted_tokens"] > 1.0 and "speedup_bs2" in values
