"""Golden outputs of EAGLE-1's draft head and tree functions, for `baselines/decoding/eagle.py`.

Upstream: SafeAILab/EAGLE@4a9cf3a1f6cd4a294e6d30a4e7c77cba246d7ca5 (branch `v1`, EAGLE-1; Apache-2.0):
`eagle/model/cnets.py` (the draft head `Model`, its `forward` and `topK_genrate`), `eagle/model/utils.py`
(`generate_tree_buffers`, `generate_candidates`, `evaluate_posterior`) and `eagle/model/utils_c.py` (the draft
levels' buffers). Run against a checkout (`git archive v1 eagle/model | tar -x`; the package's `__init__.py`
files are absent or empty and these modules need only torch and transformers; nothing is stubbed):

    python tests/golden/make_eagle.py /path/to/EAGLE

It writes tests/golden/eagle/eagle.safetensors with: the head's `forward` on a random feature sequence (a
1-layer head with grouped-query attention, weights by `golden_weights.seeded_fill`, rebuilt by the test); for
each tree (upstream's `mc_sim_7b_63` and a 6-node tree), `topK_genrate` at temperature 0 twice in a row (a prompt,
then 3 accepted features appended through the head's stable cache) with a seeded linear LM head, upstream's
`generate_tree_buffers`, `generate_candidates` on the drafted tokens, and `evaluate_posterior` at temperature 0
on path logits with the target's argmax planted along chosen paths.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

UPSTREAM = "SafeAILab/EAGLE@4a9cf3a1f6cd4a294e6d30a4e7c77cba246d7ca5"
OUT = Path(__file__).parent / "eagle" / "eagle.safetensors"
VOCAB, HIDDEN, HEADS, KV_HEADS, INTER = 40, 32, 4, 2, 64
SMALL = [[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]]


def upstream_head(checkout: str):
    sys.path.insert(0, str(Path(checkout)))
    from eagle.model.cnets import Model  # upstream
    from eagle.model.configs import EConfig  # upstream

    from golden_weights import seeded_fill

    config = EConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=1,
                     num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, pad_token_id=0)
    model = seeded_fill(Model(config, bias=True), seed=0).eval()
    lm_head = seeded_fill(torch.nn.Linear(HIDDEN, VOCAB, bias=False), seed=1).eval()
    return model, lm_head


def main(checkout: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    model, lm_head = upstream_head(checkout)
    from eagle.model import utils, utils_c  # upstream
    from eagle.model.choices import mc_sim_7b_63  # upstream

    from baselines.decoding.eagle import TREES  # the project's tree names and paths (input only)

    assert [list(p) for p in mc_sim_7b_63] == TREES["mc_sim_7b_63"]
    gen = torch.Generator().manual_seed(7)
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        feats = torch.randn(1, 9, HIDDEN, generator=gen)
        ids = torch.randint(0, VOCAB, (1, 9), generator=gen)
        tensors["forward.features"], tensors["forward.ids"] = feats[0], ids[0]
        tensors["forward.out"] = model(feats, input_ids=ids).contiguous()[0]
    trees = {"mc_sim_7b_63": mc_sim_7b_63, "small": SMALL}
    for name, choices in trees.items():
        model.tree_buffer = utils_c.generate_tree_buffers(choices, device="cpu")
        model.diff_device = False
        model.reset_kv()
        prompt = torch.randint(0, VOCAB, (1, 8), generator=gen)
        feats = torch.randn(1, 7, HIDDEN, generator=gen)  # features of positions 0..6, paired with ids 1..7
        tokens1, probs1, _ = model.topK_genrate(feats, prompt, lm_head, None)
        more = torch.randint(0, VOCAB, (1, 3), generator=gen)
        feats2 = torch.randn(1, 3, HIDDEN, generator=gen)  # features of positions 7..9 (accepted), ids 8..10
        tokens2, _, _ = model.topK_genrate(feats2, torch.cat([prompt, more], 1), lm_head, None)
        p = f"{name}."
        tensors.update({p + "prompt": prompt[0], p + "feats": feats[0], p + "more": more[0], p + "feats2": feats2[0],
                        p + "draft1": tokens1.contiguous(), p + "draft2": tokens2.contiguous()})
        buffers = utils.generate_tree_buffers(choices, device="cpu")
        tensors[p + "tree_attn_mask"] = buffers["tree_attn_mask"][0, 0].contiguous()
        for key in ("tree_indices", "tree_position_ids", "retrieve_indices"):
            tensors[p + key] = buffers[key].contiguous()
        sample_token = torch.tensor([[int(more[0, -1])]])
        cart, _, tree = utils.generate_candidates((tokens2, probs1), buffers["tree_indices"],
                                                  buffers["retrieve_indices"], sample_token, None)
        tensors[p + "root"], tensors[p + "cart"], tensors[p + "tree"] = sample_token[0], cart, tree[0]
        for case in range(3):
            path_logits = torch.randn(cart.shape[0], cart.shape[1], VOCAB, generator=gen)
            depth = (buffers["retrieve_indices"] >= 0).sum(1) - 1
            for row, n in ((0, case), (cart.shape[0] - 1, case + 1)):
                for k in range(min(n, int(depth[row]))):
                    path_logits[row, k, cart[row, k + 1]] = 100.0
            best, accept, _ = utils.evaluate_posterior(path_logits, cart, None, None, None, None, None, None)
            tensors[f"{p}case{case}.path_logits"] = path_logits
            tensors[f"{p}case{case}.best_accept"] = torch.tensor([int(best), int(accept)])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT), metadata={"upstream": UPSTREAM, "trees": json.dumps(list(trees))})
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
