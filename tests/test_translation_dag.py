"""DA-Transformer (baselines/translation/dag.py) against upstream's own PyTorch functions
(tests/golden/make_datransformer.py, thu-coai/DA-Transformer@245a90fe), and its translator on nat-mini."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from baselines.translation.dag import (BeamSearchSettings, DATransformer, beam_candidates, compute_links,
                                       dag_beam_search, dag_decode, dag_log_likelihood, dag_loss,
                                       learned_position_ids, logsoftmax_gather)
from baselines.translation.layers import TransformerConfig
from baselines.translation.vocab import SPECIALS, Vocabulary

GOLDEN = Path(__file__).parent / "golden" / "datransformer" / "datransformer.safetensors"
SEARCH_GOLDEN = Path(__file__).parent / "golden" / "dagsearch" / "dagsearch.safetensors"
PAD, HEADS = 1, 4
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def golden():
    with safe_open(str(GOLDEN), framework="pt") as f:
        assert f.metadata()["upstream"] == "thu-coai/DA-Transformer@245a90fe1397ba0dcaac04317bc327497c76cd9c"
    return load_file(str(GOLDEN))


def linear(g, name):
    w = g[f"{name}.weight"]
    lin = torch.nn.Linear(w.shape[1], w.shape[0])
    lin.weight.data.copy_(w)
    lin.bias.data.copy_(g[f"{name}.bias"])
    return lin


def our_links(g):
    graph = g["graph_tokens"]
    positions = torch.nn.functional.embedding(learned_position_ids(graph, PAD), g["link_positional.weight"])
    return compute_links(g["features"], positions, graph.eq(PAD), linear(g, "query_linear"),
                         linear(g, "key_linear"), linear(g, "gate_linear"), HEADS)


def graph_lengths(g):
    return g["graph_tokens"].ne(PAD).sum(1)


def test_links_match_upstream_extract_links(golden):
    links = our_links(golden)
    for key in ("links_inf", "links_finite"):  # max_transition_length -1 and 99999 (restored): the same matrix
        ref = golden[key]
        assert torch.equal(links.isinf(), ref.isinf()), key
        finite = ref.isfinite()
        torch.testing.assert_close(links[finite], ref[finite], **TOL)
    # each vertex with a successor has a distribution over later non-padding vertices
    rows = links.logsumexp(-1)
    for b, n in enumerate(graph_lengths(golden).tolist()):
        torch.testing.assert_close(rows[b, :n - 1], torch.zeros(n - 1), atol=1e-5, rtol=0)


def test_dag_loss_and_gradients_match_upstream_torch_dag_loss(golden):
    logits = golden["logits"].clone().requires_grad_()
    links = golden["links_inf"].clone().requires_grad_()
    targets = golden["targets"]
    match = logsoftmax_gather(logits, targets)
    torch.testing.assert_close(match, golden["match"], **TOL)
    tlen = targets.ne(PAD).sum(1)
    loglik = dag_log_likelihood(match.transpose(1, 2), links, graph_lengths(golden), tlen)
    ref = golden["loglik"]
    assert torch.equal(loglik.isinf(), ref.isinf()) and ref.isinf().sum() == 1  # the graph shorter than its target
    torch.testing.assert_close(loglik[ref.isfinite()], ref[ref.isfinite()], **TOL)
    finite = loglik.isfinite()
    (loglik[finite] / tlen[finite]).sum().backward()
    torch.testing.assert_close(logits.grad, golden["grad_logits"], **TOL)
    torch.testing.assert_close(links.grad, golden["grad_links"], **TOL)
    # the training loss is upstream's -(log P / |y|) mean with the impossible sentence counted as 0
    padding = golden["graph_tokens"].eq(PAD)
    expected = -(ref.masked_fill(ref.isinf(), 0) / tlen).mean()
    torch.testing.assert_close(dag_loss(golden["logits"], golden["links_inf"], padding, targets, PAD), expected, **TOL)


@pytest.mark.parametrize("strategy,beta", [("greedy", 1.0), ("lookahead", 1.0), ("lookahead", 0.5)])
def test_greedy_and_lookahead_paths_match_upstream(golden, strategy, beta):
    paths = dag_decode(golden["links_inf"], golden["token_log_probs"], graph_lengths(golden), strategy, beta, PAD)
    ref = golden[f"decode.{strategy}.{beta}"]
    width = ref.shape[1]
    assert torch.equal(torch.tensor([p + [PAD] * (width - len(p)) for p in paths]), ref)


def test_greedy_and_lookahead_differ_on_the_golden_graphs(golden):
    """The golden inputs exercise the lookahead term (otherwise the two tests above would compare one thing)."""
    assert not torch.equal(golden["decode.greedy.1.0"], golden["decode.lookahead.1.0"])


def test_unknown_strategy_is_refused(golden):
    with pytest.raises(ValueError, match="dag_beam_search"):
        dag_decode(golden["links_inf"], golden["token_log_probs"], graph_lengths(golden), "beamsearch")


@pytest.fixture(scope="module")
def search_golden():
    with safe_open(str(SEARCH_GOLDEN), framework="pt") as f:
        assert f.metadata()["upstream"].endswith("thu-coai/DAG-Search@d5056b8")
    return load_file(str(SEARCH_GOLDEN))


def golden_settings(g, name) -> BeamSearchSettings:
    beam, per_length, top_cand_n, top_p, alpha, beta, dedup = g[f"setting.{name}"].tolist()
    return BeamSearchSettings(int(beam), int(per_length), int(top_cand_n), top_p, alpha, beta, bool(dedup))


@pytest.mark.parametrize("name", ["default", "narrow", "beam1", "dedup"])
def test_beam_search_matches_upstream_dag_search(search_golden, name):
    """Upstream's compiled DAG-Search (tests/golden/make_dagsearch.py) on random DAGs of 40/31/17/6 vertices:
    the same token sequences and the same final scores (log P / |Y|^alpha, float32 upstream)."""
    g = search_golden
    paths, scores = dag_beam_search(g["links"], g["token_log_probs"], g["output_length"], golden_settings(g, name))
    ref = g[f"tokens.{name}"]
    assert torch.equal(torch.tensor([p + [PAD] * (ref.shape[1] - len(p)) for p in paths]), ref)
    torch.testing.assert_close(torch.tensor(scores, dtype=torch.float32), g[f"scores.{name}"], rtol=1e-5, atol=1e-5)


def test_beam_search_golden_is_not_the_lookahead_path(search_golden):
    """The golden DAGs make the search matter: its result differs from the lookahead path (upstream's default)."""
    g = search_golden
    paths, _ = dag_beam_search(g["links"], g["token_log_probs"], g["output_length"], golden_settings(g, "default"))
    lookahead = dag_decode(g["links"], g["token_log_probs"], g["output_length"], "lookahead", 1.0, PAD)
    assert any(p[1:] != q[1:] for p, q in zip(paths, lookahead))


def random_dag(seed: int, lengths: list[int], vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    prelen, output_length = max(lengths), torch.tensor(lengths)
    allowed = torch.ones(prelen, prelen, dtype=torch.bool).triu(1)[None] & (
        torch.arange(prelen)[None, None, :] < output_length[:, None, None])
    scores = torch.randn(len(lengths), prelen, prelen, generator=gen) * 2
    links = scores.masked_fill(~allowed, float("-inf")).log_softmax(-1).nan_to_num(nan=float("-inf"))
    return links, (torch.randn(len(lengths), prelen, vocab, generator=gen) * 2).log_softmax(-1), output_length


def test_beam_search_with_one_candidate_per_vertex_is_the_lookahead_path():
    """With top_cand_n=1 every vertex has one move, the lookahead's (argmax of link + beta x best token
    log-prob), so the search follows the lookahead path; with dedup its tokens are the lookahead's (here vertex 0
    emits <s> and no vertex prefers <pad>, which the lookahead skips)."""
    links, log_probs, lengths = random_dag(5, [30, 19, 8], 6)
    log_probs[:, 0, Vocabulary.bos] = 10.0
    log_probs[:, :, PAD] = -30.0
    log_probs = log_probs.log_softmax(-1)
    for beta in (1.0, 0.3):
        paths, _ = dag_beam_search(links, log_probs, lengths, BeamSearchSettings(beam_size=3, top_cand_n=1,
                                                                                 beta=beta, dedup=True))
        assert paths == dag_decode(links, log_probs, lengths, "lookahead", beta, PAD)


def test_unbounded_beam_search_is_the_exhaustive_best():
    """Beams larger than the number of hypotheses and top_p above any sum of probabilities: the result is the
    token sequence Y maximising log(sum over the explored paths emitting Y) / |Y|^alpha among those with a path
    to the last vertex, found here by enumerating every path of candidate moves (`beam_candidates`)."""
    import math

    links, log_probs, lengths = random_dag(7, [8, 6], 4)
    settings = BeamSearchSettings(beam_size=10**6, max_beam_per_length=10**6, top_cand_n=3, top_p=10.0, alpha=0.8)
    scores, next_vertex, tokens = beam_candidates(links, log_probs, settings.top_cand_n, settings.beta)
    paths, found = dag_beam_search(links, log_probs, lengths, settings)
    for b, length in enumerate(lengths.tolist()):
        total: dict[tuple[int, ...], float] = {}
        complete: set[tuple[int, ...]] = set()
        stack = [((Vocabulary.bos,), 0, 0.0)]
        while stack:
            seq, vertex, logp = stack.pop()
            if len(seq) > 1:
                total[seq] = float(torch.logaddexp(torch.tensor(total.get(seq, -math.inf)), torch.tensor(logp)))
            if vertex == length - 1:
                complete.add(seq)
                continue
            for c in range(settings.top_cand_n):
                stack.append((seq + (int(tokens[b, vertex, c]),), int(next_vertex[b, vertex, c]),
                              logp + float(scores[b, vertex, c])))
        best = max(complete, key=lambda y: total[y] / (len(y) - 1) ** settings.alpha)
        assert paths[b] == list(best)
        assert found[b] == pytest.approx(total[best] / (len(best) - 1) ** settings.alpha, rel=1e-6)


def test_model_graph_size_training_step_and_decoding():
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=40, embed_dim=16, ffn_dim=32, heads=4, encoder_layers=1, decoder_layers=1,
                            max_positions=16, dropout=0.0)
    vocab = Vocabulary(list(SPECIALS) + [f"w{i}" for i in range(34)])
    model = DATransformer(cfg, upsample=3)
    src = vocab.batch([[6, 7, 8], [9, 10]])
    graph = model.graph_tokens(src)
    assert graph.tolist()[1] == [0] + [3] * 6 + [2] + [PAD] * 3  # <s>, 3 x 2 <unk>, </s>, padding
    assert graph.ne(PAD).sum(1).tolist() == [11, 8]
    tgt = vocab.batch([[11, 12, 13, 14], [15]])
    loss = model.loss(src, tgt, vocab)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    for strategy in ("greedy", "lookahead", "beamsearch"):
        out = model.translate(src, strategy)
        assert len(out) == 2 and all(t >= len(SPECIALS) for row in out for t in row)


def test_bundled_dat_checkpoint_is_small_and_complete():
    import json

    from baselines.translation.checkpoint import CHECKPOINT_DIR, read_metadata

    path = CHECKPOINT_DIR / "dat.safetensors"
    assert path.stat().st_size < 4 * 2**20
    meta = read_metadata(path)
    assert meta["kind"] == "dat" and meta["langpair"] == "en-de" and meta["training"]["distilled"]
    report = json.loads((CHECKPOINT_DIR / "dat.report.json").read_text())
    assert report["parameters"] == sum(p.numel() for p in DATransformer(meta["config"], **meta["model"]).parameters())


@pytest.mark.parametrize("strategy", ["greedy", "lookahead", "beamsearch"])
def test_bundled_da_transformer_translates_and_does_not_depend_on_the_batch(strategy):
    from harness.datasets.en_de_corpus import SPLITS, build
    from harness.metrics.text import bleu_score
    from harness.registry import METHODS

    pairs = build(*SPLITS["test"])[:40]
    from baselines.translation.dat_method import DATConfig

    translator = METHODS.get("da-transformer")(DATConfig(decode_strategy=strategy))
    together = translator.translate([en for en, _ in pairs])
    assert together[:8] == [translator.translate([en])[0] for en, _ in pairs[:8]]
    assert bleu_score(together, [de for _, de in pairs]).score > 60
    assert translator.settings()["decode_strategy"] == strategy and translator.settings()["upsample"] == 4


def test_nat_mini_run_of_da_transformer_stores_speedup_and_strategy(results_dir):
    from harness.runner import RunOptions, Runner
    from harness.store import Store

    runner = Runner(Store(f"sqlite:///{results_dir / 'arbench.db'}"), RunOptions(progress=False))
    settings = {"latency_sentences": 3, "timing_rounds": 1, "timing_warmup": 1, "max_batch": 500, "bootstrap": 0}
    result = runner.run("nat-mini", "da-transformer", {**settings, "decode_strategy": "greedy"})
    values = {m.name: m for m in result.metrics}
    assert values["bleu"].value > 60 and values["speedup_b1"].value > 0
    (record,) = runner.store.records()
    assert "method.decode_strategy:greedy" in record["signature"] and "method.upsample:4" in record["signature"]


def test_unknown_strategy_is_refused_before_anything_is_stored(results_dir):
    from harness.errors import ArbenchError
    from harness.runner import RunOptions, Runner
    from harness.store import Store

    runner = Runner(Store(f"sqlite:///{results_dir / 'arbench.db'}"), RunOptions(progress=False))
    with pytest.raises(ArbenchError, match="'beamsearch'"):
        runner.run("nat-mini", "da-transformer", {"decode_strategy": "viterbi"})
    assert runner.store.records() == []


def test_beam_options_are_in_the_signature_only_for_beam_search():
    from baselines.translation.dat_method import BEAM_OPTIONS, DATConfig
    from harness.registry import METHODS

    method = METHODS.get("da-transformer")
    beam = method(DATConfig(decode_strategy="beamsearch", decode_beamsize=7)).settings()
    assert beam["decode_beamsize"] == 7 and set(BEAM_OPTIONS) <= set(beam)
    assert not set(BEAM_OPTIONS) & set(method(DATConfig(decode_strategy="lookahead")).settings())
