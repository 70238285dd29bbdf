"""Word-level joint vocabulary and the tokenisation the bundled translators use.

Special symbols come first, in fairseq's dictionary order (`<s>`, `<pad>`, `</s>`, `<unk>`), followed
by `<mask>` (CMLM) and `<blank>` (CTC). A word vocabulary is enough for the closed lexicon of the
nat-mini corpus; translators for open-vocabulary test sets (WMT) need subwords and come in through the
sentence adapter.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Sequence

import torch

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>", "<blank>")


_TOKEN = re.compile(r"\w+(?:[-'’]\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = re.compile(r" ([.,;:!?)\]}])")
_NO_SPACE_AFTER = re.compile(r"([(\[{]) ")


def tokenize(text: str, lang: str = "") -> list[str]:
    """Words (hyphenated words and apostrophes kept whole) and punctuation marks.

    A regular expression rather than the Moses tokenizer: it gives the same tokens on the nat-mini
    corpus and is fast enough to tokenize the training set in a second.
    """
    return _TOKEN.findall(text)


def detokenize(tokens: Sequence[str], lang: str = "") -> str:
    """Inverse of `tokenize` for the punctuation it splits off."""
    return _NO_SPACE_AFTER.sub(r"\1", _NO_SPACE_BEFORE.sub(r"\1", " ".join(tokens)))


class Vocabulary:
    """Token <-> id mapping with fixed special ids."""

    bos, pad, eos, unk, mask, blank = range(len(SPECIALS))

    def __init__(self, tokens: Sequence[str]):
        if tuple(tokens[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with the special symbols {SPECIALS}")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_count: int = 1) -> "Vocabulary":
        counts = Counter(t for s in sentences for t in s)
        words = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        return cls(list(SPECIALS) + words)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.index.get(t, self.unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of `ids`, stopping at the end-of-sentence symbol and dropping other special ids."""
        out = []
        for i in ids:
            if i == self.eos:
                break
            if i >= len(SPECIALS):
                out.append(self.tokens[i])
        return out

    def batch(self, sequences: Sequence[Sequence[int]], bos: bool = False, eos: bool = False) -> torch.Tensor:
        """A right-padded LongTensor (B, T) of id sequences, optionally wrapped in <s> ... </s>."""
        rows = [([self.bos] if bos else []) + list(s) + ([self.eos] if eos else []) for s in sequences]
        out = torch.full((len(rows), max(1, max(len(r) for r in rows))), self.pad, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        return out
