"""Golden outputs of Medusa's tree functions, for `baselines/decoding/medusa.py`.

Upstream: FasterDecoding/Medusa@e2a5d20c048a9b0a4092e6933c34313687422518 (medusa/model/utils.py, Apache-2.0).
Run against a checkout (its `medusa/__init__.py` and `medusa/model/__init__.py` are empty; the script
imports only `utils.py` and `medusa_choices.py`, which need only torch; nothing is stubbed):

    python tests/golden/make_medusa.py /path/to/Medusa

It writes tests/golden/medusa/medusa.safetensors with, for each tree (the project's `kjv-31`, upstream's
`mc_sim_7b_63` and a 4-node tree): upstream's `generate_medusa_buffers` (mask, tree indices, position ids,
retrieve indices); for seeded random logits, `generate_candidates` at temperature 0 (cartesian and tree
candidates); and `evaluate_posterior` at temperature 0 (best candidate, accept length) on path logits built
so that some paths are accepted for 0, 1, 2 ... tokens (the target's argmax is planted on chosen paths).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

UPSTREAM = "FasterDecoding/Medusa@e2a5d20c048a9b0a4092e6933c34313687422518"
OUT = Path(__file__).parent / "medusa" / "medusa.safetensors"
VOCAB = 24


def main(checkout: str) -> None:
    sys.path.insert(0, str(Path(checkout)))
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from medusa.model.medusa_choices import mc_sim_7b_63  # upstream
    from medusa.model.utils import evaluate_posterior, generate_candidates, generate_medusa_buffers  # upstream

    from baselines.decoding.medusa import TREES  # the project's tree names and paths (input only)

    assert [list(p) for p in mc_sim_7b_63] == TREES["mc_sim_7b_63"]
    trees = {"kjv-31": TREES["kjv-31"], "mc_sim_7b_63": mc_sim_7b_63, "small": [[0], [1], [0, 0], [0, 1]]}
    tensors: dict[str, torch.Tensor] = {}
    for name, choices in trees.items():
        buffers = generate_medusa_buffers(choices, device="cpu")
        tensors[f"{name}.attn_mask"] = buffers["medusa_attn_mask"][0, 0].contiguous()
        for key in ("tree_indices", "medusa_position_ids", "retrieve_indices"):
            tensors[f"{name}.{key}"] = buffers[key].contiguous()
        heads = max(len(p) for p in choices)
        for case in range(3):
            gen = torch.Generator().manual_seed(1000 * case + len(choices))
            logits = torch.randn(1, 1, VOCAB, generator=gen)
            medusa_logits = torch.randn(heads, 1, 1, VOCAB, generator=gen)
            cart, tree = generate_candidates(medusa_logits, logits, buffers["tree_indices"],
                                             buffers["retrieve_indices"], temperature=0)
            tensors[f"{name}.case{case}.logits"] = logits[0, 0].contiguous()
            tensors[f"{name}.case{case}.medusa_logits"] = medusa_logits[:, 0, 0].contiguous()
            tensors[f"{name}.case{case}.cart"] = cart.contiguous()
            tensors[f"{name}.case{case}.tree"] = tree[0].contiguous()
            # path logits: random, then the target's argmax planted along the first path for `case` tokens
            # and along the last path for case + 1 tokens (clipped to the path's real length)
            path_logits = torch.randn(cart.shape[0], cart.shape[1], VOCAB, generator=gen)
            depth = (buffers["retrieve_indices"] >= 0).sum(1) - 1  # tokens after the root on each path
            for row, n in ((0, case), (cart.shape[0] - 1, case + 1)):
                for k in range(min(n, int(depth[row]))):
                    path_logits[row, k, cart[row, k + 1]] = 100.0
            best, accept = evaluate_posterior(path_logits, cart, temperature=0)
            tensors[f"{name}.case{case}.path_logits"] = path_logits.contiguous()
            tensors[f"{name}.case{case}.best_accept"] = torch.tensor([int(best), int(accept)])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT), metadata={"upstream": UPSTREAM, "trees": json.dumps(list(trees))})
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
