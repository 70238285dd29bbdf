"""Speech metrics: word error rate under declared text normalisers, and speaker similarity.

WER is computed with jiwer (>= 4, `process_words`). Two normalisers are offered, applied to both the
reference and the hypothesis:

* ``"seed"``: Seed-TTS-eval's `process_one` for English: delete (not replace by a space) every character
  of ``zhon.hanzi.punctuation + string.punctuation`` except the ASCII apostrophe, which is kept; then
  ``str.replace("  ", " ")``, which halves every run of spaces (left to right, non-overlapping); then
  lower-case. No number normalisation.
* ``"whisper"``: OpenAI Whisper's `EnglishTextNormalizer` (numbers to digits, contractions expanded,
  British to American spelling), from the `openai-whisper` package.
* ``"none"``: the text as given (only whitespace splitting).

Two aggregations: corpus WER = sum(S + D + I) / sum(reference words) (what `wer` returns), and the mean
of per-utterance WERs (the Seed-TTS-eval / F5-TTS convention, `mean_utterance_wer`); `per_utterance_wer` gives
every utterance's alignment counts. `WordErrorRate` is the accumulator of both. As everywhere in
`harness.metrics`, hypotheses come first and references second, options by keyword, and bad input raises
`harness.errors.InputError`.
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Callable, Sequence

import jiwer
import torch
import torch.nn.functional as F

from harness.errors import InputError
from harness.metrics.base import Accumulator

NORMALIZERS = ("seed", "whisper", "none")
#: Bump when a normaliser's output can change.
#: seed 2: every double space is replaced, as Python's str.replace does (1 replaced only the first; the
#: words, and so every WER, are the same, only the normalised text in the per-utterance rows changes).
NORMALIZER_VERSIONS = {"seed": "2", "whisper": "1", "none": "1"}


@lru_cache(maxsize=1)
def _seed_deleted_characters() -> frozenset[str]:
    from zhon.hanzi import punctuation as hanzi_punctuation

    return frozenset(hanzi_punctuation + string.punctuation) - {"'"}


def seed_normalize(text: str) -> str:
    """Seed-TTS-eval's English normalisation (see the module docstring).

    Args:
        text: one utterance.

    Returns:
        The text with punctuation other than the ASCII apostrophe deleted, double spaces halved, lower-cased.

    Example:
        >>> seed_normalize("“Hello,” it’s  Dr. O'Neil!")
        "hello its dr o'neil"
    """
    deleted = _seed_deleted_characters()
    text = "".join(ch for ch in text if ch not in deleted)
    return text.replace("  ", " ").lower()


@lru_cache(maxsize=1)
def _whisper_normalizer() -> Callable[[str], str]:
    from whisper.normalizers import EnglishTextNormalizer

    return EnglishTextNormalizer()


def whisper_normalize(text: str) -> str:
    """OpenAI Whisper's English text normaliser."""
    return _whisper_normalizer()(text)


def normalize(text: str, normalizer: str = "seed") -> str:
    """`text` under one of `NORMALIZERS`.

    Args:
        text: one utterance.
        normalizer: `"seed"`, `"whisper"` or `"none"`.

    Returns:
        The normalised text.

    Raises:
        InputError: for an unknown normaliser.

    Example:
        >>> normalize("Hello, World!", "seed")
        'hello world'
    """
    if normalizer == "seed":
        return seed_normalize(text)
    if normalizer == "whisper":
        return whisper_normalize(text)
    if normalizer == "none":
        return text
    raise InputError(f"unknown normalizer {normalizer!r}; choose one of {', '.join(NORMALIZERS)}")


@dataclass(frozen=True)
class UtteranceWER:
    """One utterance's alignment counts after normalisation; `wer` = (S + D + I) / reference words."""

    reference: str
    hypothesis: str
    substitutions: int
    deletions: int
    insertions: int
    hits: int

    @property
    def reference_words(self) -> int:
        return self.substitutions + self.deletions + self.hits

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        return self.errors / self.reference_words

    def as_row(self) -> dict:
        return {**asdict(self), "errors": self.errors, "reference_words": self.reference_words, "wer": self.wer}


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if isinstance(references, str) or isinstance(hypotheses, str):
        raise InputError("hypotheses and references must be sequences of strings, one per utterance, "
                         "not single strings")
    if len(references) != len(hypotheses):
        raise InputError(f"{len(hypotheses)} hypotheses but {len(references)} references: "
                         f"give one of each per utterance")


def per_utterance_wer(hypotheses: Sequence[str], references: Sequence[str], *,
                      normalizer: str = "seed") -> list[UtteranceWER]:
    """Alignment counts of every (hypothesis, reference) pair after `normalizer`.

    Args:
        hypotheses: the transcripts of the generated speech, one per utterance.
        references: the texts that were to be spoken, in the same order.
        normalizer: one of `NORMALIZERS`, applied to both sides.

    Returns:
        One `UtteranceWER` per utterance (normalised texts, substitutions, deletions, insertions, hits).

    Raises:
        InputError: when the lists differ in length or are bare strings, the normaliser is unknown, or a
            reference normalises to no words (its WER is undefined).

    Example:
        >>> row = per_utterance_wer(["the cat sat"], ["The cat sat down."])[0]
        >>> row.deletions, row.wer
        (1, 0.25)
    """
    _check_pairs(hypotheses, references)
    rows = []
    for i, (hyp, ref) in enumerate(zip(hypotheses, references)):
        ref_n, hyp_n = normalize(ref, normalizer), normalize(hyp, normalizer)
        if not ref_n.split():
            raise InputError(f"reference {i} ({ref!r}) has no words after the {normalizer!r} normaliser: "
                             f"its WER is undefined; drop it or give it words")
        out = jiwer.process_words(ref_n, hyp_n)
        rows.append(UtteranceWER(ref_n, hyp_n, out.substitutions, out.deletions, out.insertions, out.hits))
    return rows


def corpus_wer(rows: Sequence[UtteranceWER]) -> float:
    """sum(S + D + I) / sum(reference words) over utterances.

    Args:
        rows: per-utterance counts from `per_utterance_wer`.

    Returns:
        The corpus WER as a fraction.

    Raises:
        InputError: when there are no rows.

    Example:
        >>> corpus_wer(per_utterance_wer(["a b", "c"], ["a b", "d e"]))
        0.5
    """
    if not rows:
        raise InputError("corpus WER of no utterances: give at least one hypothesis and reference")
    return sum(r.errors for r in rows) / sum(r.reference_words for r in rows)


def wer(hypotheses: Sequence[str], references: Sequence[str], *, normalizer: str = "seed") -> float:
    """Corpus WER (a fraction, not a percentage) of hypotheses against references after `normalizer`.

    Args:
        hypotheses: the transcripts, one per utterance.
        references: the texts that were to be spoken, in the same order.
        normalizer: one of `NORMALIZERS`, applied to both sides.

    Returns:
        sum(S + D + I) / sum(reference words).

    Raises:
        InputError: as `per_utterance_wer`, and for empty lists.

    Example:
        >>> wer(["hello there world", "a b"], ["hello world", "a b c"])
        0.4
    """
    return corpus_wer(per_utterance_wer(hypotheses, references, normalizer=normalizer))


def mean_utterance_wer(hypotheses: Sequence[str], references: Sequence[str], *, normalizer: str = "seed") -> float:
    """Mean of per-utterance WERs (the Seed-TTS-eval / F5-TTS aggregation).

    Args:
        hypotheses: the transcripts, one per utterance.
        references: the texts that were to be spoken, in the same order.
        normalizer: one of `NORMALIZERS`, applied to both sides.

    Returns:
        The mean over utterances of (S + D + I) / reference words.

    Raises:
        InputError: as `wer`.

    Example:
        >>> round(mean_utterance_wer(["hello there world", "a b"], ["hello world", "a b c"]), 6)  # (1/2 + 1/3) / 2
        0.416667
    """
    rows = per_utterance_wer(hypotheses, references, normalizer=normalizer)
    if not rows:
        raise InputError("mean WER of no utterances: give at least one hypothesis and reference")
    return sum(r.wer for r in rows) / len(rows)


class WordErrorRate(Accumulator):
    """Word error rate as an accumulator: corpus WER or the mean of per-utterance WERs.

    States are sums (errors, reference words, per-utterance WERs, utterances), so the result does not depend on
    the batch size or the number of ranks.

    Args:
        normalizer: one of `NORMALIZERS`, applied to both sides.
        aggregation: `"corpus"` (sum of errors / sum of reference words, `wer`) or `"utterance_mean"`
            (`mean_utterance_wer`).
        kwargs: passed to `torchmetrics.Metric` (e.g. `sync_on_compute=True`).

    Raises:
        InputError: for an unknown normaliser or aggregation, and (from `update`) as `per_utterance_wer`;
            `compute` before any update.

    Example:
        >>> metric = WordErrorRate(normalizer="seed")
        >>> metric.update(["hello there world"], ["hello world"])
        >>> metric.update(["a b"], ["a b c"])
        >>> round(float(metric.compute()), 6)
        0.4
    """

    metric_name = "wer"
    unit = "fraction"
    version = "1"
    higher_is_better = False
    description = "word error rate"

    def __init__(self, *, normalizer: str = "seed", aggregation: str = "corpus", **kwargs):
        super().__init__(**kwargs)
        if normalizer not in NORMALIZERS:
            raise InputError(f"unknown normalizer {normalizer!r}; choose one of {', '.join(NORMALIZERS)}")
        if aggregation not in ("corpus", "utterance_mean"):
            raise InputError(f"unknown WER aggregation {aggregation!r}; choose corpus or utterance_mean")
        self.normalizer, self.aggregation = normalizer, aggregation
        for name in ("errors", "words", "utterance_wer_sum", "utterances"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, hypotheses: Sequence[str], references: Sequence[str]) -> None:
        rows = per_utterance_wer(hypotheses, references, normalizer=self.normalizer)
        self.errors += sum(r.errors for r in rows)
        self.words += sum(r.reference_words for r in rows)
        self.utterance_wer_sum += sum(r.wer for r in rows)
        self.utterances += len(rows)

    def compute(self) -> torch.Tensor:
        if float(self.utterances) == 0:
            raise InputError("WER of no utterances: call update with at least one hypothesis and reference")
        if self.aggregation == "corpus":
            return self.errors / self.words
        return self.utterance_wer_sum / self.utterances


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two (N, D) embedding batches, in [-1, 1]; shape (N,).

    Args:
        a: (N, D) embeddings.
        b: (N, D) embeddings, row i compared with row i of `a`.

    Returns:
        (N,) float64 cosine similarities.

    Raises:
        InputError: when the two batches are not (N, D) of the same shape.

    Example:
        >>> a, b = torch.tensor([[1.0, 0.0], [3.0, 4.0]]), torch.tensor([[2.0, 0.0], [4.0, 3.0]])
        >>> cosine_similarity(a, b).tolist()
        [1.0, 0.96]
    """
    if a.shape != b.shape or a.dim() != 2:
        raise InputError(f"need two (N, D) embedding batches of the same shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    return F.cosine_similarity(a.double(), b.double(), dim=1, eps=1e-12)
