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
#: fairseq's Dictionary puts only these four first (then dict.txt's symbols).
FAIRSEQ_SPECIALS = SPECIALS[:4]


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


class FairseqDictionary(Vocabulary):
    """fairseq's dictionary layout as DA-Transformer's `TranslationDATDict` builds it (thu-coai/DA-Transformer
    `fs_plugins/tasks/translation_dat_dict.py`): `<s> <pad> </s> <unk>`, the symbols of dict.txt (for PDAT:
    BERT-base-uncased word pieces), then `seg_tokens` segment symbols `[P0]` ... (`--seg-tokens`, 32 for PDAT).

    The special ids (0, 1, 2, 3 as ours) keep their meaning; `special_ids` are the four and the segment
    symbols, which decoding drops. Segment symbols that dict.txt itself already holds are refused."""

    layout = "fairseq"

    def __init__(self, tokens: Sequence[str], seg_tokens: int = 0):
        if tuple(tokens[:len(FAIRSEQ_SPECIALS)]) != FAIRSEQ_SPECIALS:
            raise ValueError(f"a fairseq dictionary starts with {FAIRSEQ_SPECIALS}")
        expected = [f"[P{i}]" for i in range(seg_tokens)]
        if seg_tokens and list(tokens[len(tokens) - seg_tokens:]) != expected:
            raise ValueError(f"a fairseq dictionary with {seg_tokens} segment symbols ends with [P0] ... "
                             f"[P{seg_tokens - 1}]")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("a fairseq dictionary has each symbol once (dict.txt repeats one, or holds [P0] ...)")
        self.seg_tokens = seg_tokens
        self.special_ids = frozenset(range(len(FAIRSEQ_SPECIALS))) | frozenset(
            range(len(self.tokens) - seg_tokens, len(self.tokens)))

    @classmethod
    def from_dict_txt(cls, words: Sequence[str], seg_tokens: int = 0) -> FairseqDictionary:
        return cls(list(FAIRSEQ_SPECIALS) + list(words) + [f"[P{i}]" for i in range(seg_tokens)], seg_tokens)

    def decode(self, ids: Iterable[int]) -> list[str]:
        out = []
        for i in ids:
            if i == self.eos:
                break
            if i not in self.special_ids:
                out.append(self.tokens[i])
        return out


def vocabulary_from(tokens: Sequence[str], layout: str = "arbench", seg_tokens: int = 0) -> Vocabulary:
    """The vocabulary a checkpoint's metadata describes (`layout` absent: ours)."""
    if layout == "arbench":
        return Vocabulary(tokens)
    if layout == "fairseq":
        return FairseqDictionary(tokens, seg_tokens)
    raise ValueError(f"unknown vocabulary layout {layout!r} (arbench or fairseq)")


class BertUncasedPieces:
    """BERT-base-uncased tokenisation (what upstream's `process_bert_uncased.py` applies with transformers'
    `BertTokenizer`: lower-casing, accent stripping, punctuation split, greedy longest-match word pieces with
    `##` continuations) over a dictionary's own symbols, with Hugging Face `tokenizers`' implementation of it
    (no vocab.txt download: the word pieces are the dictionary's). Detokenising joins `##` pieces as BERT's
    decoder does (`cleanup`: no space before punctuation)."""

    def __init__(self, symbols: Sequence[str]):
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

        vocab = {s: i for i, s in enumerate(symbols)}
        unk = "[UNK]" if "[UNK]" in vocab else "<unk>"
        self._tok = Tokenizer(models.WordPiece(vocab, unk_token=unk, continuing_subword_prefix="##"))
        self._tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True,
                                                          handle_chinese_chars=True)
        self._tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        self._decoder = decoders.WordPiece(prefix="##", cleanup=True)

    def tokenize(self, text: str) -> list[str]:
        return self._tok.encode(text, add_special_tokens=False).tokens

    def detokenize(self, pieces: Sequence[str]) -> str:
        return self._decoder.decode(list(pieces))
