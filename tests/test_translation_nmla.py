"""NMLA (Shao & Feng 2022): the bag-of-words and bag-of-bigrams losses against upstream's own functions
(tests/golden/make_nmla.py, ictnlp/NMLA-NAT@62c4d87), their invariances and padding rules, and the
fine-tuned `nmla-ctc` translator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from baselines.translation.checkpoint import CHECKPOINT_DIR, read_metadata
from baselines.translation.nmla import bag_of_bigrams_loss, bag_of_words_loss, nmla_loss
from harness.errors import InputError

GOLDEN = Path(__file__).parent / "golden" / "nmla" / "nmla.safetensors"
CASES = ("random", "random_b4", "peaked")
LOSSES = {"bigram": bag_of_bigrams_loss, "unigram": bag_of_words_loss}


@pytest.mark.parametrize("objective", sorted(LOSSES))
@pytest.mark.parametrize("case", CASES)
def test_losses_and_gradients_equal_upstreams(case, objective):
    golden = load_file(str(GOLDEN))
    with safe_open(str(GOLDEN), framework="pt") as f:
        meta = f.metadata()
    assert meta["upstream"] == "ictnlp/NMLA-NAT@62c4d87df2674b668b3c41f0de9c7a4115b003ba"
    logits = golden[f"{case}.logits"].clone().requires_grad_(True)
    loss = LOSSES[objective](torch.log_softmax(logits, -1), golden[f"{case}.targets"], blank=int(meta["blank"]))
    loss.backward()
    expected, grad = golden[f"{case}.{objective}.loss"][0], golden[f"{case}.{objective}.grad"]
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits.grad, grad, rtol=1e-5, atol=1e-5 * grad.abs().max().item())


def _frames(seed: int, batch: int = 1, length: int = 12, vocab: int = 8) -> torch.Tensor:
    return torch.log_softmax(torch.randn(batch, length, vocab, generator=torch.Generator().manual_seed(seed)) * 2, -1)


def test_bigram_loss_depends_on_the_bag_of_bigrams_only():
    frames = _frames(1)
    a, b, c = 2, 3, 5
    same_bag = [bag_of_bigrams_loss(frames, torch.tensor([t]), blank=0) for t in ([a, b, a, c, a], [a, c, a, b, a])]
    torch.testing.assert_close(same_bag[0], same_bag[1], rtol=1e-6, atol=0)
    other_bag = bag_of_bigrams_loss(frames, torch.tensor([[a, b, c, a, a]]), blank=0)
    assert abs(other_bag.item() - same_bag[0].item()) > 1e-4


def test_unigram_loss_is_invariant_to_word_order():
    frames = _frames(2)
    target = torch.tensor([[2, 3, 5, 3, 7]])
    torch.testing.assert_close(bag_of_words_loss(frames, target, blank=0),
                               bag_of_words_loss(frames, target.flip(-1), blank=0), rtol=1e-6, atol=0)


@pytest.mark.parametrize("loss_fn", [bag_of_bigrams_loss, bag_of_words_loss])
def test_padded_targets_and_frames_change_nothing(loss_fn):
    """Padding ids form no n-grams; padded frames (any logits) read as blanks and get no gradient."""
    pad, blank = 1, 0
    frames = _frames(3, length=10).requires_grad_(True)
    alone = loss_fn(frames, torch.tensor([[2, 3, 3, 4]]), blank=blank, pad=pad)
    padded_frames = torch.cat([frames, _frames(4, length=6)], dim=1).detach().requires_grad_(True)
    frame_padding = torch.tensor([[False] * 10 + [True] * 6])
    padded = loss_fn(padded_frames, torch.tensor([[2, 3, 3, 4, pad, pad]]), blank=blank, pad=pad,
                     frame_padding=frame_padding)
    torch.testing.assert_close(padded, alone, rtol=1e-6, atol=1e-7)
    alone.backward()
    padded.backward()
    torch.testing.assert_close(padded_frames.grad[:, :10], frames.grad, rtol=1e-5, atol=1e-7)
    assert padded_frames.grad[:, 10:].abs().max() == 0


def test_a_perfect_output_minimises_the_bigram_loss():
    """Frames that spell the reference (with a blank between the repeated word) beat any random frames."""
    target = [2, 3, 3, 4]
    frames = torch.full((1, 7, 6), -30.0)
    for t, v in enumerate([2, 3, 0, 3, 4, 0, 0]):
        frames[0, t, v] = 0.0
    frames = frames.log_softmax(-1)
    best = bag_of_bigrams_loss(frames, torch.tensor([target]), blank=0).item()
    assert best == pytest.approx(-2 * 3 / (4 + 3 - 2), abs=1e-4)  # 3 bigrams matched; length skips frame 0
    assert all(bag_of_bigrams_loss(_frames(s, length=7, vocab=6), torch.tensor([target]), blank=0).item() > best
               for s in range(5))


def test_nmla_loss_rejects_other_orders():
    with pytest.raises(ValueError, match="bag-of-bigrams"):
        nmla_loss(None, torch.zeros(1, 1), torch.zeros(1, 1), None, ngram=3)


def test_bundled_nmla_checkpoint_is_a_fine_tuned_ctc_model():
    path = CHECKPOINT_DIR / "nmla.safetensors"
    assert path.stat().st_size < 3 * 2**20
    meta = read_metadata(path)
    assert meta["kind"] == "nmla" and meta["model"] == {"upsample": 2} and meta["training"]["distilled"]
    assert meta["training"]["objective"] == "nmla bag-of-bigrams" and meta["training"]["init"] == "ctc.safetensors"
    report = json.loads((CHECKPOINT_DIR / "nmla.report.json").read_text())
    assert report["steps"] == meta["training"]["steps"] and report["valid_bleu"] > 90


def test_nmla_translator_decodes_and_refuses_a_plain_ctc_checkpoint():
    from harness.datasets.en_de_corpus import SPLITS, build
    from harness.metrics.text import bleu_score
    from harness.registry import METHODS

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pairs = build(*SPLITS["test"])[:40]
        translator = METHODS.get("nmla-ctc")()
        together = translator.translate([en for en, _ in pairs])
        assert together[:6] == [translator.translate([en])[0] for en, _ in pairs[:6]]
        assert bleu_score(together, [de for _, de in pairs]).score > 60
        settings = translator.settings()
        assert settings["ctc_decoding"] == "best-path" and settings["fine_tuning"] == "nmla bag-of-bigrams"
        with pytest.raises(InputError, match="'ctc' model"):
            cls = METHODS.get("nmla-ctc")
            cls(cls.Config(checkpoint=str(CHECKPOINT_DIR / "ctc.safetensors")))
    finally:
        torch.set_num_threads(previous)
