"""Golden outputs of DA-Transformer's DAG beam search (`decode_strategy=beamsearch`, no n-gram LM), for
`baselines/translation/dag.py` (`dag_beam_search`).

Upstream, run from checkouts of both repositories:

    python tests/golden/make_dagsearch.py /path/to/DA-Transformer /path/to/DAG-Search

- thu-coai/DA-Transformer@245a90fe1397ba0dcaac04317bc327497c76cd9c: `GlatDecomposedLink.inference_beamsearch`
  (the candidate moves: top-`decode_top_cand_n` tokens per vertex, link + beta x token log-prob, best
  `decode_top_cand_n` moves per vertex) and the module-level `init_beam_search` / `call_dag_search`, from
  `fs_plugins/models/glat_decomposed_with_link.py`, imported with the same fairseq import stubs as
  `make_datransformer.py` and called on a stand-in `self` holding the `args` it reads. The stand-in's
  `decode_strategy` is not the string "beamsearch" so that upstream's refusal to search on the CPU in the same
  process as PyTorch (an OpenMP clash that concerns speed, not results) is skipped.
- thu-coai/DAG-Search@d5056b8 (the `dag_search` submodule, LGPL/kenlm): built with its own `setup.py`
  (`pip install "cython<3"; python setup.py build_ext --inplace`, g++ with OpenMP), one thread, no LM path.

Inputs: random DAGs of 40/31/17/6 vertices over a 20-token vocabulary from a seeded generator (links: a
softmax over later vertices of scaled Gaussian scores; token log-probs: log-softmax of scaled Gaussians).
Outputs per setting (beam size, max beams per length, top candidates, top-p, alpha, beta, dedup): the token
sequences (padded with <pad>) and the final scores, written to tests/golden/dagsearch/dagsearch.safetensors.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_datransformer import _load, _stub_fairseq  # noqa: E402  (the same import stubs)

UPSTREAM = ("thu-coai/DA-Transformer@245a90fe1397ba0dcaac04317bc327497c76cd9c + "
            "thu-coai/DAG-Search@d5056b8")
OUT = Path(__file__).parent / "dagsearch" / "dagsearch.safetensors"
SEED = 23
GRAPH_LENGTHS, VOCAB, BOS, PAD = [40, 31, 17, 6], 20, 0, 1
#: name: (beamsize, max_beam_per_length, top_cand_n, top_p, alpha, beta, dedup)
SETTINGS = {
    "default": (100, 10, 5, 0.9, 1.1, 1.0, 0),
    "narrow": (4, 2, 3, 0.95, 1.0, 0.5, 0),
    "beam1": (1, 1, 4, 2.0, 0.6, 1.0, 0),
    "dedup": (20, 3, 6, 0.8, 1.3, 1.0, 1),
}


def random_dag(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch, prelen = len(GRAPH_LENGTHS), max(GRAPH_LENGTHS)
    lengths = torch.tensor(GRAPH_LENGTHS)
    allowed = torch.ones(prelen, prelen, dtype=torch.bool).triu(1)[None] & (
        torch.arange(prelen)[None, None, :] < lengths[:, None, None])
    scores = (torch.randn(batch, prelen, prelen, generator=gen) * 2).masked_fill(~allowed, float("-inf"))
    links = scores.log_softmax(-1).nan_to_num(nan=float("-inf"))  # rows without a successor: all -inf
    token_log_probs = (torch.randn(batch, prelen, VOCAB, generator=gen) * 2).log_softmax(-1)
    return links, token_log_probs, lengths


def main(dat_checkout: str, search_checkout: str) -> None:
    sys.path.insert(0, str(Path(search_checkout).resolve()))  # the built dag_search extension
    _stub_fairseq()
    glat = _load("upstream_glat_link", Path(dat_checkout) / "fs_plugins/models/glat_decomposed_with_link.py")

    class Self:  # the stand-in `self`: upstream's method, only the attributes it reads
        inference_beamsearch = glat.GlatDecomposedLink.inference_beamsearch

        def __init__(self, beamsize, perlen, top_cand_n, top_p, alpha, beta, dedup):
            self.args = SimpleNamespace(
                decode_strategy="beamsearch (same process, see docstring)", decode_max_batchsize=8,
                decode_top_cand_n=top_cand_n, decode_beta=beta, decode_max_workers=0, decode_alpha=alpha,
                decode_gamma=0.0, decode_beamsize=beamsize, decode_max_beam_per_length=perlen,
                decode_top_p=top_p, decode_dedup=bool(dedup), decode_no_consecutive_repeated_ngram=0,
                decode_no_repeated_ngram=0)
            self.tgt_dict = SimpleNamespace(pad_index=PAD, bos_index=BOS)

    # beam_search_init sizes its memory pools once per process: the largest settings used below.
    glat.init_beam_search(8, 100, 6, 64, 4096, 1, SimpleNamespace(symbols=[str(i) for i in range(VOCAB)]), None)
    links, token_log_probs, lengths = random_dag(torch.Generator().manual_seed(SEED))
    t = {"links": links, "token_log_probs": token_log_probs, "output_length": lengths}
    for name, setting in SETTINGS.items():
        tokens, scores = Self(*setting).inference_beamsearch(links, token_log_probs, lengths)
        t[f"tokens.{name}"] = torch.as_tensor(tokens).long().contiguous()
        t[f"scores.{name}"] = torch.as_tensor(scores)[:, 0].float().contiguous()  # expanded per token upstream
        t[f"setting.{name}"] = torch.tensor(setting, dtype=torch.float64)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(t, str(OUT), metadata={"upstream": UPSTREAM, "script": "tests/golden/make_dagsearch.py"})
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
