"""Golden outputs of DA-Transformer's link computation, DAG loss and greedy/lookahead decoding, for
`baselines/translation/dag.py`.

Upstream: thu-coai/DA-Transformer@245a90fe1397ba0dcaac04317bc327497c76cd9c (Apache-2.0), run from a checkout:

    python tests/golden/make_datransformer.py /path/to/DA-Transformer

Upstream functions used (their own code, nothing copied):
- `fs_plugins/custom_ops/dag_loss.py`: `torch_dag_loss`, `torch_dag_logsoftmax_gather_inplace` (the file needs
  only torch; it is imported as a file, so `fs_plugins/__init__.py` and fairseq are not needed).
- `fs_plugins/models/glat_decomposed_with_link.py`: `GlatDecomposedLink.extract_links`, `extract_valid_links`,
  `restore_valid_links`, `inference_lookahead_simple`, called on a stand-in `self` that carries only the `args`
  they read (`links_feature`, `decoder_attention_heads`, `decoder_embed_dim`, `max_transition_length`,
  `decode_strategy`, `decode_beta`), `pad` and `tgt_dict.pad_index`.
  Import-only stubs (the module's top-level imports, none used by these functions): `fairseq`,
  `fairseq.utils`, `fairseq.iterative_refinement_generator.DecoderOut`, `fairseq.models.register_model` /
  `register_model_architecture` (identity decorators), `fairseq.modules.PositionalEmbedding`,
  `fairseq.modules.transformer_sentence_encoder.init_bert_params`,
  `fairseq.models.nat.fairseq_nat_model.FairseqNATModel` and
  `fairseq.models.nat.nonautoregressive_transformer.NATransformerDecoder` (empty classes).
  `link_positional` is a stand-in for fairseq's LearnedPositionalEmbedding (`make_positions`: cumulative count
  of non-padding tokens + padding_idx, then an embedding lookup), written here.

Weights (query/key/gate linears, link position table) come from `golden_weights.seeded_tensor`; inputs
(features, graph tokens, token logits, targets) from a seeded generator. It writes
tests/golden/datransformer/datransformer.safetensors: links for infinite (-1) and finite (99999, restored)
transition lengths; per-target-token log-probs (gather); the DAG log-likelihood for graphs of several sizes
(one shorter than its target: -inf) and its gradients w.r.t. logits and links; the greedy and lookahead paths
(beta 1.0 and 0.5) on a small vocabulary (so repeats and padding tokens occur).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import save_file

UPSTREAM = "thu-coai/DA-Transformer@245a90fe1397ba0dcaac04317bc327497c76cd9c"
OUT = Path(__file__).parent / "datransformer" / "datransformer.safetensors"
SEED = 23
BATCH, PRELEN, DIM, HEADS, VOCAB, PAD = 4, 24, 16, 4, 12, 1
GRAPH_LENGTHS = [24, 17, 9, 6]
TARGET_LENGTHS = [10, 7, 9, 7]  # the last target does not fit its 6-vertex graph


def _stub_fairseq() -> None:
    def module(name: str, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        return mod

    class Empty(torch.nn.Module):
        pass

    module("fairseq", utils=module("fairseq.utils"))
    module("fairseq.iterative_refinement_generator", DecoderOut=object)
    module("fairseq.models", register_model=lambda *a, **k: (lambda c: c),
           register_model_architecture=lambda *a, **k: (lambda f: f))
    module("fairseq.modules", PositionalEmbedding=object)
    module("fairseq.modules.transformer_sentence_encoder", init_bert_params=lambda m: None)
    module("fairseq.models.nat")
    module("fairseq.models.nat.fairseq_nat_model", FairseqNATModel=Empty)
    module("fairseq.models.nat.nonautoregressive_transformer", NATransformerDecoder=Empty)


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(checkout: str) -> None:
    root = Path(checkout)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from golden_weights import seeded_tensor

    _stub_fairseq()
    ops = _load("upstream_dag_loss", root / "fs_plugins/custom_ops/dag_loss.py")
    glat = _load("upstream_glat_link", root / "fs_plugins/models/glat_decomposed_with_link.py")
    model_cls = glat.GlatDecomposedLink

    class Self:  # the stand-in `self`: upstream's methods, only the attributes they read
        extract_links = model_cls.extract_links
        extract_valid_links = model_cls.extract_valid_links
        restore_valid_links = model_cls.restore_valid_links
        inference_lookahead_simple = model_cls.inference_lookahead_simple

        def __init__(self, **args):
            self.args = SimpleNamespace(links_feature="feature:position", decoder_attention_heads=HEADS,
                                        decoder_embed_dim=DIM, **args)
            self.pad = PAD
            self.tgt_dict = SimpleNamespace(pad_index=PAD)

    gen = torch.Generator().manual_seed(SEED)
    t: dict[str, torch.Tensor] = {}
    weights = {n: seeded_tensor(n, s, SEED) for n, s in [
        ("query_linear.weight", (DIM, 2 * DIM)), ("query_linear.bias", (DIM,)),
        ("key_linear.weight", (DIM, 2 * DIM)), ("key_linear.bias", (DIM,)),
        ("gate_linear.weight", (HEADS, 2 * DIM)), ("gate_linear.bias", (HEADS,)),
        ("link_positional.weight", (PRELEN + PAD + 1, DIM))]}
    linears = {}
    for name in ("query_linear", "key_linear", "gate_linear"):
        w = weights[f"{name}.weight"]
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        lin.weight.data.copy_(w)
        lin.bias.data.copy_(weights[f"{name}.bias"])
        linears[name] = lin

    def link_positional(tokens):  # fairseq LearnedPositionalEmbedding stand-in (see docstring)
        nonpad = tokens.ne(PAD).long()
        return torch.nn.functional.embedding(torch.cumsum(nonpad, 1) * nonpad + PAD,
                                             weights["link_positional.weight"], padding_idx=PAD)

    lengths = torch.tensor(GRAPH_LENGTHS)
    positions = torch.arange(PRELEN)[None, :]
    graph = torch.full((BATCH, PRELEN), 3).masked_fill(positions >= lengths[:, None], PAD)
    graph[:, 0] = 0
    graph = graph.scatter(1, (lengths - 1)[:, None], 2)
    features = torch.randn(BATCH, PRELEN, DIM, generator=gen)
    t["graph_tokens"], t["features"] = graph, features
    t.update({k: v.contiguous() for k, v in weights.items()})
    with torch.no_grad():
        for translen, key in ((-1, "links_inf"), (99999, "links_finite")):
            s = Self(max_transition_length=translen)
            links = s.extract_links(features, graph, link_positional, linears["query_linear"],
                                    linears["key_linear"], linears["gate_linear"], net_input=None, training=True)
            t[key] = (s.restore_valid_links(links) if translen != -1 else links).contiguous()
    links = t["links_inf"]

    # loss: upstream's criterion gathers log-probs of the target at every vertex, then torch_dag_loss
    logits = torch.randn(BATCH, PRELEN, VOCAB, generator=gen) * 2
    tlen = torch.tensor(TARGET_LENGTHS)
    targets = torch.randint(3, VOCAB, (BATCH, max(TARGET_LENGTHS)), generator=gen)
    targets = targets.masked_fill(torch.arange(targets.shape[1])[None, :] >= tlen[:, None], PAD)
    t["logits"], t["targets"] = logits, targets
    logits_leaf = logits.clone().requires_grad_()
    links_leaf = links.clone().requires_grad_()
    _, match = ops.torch_dag_logsoftmax_gather_inplace(logits_leaf, targets.unsqueeze(1).expand(-1, PRELEN, -1))
    t["match"] = match.detach().contiguous()
    loglik = ops.torch_dag_loss(match.transpose(1, 2), links_leaf, lengths, tlen)
    t["loglik"] = loglik.detach()
    finite = loglik.isfinite()
    (loglik[finite] / tlen[finite]).sum().backward()
    t["grad_logits"], t["grad_links"] = logits_leaf.grad, links_leaf.grad

    # decoding: upstream normalises the token logits with log_softmax before the path search
    token_logits = torch.randn(BATCH, PRELEN, VOCAB, generator=gen).log_softmax(-1)
    t["token_log_probs"] = token_logits
    for strategy, beta in (("greedy", 1.0), ("lookahead", 1.0), ("lookahead", 0.5)):
        s = Self(max_transition_length=-1, decode_strategy=strategy, decode_beta=beta)
        tokens, _ = s.inference_lookahead_simple(links, token_logits, lengths)
        t[f"decode.{strategy}.{beta}"] = tokens.contiguous()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(t, str(OUT), metadata={"upstream": UPSTREAM, "script": "tests/golden/make_datransformer.py"})
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
