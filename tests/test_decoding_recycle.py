"""RecycleGPT decoding: every token is what its producer (the model or the recyclable module) predicts from the
tokens before it, checked by teacher forcing over the whole output; each model pass yields two tokens; the task
reports quality beside speed; modules are refused for other targets."""

from __future__ import annotations

import pytest
import torch

from baselines.decoding.recycle import BUNDLED_MODULE, RecyclableModule, recycle_decode
from harness.errors import ArbenchError
from harness.protocols.decoding.bundled import BUNDLED_PROMPTS, load_model, read_prompts
from test_decoding_strategies import random_gpt

torch.set_num_threads(1)


def random_module(d_model: int, n_heads: int, seed: int = 0) -> RecyclableModule:
    torch.manual_seed(seed)
    module = RecyclableModule(d_model, n_heads)
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return module.eval()


def check_producers(target, module, prompt: list[int], tokens: list[int]) -> None:
    """Teacher forcing over prompt + output: output token i (0-based) comes from the model when i is even
    (the first token and then one per model pass) and from the module when i is odd."""
    net = target.net
    seq = torch.tensor([prompt + tokens])
    with torch.no_grad():
        hidden = net.forward_train(seq)[-1]
        model_choice = net.logits(hidden).argmax(-1)[0]  # position p predicts p + 1
        z = module.inputs(hidden[:, :-1], net.tok_emb(seq[:, 1:]))
        module_choice = (module.forward_train(z) @ net.tok_emb.weight.T).argmax(-1)[0]  # position p predicts p + 2
    n = len(prompt)
    for i, token in enumerate(tokens):
        p = n + i  # the token's position in seq
        expected = model_choice[p - 1] if i % 2 == 0 else module_choice[p - 2]
        assert token == int(expected), (i, "model" if i % 2 == 0 else "module")


@pytest.mark.parametrize("batch", [1, 3])
def test_every_token_is_its_producers_choice_and_each_pass_gives_two(batch):
    target = random_gpt(0, vocab_size=12)
    module = random_module(target.net.config.d_model, target.net.config.n_heads)
    prompt = torch.randint(0, 11, (3, 10), generator=torch.Generator().manual_seed(0))[:batch]
    out = recycle_decode(target, module, prompt, 30)
    for row, tokens in zip(prompt.tolist(), out.tokens):
        check_producers(target, module, row, tokens)
    assert out.target_passes == 15  # the prefill and one pass per two tokens (the last token is the module's)
    rows = [recycle_decode(target, module, prompt[i:i + 1], 30).tokens[0] for i in range(batch)]
    assert rows == out.tokens


def test_bundled_module_through_the_task_reports_quality():
    from harness.registry import METHODS
    from run_context_double import FakeContext
    from tasks.decoding_speedup import DecodingSpeedupMini, MiniConfig

    target = load_model("tiny-kjv-target")
    module = RecyclableModule.load(BUNDLED_MODULE, target)
    row = read_prompts(BUNDLED_PROMPTS)[0]["ids"]
    out = recycle_decode(target, module, torch.tensor([row]), 24)
    check_producers(target, module, row, out.tokens[0])
    task = DecodingSpeedupMini(MiniConfig(max_prompts=3, max_new_tokens=24, batch_sizes=(1,), rounds=1, warmup=0))
    method = METHODS.get("recycle-gpt")()
    assert not method.lossless
    task.check_method(method)
    values = {m.name: m.value for m in task.run(method, FakeContext())}
    assert values["forward_passes_per_token"] <= 0.6 and values["quality_target_nll"] > 0


def test_module_is_refused_for_another_target_and_for_hf_models(tmp_path):
    from harness.protocols.decoding.strategy import Models
    from harness.registry import METHODS

    with pytest.raises(ArbenchError, match="trained for a target with sha256"):
        RecyclableModule.load(BUNDLED_MODULE, load_model("tiny-kjv-draft"))
    with pytest.raises(ArbenchError, match="train_recycle"):
        RecyclableModule.load(tmp_path / "none.safetensors", load_model("tiny-kjv-target"))
    from test_decoding_strategies import BigramModel

    with pytest.raises(ArbenchError, match="only for the project's GPT"):
        METHODS.get("recycle-gpt")().check(Models(BigramModel(torch.zeros(4, 4)), None))
