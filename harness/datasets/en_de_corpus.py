"""The `nat-mini` parallel corpus: a small rule-based English -> German translator over a controlled grammar.

The project ships this corpus instead of WMT data, which cannot be redistributed or downloaded offline.
Sentences are sampled from a phrase-structure grammar of English; a transfer system written here
translates them into German, with the phenomena that make translation non-trivial for a
non-autoregressive model:

* case, gender and number agreement of articles and adjectives (strong / weak / mixed declension);
* verb-second order after a fronted adverbial ("Today the dog sees ..." -> "Heute sieht der Hund ...");
* the verb bracket of the perfect tense ("has seen the cat" -> "hat die Katze gesehen");
* verb-final subordinate clauses after "dass";
* dative-before-accusative order of ditransitives ("gives the book to the child" -> "gibt dem Kind das Buch");
* negation placement ("does not see the cat" -> "sieht die Katze nicht");
* preposition + article contraction ("in the garden" -> "im Garten"), so lengths differ between sides;
* a few hyphenated compounds (E-Mail, U-Bahn), which the legacy compound-split BLEU splits.

Everything is deterministic for a seed; the lexicon is written here, so the corpus is the project's own
(MIT, like the code). It is a controlled-language benchmark, not a sample of natural text.
"""

from __future__ import annotations

import argparse
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

# English noun, plural, German noun, gender, German plural, German dative plural.
NOUNS = [
    ("dog", "dogs", "Hund", "m", "Hunde", "Hunden"),
    ("cat", "cats", "Katze", "f", "Katzen", "Katzen"),
    ("child", "children", "Kind", "n", "Kinder", "Kindern"),
    ("man", "men", "Mann", "m", "Männer", "Männern"),
    ("woman", "women", "Frau", "f", "Frauen", "Frauen"),
    ("teacher", "teachers", "Lehrer", "m", "Lehrer", "Lehrern"),
    ("student", "students", "Studentin", "f", "Studentinnen", "Studentinnen"),
    ("doctor", "doctors", "Arzt", "m", "Ärzte", "Ärzten"),
    ("farmer", "farmers", "Bauer", "m", "Bauern", "Bauern"),
    ("bird", "birds", "Vogel", "m", "Vögel", "Vögeln"),
    ("horse", "horses", "Pferd", "n", "Pferde", "Pferden"),
    ("friend", "friends", "Freund", "m", "Freunde", "Freunden"),
    ("neighbour", "neighbours", "Nachbarin", "f", "Nachbarinnen", "Nachbarinnen"),
    ("book", "books", "Buch", "n", "Bücher", "Büchern"),
    ("letter", "letters", "Brief", "m", "Briefe", "Briefen"),
    ("email", "emails", "E-Mail", "f", "E-Mails", "E-Mails"),
    ("apple", "apples", "Apfel", "m", "Äpfel", "Äpfeln"),
    ("car", "cars", "Auto", "n", "Autos", "Autos"),
    ("bicycle", "bicycles", "Fahrrad", "n", "Fahrräder", "Fahrrädern"),
    ("house", "houses", "Haus", "n", "Häuser", "Häusern"),
    ("door", "doors", "Tür", "f", "Türen", "Türen"),
    ("table", "tables", "Tisch", "m", "Tische", "Tischen"),
    ("picture", "pictures", "Bild", "n", "Bilder", "Bildern"),
    ("song", "songs", "Lied", "n", "Lieder", "Liedern"),
    ("key", "keys", "Schlüssel", "m", "Schlüssel", "Schlüsseln"),
    ("cake", "cakes", "Kuchen", "m", "Kuchen", "Kuchen"),
    ("flower", "flowers", "Blume", "f", "Blumen", "Blumen"),
    ("ticket", "tickets", "Fahrkarte", "f", "Fahrkarten", "Fahrkarten"),
    ("t-shirt", "t-shirts", "T-Shirt", "n", "T-Shirts", "T-Shirts"),
    ("bag", "bags", "Tasche", "f", "Taschen", "Taschen"),
]
ANIMATE = {"dog", "cat", "child", "man", "woman", "teacher", "student", "doctor", "farmer", "bird", "horse",
           "friend", "neighbour"}
# Places: English, German, gender (used after a dative preposition).
PLACES = [
    ("garden", "Garten", "m"), ("kitchen", "Küche", "f"), ("park", "Park", "m"), ("school", "Schule", "f"),
    ("station", "Bahnhof", "m"), ("village", "Dorf", "n"), ("city", "Stadt", "f"), ("museum", "Museum", "n"),
    ("subway", "U-Bahn", "f"), ("forest", "Wald", "m"),
]
# English preposition -> German dative preposition.
PREPOSITIONS = [("in", "in"), ("at", "an"), ("near", "neben"), ("behind", "hinter"), ("from", "von")]
CONTRACTIONS = {("in", "dem"): "im", ("an", "dem"): "am", ("von", "dem"): "vom"}
# English base, 3sg, past participle; German stem for 3sg / 3pl, past participle, auxiliary.
VERBS = [
    ("see", "sees", "seen", "sieht", "sehen", "gesehen"),
    ("find", "finds", "found", "findet", "finden", "gefunden"),
    ("buy", "buys", "bought", "kauft", "kaufen", "gekauft"),
    ("like", "likes", "liked", "mag", "mögen", "gemocht"),
    ("need", "needs", "needed", "braucht", "brauchen", "gebraucht"),
    ("carry", "carries", "carried", "trägt", "tragen", "getragen"),
    ("sell", "sells", "sold", "verkauft", "verkaufen", "verkauft"),
    ("paint", "paints", "painted", "malt", "malen", "gemalt"),
    ("hold", "holds", "held", "hält", "halten", "gehalten"),
    ("visit", "visits", "visited", "besucht", "besuchen", "besucht"),
    ("open", "opens", "opened", "öffnet", "öffnen", "geöffnet"),
    ("read", "reads", "read", "liest", "lesen", "gelesen"),
    ("write", "writes", "written", "schreibt", "schreiben", "geschrieben"),
    ("wash", "washes", "washed", "wäscht", "waschen", "gewaschen"),
    ("forget", "forgets", "forgotten", "vergisst", "vergessen", "vergessen"),
]
# Ditransitive verbs: "S gives O to R" -> "S gibt R(dative) O(accusative)".
DITRANSITIVE = [
    ("give", "gives", "given", "gibt", "geben", "gegeben"),
    ("show", "shows", "shown", "zeigt", "zeigen", "gezeigt"),
    ("send", "sends", "sent", "schickt", "schicken", "geschickt"),
]
# Objects a verb can take sensibly (None: any noun).
VERB_OBJECTS = {
    "read": {"book", "letter", "email", "ticket"},
    "write": {"book", "letter", "email", "song"},
    "open": {"door", "letter", "email", "bag", "book", "car", "house"},
    "paint": {"picture", "house", "door", "table", "flower", "horse", "bird", "car"},
    "wash": {"dog", "cat", "child", "horse", "car", "bicycle", "t-shirt", "table", "apple"},
    "visit": ANIMATE - {"bird"},
}
ADJECTIVES = [
    ("big", "groß"), ("small", "klein"), ("old", "alt"), ("young", "jung"), ("new", "neu"), ("red", "rot"),
    ("green", "grün"), ("beautiful", "schön"), ("tired", "müde"), ("happy", "froh"), ("heavy", "schwer"),
    ("cheap", "billig"), ("strange", "seltsam"), ("quiet", "leise"), ("clever", "klug"),
]
ADVERBS = [("today", "Heute"), ("tomorrow", "Morgen"), ("often", "Oft"), ("sometimes", "Manchmal"),
           ("now", "Jetzt"), ("usually", "Meistens")]
SAY_VERBS = [("says", "say", "sagt", "sagen"), ("thinks", "think", "denkt", "denken"),
             ("knows", "know", "weiß", "wissen"), ("hopes", "hope", "hofft", "hoffen")]

# Articles: (definite?, gender or "pl", case) -> German article ("" where there is none).
_DEF = {"m": ("der", "den", "dem"), "f": ("die", "die", "der"), "n": ("das", "das", "dem"), "pl": ("die", "die", "den")}
_INDEF = {"m": ("ein", "einen", "einem"), "f": ("eine", "eine", "einer"), "n": ("ein", "ein", "einem"),
          "pl": ("", "", "")}
_CASES = {"nom": 0, "acc": 1, "dat": 2}
# Adjective endings: weak (after a definite article), mixed (after ein), strong (no article, plural).
_WEAK = {"m": ("e", "en", "en"), "f": ("e", "e", "en"), "n": ("e", "e", "en"), "pl": ("en", "en", "en")}
_MIXED = {"m": ("er", "en", "en"), "f": ("e", "e", "en"), "n": ("es", "es", "en")}
_STRONG_PL = ("e", "e", "en")


@dataclass(frozen=True)
class NounPhrase:
    """A sampled noun phrase, rendered on both sides."""

    en: str
    de_nom: str
    de_acc: str
    de_dat: str
    plural: bool
    #: the accusative with "kein" replacing "ein" (None for a definite phrase, negated with "nicht").
    de_acc_negated: str | None


def _adjective(stem: str, ending: str) -> str:
    if stem.endswith("e") and ending.startswith("e"):
        return stem + ending[1:]
    return stem + ending


def _noun_phrase(rng: random.Random, choices: list[tuple]) -> NounPhrase:
    en_sg, en_pl, de_sg, gender, de_pl, de_dat_pl = rng.choice(choices)
    plural = rng.random() < 0.3
    definite = rng.random() < 0.6
    adjectives = rng.sample(ADJECTIVES, k=rng.choices([0, 1, 2], weights=[5, 4, 1])[0])
    key = "pl" if plural else gender
    forms = []
    for case in ("nom", "acc", "dat"):
        c = _CASES[case]
        article = (_DEF if definite else _INDEF)[key][c]
        if definite:
            ending = _WEAK[key][c]
        elif plural:
            ending = _STRONG_PL[c]
        else:
            ending = _MIXED[key][c]
        noun = (de_dat_pl if case == "dat" else de_pl) if plural else de_sg
        words = [article] if article else []
        words += [_adjective(de, ending) for _, de in adjectives] + [noun]
        forms.append(" ".join(words))
    negated = None
    if not definite:
        c = _CASES["acc"]
        article = "keine" if plural else "k" + _INDEF[key][c]
        ending = _WEAK["pl"][c] if plural else _MIXED[key][c]
        negated = " ".join([article] + [_adjective(de, ending) for _, de in adjectives] + [de_pl if plural else de_sg])
    en_words = ["the"] if definite else ([] if plural else ["an" if (adjectives[0][0] if adjectives else en_sg)[0]
                                                            in "aeiou" else "a"])
    en_words += [en for en, _ in adjectives] + [en_pl if plural else en_sg]
    return NounPhrase(" ".join(en_words), *forms, plural=plural, de_acc_negated=negated)


def _place(rng: random.Random) -> tuple[str, str]:
    en_prep, de_prep = rng.choice(PREPOSITIONS)
    en, de, gender = rng.choice(PLACES)
    article = _DEF[gender][2]
    de_words = [CONTRACTIONS[(de_prep, article)]] if (de_prep, article) in CONTRACTIONS else [de_prep, article]
    return f"{en_prep} the {en}", " ".join(de_words + [de])


def _clause(rng: random.Random) -> tuple[str, str, str, str]:
    """(English clause, German subject, German verb-second remainder, German verb-final clause)."""
    animate = [n for n in NOUNS if n[0] in ANIMATE]
    subject = _noun_phrase(rng, animate)
    recipient = _noun_phrase(rng, animate) if rng.random() < 0.2 else None
    verb = rng.choice(DITRANSITIVE if recipient else VERBS)
    allowed = None if recipient else VERB_OBJECTS.get(verb[0])
    obj = _noun_phrase(rng, [n for n in NOUNS if allowed is None or n[0] in allowed])
    perfect = rng.random() < 0.3
    negated = rng.random() < 0.2
    place = _place(rng) if rng.random() < 0.35 else None
    en_base, en_3sg, en_pp, de_3sg, de_pl, de_pp = verb
    aux_de = "haben" if subject.plural else "hat"
    if perfect:
        en_verb = ("have" if subject.plural else "has") + (" not " if negated else " ") + en_pp
    elif negated:
        en_verb = ("do not " if subject.plural else "does not ") + en_base
    else:
        en_verb = en_base if subject.plural else en_3sg
    en = f"{subject.en} {en_verb} {obj.en}" + (f" to {recipient.en}" if recipient else "") + (
        f" {place[0]}" if place else "")
    finite = aux_de if perfect else (de_pl if subject.plural else de_3sg)
    # "not" becomes "kein" on an indefinite object, else "nicht" at the end of the middle field.
    dative = [recipient.de_dat] if recipient else []
    if negated and obj.de_acc_negated is not None:
        middle = dative + [obj.de_acc_negated] + ([place[1]] if place else [])
    else:
        middle = dative + [obj.de_acc] + ([place[1]] if place else []) + (["nicht"] if negated else [])
    if perfect:
        middle.append(de_pp)
    # Main clause (verb second): finite verb, then the middle field; subordinate: verb last.
    de_main_tail = " ".join([finite] + middle)
    de_sub = " ".join([subject.de_nom] + middle + [finite])
    return en, subject.de_nom, de_main_tail, de_sub


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def sentence_pair(rng: random.Random) -> tuple[str, str]:
    """One English sentence and its German translation."""
    kind = rng.choices(["plain", "fronted", "reported"], weights=[5, 2, 2])[0]
    en, subject_de, tail_de, de_sub = _clause(rng)
    if kind == "plain":
        return _capitalize(en) + ".", _capitalize(f"{subject_de} {tail_de}") + "."
    if kind == "fronted":
        adv_en, adv_de = rng.choice(ADVERBS)
        finite, _, rest = tail_de.partition(" ")
        return f"{_capitalize(adv_en)} {en}.", f"{adv_de} {finite} {subject_de} {rest}."
    speaker = _noun_phrase(rng, [n for n in NOUNS if n[0] in ANIMATE])
    say_en_sg, say_en_pl, say_de_sg, say_de_pl = rng.choice(SAY_VERBS)
    say_en = say_en_pl if speaker.plural else say_en_sg
    say_de = say_de_pl if speaker.plural else say_de_sg
    return (_capitalize(f"{speaker.en} {say_en} that {en}") + ".",
            _capitalize(f"{speaker.de_nom} {say_de}, dass {de_sub}") + ".")


def build(n: int, seed: int, exclude: set[str] | frozenset = frozenset()) -> list[tuple[str, str]]:
    """`n` distinct sentence pairs whose English side is not in `exclude`."""
    rng = random.Random(seed)
    pairs: list[tuple[str, str]] = []
    seen = set(exclude)
    while len(pairs) < n:
        en, de = sentence_pair(rng)
        if en not in seen:
            seen.add(en)
            pairs.append((en, de))
    return pairs


SPLITS = {"test": (500, 1), "valid": (300, 2), "train": (20000, 3)}


def build_splits() -> dict[str, list[tuple[str, str]]]:
    """The three disjoint splits (test first, so that it stays fixed when the training set grows)."""
    out: dict[str, list[tuple[str, str]]] = {}
    taken: set[str] = set()
    for name, (n, seed) in SPLITS.items():
        out[name] = build(n, seed, taken)
        taken.update(en for en, _ in out[name])
    return out


def write_splits(directory: Path, splits: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    """Write `<split>.en` / `<split>.de`; returns the sha256 of every file written."""
    directory.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name, pairs in splits.items():
        for side, lang in ((0, "en"), (1, "de")):
            path = directory / f"{name}.{lang}"
            path.write_text("".join(p[side] + "\n" for p in pairs), encoding="utf-8")
            digests[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for train/valid/test .en/.de files")
    args = parser.parse_args()
    for name, digest in write_splits(args.out, build_splits()).items():
        print(f"{name}  {digest}")


if __name__ == "__main__":
    main()
