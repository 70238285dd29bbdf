"""Flowtron's text frontend: `flowtron_cleaners`, ARPAbet substitution from CMUdict, and the 185-symbol table.

Follows NVIDIA/flowtron@d149bc4 `text/` (MIT, from keithito/tacotron) and `data.py`'s `get_text`, checked
against upstream's own functions by the golden test. Number words come from `inflect` (the library upstream
calls); the rules around it (years read in pairs, "$" amounts, measurements, times, acronyms spelt letter by
letter) are Flowtron's own and are written here because no maintained library implements the same ones.

Inference text goes through: whitespace collapsed, hyphens between word characters -> spaces, "7:30pm" ->
"7 30 PM", numbers -> words, "No." -> "number", upper-case acronyms -> ARPAbet (the dictionary's reading, or
letter by letter). Then, word by word with probability `p_arpabet` (upstream's config: 0.5), a word found in
CMUdict with a single pronunciation and not a listed heteronym is replaced by `{ARPAbet}`. Symbols outside the
table are dropped (upstream's `_should_keep_symbol`). Unlike upstream, the word-by-word draws come from the
caller's `random.Random` (seeded per request) instead of the process-wide `random` state.

Data: CMUdict 0.07 as Flowtron ships it (`data/cmudict_dictionary`, 3.7 MB, CMU's BSD-style licence) is a
weight file (`flowtron-cmudict`, fetched from the pinned commit); Flowtron's heteronym list (3 KB, Apache-2.0,
`data/heteronyms`) is in the project as `flowtron_heteronyms.txt`.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache
from pathlib import Path

from harness.errors import ArbenchError

HETERONYMS_FILE = Path(__file__).with_name("flowtron_heteronyms.txt")

ARPABET = (
    "AA AA0 AA1 AA2 AE AE0 AE1 AE2 AH AH0 AH1 AH2 AO AO0 AO1 AO2 AW AW0 AW1 AW2 AY AY0 AY1 AY2 B CH D DH EH EH0 "
    "EH1 EH2 ER ER0 ER1 ER2 EY EY0 EY1 EY2 F G HH IH IH0 IH1 IH2 IY IY0 IY1 IY2 JH K L M N NG OW OW0 OW1 OW2 OY "
    "OY0 OY1 OY2 P R S SH T TH UH UH0 UH1 UH2 UW UW0 UW1 UW2 V W Y Z ZH").split()
_ARPABET_SET = frozenset(ARPABET)
#: punctuation, maths, special, accented, digits, letters, then "@" + each ARPAbet symbol: 185 symbols.
SYMBOLS = (list("!'\",.:;? " "#%&*+-/[]()" "_@©°½—₩€$" "áçéêëñöøćž" "0123456789")
           + [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
           + ["@" + s for s in ARPABET])
SYMBOL_ID = {s: i for i, s in enumerate(SYMBOLS)}
_SKIPPED = {"_", "~"}


# -- CMUdict -----------------------------------------------------------------------------------------------
def parse_cmudict(path: Path, keep_ambiguous: bool = False) -> dict[str, list[str]]:
    """Word (upper case) -> pronunciations, read as Flowtron reads its copy: lines starting with A-Z or an
    apostrophe, word and pronunciation separated by two spaces, "(n)" alternates merged, pronunciations with a
    symbol outside ARPAbet dropped; with `keep_ambiguous=False` (upstream's setting) only words left with one
    pronunciation are kept."""
    entries: dict[str, list[str]] = {}
    try:
        lines = Path(path).read_text(encoding="latin-1").splitlines(keepends=True)
    except OSError as exc:
        raise ArbenchError(f"cannot read the CMUdict file {path}: {exc}") from exc
    for line in lines:
        if not line or not ("A" <= line[0] <= "Z" or line[0] == "'"):
            continue
        parts = line.split("  ")
        if len(parts) < 2:
            raise ArbenchError(f"{path} is not CMUdict 0.07 (line {line.strip()[:60]!r} has no two-space separator)")
        phones = parts[1].strip().split(" ")
        if all(p in _ARPABET_SET for p in phones):
            entries.setdefault(re.sub(r"\([0-9]+\)", "", parts[0]), []).append(" ".join(phones))
    if not keep_ambiguous:
        entries = {word: pron for word, pron in entries.items() if len(pron) == 1}
    return entries


@lru_cache(maxsize=4)
def load_cmudict(path: str) -> dict[str, list[str]]:
    return parse_cmudict(Path(path))


@lru_cache(maxsize=1)
def heteronyms() -> frozenset[str]:
    """Flowtron's list, as upstream reads it (one entry per line; compared with the lower-cased word, so its
    capitalised entries never match, as upstream)."""
    return frozenset(line.rstrip() for line in HETERONYMS_FILE.read_text(encoding="utf-8").splitlines())


# -- numbers (text/numbers.py) -----------------------------------------------------------------------------
_LARGE = "(trillion|billion|million|thousand|hundred)"
_MEASURE_WORD = {"f": "fahrenheit", "c": "celsius", "k": "thousand", "d": "d"}
_COMMA_NUMBER = re.compile(r"([0-9][0-9\,]+[0-9])")
_DECIMAL = re.compile(r"([0-9]+\.[0-9]+)")
_POUNDS = re.compile(r"£([0-9\,]*[0-9]+)")
_DOLLARS = re.compile(r"\$([0-9\.\,]*[0-9]+[ ]?{}?)".format(_LARGE), re.IGNORECASE)
_MEASUREMENT = re.compile(r"([0-9\.\,]*[0-9]+(\s)?(f|c|k|d)\b)", re.IGNORECASE)
_ORDINAL = re.compile(r"[0-9]+(st|nd|rd|th)")
_NUMBER = re.compile(r"[0-9]+'s|[0-9]+")


@lru_cache(maxsize=1)
def _inflect():
    try:
        import inflect
    except ImportError as exc:
        raise ArbenchError("Flowtron's text frontend needs `inflect` (pip install inflect).") from exc
    return inflect.engine()


def _words(number, **options) -> str:
    return _inflect().number_to_words(number, **options)


def _dollars(m: re.Match) -> str:
    match = m.group(1)
    parts = match.split(" ")
    if len(parts) == 2 and parts[1] and parts[1] in _LARGE:  # "$5 million": a substring test, as upstream
        return f"{parts[0]} {parts[1]} dollars "
    parts = parts[0].split(".")
    if len(parts) > 2:
        return match + " dollars"
    dollars = int(parts[0]) if parts[0] else 0
    cents = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    dollar_unit = "dollar" if dollars == 1 else "dollars"
    cent_unit = "cent" if cents == 1 else "cents"
    if dollars and cents:
        return f"{_words(dollars)} {dollar_unit}, {_words(cents)} {cent_unit} "
    if dollars:
        return f"{_words(dollars)} {dollar_unit} "
    if cents:
        return f"{_words(cents)} {cent_unit} "
    return "zero dollars"


def _measurement(m: re.Match) -> str:
    _, number, unit = re.split(r"(\d+(?:\.\d+)?)", m.group(0))
    return f"{_words(number)} {_MEASURE_WORD[''.join(unit.split()).lower()]}"


def _number(m: re.Match) -> str:
    _, digits, suffix = re.split(r"(\d+(?:'\d+)?)", m.group(0))
    num = int(digits)
    if 1000 < num < 3000:  # read like a year
        if num == 2000:
            text = "two thousand"
        elif 2000 < num < 2010:
            text = "two thousand " + _words(num % 100)
        elif num % 100 == 0:
            text = _words(num // 100) + " hundred"
        else:
            text = re.sub("-", " ", _words(num, andword="", zero="oh", group=2).replace(", ", " "))
    else:
        text = re.sub(",", "", re.sub("-", " ", _words(num, andword="")))
    if suffix == "'s" and text[-1] == "y":
        text = text[:-1] + "ies"
    return text


def normalize_numbers(text: str) -> str:
    text = _COMMA_NUMBER.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _POUNDS.sub(r"\1 pounds", text)
    text = _DOLLARS.sub(_dollars, text)
    text = _DECIMAL.sub(lambda m: m.group(1).replace(".", " point "), text)
    text = _ORDINAL.sub(lambda m: _words(m.group(0)), text)
    text = _MEASUREMENT.sub(_measurement, text)
    return _NUMBER.sub(_number, text)


# -- times, abbreviations, acronyms (text/datestime.py, cleaners.py, acronyms.py) ---------------------------
_AMPM = re.compile(r"([0-9]|0[0-9]|1[0-9]|2[0-3]):?([0-5][0-9])?\s*([AaPp][Mm]\b)")


def _ampm(m: re.Match) -> str:
    hour, minutes, suffix = m.groups(0)  # a missing group is 0, as upstream
    text = hour if minutes in (0, "0", "00") else f"{hour} {minutes}"
    return text + {"a": " AM", "p": " PM"}.get(suffix[0], "")


def normalize_times(text: str) -> str:
    text = _AMPM.sub(_ampm, text)
    return re.sub(r"([0-9]|0[0-9]|1[0-9]|2[0-3]):([0-5][0-9])?", r"\1 \2", text)


_LETTER_ARPABET = {
    "A": "EY1", "B": "B IY1", "C": "S IY1", "D": "D IY1", "E": "IY1", "F": "EH1 F", "G": "JH IY1", "H": "EY1 CH",
    "I": "AY1", "J": "JH EY1", "K": "K EY1", "L": "EH1 L", "M": "EH1 M", "N": "EH1 N", "O": "OW1", "P": "P IY1",
    "Q": "K Y UW1", "R": "AA1 R", "S": "EH1 S", "T": "T IY1", "U": "Y UW1", "V": "V IY1", "X": "EH1 K S",
    "Y": "W AY1", "W": "D AH1 B AH0 L Y UW0", "Z": "Z IY1", "s": "Z"}
_ACRONYM = re.compile(r"([A-Z][A-Z]+)s?|([A-Z]\.([A-Z]\.)+s?)")


def normalize_acronyms(text: str, cmudict: dict[str, list[str]]) -> str:
    def expand(m: re.Match) -> str:
        acronym = "".join(m.group(0).replace(".", "").split())
        known = cmudict.get(acronym.upper())
        if known is not None:
            return "{" + known[0] + "}"
        letters = ["{" + _LETTER_ARPABET[c] + "}" for c in acronym]
        if letters[-1] == "{Z}" and len(letters) > 1:  # plural "s" joins the last letter
            letters[-2] = letters[-2][:-1] + " Z}"
            del letters[-1]
        return " ".join(letters)

    return _ACRONYM.sub(expand, text)


def flowtron_cleaners(text: str, cmudict: dict[str, list[str]]) -> str:
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"(?<=\w)(-)(?=\w)", " ", text)
    text = normalize_numbers(normalize_times(text))
    text = re.sub(r"\bno\.", "number", text, flags=re.IGNORECASE)
    return normalize_acronyms(text, cmudict)


# -- ARPAbet substitution and the symbol sequence (text/__init__.py, data.py) ------------------------------
_POSSESSIVE = re.compile(r"(?=\S*['])([a-zA-Z'-]+)")


def word_to_arpabet(word: str, cmudict: dict[str, list[str]]) -> str:
    """`{ARPAbet}` for a dictionary word (leading/trailing punctuation kept outside, "'s" read as Z), else the
    word unchanged."""
    start = re.match(r"\A\W+", word)
    start = start.group(0) if start else ""
    word = word[len(start):]
    end = re.search(r"\W+\Z", word)
    end = end.group(0) if end else ""
    word = word[:len(word) - len(end)]
    suffix = ""
    if _POSSESSIVE.match(word) is not None and word.lower() != "it's" and word.lower()[-1] == "s":
        word, suffix = word[:-2], " Z"
    found = None if word.lower() in heteronyms() else cmudict.get(word.upper())
    return start + "{%s}" % (found[0] + suffix) + end if found is not None else start + word + end


def symbols_to_ids(text: str) -> list[int]:
    """Symbol ids of text with `{ARPAbet}` groups; characters outside the table are dropped."""
    ids: list[int] = []
    while text:
        m = re.match(r"(.*?)\{(.+?)\}(.*)", text)
        if m is None:
            ids += [SYMBOL_ID[c] for c in text if c in SYMBOL_ID and c not in _SKIPPED]
            break
        ids += [SYMBOL_ID[c] for c in m.group(1) if c in SYMBOL_ID and c not in _SKIPPED]
        ids += [SYMBOL_ID["@" + p] for p in m.group(2).split() if "@" + p in SYMBOL_ID]
        text = m.group(3)
    return ids


def text_to_ids(text: str, cmudict: dict[str, list[str]], p_arpabet: float, rng: random.Random) -> list[int]:
    """Cleaned text, with each word replaced by its ARPAbet when `rng.random() < p_arpabet`, as symbol ids."""
    cleaned = flowtron_cleaners(text, cmudict)
    words = re.findall(r"\S*\{.*?\}\S*|\S+", cleaned)
    return symbols_to_ids(" ".join(word_to_arpabet(w, cmudict) if rng.random() < p_arpabet else w for w in words))
