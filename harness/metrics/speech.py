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
of per-utterance WERs (the Seed-TTS-eval / F5-TTS convention), from `per_utterance_wer`.
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Callable, Sequence

import jiwer
import torch
import torch.nn.functional as F

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
    """Seed-TTS-eval's English normalisation (see the module docstring)."""
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
    """`text` under one of `NORMALIZERS`."""
    if normalizer == "seed":
        return seed_normalize(text)
    if normalizer == "whisper":
        return whisper_normalize(text)
    if normalizer == "none":
        return text
    raise ValueError(f"unknown normalizer {normalizer!r}; choose one of {', '.join(NORMALIZERS)}")


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


def _check_pairs(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if isinstance(references, str) or isinstance(hypotheses, str):
        raise TypeError("references and hypotheses must be sequences of strings, one per utterance")
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses: "
                         f"give one of each per utterance")


def per_utterance_wer(references: Sequence[str], hypotheses: Sequence[str],
                      normalizer: str = "seed") -> list[UtteranceWER]:
    """Alignment counts of every (reference, hypothesis) pair after `normalizer`.

    A reference that normalises to no words has no defined WER and raises ValueError.
    """
    _check_pairs(references, hypotheses)
    rows = []
    for i, (ref, hyp) in enumerate(zip(references, hypotheses)):
        ref_n, hyp_n = normalize(ref, normalizer), normalize(hyp, normalizer)
        if not ref_n.split():
            raise ValueError(f"reference {i} ({ref!r}) has no words after the {normalizer!r} normaliser")
        out = jiwer.process_words(ref_n, hyp_n)
        rows.append(UtteranceWER(ref_n, hyp_n, out.substitutions, out.deletions, out.insertions, out.hits))
    return rows


def corpus_wer(rows: Sequence[UtteranceWER]) -> float:
    """sum(S + D + I) / sum(reference words) over utterances."""
    if not rows:
        raise ValueError("corpus WER of no utterances")
    return sum(r.errors for r in rows) / sum(r.reference_words for r in rows)


def wer(references: Sequence[str], hypotheses: Sequence[str], normalizer: str = "seed") -> float:
    """Corpus WER (a fraction, not a percentage) of hypotheses against references after `normalizer`."""
    return corpus_wer(per_utterance_wer(references, hypotheses, normalizer))


def mean_utterance_wer(references: Sequence[str], hypotheses: Sequence[str], normalizer: str = "seed") -> float:
    """Mean of per-utterance WERs (the Seed-TTS-eval / F5-TTS aggregation)."""
    rows = per_utterance_wer(references, hypotheses, normalizer)
    return sum(r.wer for r in rows) / len(rows)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two (N, D) embedding batches, in [-1, 1]; shape (N,)."""
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"need two (N, D) embedding batches of the same shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    return F.cosine_similarity(a.double(), b.double(), dim=1, eps=1e-12)
