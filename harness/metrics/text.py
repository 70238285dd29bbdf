"""Translation metrics: sacreBLEU BLEU and chrF++ with their signatures, and the legacy "tokenized BLEU".

The primary scores are sacreBLEU's (detokenized output, the metric's own tokenisation, its signature
stored beside the number). `legacy_tokenized_bleu_score` reproduces the number non-autoregressive MT papers
report, so that a user can compare with them: Moses tokenisation of hypothesis and reference, for
En-De the tensor2tensor/fairseq compound splitting (`a-b` -> `a ##AT##-##AT## b`), then BLEU with no
further tokenisation and no smoothing (as multi-bleu.perl / fairseq-score). It is labelled legacy
because the numbers it gives are only comparable when every step above is identical.

Each metric has one public shape, as torchmetrics has: a function for one call (`bleu_score`, `chrf_pp_score`,
`legacy_tokenized_bleu_score`: hypotheses first, then references, options by keyword, a `TextScore` back) and an
accumulator class (`BLEUScore`, `CHRFppScore`, `LegacyTokenizedBLEUScore`: options in the constructor,
`update(hypotheses, references)` per batch, `compute()`, and `signature` known before any update). Bad input
raises `harness.errors.InputError`.
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


def _bleu(tokenize: str, lowercase: bool) -> BLEU:
    """sacreBLEU's BLEU with its defaults (exp smoothing, 4-grams) and the given tokenizer."""
    return BLEU(tokenize=tokenize, lowercase=lowercase)


def _chrf_pp(lowercase: bool) -> CHRF:
    """sacreBLEU's chrF++: character 6-grams plus word 2-grams, beta 2."""
    return CHRF(word_order=2, lowercase=lowercase)


def _legacy_bleu() -> BLEU:
    return BLEU(tokenize="none", smooth_method="none", force=True)


def _signature(metric, n_bootstrap: int = 0) -> str:
    # sacreBLEU knows its signature (reference count, bootstrap settings) only after scoring something.
    metric.corpus_score(["x"], [["x"]], n_bootstrap=max(1, n_bootstrap))
    return str(metric.get_signature())


def _check_bootstrap(n_bootstrap: int) -> None:
    if not isinstance(n_bootstrap, int) or n_bootstrap < 0:
        raise InputError(f"n_bootstrap must be an integer >= 0 (0 = no confidence interval); got {n_bootstrap!r}.")


def _score(metric, hypotheses: Sequence[str], references: Sequence[str], n_bootstrap: int) -> TextScore:
    check_parallel(hypotheses, references)
    result = metric.corpus_score(list(hypotheses), [list(references)], n_bootstrap=max(1, n_bootstrap))
    signature = str(metric.get_signature())
    if n_bootstrap > 1:
        return TextScore(result.score, signature, result._mean - result._ci, result._mean + result._ci)
    return TextScore(result.score, signature)


class _CorpusScore:
    """Shared part of the corpus-level text metrics: `update` keeps the sentence pairs in order, `compute`
    scores the whole corpus at once.

    Corpus BLEU and chrF are not averages of per-batch numbers (their n-gram statistics are pooled over the
    corpus, and the bootstrap resamples sentences), so the accumulator keeps the sentences themselves: the
    result is the one-call function's on the concatenation, whatever the batch sizes. This is plain Python
    rather than a `torchmetrics.Metric` because its states would be lists of strings, which torchmetrics
    cannot reduce across ranks; translation is scored on rank 0 from the gathered shards.
    """

    #: Name, unit and version of the stored number (`harness.metrics.base.MetricValue`).
    metric_name = ""
    unit = "BLEU"
    version = "1"
    higher_is_better = True

    def __init__(self):
        self.hypotheses: list[str] = []
        self.references: list[str] = []

    def update(self, hypotheses: Sequence[str], references: Sequence[str]) -> None:
        """Add a batch of hypotheses, one per reference line (checked as by `check_parallel`; an empty batch,
        e.g. a rank with nothing to score, adds nothing)."""
        if len(hypotheses) == 0 and len(references) == 0:
            return
        check_parallel(hypotheses, references)
        self.hypotheses.extend(hypotheses)
        self.references.extend(references)

    def reset(self) -> None:
        self.hypotheses, self.references = [], []

    def compute(self) -> TextScore:
        raise NotImplementedError

    @property
    def signature(self) -> str:
        raise NotImplementedError


class BLEUScore(_CorpusScore):
    """sacreBLEU corpus BLEU as an accumulator: `update(hypotheses, references)` per batch, `compute()` once.

    Args:
        tokenize: sacreBLEU's tokenizer (`13a`, `intl`, `zh`, `char`, `none`, ...).
        lowercase: lower-case both sides before scoring.
        n_bootstrap: bootstrap resamples for a 95% interval (sacreBLEU's `--confidence-n`); 0 = none.

    Raises:
        InputError: when `n_bootstrap` is negative, or (from `update`/`compute`) when the hypotheses and
            references are not two equally long lists of one-line strings.

    Example:
        >>> metric = BLEUScore()
        >>> metric.update(["the cat sat on the mat"], ["the cat sat on the mat"])
        >>> metric.update(["a dog"], ["the dog"])
        >>> round(metric.compute().score, 2)
        92.41
        >>> metric.signature.split("|")[:5]
        ['nrefs:1', 'case:mixed', 'eff:no', 'tok:13a', 'smooth:exp']
    """

    metric_name = "bleu"

    def __init__(self, *, tokenize: str = "13a", lowercase: bool = False, n_bootstrap: int = 0):
        super().__init__()
        _check_bootstrap(n_bootstrap)
        self.tokenize, self.lowercase, self.n_bootstrap = tokenize, lowercase, n_bootstrap

    def compute(self) -> TextScore:
        """Corpus BLEU (0-100) of every pair given so far, with its signature and interval."""
        return _score(_bleu(self.tokenize, self.lowercase), self.hypotheses, self.references, self.n_bootstrap)

    @property
    def signature(self) -> str:
        """The sacreBLEU signature `compute` reports (one reference), known before any update."""
        return _signature(_bleu(self.tokenize, self.lowercase), self.n_bootstrap)


def bleu_score(hypotheses: Sequence[str], references: Sequence[str], *, tokenize: str = "13a",
               lowercase: bool = False, n_bootstrap: int = 0) -> TextScore:
    """sacreBLEU corpus BLEU of detokenized hypotheses against one reference stream, with its signature.

    Equal to `sacrebleu REF -i HYP -m bleu -b --tokenize TOKENIZE`.

    Args:
        hypotheses: one detokenized output sentence per reference line.
        references: the reference sentences, in the same order.
        tokenize: sacreBLEU's tokenizer (`13a`, `intl`, `zh`, `char`, `none`, ...).
        lowercase: lower-case both sides before scoring.
        n_bootstrap: bootstrap resamples for a 95% interval; 0 = none.

    Returns:
        A `TextScore`: `score` (0-100), the sacreBLEU `signature`, and `ci_low`/`ci_high` when
        `n_bootstrap` > 1.

    Raises:
        InputError: when the lists differ in length, are empty, hold a non-string or a line break, or
            `n_bootstrap` is negative.

    Example:
        >>> result = bleu_score(["the cat sat on the mat"], ["the cat sat on a mat"])
        >>> round(result.score, 2), result.signature.split("|")[3]
        (53.73, 'tok:13a')
    """
    metric = BLEUScore(tokenize=tokenize, lowercase=lowercase, n_bootstrap=n_bootstrap)
    metric.update(hypotheses, references)
    return metric.compute()


class CHRFppScore(_CorpusScore):
    """sacreBLEU chrF++ (character 6-grams plus word 2-grams, beta 2) as an accumulator.

    Args:
        lowercase: lower-case both sides before scoring.
        n_bootstrap: bootstrap resamples for a 95% interval; 0 = none.

    Raises:
        InputError: as `BLEUScore`.

    Example:
        >>> metric = CHRFppScore()
        >>> metric.update(["the cat sat on the mat"], ["the cat sat on a mat"])
        >>> round(metric.compute().score, 2)
        72.03
        >>> metric.signature.split("|")[:6]
        ['nrefs:1', 'case:mixed', 'eff:yes', 'nc:6', 'nw:2', 'space:no']
    """

    metric_name = "chrf_pp"
    unit = "chrF++"

    def __init__(self, *, lowercase: bool = False, n_bootstrap: int = 0):
        super().__init__()
        _check_bootstrap(n_bootstrap)
        self.lowercase, self.n_bootstrap = lowercase, n_bootstrap

    def compute(self) -> TextScore:
        """Corpus chrF++ (0-100) of every pair given so far, with its signature and interval."""
        return _score(_chrf_pp(self.lowercase), self.hypotheses, self.references, self.n_bootstrap)

    @property
    def signature(self) -> str:
        """The sacreBLEU signature `compute` reports (one reference), known before any update."""
        return _signature(_chrf_pp(self.lowercase), self.n_bootstrap)


def chrf_pp_score(hypotheses: Sequence[str], references: Sequence[str], *, lowercase: bool = False,
                  n_bootstrap: int = 0) -> TextScore:
    """sacreBLEU chrF++ of detokenized hypotheses against one reference stream, with its signature.

    Equal to `sacrebleu REF -i HYP -m chrf --chrf-word-order 2 -b`.

    Args:
        hypotheses: one detokenized output sentence per reference line.
        references: the reference sentences, in the same order.
        lowercase: lower-case both sides before scoring.
        n_bootstrap: bootstrap resamples for a 95% interval; 0 = none.

    Returns:
        A `TextScore` (score 0-100, signature, interval when `n_bootstrap` > 1).

    Raises:
        InputError: as `bleu_score`.

    Example:
        >>> round(chrf_pp_score(["the cat sat on the mat"], ["the cat sat on a mat"]).score, 2)
        72.03
    """
    metric = CHRFppScore(lowercase=lowercase, n_bootstrap=n_bootstrap)
    metric.update(hypotheses, references)
    return metric.compute()


@dataclass(frozen=True)
class PairedDifference:
    """BLEU(system) - BLEU(baseline) with a paired bootstrap 95% interval (percentiles)."""

    delta: float
    ci_low: float
    ci_high: float
    signature: str


def paired_bleu_difference(hypotheses: Sequence[str], baseline: Sequence[str], references: Sequence[str], *,
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
    metric = _bleu(tokenize, lowercase)
    refs = [list(references)]
    system_stats = np.asarray(metric._extract_corpus_statistics(list(hypotheses), refs), dtype=np.float64)
    baseline_stats = np.asarray(metric._extract_corpus_statistics(list(baseline), refs), dtype=np.float64)
    delta = (metric._compute_score_from_stats(system_stats.sum(0)).score
             - metric._compute_score_from_stats(baseline_stats.sum(0)).score)
    draws = np.random.default_rng(seed).integers(0, len(references), size=(n_bootstrap, len(references)))
    deltas = np.array([metric._compute_score_from_stats(system_stats[d].sum(0)).score
                       - metric._compute_score_from_stats(baseline_stats[d].sum(0)).score for d in draws])
    low, high = np.percentile(deltas, [2.5, 97.5])
    signature = f"paired-bs:{n_bootstrap}|seed:{seed}|{BLEUScore(tokenize=tokenize, lowercase=lowercase).signature}"
    return PairedDifference(float(delta), float(low), float(high), signature)


#: Bumped when the legacy pipeline's tokenisation changes (it is in `LegacyTokenizedBLEUScore.signature`):
#: 2 = final dots split after nonbreaking prefixes too, as tokenizer.perl does since
#: moses-smt/mosesdecoder@9fc964da7 (2018-11).
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


class LegacyTokenizedBLEUScore(_CorpusScore):
    """Tokenized BLEU as NAT papers report it (multi-bleu.perl / fairseq-score on Moses-tokenized text), as an
    accumulator.

    Both sides go through `legacy_tokenize`, then sacreBLEU scores them with `tokenize='none'`, no smoothing,
    `force=True`. The signature says which pipeline produced the number; the version is
    `LEGACY_TOKENIZER_VERSION`.

    Args:
        lang: the target language, for Moses' tokenizer rules.
        compound_split: split hyphenated compounds (`a-b` -> `a ##AT##-##AT## b`); default: on for German, as
            in the En-De papers.
        lowercase: lower-case both sides first.

    Raises:
        InputError: as `BLEUScore`.

    Example:
        >>> metric = LegacyTokenizedBLEUScore(lang="de")
        >>> metric.update(["Das ist ein Test-Satz."], ["Das ist ein Test-Satz."])
        >>> round(metric.compute().score, 2)
        100.0
        >>> [part for part in metric.signature.split("|") if part.startswith(("moses", "compound"))]
        ['moses:de', 'compound-split:yes']
    """

    metric_name = "legacy_tok_bleu"
    version = LEGACY_TOKENIZER_VERSION

    def __init__(self, *, lang: str = "de", compound_split: bool | None = None, lowercase: bool = False):
        super().__init__()
        self.lang, self.lowercase = lang, lowercase
        self.compound_split = lang == "de" if compound_split is None else compound_split

    def compute(self) -> TextScore:
        """Legacy tokenized BLEU (0-100) of every pair given so far, with the pipeline's signature."""
        check_parallel(self.hypotheses, self.references)
        hyp = legacy_tokenize(self.hypotheses, self.lang, self.compound_split, self.lowercase)
        ref = legacy_tokenize(self.references, self.lang, self.compound_split, self.lowercase)
        return TextScore(_legacy_bleu().corpus_score(hyp, [ref]).score, self.signature)

    @property
    def signature(self) -> str:
        """Which legacy pipeline produced the number, followed by the sacreBLEU signature of its scoring."""
        return (f"legacy-tok-bleu:{LEGACY_TOKENIZER_VERSION}|moses:{self.lang}|sacremoses:{_sacremoses_version()}|"
                f"compound-split:{'yes' if self.compound_split else 'no'}|lc:{'yes' if self.lowercase else 'no'}|"
                f"{_signature(_legacy_bleu())}")


def legacy_tokenized_bleu_score(hypotheses: Sequence[str], references: Sequence[str], *, lang: str = "de",
                                compound_split: bool | None = None, lowercase: bool = False) -> TextScore:
    """Tokenized BLEU as NAT papers report it, in one call (see `LegacyTokenizedBLEUScore`).

    Args:
        hypotheses: one detokenized output sentence per reference line.
        references: the reference sentences, in the same order.
        lang: the target language, for Moses' tokenizer rules.
        compound_split: split hyphenated compounds; default: on for German.
        lowercase: lower-case both sides first.

    Returns:
        A `TextScore` (score 0-100, the pipeline's signature).

    Raises:
        InputError: as `bleu_score`.

    Example:
        >>> hyp, ref = ["Ein Test-Satz ."], ["Ein Test-Satz ."]
        >>> round(legacy_tokenized_bleu_score(hyp, ref, lang="de").score, 2)
        100.0
    """
    metric = LegacyTokenizedBLEUScore(lang=lang, compound_split=compound_split, lowercase=lowercase)
    metric.update(hypotheses, references)
    return metric.compute()


def _sacremoses_version() -> str:
    from importlib.metadata import version

    return version("sacremoses")


def sacrebleu_version() -> str:
    """The installed sacreBLEU's version (it is part of every signature)."""
    return sacrebleu.__version__
