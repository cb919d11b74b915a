"""Generate the language-modelling test corpus in Penn Treebank's layout.

    python tests/data/make_text.py tests/data/ptb

A seeded probabilistic grammar of financial-news sentences in PTB's preprocessing
(lower-case words, numbers as ``N``, rare names as ``<unk>``, one sentence per line)
writes ``ptb.valid.txt`` and ``ptb.test.txt`` from independent streams of the same grammar.
The grammar has structure a language model can learn and a unigram model cannot:
subject-verb agreement, fixed phrases (``$ N million``, ``for the third quarter``),
a topic per sentence (companies act, prices move, people speak) and clauses nested inside
reported speech. Word choices within a category are Zipf-weighted, like real text.
Like the shared PTB copy, there is no ``ptb.train.txt``: tests train on the validation
text (``train_on_valid``). Python's ``random.Random`` is used only through ``random()``,
whose sequence for a seed is stable across Python versions, so the output is too.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

# A symbol in capitals is expanded; anything else is a word. An alternative is
# (weight, "symbols separated by spaces"); "" is the empty expansion.
Grammar = dict[str, list[tuple[float, str]]]


def zipf(words: str, scale: float = 1.0) -> list[tuple[float, str]]:
    """Alternatives with weights 1, 1/2, 1/3, ... in the order given."""
    return [(scale / (rank + 1), word) for rank, word in enumerate(words.split("|"))]


GRAMMAR: Grammar = {
    "S": [(3, "SPEECH"), (3, "COMPANY"), (3, "MARKET"), (2, "EARNINGS"), (1, "TIME , COMPANY"),
          (1, "FIRM_SUBJ_SG COMPANY_VP_SG and COMPANY_VP_SG"), (1, "MARKET , but MARKET")],
    # -- reported speech: a clause inside it, the speaker before or after ------------------
    "SPEECH": [(3, "SPEAKER_SG said CLAUSE"), (2, "SPEAKER_PL said CLAUSE"), (3, "CLAUSE , SPEAKER_SG said"),
               (1, "CLAUSE , SPEAKER_PL said"), (1, "SPEAKER_SG said that CLAUSE")],
    "CLAUSE": [(3, "COMPANY"), (3, "MARKET"), (1, "EARNINGS")],
    "SPEAKER_SG": [(3, "PERSON"), (2, "PERSON , ROLE at FIRM ,"), (2, "a spokesman for FIRM"),
                   (1, "an analyst at FIRM"), (1, "the company 's chief executive officer")],
    "SPEAKER_PL": zipf("analysts|traders|some analysts|many investors|dealers|economists"),
    "PERSON": [(4, "mr. <unk>"), (1, "ms. <unk>"), (1, "mr. SURNAME")],
    "SURNAME": zipf("smith|jones|brown|baker|wilson|johnson|miller|davis"),
    "ROLE": zipf("president|chairman|an analyst|a vice president|chief financial officer|a director"),
    # -- companies act: singular and plural subjects agree with their verbs -----------------
    "COMPANY": [(4, "FIRM_SUBJ_SG COMPANY_VP_SG"), (1, "FIRM_SUBJ_PL COMPANY_VP_PL")],
    "FIRM_SUBJ_SG": [(4, "the company"), (3, "FIRM"), (2, "the ADJ CO_NOUN_SG"), (1, "the CO_NOUN_SG"),
                     (1, "FIRM , which is based in CITY ,"), (1, "FIRM 's PRODUCT unit")],
    "FIRM_SUBJ_PL": [(2, "the companies"), (1, "the ADJ CO_NOUN_PL"), (1, "FIRM and FIRM")],
    "FIRM": [(5, "<unk> corp."), (3, "<unk> inc."), (2, "<unk> co."), (4, "NAME"), (1, "NAME corp.")],
    "NAME": zipf("ibm|general motors|ford|chrysler|texaco|exxon|boeing|sony|merrill lynch|"
                 "shearson|drexel|citicorp|ual|at&t"),
    "CITY": zipf("new york|chicago|london|tokyo|los angeles|boston|dallas"),
    "ADJ": zipf("big|troubled|japanese|british|small|largest|parent|new"),
    "CO_NOUN_SG": zipf("company|bank|firm|concern|maker|group|unit|airline|insurer|publisher"),
    "CO_NOUN_PL": zipf("companies|banks|firms|concerns|makers|airlines|insurers|publishers"),
    "COMPANY_VP_SG": [(3, "INTENT_SG to ACTION"), (2, "ACTED_SG"), (1, "is n't expected to ACTION"),
                      (1, "has n't decided whether to ACTION"), (1, "said it will ACTION")],
    "COMPANY_VP_PL": [(3, "INTENT_PL to ACTION"), (2, "ACTED_PL"), (1, "are n't expected to ACTION")],
    "INTENT_SG": zipf("plans|agreed|expects|wants|is likely|is seeking|intends|has offered"),
    "INTENT_PL": zipf("plan|agreed|expect|want|are likely|are seeking|intend|have offered"),
    "ACTION": [(3, "buy FIRM for MONEY"), (2, "sell its PRODUCT unit to FIRM"), (2, "cut N jobs"),
               (1, "raise its dividend to N cents a share"), (1, "buy back N million shares"),
               (1, "issue MONEY of DEBT"), (1, "close N plants by the end of the year"),
               (1, "merge with FIRM")],
    "ACTED_SG": [(3, "sold its PRODUCT unit to FIRM for MONEY"), (2, "acquired FIRM for MONEY"),
                 (1, "filed for chapter N bankruptcy protection"),
                 (1, "has been hurt by lower PRODUCT prices"), (1, "completed the sale of its PRODUCT business")],
    "ACTED_PL": [(2, "have been hurt by lower PRODUCT prices"), (1, "reported higher profits TIME"),
                 (1, "sold MONEY of DEBT TIME")],
    "DEBT": zipf("bonds|notes|debentures|preferred stock|commercial paper"),
    "PRODUCT": zipf("oil|steel|computer|chemical|auto|gold|paper|insurance"),
    # -- prices move: a fixed shape of amounts ---------------------------------------------
    "MARKET": [(3, "MKT_SUBJ_PL MOVED AMOUNT_PL"), (3, "MKT_SUBJ_SG MOVED AMOUNT_SG"),
               (1, "MKT_SUBJ_PL were unchanged TIME"), (1, "MKT_SUBJ_SG was unchanged TIME")],
    "MKT_SUBJ_PL": [(3, "stock prices"), (2, "bond prices"), (2, "interest rates"),
                    (2, "shares of FIRM"), (1, "PRODUCT prices"), (1, "treasury bonds")],
    "MKT_SUBJ_SG": [(3, "the dow jones industrial average"), (2, "the dollar"), (1, "the yield on the bond"),
                    (1, "FIRM 's stock"), (1, "the price of PRODUCT")],
    "MOVED": zipf("rose|fell|declined|climbed|gained|dropped|slipped|jumped|eased|plunged"),
    "AMOUNT_PL": [(3, "N % TIME"), (2, "N cents to $ N TIME"), (1, "N % to N % TIME"),
                  (1, "N points TIME in heavy trading")],
    "AMOUNT_SG": [(3, "N points to N TIME"), (2, "N % TIME"), (1, "to N yen from N yen TIME")],
    "TIME": [(3, ""), (3, "yesterday"), (2, "last week"), (1, "in the ORDINAL quarter"), (1, "in new york"),
             (1, "in late trading"), (1, "last month")],
    "ORDINAL": zipf("third|second|fourth|first"),
    # -- earnings: amounts of money and periods --------------------------------------------
    "EARNINGS": [(3, "FIRM_SUBJ_SG reported RESULT for the ORDINAL quarter"),
                 (2, "FIRM_SUBJ_SG said RESULT_NOUN MOVED N % to MONEY TIME"),
                 (1, "FIRM_SUBJ_SG posted RESULT , or N cents a share"),
                 (1, "RESULT_NOUN at FIRM MOVED N % to MONEY from MONEY a year earlier")],
    "RESULT": [(3, "net income of MONEY"), (2, "a net loss of MONEY"), (2, "a N % increase in RESULT_NOUN"),
               (1, "a N % drop in RESULT_NOUN")],
    "RESULT_NOUN": zipf("net income|profit|revenue|sales|earnings|operating profit"),
    "MONEY": [(5, "$ N million"), (2, "$ N billion"), (1, "$ N a share")],
}


def choose(options: list[tuple[float, str]], rng: random.Random) -> str:
    pick = rng.random() * sum(w for w, _ in options)
    for weight, body in options:
        pick -= weight
        if pick < 0:
            return body
    return options[-1][1]


def expand(symbol: str, rng: random.Random, out: list[str]) -> None:
    if symbol not in GRAMMAR:
        out.append(symbol)
        return
    for part in choose(GRAMMAR[symbol], rng).split():
        expand(part, rng, out)


def sentence(rng: random.Random) -> str:
    words: list[str] = []
    expand("S", rng, words)
    return " ".join(words)


def corpus(seed: int, words: int) -> str:
    rng = random.Random(seed)
    lines: list[str] = []
    count = 0
    while count < words:
        line = sentence(rng)
        lines.append(f" {line} ")  # PTB's lines start and end with a space
        count += len(line.split()) + 1  # + <eos>
    return "\n".join(lines) + "\n"


SPLITS = {"valid": (1, 20000), "test": (2, 20000)}  # seed, words including one <eos> per line


def make(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for split, (seed, words) in SPLITS.items():
        text = corpus(seed, words)
        (dest / f"ptb.{split}.txt").write_text(text, encoding="utf-8")
        print(f"ptb.{split}.txt: {len(text.split()) + text.count(chr(10))} words with <eos>, "
              f"{text.count(chr(10))} sentences")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="folder for ptb.valid.txt and ptb.test.txt")
    make(parser.parse_args().dest)


if __name__ == "__main__":
    main()
