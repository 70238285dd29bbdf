"""Translation metrics: sacreBLEU's CLI as the reference, a hand-counted legacy tokenized BLEU, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import InputError
from harness.metrics import BLEUScore, CHRFppScore, LegacyTokenizedBLEUScore
from harness.metrics.text import (bleu_score, chrf_pp_score, legacy_tokenize, legacy_tokenized_bleu_score,
                                  paired_bleu_difference, split_compounds)


def bleu(hypotheses, references, **options) -> float:
    return bleu_score(hypotheses, references, **options).score


def chrf_pp(hypotheses, references) -> float:
    return chrf_pp_score(hypotheses, references).score


def legacy_tokenized_bleu(hypotheses, references, lang, compound_split=None) -> float:
    return legacy_tokenized_bleu_score(hypotheses, references, lang=lang, compound_split=compound_split).score

HYPOTHESES = [
    "The cat sat on the mat.",
    "Die Open-Source-Software läuft auf dem Server.",
    "He said: \"it's a well-known fact\", didn't he?",
    "Zwei Hunde spielen im Park.",
    "Numbers like 3,5 Mio. € and 1.000 are tokenised too.",
    "A completely wrong sentence.",
]
REFERENCES = [
    "The cat sat on a mat.",
    "Die Open-Source-Software läuft auf einem Server.",
    "He said: \"it's a well-known fact\", did he not?",
    "Zwei Hunde spielen im Garten.",
    "Numbers like 3,5 Mio. € and 1.000 are tokenized too.",
    "Nothing in common here at all!",
]


def _cli(tmp_path: Path, *args: str) -> float:
    ref, hyp = tmp_path / "ref.txt", tmp_path / "hyp.txt"
    ref.write_text("\n".join(REFERENCES) + "\n", encoding="utf-8")
    hyp.write_text("\n".join(HYPOTHESES) + "\n", encoding="utf-8")
    cli = Path(sys.executable).with_name("sacrebleu")
    out = subprocess.run([str(cli), str(ref), "-i", str(hyp), "-b", *args], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip())


def test_bleu_equals_sacrebleu_cli(tmp_path):
    assert bleu(HYPOTHESES, REFERENCES) == pytest.approx(_cli(tmp_path, "-m", "bleu", "-w", "6"), abs=1e-6)
    assert bleu(HYPOTHESES, REFERENCES, tokenize="intl") == pytest.approx(
        _cli(tmp_path, "-m", "bleu", "--tokenize", "intl", "-w", "6"), abs=1e-6)


def test_chrf_pp_equals_sacrebleu_cli(tmp_path):
    assert chrf_pp(HYPOTHESES, REFERENCES) == pytest.approx(
        _cli(tmp_path, "-m", "chrf", "--chrf-word-order", "2", "-w", "6"), abs=1e-6)


def test_signature_and_bootstrap_interval():
    score = bleu_score(HYPOTHESES, REFERENCES, n_bootstrap=200)
    assert score.signature == BLEUScore(n_bootstrap=200).signature
    assert "tok:13a" in score.signature and "bs:200" in score.signature and "nrefs:1" in score.signature
    assert score.ci_low < score.score < score.ci_high
    chrf = chrf_pp_score(HYPOTHESES, REFERENCES)
    assert "nw:2" in chrf.signature and chrf.ci_low is None


def test_paired_bleu_difference():
    worse = HYPOTHESES[:3] + ["Something else entirely."] * 3
    gap = paired_bleu_difference(HYPOTHESES, worse, REFERENCES, n_bootstrap=300)
    assert gap.delta == pytest.approx(bleu(HYPOTHESES, REFERENCES) - bleu(worse, REFERENCES), abs=1e-9)
    assert gap.ci_low <= gap.delta <= gap.ci_high and gap.ci_low < gap.ci_high
    same = paired_bleu_difference(HYPOTHESES, HYPOTHESES, REFERENCES, n_bootstrap=50)
    assert (same.delta, same.ci_low, same.ci_high) == (0.0, 0.0, 0.0)


def test_compound_split_matches_the_perl_rule():
    # perl -ple 's{(\S)-(\S)}{$1 ##AT##-##AT## $2}g': non-overlapping, left to right
    assert split_compounds("Open-Source-Projekt") == "Open ##AT##-##AT## Source ##AT##-##AT## Projekt"
    assert split_compounds("a-b-c") == "a ##AT##-##AT## b-c"
    assert split_compounds("ein - zwei") == "ein - zwei"


def test_legacy_tokenized_bleu_hand_counted():
    hyp, ref = ["Das Open-Source-Projekt ist schlecht."], ["Das Open-Source-Projekt ist gut."]
    assert legacy_tokenize(hyp, "de", compound_split=True) == [
        "Das Open ##AT##-##AT## Source ##AT##-##AT## Projekt ist schlecht ."]
    # 9 tokens each side; matching n-grams: 8/9, 6/8, 5/7, 4/6; brevity penalty 1
    expected = 100 * (8 / 9 * 6 / 8 * 5 / 7 * 4 / 6) ** 0.25
    assert legacy_tokenized_bleu(hyp, ref, "de") == pytest.approx(expected, abs=1e-9)
    # without splitting: 5 tokens, 4-gram precision 0/2 and no smoothing -> 0, as multi-bleu.perl
    assert legacy_tokenized_bleu(hyp, ref, "de", compound_split=False) == 0.0
    assert "compound-split:yes" in legacy_tokenized_bleu_score(hyp, ref, lang="de", compound_split=True).signature


@pytest.mark.parametrize("hyps, refs, message", [
    (["a"], ["a", "b"], "1 hypotheses but 2 references"),
    ([], [], "empty"),
    (["a\nb"], ["a"], "line break"),
    ([None], ["a"], "not a string"),
])
def test_bad_input_is_refused_with_a_fix(hyps, refs, message):
    for score in (bleu_score, chrf_pp_score, legacy_tokenized_bleu_score):
        with pytest.raises(InputError, match=message):
            score(hyps, refs)
    if hyps:
        with pytest.raises(InputError, match=message):
            BLEUScore().update(hyps, refs)


def test_bad_bootstrap_count_is_refused():
    for make in (lambda: BLEUScore(n_bootstrap=-1), lambda: CHRFppScore(n_bootstrap=-1)):
        with pytest.raises(InputError, match="n_bootstrap must be an integer >= 0"):
            make()


@pytest.mark.parametrize("cls, function, options", [
    (BLEUScore, bleu_score, {"n_bootstrap": 100}),
    (CHRFppScore, chrf_pp_score, {"n_bootstrap": 100}),
    (LegacyTokenizedBLEUScore, legacy_tokenized_bleu_score, {"lang": "de"}),
])
def test_accumulator_equals_one_call_whatever_the_batches(cls, function, options):
    whole = function(HYPOTHESES, REFERENCES, **options)
    metric = cls(**options)
    assert metric.signature == whole.signature
    for start, stop in ((0, 1), (1, 4), (4, 6)):
        metric.update(HYPOTHESES[start:stop], REFERENCES[start:stop])
    assert metric.compute() == whole
    metric.reset()
    metric.update([], [])
    metric.update(HYPOTHESES[:2], REFERENCES[:2])
    assert metric.compute() == function(HYPOTHESES[:2], REFERENCES[:2], **options)


GOLDEN_MOSES = json.loads((Path(__file__).parent / "golden" / "moses" / "legacy_bleu.json").read_text("utf-8"))


@pytest.mark.parametrize("lang", sorted(GOLDEN_MOSES["corpora"]))
def test_legacy_pipeline_equals_tokenizer_perl_and_multi_bleu(lang):
    """Upstream's own outputs (tests/golden/make_moses.py): tokenizer.perl -l LANG line for line, then
    multi-bleu.perl's score (printed to 2 decimals, so within 0.005) on the corpus and on every sentence."""
    corpus = GOLDEN_MOSES["corpora"][lang]
    for side in ("hypotheses", "references"):
        assert legacy_tokenize(corpus[side], lang, compound_split=False) == corpus[f"{side}_tokenized"]
        assert legacy_tokenize(corpus[side], lang, compound_split=True) == corpus[f"{side}_compound_split"]
    hyp, ref = corpus["hypotheses"], corpus["references"]
    assert legacy_tokenized_bleu(hyp, ref, lang, compound_split=False) == pytest.approx(corpus["multi_bleu"], abs=5e-3)
    assert legacy_tokenized_bleu(hyp, ref, lang, compound_split=True) == pytest.approx(
        corpus["multi_bleu_compound_split"], abs=5e-3)
    for h, r, expected in zip(hyp, ref, corpus["multi_bleu_per_sentence"]):
        assert legacy_tokenized_bleu([h], [r], lang, compound_split=False) == pytest.approx(expected, abs=5e-3), h


def test_final_dot_after_a_nonbreaking_prefix_is_split():
    # tokenizer.perl since mosesdecoder@9fc964da7 (2018-11); sacremoses 0.x keeps "usw." and "e.g." whole
    assert legacy_tokenize(["Ich kaufe Äpfel, Birnen usw."], "de", False) == ["Ich kaufe Äpfel , Birnen usw ."]
    assert legacy_tokenize(["Bring fruit, e.g."], "en", False) == ["Bring fruit , e.g ."]
    # only the last word: a prefix inside the line stays whole, and multi-dots stay one token
    assert legacy_tokenize(["Herr Dr. Schmidt wartet..."], "de", False) == ["Herr Dr. Schmidt wartet ..."]
    legacy = legacy_tokenized_bleu_score(["a"], ["a"], lang="de", compound_split=False)
    assert legacy.signature.startswith("legacy-tok-bleu:2|")
