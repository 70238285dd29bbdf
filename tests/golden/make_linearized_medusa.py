"""Golden outputs of Linearized-LLM's Medusa tree pass on the augmented linear attention, for
`LinearizedLlama.forward_tree` (baselines/decoding/linearized.py).

Upstream: GATECH-EIC/Linearized-LLM@273274e6fff55bc727ca969a9cdf56f43910364a (Apache-2.0),
`experiments/medusa/model/modeling_llama_kv.py` (its own LlamaForCausalLM with a preallocated KV cache,
`kv_cache.initialize_past_key_values`) under the aug-linear settings of `experiments/run_medusa.sh`
(USE_LINEAR=1 USE_LOCAL=1 USE_GLOBAL=1 GLOBAL_FACTOR=1 ADD_CONV=1), with `dwconv`, `conv_mask` and `global_factor`
added to every `self_attn` as `fine-tune.py` does. Its generation loop (`medusa_model.medusa_generate`) sets
`medusa_status = [0, None]` for the prefill and `[1, medusa_position_ids]` for each tree pass
(`utils.tree_decoding`: positions = tree depths + cached length, `model.medusa_mask` = the tree's attention mask);
this script does the same on a seeded tiny LLaMA (4 heads, no GQA: upstream's KV cache is sized by
`num_attention_heads`), GROUP_SIZE 8, the `mc_sim_7b_63` tree (depth 4) of random tokens, after prefixes of
35 (the tree stays in the prefix's chunk), 40 (the tree starts a chunk) and 37 tokens (the chunk ends inside the
tree: the nodes from depth 3 on start a new chunk, where upstream drops the completed chunk's global part and the
project does not; the test compares the nodes before depth 3 there). Upstream's unfolded conv reads 31 cached
values, so every prefix is >= 31 tokens. Run with transformers==4.37.0 (scratch venv) and a checkout:

    python tests/golden/make_linearized_medusa.py /path/to/Linearized-LLM

Writes tests/golden/linearized/medusa_tree.safetensors: config, layout, seed, the prefixes, the tree's tokens,
mask and depths, upstream's prefill logits and tree logits per prefix.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

UPSTREAM = "GATECH-EIC/Linearized-LLM@273274e6fff55bc727ca969a9cdf56f43910364a"
OUT = Path(__file__).parent / "linearized" / "medusa_tree.safetensors"
SEED = 29
GROUP = 8
KERNEL = 63
PREFIXES = (35, 40, 37)
CONFIG = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=4, max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=10000.0,
              tie_word_embeddings=False, attention_bias=False, pretraining_tp=1)


def main(checkout: str) -> None:
    os.environ.update(USE_LINEAR="1", USE_LOCAL="1", USE_GLOBAL="1", GLOBAL_FACTOR="1", ADD_CONV="1",
                      GROUP_SIZE=str(GROUP))
    import transformers
    from transformers import LlamaConfig

    assert transformers.__version__ == "4.37.0", transformers.__version__
    sys.path.insert(0, str(Path(checkout) / "experiments"))
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    sys.path.insert(0, str(here.parents[1]))
    from medusa.model import modeling_llama_kv as upstream  # upstream
    from medusa.model.kv_cache import initialize_past_key_values

    from baselines.decoding.medusa import TREES, medusa_buffers  # golden against upstream Medusa (test_decoding_medusa)
    from golden_weights import layout, seeded_module_state

    config = LlamaConfig(**CONFIG)
    model = upstream.LlamaForCausalLM(config)
    for name, m in model.named_modules():  # fine-tune.py, ADD_CONV and GLOBAL_FACTOR blocks
        if name.endswith("self_attn"):
            m.dwconv = torch.nn.Conv2d(m.num_heads, m.num_heads, kernel_size=(KERNEL, 1),
                                       padding=(KERNEL // 2, 0), bias=False, groups=m.num_heads, dilation=(1, 1))
            mask = torch.ones((1, 1, KERNEL, 1), dtype=torch.float32)
            m.register_buffer("conv_mask", mask)
            m.conv_mask[:, :, KERNEL // 2 + 1:, :] = 0.0
            m.global_factor = torch.nn.Parameter(torch.zeros(1))
    model.load_state_dict(seeded_module_state(model, SEED), strict=True)
    model.eval()

    buffers = medusa_buffers(TREES["mc_sim_7b_63"])  # upstream's generate_medusa_buffers (golden in test_decoding_medusa)
    gen = torch.Generator().manual_seed(SEED)
    tensors = {"tree_mask": buffers.attn_mask.to(torch.uint8), "tree_depth": buffers.position_ids,
               "tree_ids": torch.randint(0, CONFIG["vocab_size"], (1, len(buffers.position_ids)), generator=gen)}
    with torch.no_grad():
        for n in PREFIXES:
            ids = torch.randint(0, CONFIG["vocab_size"], (1, n), generator=gen)
            past, _, _ = initialize_past_key_values(model)
            model.model.medusa_mask = None
            upstream.medusa_status[0], upstream.medusa_status[1] = 0, None  # prefill
            prefill = model(input_ids=ids, past_key_values=past).logits
            model.model.medusa_mask = buffers.attn_mask.float()[None, None]  # utils.initialize_medusa
            upstream.medusa_status[0], upstream.medusa_status[1] = 1, buffers.position_ids  # speculative
            tree = model(input_ids=tensors["tree_ids"], past_key_values=past,
                         position_ids=(buffers.position_ids + n)[None]).logits
            tensors[f"prefix{n}"], tensors[f"prefill{n}"], tensors[f"tree{n}"] = ids, prefill, tree.contiguous()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    config_json = {**CONFIG, "group_size": GROUP, "kernel_size": KERNEL}
    save_file(tensors, str(OUT), metadata={"upstream": UPSTREAM, "seed": str(SEED), "config": json.dumps(config_json),
                                           "layout": layout(model), "transformers": transformers.__version__,
                                           "prefixes": json.dumps(PREFIXES)})
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
