"""Translation metrics: sacreBLEU BLEU and chrF++ with their signatures, and the legacy "tokenized BLEU".

The primary scores are sacreBLEU's (detokenized output, the metric's own tokenisation, its signature
stored beside the number). `legacy_tokenized_bleu` reproduces the number non-autoregressive MT papers
report, so that a user can compare with them: Moses tokenisation of hypothesis and reference, for
En-De the tensor2tensor/fairseq compound splitting (`a-b` -> `a ##AT##-##AT## b`), then BLEU with no
further tokenisation and no smoothing (as multi-bleu.perl / fairseq-score). It is labelled legacy
because the numbers it gives are only comparable when every step above is identical.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import sacrebleu
from sacrebleu.metrics import BLEU, CHRF

from harness.errors import InputError

#: Bootstrap resamples for confidence intervals (sacreBLEU's `--confidence` default).
DEFAULT_BOOTSTRAP = 1000
#: The regular expression of fairseq's scripts/compound_split_bleu.sh and tensor2tensor's get_ende_bleu.sh.
_COMPOUND = re.compile(r"(\S)-(\S)")


@dataclass(frozen=True)
class TextScore:
    """A corpus-level score with the sacreBLEU signature that identifies how it was computed.

    `ci_low`/`ci_high` are sacreBLEU's bootstrap 95% interval (mean +- half-width) when requested.
    """

    score: float
    signature: str
    ci_low: float | None = None
    ci_high: float | None = None


def check_parallel(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    """Refuse hypothesis/reference lists that cannot be scored line by line."""
    if len(hypotheses) != len(references):
        raise InputError(
            f"{len(hypotheses)} hypotheses but {len(references)} references: give exactly one hypothesis "
            f"per reference line, in the reference order."
        )
    if not references:
        raise InputError("no sentences to score: the hypothesis and reference lists are empty.")
    for kind, lines in (("hypothesis", hypotheses), ("reference", references)):
        for i, line in enumerate(lines):
            if not isinstance(line, str):
                raise InputError(f"{kind} {i + 1} is a {type(line).__name__}, not a string.")
            if "\n" in line or "\r" in line:
                raise InputError(f"{kind} {i + 1} contains a line break: give one sentence per line.")


def _score(metric, hypotheses: Sequence[str], references: Sequence[str], n_bootstrap: int) -> TextScore:
    check_parallel(hypotheses, references)
    result = metric.corpus_score(list(hypotheses), [list(references)], n_bootstrap=max(1, n_bootstrap))
    signature = str(metric.get_signature())
    if n_bootstrap > 1:
        return TextScore(result.score, signature, result._mean - result._ci, result._mean + result._ci)
    return TextScore(result.score, signature)


def bleu_metric(tokenize: str = "13a", lowercase: bool = False) -> BLEU:
    """sacreBLEU's BLEU with its defaults (exp smoothing, 4-grams) and the given tokenizer."""
    return BLEU(tokenize=tokenize, lowercase=lowercase)


def _signature(metric, n_bootstrap: int = 0) -> str:
    # sacreBLEU knows its signature (reference count, bootstrap settings) only after scoring something.
    metric.corpus_score(["x"], [["x"]], n_bootstrap=max(1, n_bootstrap))
    return str(metric.get_signature())


def bleu_signature(lowercase: bool = False, tokenize: str = "13a", n_bootstrap: int = 0) -> str:
    """The sacreBLEU signature `bleu_score` reports for these settings (one reference)."""
    return _signature(bleu_metric(tokenize, lowercase), n_bootstrap)


def chrf_pp_signature(lowercase: bool = False, n_bootstrap: int = 0) -> str:
    return _signature(chrf_pp_metric(lowercase), n_bootstrap)


def chrf_pp_metric(lowercase: bool = False) -> CHRF:
    """sacreBLEU's chrF++: character 6-grams plus word 2-grams, beta 2."""
    return CHRF(word_order=2, lowercase=lowercase)


def bleu_score(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a",
               lowercase: bool = False, n_bootstrap: int = 0) -> TextScore:
    """sacreBLEU corpus BLEU of detokenized hypotheses against one reference stream, with signature."""
    return _score(bleu_metric(tokenize, lowercase), hypotheses, references, n_bootstrap)


def bleu(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a") -> float:
    """sacreBLEU corpus BLEU (0-100); equal to `sacrebleu REF -i HYP -m bleu -b --tokenize TOKENIZE`."""
    return bleu_score(hypotheses, references, tokenize=tokenize).score


@dataclass(frozen=True)
class PairedDifference:
    """BLEU(system) - BLEU(baseline) with a paired bootstrap 95% interval (percentiles)."""

    delta: float
    ci_low: float
    ci_high: float
    signature: str


def paired_bleu_difference(hypotheses: Sequence[str], baseline: Sequence[str], references: Sequence[str],
                           tokenize: str = "13a", lowercase: bool = False,
                           n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 12345) -> PairedDifference:
    """Paired bootstrap resampling (Koehn, 2004) of the BLEU difference between two systems.

    Each resample draws sentences with replacement and rescores *both* systems on the same draw from
    sacreBLEU's own sentence statistics. sacreBLEU's `--paired-bs` reports a p-value and per-system
    intervals but not an interval on the difference, which is what a NAT-vs-AR gap needs.
    """
    check_parallel(hypotheses, references)
    check_parallel(baseline, references)
    if n_bootstrap < 1:
        raise InputError(f"n_bootstrap must be >= 1, got {n_bootstrap}.")
    metric = bleu_metric(tokenize, lowercase)
    refs = [list(references)]
    system_stats = np.asarray(metric._extract_corpus_statistics(list(hypotheses), refs), dtype=np.float64)
    baseline_stats = np.asarray(metric._extract_corpus_statistics(list(baseline), refs), dtype=np.float64)
    delta = (metric._compute_score_from_stats(system_stats.sum(0)).score
             - metric._compute_score_from_stats(baseline_stats.sum(0)).score)
    draws = np.random.default_rng(seed).integers(0, len(references), size=(n_bootstrap, len(references)))
    deltas = np.array([metric._compute_score_from_stats(system_stats[d].sum(0)).score
                       - metric._compute_score_from_stats(baseline_stats[d].sum(0)).score for d in draws])
    low, high = np.percentile(deltas, [2.5, 97.5])
    signature = f"paired-bs:{n_bootstrap}|seed:{seed}|{bleu_signature(lowercase, tokenize)}"
    return PairedDifference(float(delta), float(low), float(high), signature)


def chrf_pp_score(hypotheses: Sequence[str], references: Sequence[str], lowercase: bool = False,
                  n_bootstrap: int = 0) -> TextScore:
    """sacreBLEU chrF++ (character 6-grams plus word 2-grams, beta 2), with signature."""
    return _score(chrf_pp_metric(lowercase), hypotheses, references, n_bootstrap)


def chrf_pp(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacreBLEU chrF++ (0-100); equal to `sacrebleu REF -i HYP -m chrf --chrf-word-order 2 -b`."""
    return chrf_pp_score(hypotheses, references).score


#: Bumped when the legacy pipeline's tokenisation changes (it is in `legacy_signature`): 2 = final dots split
#: after nonbreaking prefixes too, as tokenizer.perl does since moses-smt/mosesdecoder@9fc964da7 (2018-11).
LEGACY_TOKENIZER_VERSION = "2"
_FINAL_DOT = re.compile(r"^(\S+)\.$")


@lru_cache(maxsize=8)
def _moses(lang: str):
    from sacremoses import MosesTokenizer

    class PerlMosesTokenizer(MosesTokenizer):
        """sacremoses with the current tokenizer.perl's rule for the last word of a line.

        Since mosesdecoder@9fc964da7 ("split final dots unconditionally", 2018-11) tokenizer.perl splits the dot
        off the last word whatever it is ("usw." -> "usw .", "e.g." -> "e.g ."); sacremoses still applies the
        nonbreaking-prefix tests to it. Only that word is changed: the rest of sacremoses is kept as it is.
        """

        def handles_nonbreaking_prefixes(self, text: str) -> str:
            tokens = super().handles_nonbreaking_prefixes(text).split(" ")
            # super() returns its tokens joined by single spaces; a last token it kept whole still ends in "."
            match = _FINAL_DOT.search(tokens[-1])
            if match:
                tokens[-1] = match.group(1) + " ."
            return " ".join(tokens)

    return PerlMosesTokenizer(lang=lang)


def moses_tokenize(line: str, lang: str) -> str:
    """Moses `tokenizer.perl -l LANG` (no aggressive hyphen splitting), via sacremoses.

    >>> moses_tokenize("Ich kaufe Äpfel, Birnen usw.", "de")
    'Ich kaufe Äpfel , Birnen usw .'

    The last word's dot is split off unconditionally, as tokenizer.perl does since 2018-11 (sacremoses keeps
    "usw."). Entities are not escaped: escaping maps one token to one token, so it cannot change BLEU.
    """
    return _moses(lang).tokenize(line, escape=False, return_str=True, aggressive_dash_splits=False)


def split_compounds(line: str) -> str:
    """`a-b` -> `a ##AT##-##AT## b`, with the same non-overlapping left-to-right matching as perl's s///g."""
    return _COMPOUND.sub(r"\1 ##AT##-##AT## \2", line)


def legacy_tokenize(lines: Sequence[str], lang: str, compound_split: bool, lowercase: bool = False) -> list[str]:
    """The legacy pipeline's preprocessing of one side: (lower-case,) Moses tokenise, (compound split)."""
    out = []
    for line in lines:
        text = moses_tokenize(line.lower() if lowercase else line, lang)
        out.append(split_compounds(text) if compound_split else text)
    return out


def legacy_tokenized_bleu_score(hypotheses: Sequence[str], references: Sequence[str], lang: str,
                                compound_split: bool, lowercase: bool = False) -> TextScore:
    """Tokenized BLEU as NAT papers report it (multi-bleu.perl / fairseq-score on Moses-tokenized text).

    Both sides go through `legacy_tokenize`, then sacreBLEU scores them with `tokenize='none'`,
    no smoothing, `force=True`. The signature says which pipeline produced the number.
    """
    check_parallel(hypotheses, references)
    hyp = legacy_tokenize(hypotheses, lang, compound_split, lowercase)
    ref = legacy_tokenize(references, lang, compound_split, lowercase)
    result = _legacy_metric().corpus_score(hyp, [ref])
    return TextScore(result.score, legacy_signature(lang, compound_split, lowercase))


def _legacy_metric() -> BLEU:
    return BLEU(tokenize="none", smooth_method="none", force=True)


def legacy_signature(lang: str, compound_split: bool, lowercase: bool = False) -> str:
    """Which legacy pipeline produced a tokenized BLEU, followed by the sacreBLEU signature of its scoring."""
    return (f"legacy-tok-bleu:{LEGACY_TOKENIZER_VERSION}|moses:{lang}|sacremoses:{_sacremoses_version()}|"
            f"compound-split:{'yes' if compound_split else 'no'}|lc:{'yes' if lowercase else 'no'}|"
            f"{_signature(_legacy_metric())}")


def legacy_tokenized_bleu(hypotheses: Sequence[str], references: Sequence[str], lang: str = "de",
                          compound_split: bool | None = None) -> float:
    """Legacy tokenized BLEU (compound splitting on by default for German targets, as in the En-De papers)."""
    if compound_split is None:
        compound_split = lang == "de"
    return legacy_tokenized_bleu_score(hypotheses, references, lang, compound_split).score


def _sacremoses_version() -> str:
    from importlib.metadata import version

    return version("sacremoses")


def sacrebleu_version() -> str:
    return sacrebleu.__version__
