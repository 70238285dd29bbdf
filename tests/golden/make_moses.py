"""Golden outputs of Moses `tokenizer.perl` and `multi-bleu.perl` for the legacy tokenized BLEU.

Upstream: moses-smt/mosesdecoder@34452895f350bf097b21ee514a529a1dc542243c (scripts/tokenizer/tokenizer.perl,
scripts/share/nonbreaking_prefixes, scripts/generic/multi-bleu.perl). Needs perl. Run against a checkout:

    python tests/golden/make_moses.py /path/to/mosesdecoder

and it writes tests/golden/moses/legacy_bleu.json: the sentences below, each side tokenized by
`tokenizer.perl -l LANG -no-escape` (ARBench's legacy pipeline does not escape entities), then the
compound-split text (fairseq's compound_split_bleu.sh sed rule) and the BLEU that `multi-bleu.perl` prints
for the tokenized files. The sentences are written for this check: lines ending in nonbreaking prefixes
("usw.", "z.B.", "12 a.", "e.g.", "Nr."), multi-dots, quotes and hyphenated compounds.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

UPSTREAM = "moses-smt/mosesdecoder@34452895f350bf097b21ee514a529a1dc542243c"
OUT = Path(__file__).parent / "moses" / "legacy_bleu.json"

CORPORA = {
    "de": {
        "hypotheses": [
            "Ich kaufe Äpfel, Birnen usw.",
            "Das steht in Punkt 12 a.",
            "Er sagte: \"Nein.\" Dann ging er, z.B.",
            "Wir warten auf den Bus...",
            "Die Gesundheits-Reform kommt im Jan.",
            "Das ist die Straße Nr. 5 in der Stadt.",
            "Sie kam um 8 Uhr an, d.h. zu spät.",
            "Die Firma heißt Müller & Co.",
            "Der Preis beträgt 3,50 Euro pro Stück.",
            "Herr Dr. Schmidt ist heute nicht da.",
        ],
        "references": [
            "Ich kaufe Äpfel, Birnen usw.",
            "Das steht unter Punkt 12 a.",
            "Er sagte: \"Nein.\" Dann ging er weg, z.B.",
            "Wir warten auf den Bus ...",
            "Die Gesundheitsreform kommt im Jan.",
            "Das ist die Straße Nr. 5 in der Stadt.",
            "Sie kam um 8 Uhr an, d.h. zu spät.",
            "Die Firma heißt Müller & Co.",
            "Der Preis beträgt 3,50 Euro je Stück.",
            "Herr Dr. Schmidt ist heute nicht hier.",
        ],
    },
    "en": {
        "hypotheses": [
            "Bring some fruit, e.g.",
            "He met Mr. Smith at 5 p.m.",
            "It costs $5 etc.",
            "See No. 5 for details.",
            "They moved to the U.S.",
            "The well-known author wrote it in Jan.",
            "She said 'hello.'",
            "Prices rose by 3.5 percent in the U.K. last year.",
        ],
        "references": [
            "Bring fruit, e.g.",
            "He met Mr. Smith at 5 p.m.",
            "It costs $5 etc.",
            "See No. 5 for the details.",
            "They moved to the U.S.",
            "The well-known author wrote it in Jan.",
            "She said 'hello.'",
            "Prices rose 3.5 percent in the U.K. last year.",
        ],
    },
}
#: fairseq scripts/compound_split_bleu.sh (and tensor2tensor's get_ende_bleu.sh), run by perl itself.
COMPOUND = r"s{(\S)-(\S)}{$1 ##AT##-##AT## $2}g"


def perl_lines(command: list[str], lines: list[str]) -> list[str]:
    run = subprocess.run(command, input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
    return run.stdout.rstrip("\n").split("\n")


def tokenize(checkout: Path, lines: list[str], lang: str) -> list[str]:
    script = checkout / "scripts" / "tokenizer" / "tokenizer.perl"
    return perl_lines(["perl", str(script), "-l", lang, "-no-escape", "-q"], lines)


def multi_bleu(checkout: Path, hyp: list[str], ref: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        ref_file = Path(tmp) / "ref"
        ref_file.write_text("\n".join(ref) + "\n")
        script = checkout / "scripts" / "generic" / "multi-bleu.perl"
        run = subprocess.run(["perl", str(script), str(ref_file)], input="\n".join(hyp) + "\n",
                             capture_output=True, text=True, check=True)
    return float(re.match(r"BLEU = ([0-9.]+),", run.stdout).group(1))


def main(checkout: Path) -> None:
    golden = {"upstream": UPSTREAM, "corpora": {}}
    for lang, corpus in CORPORA.items():
        entry = dict(corpus)
        for side in ("hypotheses", "references"):
            tokens = tokenize(checkout, corpus[side], lang)
            entry[f"{side}_tokenized"] = tokens
            entry[f"{side}_compound_split"] = perl_lines(["perl", "-ple", COMPOUND], tokens)
        entry["multi_bleu"] = multi_bleu(checkout, entry["hypotheses_tokenized"], entry["references_tokenized"])
        entry["multi_bleu_compound_split"] = multi_bleu(checkout, entry["hypotheses_compound_split"],
                                                        entry["references_compound_split"])
        entry["multi_bleu_per_sentence"] = [multi_bleu(checkout, [h], [r]) for h, r in
                                            zip(entry["hypotheses_tokenized"], entry["references_tokenized"])]
        golden["corpora"][lang] = entry
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
