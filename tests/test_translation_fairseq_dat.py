"""Importing fairseq DA-Transformer checkpoints (baselines/translation/fairseq_dat.py): synthetic checkpoints
in fairseq's layout (`args` or `cfg`, `model`, `optimizer_history`, `extra_state`), read without unpickling
anything outside the allow-list, and the refusals."""

from __future__ import annotations

import argparse
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.translation.dag import DATransformer
from baselines.translation.fairseq_dat import import_dat, main
from baselines.translation.layers import TransformerConfig
from baselines.translation.vocab import SPECIALS
from harness.errors import ArbenchError

WORDS = [f"w{i}" for i in range(30)]


def fairseq_args(**overrides) -> argparse.Namespace:
    args = dict(arch="glat_decomposed_link_base", share_all_embeddings=True, encoder_normalize_before=True,
                decoder_normalize_before=True, encoder_learned_pos=False, decoder_learned_pos=False,
                activation_fn="relu", links_feature="feature:position", max_transition_length=-1,
                segment_embedding=False, upsample_base="source", upsample_scale=3.0, layernorm_embedding=False,
                no_scale_embedding=False, encoder_embed_dim=16, decoder_embed_dim=16, encoder_ffn_embed_dim=32,
                decoder_ffn_embed_dim=32, encoder_attention_heads=4, decoder_attention_heads=4, encoder_layers=1,
                decoder_layers=2, max_source_positions=20, max_target_positions=70, dropout=0.3)
    return argparse.Namespace(**{**args, **overrides})


@pytest.fixture(scope="module")
def source_model() -> DATransformer:
    torch.manual_seed(3)
    cfg = TransformerConfig(vocab_size=len(SPECIALS) + len(WORDS), embed_dim=16, ffn_dim=32, heads=4,
                            encoder_layers=1, decoder_layers=2, max_positions=20, dropout=0.0)
    return DATransformer(cfg, upsample=3, max_graph=70).eval()


def write_checkpoint(path: Path, model: DATransformer, layout: str = "args", **overrides) -> Path:
    weights = dict(model.state_dict())
    weights.update({"encoder.version": torch.tensor([3.0]), "decoder.version": torch.tensor([3.0]),
                    "encoder.embed_positions._float_tensor": torch.tensor([1.0]),
                    "decoder.output_projection.weight": weights["encoder.embed_tokens.weight"].clone(),
                    "decoder.embed_length.weight": torch.randn(256, 16)})
    args = fairseq_args(**overrides)
    state = {"args": args if layout == "args" else None, "model": weights,
             "optimizer_history": [{"criterion_name": "NATDAGLoss", "optimizer_name": "FairseqAdam",
                                    "lr_scheduler_state": {"best": None}, "num_updates": 300000}],
             "extra_state": {"metrics": OrderedDict(train=[(0, "loss", "AverageMeter",
                                                            {"val": np.float64(2.5), "sum": 5.0, "count": 2})]),
                             "previous_training_time": np.float64(12.5)}}
    if layout == "cfg":
        state["cfg"] = {"model": args, "task": {"_name": "translation_dat_task"}}
    torch.save(state, path)
    return path


@pytest.fixture
def dictionary(tmp_path) -> Path:
    path = tmp_path / "dict.txt"
    path.write_text("".join(f"{w} 1\n" for w in ["<mask>", "<blank>"] + WORDS), encoding="utf-8")
    return path


@pytest.mark.parametrize("layout", ["args", "cfg"])
def test_import_gives_the_same_network(tmp_path, source_model, dictionary, layout):
    ckpt = write_checkpoint(tmp_path / "checkpoint.pt", source_model, layout)
    model, vocab, settings = import_dat(ckpt, dictionary)
    assert settings == {"upsample": 3.0, "max_graph": 70, "source_eos": True, "upsample_base": "upstream_source"}
    assert vocab.tokens[len(SPECIALS)] == "w0"
    # the same weights, run as upstream runs them: </s> after the source, graph of 3 x words + 1 vertices
    expected = DATransformer(source_model.cfg, **settings).eval()
    expected.load_state_dict(source_model.state_dict())
    src = torch.tensor([[7, 8, 9, 10], [11, 12, 1, 1]])
    with torch.no_grad():
        outputs = model(src)
        for ours, ref in zip(outputs, expected(src)):
            assert torch.equal(ours, ref)
    assert (~outputs[2]).sum(1).tolist() == [13, 7]


def test_cli_writes_a_checkpoint_the_method_loads(tmp_path, source_model, dictionary):
    from baselines.translation.dat_method import DATConfig
    from harness.registry import METHODS

    out = tmp_path / "imported.safetensors"
    main(["--input", str(write_checkpoint(tmp_path / "c.pt", source_model)), "--dict", str(dictionary),
          "--langpair", "en-de", "--output", str(out)])
    translator = METHODS.get("da-transformer")(DATConfig(checkpoint=str(out), decode_strategy="beamsearch"))
    (hyp,) = translator.translate(["w3 w4 w5"])
    assert isinstance(hyp, str) and translator.settings()["max_graph"] == 70


def test_lightseq_checkpoint_is_refused_with_upstreams_conversion(tmp_path, source_model, dictionary):
    ckpt = write_checkpoint(tmp_path / "ls.pt", source_model, arch="ls_glat_decomposed_link_base")
    with pytest.raises(ArbenchError, match="convert_ls_to_fs.py --input ls.pt --output fs.pt"):
        import_dat(ckpt, dictionary)


def test_settings_we_do_not_implement_are_refused_with_each_mismatch(tmp_path, source_model, dictionary):
    ckpt = write_checkpoint(tmp_path / "other.pt", source_model, activation_fn="silu", links_feature="feature",
                            encoder_normalize_before=False, layernorm_embedding=True, max_transition_length=16,
                            upsample_scale="4~8")
    with pytest.raises(ArbenchError) as err:
        import_dat(ckpt, dictionary)
    for name in ("activation_fn='silu'", "links_feature='feature'",
                 "encoder_normalize_before=False != decoder_normalize_before=True", "layernorm_embedding=True", "max_transition_length=16",
                 "upsample_scale='4~8'"):
        assert name in str(err.value)
    with pytest.raises(ArbenchError, match="upsample_base='fixed'"):
        import_dat(write_checkpoint(tmp_path / "fixed.pt", source_model, upsample_base="fixed"), dictionary)
    with pytest.raises(ArbenchError, match="give --decode-upsample-scale"):
        import_dat(write_checkpoint(tmp_path / "predict.pt", source_model, upsample_base="source_old",
                                    upsample_scale="4~8"), dictionary)


def test_pdat_settings_and_fairseq_dictionary_are_imported(tmp_path):
    """PDAT's options (learned positions, GELU, post-norm, segment embedding, predicted graph size) and the
    fairseq dictionary layout with segment symbols, as a bare state dict with `--preset`-style arguments."""
    from baselines.translation.fairseq_dat import PDAT_ARGS, PRESETS

    words = ["[PAD]", "[unused0]"] + WORDS
    torch.manual_seed(4)
    cfg = TransformerConfig(vocab_size=4 + len(words) + 3, embed_dim=16, ffn_dim=32, heads=4, encoder_layers=1,
                            decoder_layers=2, max_positions=20, dropout=0.0)
    options = {"learned_pos": True, "activation": "gelu", "normalize_before": False, "segment_embedding": 3,
               "source_eos": True, "upsample_base": "predict"}
    model = DATransformer(cfg, upsample=2.5, max_graph=70, **options).eval()
    (tmp_path / "dict.txt").write_text("".join(f"{w} 7\n" for w in words), encoding="utf-8")
    state = {("decoder.link_predictor." + k[len("decoder."):] if k.startswith("decoder.query_linear") else k): v
             for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "model.bin")
    small = {**PDAT_ARGS, "encoder_embed_dim": 16, "decoder_embed_dim": 16, "encoder_ffn_embed_dim": 32,
             "decoder_ffn_embed_dim": 32, "encoder_attention_heads": 4, "decoder_attention_heads": 4,
             "encoder_layers": 1, "decoder_layers": 2, "seg_tokens": 3, "max_target_positions": 70}
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PRESETS, "pdat", small)
        with pytest.raises(ArbenchError, match="--preset"):
            import_dat(tmp_path / "model.bin", tmp_path / "dict.txt")
        imported, vocab, settings = import_dat(tmp_path / "model.bin", tmp_path / "dict.txt", "pdat", 2.5)
    assert settings == {"upsample": 2.5, "max_graph": 70, **options}
    assert vocab.tokens[4] == "[PAD]" and vocab.tokens[-3:] == ["[P0]", "[P1]", "[P2]"]
    assert vocab.special_ids == {0, 1, 2, 3, len(vocab) - 3, len(vocab) - 2, len(vocab) - 1}
    src = torch.tensor([[7, 8, 9, 10], [11, 12, 1, 1]])
    with torch.no_grad():
        for ours, ref in zip(imported(src), model(src)):
            assert torch.equal(ours, ref)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch arbench-pwned",))


def test_objects_outside_the_allow_list_are_never_unpickled(tmp_path, source_model, dictionary, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"args": fairseq_args(), "model": source_model.state_dict(), "extra_state": _Payload()}, path)
    with pytest.raises(ArbenchError, match="was not unpickled.*weights_only=False"):
        import_dat(path, dictionary)
    assert not (tmp_path / "arbench-pwned").exists()


def test_files_that_are_not_fairseq_checkpoints_are_refused(tmp_path, dictionary):
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ArbenchError, match="not a fairseq checkpoint"):
        import_dat(tmp_path / "tensor.pt", dictionary)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ArbenchError, match="not a torch.save file"):
        import_dat(tmp_path / "junk.pt", dictionary)
    with pytest.raises(ArbenchError, match="no fairseq checkpoint"):
        import_dat(tmp_path / "missing.pt", dictionary)


def test_dictionary_that_does_not_fit_the_embedding_is_refused(tmp_path, source_model):
    short = tmp_path / "dict.txt"
    short.write_text("".join(f"{w} 1\n" for w in WORDS + ["a", "b", "c"]), encoding="utf-8")
    with pytest.raises(ArbenchError, match="36 rows.*37 symbols"):
        import_dat(write_checkpoint(tmp_path / "c.pt", source_model), short)


GOLDEN = Path(__file__).parent / "golden" / "pdat"
#: float32 on both sides; fairseq's attention and ours differ in summation order only.
RTOL = ATOL = 1e-5


@pytest.fixture(scope="module")
def pdat_golden():
    from safetensors.torch import load_file

    model, vocab, settings = import_dat(GOLDEN / "checkpoint_pdat_tiny.pt", GOLDEN / "dict.txt")
    return model, vocab, settings, load_file(str(GOLDEN / "pdat.safetensors"))


def test_pdat_options_match_upstream_fairseq(pdat_golden):
    """tests/golden/make_pdat.py: upstream's own fairseq GlatDecomposedLink with PDAT's options, saved as fairseq's
    trainer saves (`cfg` layout); imported, our encoder, graph, decoder features, logits and links equal it."""
    model, vocab, settings, g = pdat_golden
    assert settings == {"upsample": 2.5, "max_graph": 70, "learned_pos": True, "activation": "gelu",
                        "normalize_before": False, "segment_embedding": 3, "source_eos": True,
                        "upsample_base": "predict"}
    assert vocab.tokens[4:6] == ["[PAD]", "[unused0]"] and vocab.tokens[-1] == "[P2]"
    # a full checkpoint's own arguments win over a preset (checkpoint=pdat given a full fairseq checkpoint)
    assert import_dat(GOLDEN / "checkpoint_pdat_tiny.pt", GOLDEN / "dict.txt", "pdat")[2] == settings
    with torch.no_grad():
        src = model.prepare_source(g["src"])
        assert torch.equal(src.ne(1).sum(1), g["src_upstream"].ne(1).sum(1))
        memory, memory_padding = model.encode(src)
        keep = ~memory_padding
        torch.testing.assert_close(memory[keep], g["encoder_out"][:, :src.shape[1]][keep], rtol=RTOL, atol=ATOL)
        graph = model.graph_tokens(src, model.graph_lengths(src, memory, memory_padding))
        assert torch.equal(graph, g["graph"])
        for base in ("source_old", "upstream_source"):  # upstream's other graph sizes, from the same source
            model.options["upsample_base"] = base
            try:
                got = model.graph_tokens(src, model.graph_lengths(src, memory, memory_padding))
            finally:
                model.options["upsample_base"] = "predict"
            assert torch.equal(got, g["graph_" + base.replace("upstream_", "")]), base
        features = model.decode_features(graph, memory, memory_padding)
        vertices = graph.ne(1)
        torch.testing.assert_close(features[vertices], g["features"][vertices], rtol=RTOL, atol=ATOL)
        logits, links, _ = model(g["src"])
        torch.testing.assert_close(logits[vertices], g["logits"][vertices], rtol=RTOL, atol=ATOL)
        assert torch.equal(links.isinf(), g["links"].isinf())
        finite = ~links.isinf()
        torch.testing.assert_close(links[finite], g["links"][finite], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("strategy", ["greedy", "lookahead"])
def test_pdat_decoding_matches_upstream_forward_decoder(pdat_golden, strategy, tmp_path):
    """Upstream's `forward_decoder` tokens (segment symbols included) equal `dag_decode`'s path, and the ARBench
    method, loading the imported checkpoint by path, outputs the same words with the special symbols dropped."""
    from baselines.translation.dag import dag_decode
    from baselines.translation.dat_method import DATConfig
    from harness.registry import METHODS

    model, vocab, _, g = pdat_golden
    with torch.no_grad():
        logits, links, padding = model(g["src"])
    paths = dag_decode(links, logits.float().log_softmax(-1), (~padding).sum(-1), strategy, 1.0, vocab.pad)
    assert paths == [[t for t in row if t != vocab.pad] for row in g[f"tokens_{strategy}"].tolist()]
    if strategy == "greedy":  # the greedy path passes a vertex whose token is the segment symbol [P0]
        assert vocab.tokens.index("[P0]") in paths[0]
    out = tmp_path / "pdat-tiny.safetensors"
    main(["--input", str(GOLDEN / "checkpoint_pdat_tiny.pt"), "--dict", str(GOLDEN / "dict.txt"),
          "--langpair", "en-en", "--output", str(out)])
    translator = METHODS.get("da-transformer")(DATConfig(checkpoint=str(out), decode_strategy=strategy))
    sentences = [" ".join(vocab.tokens[i] for i in row if i != vocab.pad) for row in g["src"].tolist()]
    assert translator.translate(sentences) == [" ".join(vocab.tokens[t] for t in p if t not in vocab.special_ids)
                                               for p in paths]


def test_pdat_is_loaded_by_name_from_the_weights_cache(tmp_path, monkeypatch):
    """`da-transformer --set checkpoint=pdat`: missing files name their URLs; present ones (here the tiny golden
    model as a bare state dict under PDAT's file names, the preset shrunk to its sizes) load in memory, take
    BERT-uncased word pieces, and every task is refused with what to do instead."""
    from baselines.translation import fairseq_dat
    from baselines.translation.dat_method import DATConfig
    from harness.errors import InputError, MissingAssetError
    from harness.registry import METHODS

    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path))
    method = METHODS.get("da-transformer")
    with pytest.raises(MissingAssetError, match="cloud.tsinghua.edu.cn/f/b048a7eddd204e2098a7"):
        method(DATConfig(checkpoint="pdat"))
    state = fairseq_dat.read_fairseq_checkpoint(GOLDEN / "checkpoint_pdat_tiny.pt")
    tiny = fairseq_dat.model_arguments(state)
    (tmp_path / "weights").mkdir()
    torch.save(state["model"], tmp_path / "weights" / "pdat_model.bin")
    (tmp_path / "weights" / "pdat_dict.txt").write_text((GOLDEN / "dict.txt").read_text())
    monkeypatch.setitem(fairseq_dat.PRESETS, "pdat", {**fairseq_dat.PDAT_ARGS, **{
        k: tiny[k] for k in ("encoder_embed_dim", "decoder_embed_dim", "encoder_ffn_embed_dim",
                             "decoder_ffn_embed_dim", "encoder_attention_heads", "decoder_attention_heads",
                             "encoder_layers", "decoder_layers", "seg_tokens", "decode_upsample_scale")}})
    translator = method(DATConfig(checkpoint="pdat", decode_strategy="greedy"))
    assert translator.tokenize("W0, W12.", "en") == ["w0", "<unk>", "w12", "<unk>"]  # no "," "." in this dict
    (out,) = translator.translate(["W0 W3 W17"])
    assert isinstance(out, str) and "[P" not in out
    assert translator.settings()["tokenizer"] == "bert-uncased" and translator.settings()["upsample_base"] == "predict"
    with pytest.raises(InputError, match="not a translator.*fairseq_dat"):
        translator.check_task("nat-mini", "en-en")
