"""The reference translators: decoder shapes, CTC collapse, Mask-Predict masking, KV-cache exactness,
fairseq parameter names, strict checkpoint loading and the bundled checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from baselines.translation.ar import ARTransformer
from baselines.translation.checkpoint import CHECKPOINT_DIR, load_weights, read_metadata, save_checkpoint
from baselines.translation.cmlm import CMLM, random_mask, remask_lowest
from baselines.translation.ctc import CTCNAT, ctc_collapse
from baselines.translation.layers import TransformerConfig
from baselines.translation.nat import VanillaNAT, length_mask, uniform_copy
from baselines.translation.vocab import SPECIALS, Vocabulary, detokenize, tokenize
from harness.errors import ArbenchError

VOCAB = Vocabulary(list(SPECIALS) + [f"w{i}" for i in range(26)])
CFG = TransformerConfig(vocab_size=len(VOCAB), embed_dim=16, ffn_dim=32, heads=2, encoder_layers=1,
                        decoder_layers=2, dropout=0.0, max_positions=32)
SRC = VOCAB.batch([[6, 7, 8, 9, 10], [11, 12], [13, 14, 15]])


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread avoids oversubscription on a shared CPU (and is restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _model(cls, **kwargs):
    torch.manual_seed(0)
    return cls(CFG, **kwargs).eval()


def test_kv_cached_greedy_equals_recomputing_the_whole_prefix():
    model = _model(ARTransformer)
    cached = model.greedy(SRC)
    for row, src in enumerate(SRC):
        src = src[None, src.ne(VOCAB.pad)]
        prefix = [VOCAB.bos]
        limit = int(model.max_lengths(src)[0])
        while prefix[-1] != VOCAB.eos:
            logits = model(src, torch.tensor([prefix]))[0, -1]
            words = logits[len(SPECIALS):]
            at_limit = len(prefix) == limit
            prefix.append(VOCAB.eos if at_limit or logits[VOCAB.eos] > words.max()
                          else len(SPECIALS) + int(words.argmax()))
        expected = prefix[1:-1]
        assert cached[row] == expected


def test_beam_search_does_not_depend_on_the_batch():
    model = _model(ARTransformer)
    assert model.beam_search(SRC, beam=1) == model.greedy(SRC)
    together = model.beam_search(SRC, beam=3)
    alone = [model.beam_search(SRC[i:i + 1, :int(SRC[i].ne(VOCAB.pad).sum())], beam=3)[0] for i in range(3)]
    assert together == alone


def test_vanilla_nat_shapes_and_uniform_copy():
    model = _model(VanillaNAT)
    memory, padding = model.encoder(SRC)
    lengths = torch.tensor([7, 3, 1])
    logits = model.decode(SRC, memory, padding, lengths)
    assert logits.shape == (3, 7, len(VOCAB))
    assert length_mask(lengths).tolist()[1] == [False] * 3 + [True] * 4
    # uniform copy: target j takes source round(j * (S - 1) / (T - 1)); S = 5 for the first sentence
    positions = torch.arange(5, dtype=torch.float32)[None, :, None].expand(3, 5, 1)
    copied = uniform_copy(positions, padding, lengths)[0, :, 0]
    assert copied.tolist() == [0, 1, 1, 2, 3, 3, 4]
    outputs = model.translate(SRC, length_beam=3)
    assert len(outputs) == 3 and all(1 <= len(o) for o in outputs)
    assert all(i >= len(SPECIALS) for o in outputs for i in o)


def test_ctc_collapse_rules():
    blank = VOCAB.blank
    assert ctc_collapse([7, 7, blank, 7, 8, 8, blank], blank) == [7, 7, 8]
    assert ctc_collapse([blank, blank], blank) == []
    assert ctc_collapse([7, blank, blank, 7], blank) == [7, 7]
    assert ctc_collapse([7, 8, 7], blank) == [7, 8, 7]


def test_ctc_frames_and_decoding():
    model = _model(CTCNAT, upsample=3)
    log_probs, padding = model.frame_log_probs(SRC)
    assert log_probs.shape == (3, 15, len(VOCAB)) and padding.shape == (3, 15)
    assert (~padding).sum(1).tolist() == [15, 6, 9]
    probs = log_probs.exp()
    assert torch.allclose(probs.sum(-1), torch.ones(3, 15), atol=1e-5)
    assert float(probs.detach()[..., [VOCAB.bos, VOCAB.pad, VOCAB.eos, VOCAB.unk, VOCAB.mask]].max()) == 0.0
    for out, n in zip(model.translate(SRC), [15, 6, 9]):
        assert len(out) <= n and VOCAB.blank not in out
    loss = model.loss(SRC, VOCAB.batch([[20, 21], [22, 22, 23], [24]]), VOCAB)
    assert torch.isfinite(loss) and loss > 0


def test_cmlm_masking_and_mask_predict():
    tgt = VOCAB.batch([[10, 11, 12, 13], [14, 15], [16]])
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        masked = random_mask(tgt, VOCAB.pad, generator)
        counts = masked.sum(1)
        assert (counts >= 1).all() and (counts <= tgt.ne(VOCAB.pad).sum(1)).all()
        assert not masked[tgt.eq(VOCAB.pad)].any()
    probs = torch.tensor([[0.5, 0.1, 0.9, 0.3], [0.2, 0.8, 0.0, 0.0]])
    padding = torch.tensor([[False] * 4, [False, False, True, True]])
    assert remask_lowest(probs, padding, torch.tensor([2, 1])).tolist() == [
        [False, True, False, True], [True, False, False, False]]
    model = _model(CMLM)
    for iterations in (1, 4):
        outputs = model.translate(SRC, iterations=iterations, length_beam=2)
        assert len(outputs) == 3 and all(VOCAB.mask not in o and len(o) >= 1 for o in outputs)


def test_parameter_names_follow_fairseq():
    names = set(_model(CMLM).state_dict())
    for name in ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "decoder.embed_length.weight",
                 "encoder.layers.0.self_attn.q_proj.weight", "encoder.layers.0.self_attn_layer_norm.bias",
                 "encoder.layers.0.fc1.weight", "encoder.layers.0.final_layer_norm.weight", "encoder.layer_norm.weight",
                 "decoder.layers.1.encoder_attn.k_proj.bias", "decoder.layers.1.encoder_attn_layer_norm.weight",
                 "decoder.layers.1.self_attn.out_proj.weight", "decoder.layer_norm.bias"]:
        assert name in names
    assert "decoder.upsample_proj.weight" in _model(CTCNAT).state_dict()


def test_checkpoint_round_trip_and_strict_loading(tmp_path):
    model = _model(VanillaNAT)
    path = tmp_path / "nat.safetensors"
    save_checkpoint(model, path, "nat", CFG, VOCAB, "en-de", {"distilled": True}, {})
    meta = read_metadata(path)
    assert meta["kind"] == "nat" and meta["config"] == CFG and meta["vocab"].tokens == VOCAB.tokens
    torch.manual_seed(1)
    loaded = load_weights(VanillaNAT(CFG), path)
    assert torch.equal(loaded.decoder.embed_length.weight, model.decoder.embed_length.weight)
    assert loaded.encoder.embed_tokens.weight is loaded.decoder.embed_tokens.weight
    with pytest.raises(Exception):
        load_weights(VanillaNAT(TransformerConfig(**{**CFG.__dict__, "embed_dim": 32, "ffn_dim": 32})), path)
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ArbenchError, match="not a safetensors file"):
        read_metadata(tmp_path / "bad.safetensors")


def test_tokenizer_round_trip():
    text = "Der Mann sagt, dass die E-Mail im Park nicht gelesen wurde."
    assert tokenize(text) == ["Der", "Mann", "sagt", ",", "dass", "die", "E-Mail", "im", "Park", "nicht", "gelesen",
                              "wurde", "."]
    assert detokenize(tokenize(text)) == text


@pytest.mark.parametrize("kind", ["ar", "nat", "ctc", "cmlm"])
def test_bundled_checkpoints_are_small_and_complete(kind):
    path = CHECKPOINT_DIR / f"{kind}.safetensors"
    assert path.stat().st_size < 3 * 2**20
    meta = read_metadata(path)
    assert meta["kind"] == kind and meta["langpair"] == "en-de"
    assert meta["training"]["distilled"] == (kind != "ar")
    report = json.loads((CHECKPOINT_DIR / f"{kind}.report.json").read_text())
    assert report["parameters"] == sum(p.numel() for p in (ARTransformer if kind == "ar" else {
        "nat": VanillaNAT, "ctc": CTCNAT, "cmlm": CMLM}[kind])(meta["config"], **meta["model"]).parameters())


@pytest.mark.parametrize("method", ["ar-transformer", "vanilla-nat", "ctc-nat", "cmlm"])
def test_bundled_translators_translate_and_do_not_depend_on_the_batch(method):
    from harness.datasets.en_de_corpus import SPLITS, build
    from harness.metrics.text import bleu_score
    from harness.registry import METHODS

    pairs = build(*SPLITS["test"])[:40]
    translator = METHODS.get(method)()
    together = translator.translate([en for en, _ in pairs])
    assert together[:8] == [translator.translate([en])[0] for en, _ in pairs[:8]]
    assert bleu_score(together, [de for _, de in pairs]).score > 60
