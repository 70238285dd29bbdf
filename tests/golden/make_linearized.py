"""Golden outputs of augmented linear attention on LLaMA (Linearized-LLM), for `baselines/decoding/linearized.py`.

Upstream: GATECH-EIC/Linearized-LLM@273274e6fff55bc727ca969a9cdf56f43910364a (Apache-2.0), the code that trained
the released `LinearizedLLM/llama-2-7b-aug-linear`: `experiments/llama_attn_replace.py`'s
`linear_forward_noflashattn` (patched over transformers' `LlamaAttention.forward`) with the settings of
`experiments/tasks_run-llama2.sh` "Local + alpha * global + Conv (ours)" and `run_medusa.sh`'s aug-linear runs
(USE_LINEAR=1 USE_LOCAL=1 USE_GLOBAL=1 GLOBAL_FACTOR=1 ADD_CONV=1), plus the per-layer `dwconv` (kernel 63),
`conv_mask` and `global_factor` that `experiments/fine-tune.py` adds to every `self_attn`. Upstream pins
transformers 4.34-4.37; run this with transformers==4.37.0 (scratch venv) and a checkout:

    python tests/golden/make_linearized.py /path/to/Linearized-LLM

`flash_attn` (imported at the top of llama_attn_replace.py, used only by its flash paths) is stubbed. GROUP_SIZE
is set to 8 (released: 64, the default of both upstream and the project) so that a 29-token input spans three full
chunks and a partial one; both upstream branches are exercised (29 tokens: remainder branch; 24: whole chunks).
Weights are seeded by name (tests/golden/golden_weights.py), every one of the 63 conv taps included, so the causal
mask is tested too. Writes tests/golden/linearized/linearized.safetensors: the tiny config and state layout, the
inputs, every layer's hidden states and the logits of upstream's LlamaForCausalLM, and one attention module's
output on seeded hidden states.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

UPSTREAM = "GATECH-EIC/Linearized-LLM@273274e6fff55bc727ca969a9cdf56f43910364a"
OUT = Path(__file__).parent / "linearized" / "linearized.safetensors"
SEED = 23
GROUP = 8
KERNEL = 63  # fine-tune.py: res_kernel_size = 63
CONFIG = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=10000.0,
              tie_word_embeddings=False, attention_bias=False, pretraining_tp=1)


def _stub_flash_attn() -> None:
    flash = types.ModuleType("flash_attn")
    flash.__version__ = "0"
    padding = types.ModuleType("flash_attn.bert_padding")
    padding.pad_input = padding.unpad_input = None
    iface = types.ModuleType("flash_attn.flash_attn_interface")
    iface.flash_attn_func = iface.flash_attn_varlen_kvpacked_func = iface.flash_attn_varlen_qkvpacked_func = None
    sys.modules.update({"flash_attn": flash, "flash_attn.bert_padding": padding,
                        "flash_attn.flash_attn_interface": iface})


def main(checkout: str) -> None:
    os.environ.update(USE_LINEAR="1", USE_LOCAL="1", USE_GLOBAL="1", GLOBAL_FACTOR="1", ADD_CONV="1",
                      GROUP_SIZE=str(GROUP))
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM  # imported before the stub (it probes flash_attn)

    _stub_flash_attn()
    sys.path.insert(0, str(Path(checkout) / "experiments"))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

    assert transformers.__version__ == "4.37.0", transformers.__version__
    import llama_attn_replace  # upstream
    from golden_weights import layout, seeded_module_state, seeded_tensor

    llama_attn_replace.replace_llama_attn(use_flash_attn=False)  # USE_LINEAR: linear_forward_noflashattn
    config = LlamaConfig(**CONFIG)
    config._attn_implementation = "eager"  # the class whose forward upstream patches
    model = LlamaForCausalLM(config)
    for name, m in model.named_modules():  # fine-tune.py, ADD_CONV and GLOBAL_FACTOR blocks
        if name.endswith("self_attn"):
            m.dwconv = torch.nn.Conv2d(m.num_heads, m.num_heads, kernel_size=(KERNEL, 1),
                                       padding=(KERNEL // 2, 0), bias=False, groups=m.num_heads, dilation=(1, 1))
            conv_mask = torch.ones((1, 1, KERNEL, 1), dtype=torch.float32)
            m.register_buffer("conv_mask", conv_mask)
            m.conv_mask[:, :, KERNEL // 2 + 1:, :] = 0.0
            m.global_factor = torch.nn.Parameter(torch.zeros(1))
    state = seeded_module_state(model, SEED)
    model.load_state_dict(state, strict=True)
    model.eval()

    tensors: dict[str, torch.Tensor] = {}
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for length in (29, 24):
            ids = torch.randint(0, CONFIG["vocab_size"], (1, length), generator=gen)
            out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
            tensors[f"ids{length}"] = ids
            tensors[f"logits{length}"] = out.logits.contiguous()
            tensors[f"hidden{length}"] = torch.stack(out.hidden_states).contiguous()  # embeddings, layers (final norm)
        # one attention module alone on seeded hidden states (the layer-0 replacement as upstream runs it)
        attn = model.model.layers[0].self_attn
        x = seeded_tensor("attn_input", (1, 29, CONFIG["hidden_size"]), SEED)
        mask = torch.full((29, 29), torch.finfo(torch.float32).min).triu(1)[None, None]
        pos = torch.arange(29)[None]
        tensors["attn_input"] = x
        tensors["attn_output"] = attn(hidden_states=x, attention_mask=mask, position_ids=pos)[0].contiguous()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    config_json = {**CONFIG, "group_size": GROUP, "kernel_size": KERNEL}
    save_file(tensors, str(OUT), metadata={"upstream": UPSTREAM, "seed": str(SEED), "config": json.dumps(config_json),
                                           "layout": layout(model), "transformers": transformers.__version__})
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
