"""WER under both normalisers, corpus vs per-utterance aggregation, and cosine similarity."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest
import torch

from harness.errors import InputError
from harness.metrics.speech import (WordErrorRate, cosine_similarity, mean_utterance_wer, normalize,
                                    per_utterance_wer, seed_normalize, wer)

REFS = ["the cat sat on the mat", "hello world", "a b c d e"]
HYPS = ["the cat sat on mat", "hello there world", "a x c d e f"]


def test_corpus_wer_matches_jiwer_on_lists():
    expected = jiwer.process_words(REFS, HYPS).wer
    assert wer(HYPS, REFS, normalizer="none") == pytest.approx(expected, abs=1e-12)
    # hand count: (1 deletion) + (1 insertion) + (1 substitution + 1 insertion) over 6 + 2 + 5 words
    assert expected == pytest.approx(4 / 13, abs=1e-12)


def test_per_utterance_rows_and_mean():
    rows = per_utterance_wer(HYPS, REFS, normalizer="none")
    assert [(r.substitutions, r.deletions, r.insertions) for r in rows] == [(0, 1, 0), (0, 0, 1), (1, 0, 1)]
    assert [r.wer for r in rows] == pytest.approx([1 / 6, 1 / 2, 2 / 5])
    assert mean_utterance_wer(HYPS, REFS, normalizer="none") == pytest.approx((1 / 6 + 1 / 2 + 2 / 5) / 3)
    for ref, hyp, row in zip(REFS, HYPS, rows):
        assert row.wer == pytest.approx(jiwer.wer(ref, hyp))


@pytest.mark.parametrize("aggregation, function", [("corpus", wer), ("utterance_mean", mean_utterance_wer)])
def test_accumulator_equals_one_call_whatever_the_batches(aggregation, function):
    metric = WordErrorRate(normalizer="none", aggregation=aggregation)
    metric.update(HYPS[:1], REFS[:1])
    metric.update(HYPS[1:], REFS[1:])
    assert float(metric.compute()) == pytest.approx(function(HYPS, REFS, normalizer="none"), abs=1e-12)
    metric.reset()
    with pytest.raises(InputError, match="no utterances"), pytest.warns(UserWarning, match="before the ``update``"):
        metric.compute()
    with pytest.raises(InputError, match="aggregation"):
        WordErrorRate(aggregation="median")


def test_empty_hypothesis_is_all_deletions():
    rows = per_utterance_wer([""], ["one two three"], normalizer="seed")
    assert rows[0].wer == 1.0 and rows[0].deletions == 3


def test_empty_reference_is_refused():
    with pytest.raises(InputError, match="no words"):
        per_utterance_wer(["x"], ["?!"], normalizer="seed")


def test_mismatched_lengths_and_bare_strings_are_refused():
    with pytest.raises(InputError, match="1 hypotheses but 2 references"):
        wer(["a"], ["a", "b"])
    with pytest.raises(InputError, match="not single strings"):
        wer("a b", "a b")
    with pytest.raises(InputError, match="no utterances"):
        wer([], [])


def test_seed_normaliser_keeps_apostrophe_and_deletes_other_punctuation():
    text = "“Hello,” she said — it’s Dr. O'Neil's 3:00 PM train; 50% off!"
    # ASCII apostrophe kept; curly quotes, em dash and ’ deleted (not spaced), the double space left by the
    # dash collapsed; no number handling
    assert seed_normalize(text) == "hello she said its dr o'neil's 300 pm train 50 off"
    assert seed_normalize("A  B  C") == "a b c"  # str.replace replaces every double space
    assert seed_normalize("A   B    C") == "a  b  c"  # ... pairwise, left to right: runs are halved


def seed_process_one(hypo, truth):
    """Seed-TTS-eval run_wer.py `process_one` for lang "en" (jiwer 4's process_words for compute_measures)."""
    import string

    from zhon.hanzi import punctuation

    for x in punctuation + string.punctuation:
        if x == "'":
            continue
        truth = truth.replace(x, "")
        hypo = hypo.replace(x, "")
    truth = truth.replace("  ", " ")
    hypo = hypo.replace("  ", " ")
    truth, hypo = truth.lower(), hypo.lower()
    return truth, hypo, jiwer.process_words(truth, hypo).wer


def test_seed_normaliser_and_wer_match_seed_tts_eval_process_one():
    rng = np.random.default_rng(0)
    alphabet = list("abcAB '’-.,!?;:\"“”—…0123456789") + ["  ", "   ", "。", "，"]
    for _ in range(200):
        truth = "x" + "".join(rng.choice(alphabet, size=rng.integers(1, 40)))
        hypo = "".join(rng.choice(alphabet, size=rng.integers(0, 40)))
        ref_n, hyp_n, expected = seed_process_one(hypo, truth)
        assert (seed_normalize(truth), seed_normalize(hypo)) == (ref_n, hyp_n)
        assert per_utterance_wer([hypo], [truth], normalizer="seed")[0].wer == pytest.approx(expected, abs=1e-12)


def test_seed_normaliser_wer_is_whitespace_insensitive():
    assert wer(["its fiftyfive mr smith"], ["It's fifty-five, Mr. Smith."], normalizer="seed") == pytest.approx(1 / 4)


def test_whisper_normaliser_on_numbers_contractions_and_spelling():
    out = normalize("Mr. Smith won't pay $2.70 for the colour TV: it's fifty-five percent off!", "whisper")
    assert out == "mister smith will not pay $2.70 for the color tv it is 55% off"
    # the two normalisers disagree on numbers: seed counts "fifty" vs "50" as an error, whisper does not
    assert wer(["type 50"], ["Type fifty"], normalizer="seed") == pytest.approx(0.5)
    assert wer(["type 50"], ["Type fifty"], normalizer="whisper") == 0.0


def test_unknown_normaliser():
    with pytest.raises(InputError, match="seed, whisper, none"):
        normalize("x", "kaldi")


def test_cosine_similarity_on_synthetic_embeddings():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(8, 256, generator=gen)
    b = torch.randn(8, 256, generator=gen)
    sim = cosine_similarity(a, b)
    expected = np.array([float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))) for x, y in zip(a.numpy(), b.numpy())])
    assert sim.numpy() == pytest.approx(expected, abs=1e-6)
    assert cosine_similarity(a, 3 * a).numpy() == pytest.approx(np.ones(8))
    assert cosine_similarity(a, -a).numpy() == pytest.approx(-np.ones(8))
    with pytest.raises(InputError, match="same shape"):
        cosine_similarity(a, b[:, :10])
