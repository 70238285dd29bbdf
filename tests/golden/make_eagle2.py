"""Golden outputs of EAGLE-2's dynamic draft tree, for `baselines/decoding/eagle.py` (`draft_dynamic`).

Upstream: SafeAILab/EAGLE@cb7e0841fe0c206c6ed74a197ad5e2a1f13f5a2b (main; Apache-2.0), `eagle/model/cnets1.py`:
the EAGLE-1/2 head `Model` and its EAGLE-2 `topK_genrate` (the same head architecture and parameter names as
EAGLE-1's `cnets.Model`, so the head's seeded weights are those of `make_eagle.py`). Run against a checkout
(`git archive HEAD eagle/model | tar -x`; needs only torch, transformers 4.36 and huggingface_hub, imported by
`cnets1.py` for downloads it does not make here; nothing is stubbed):

    python tests/golden/make_eagle2.py /path/to/EAGLE-main

It writes tests/golden/eagle/eagle2.safetensors with, for two settings (total_tokens, depth, top_k) = (12, 3, 4)
and (20, 4, 3), `topK_genrate` at temperature 0 twice in a row (a prompt, then 3 accepted features through the
head's stable cache): the drafted tokens, tree mask, tree position ids and retrieve indices.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

UPSTREAM = "SafeAILab/EAGLE@cb7e0841fe0c206c6ed74a197ad5e2a1f13f5a2b"
OUT = Path(__file__).parent / "eagle" / "eagle2.safetensors"
VOCAB, HIDDEN, HEADS, KV_HEADS, INTER = 40, 32, 4, 2, 64
SETTINGS = {"a": (12, 3, 4), "b": (20, 4, 3)}


def main(checkout: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(checkout)))
    from eagle.model.cnets1 import Model  # upstream
    from eagle.model.configs import EConfig  # upstream

    from golden_weights import seeded_fill

    config = EConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=1,
                     num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, pad_token_id=0)
    lm_head = seeded_fill(torch.nn.Linear(HIDDEN, VOCAB, bias=False), seed=1).eval()
    gen = torch.Generator().manual_seed(11)
    tensors: dict[str, torch.Tensor] = {}
    for name, (total, depth, top_k) in SETTINGS.items():
        model = seeded_fill(Model(config, bias=True, total_tokens=total, depth=depth, top_k=top_k), seed=0).eval()
        model.init_tree()
        model.reset_kv()
        prompt = torch.randint(0, VOCAB, (1, 8), generator=gen)
        feats = torch.randn(1, 7, HIDDEN, generator=gen)
        more = torch.randint(0, VOCAB, (1, 3), generator=gen)
        feats2 = torch.randn(1, 3, HIDDEN, generator=gen)
        p = f"{name}."
        tensors.update({p + "prompt": prompt[0], p + "feats": feats[0], p + "more": more[0], p + "feats2": feats2[0]})
        for call, (f, ids) in enumerate(((feats, prompt), (feats2, torch.cat([prompt, more], 1))), start=1):
            tokens, retrieve, mask, positions = model.topK_genrate(f, ids, lm_head, None)
            tensors[f"{p}{call}.tokens"] = tokens[0].contiguous()
            tensors[f"{p}{call}.retrieve_indices"] = retrieve.contiguous()
            tensors[f"{p}{call}.tree_mask"] = mask[0, 0].contiguous()
            tensors[f"{p}{call}.position_ids"] = positions.contiguous()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT), metadata={"upstream": UPSTREAM, "settings": str(SETTINGS)})
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
