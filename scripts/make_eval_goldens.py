#!/usr/bin/env python3
"""Writes tests/fixtures/eval/: hypothesis and reference texts and goldens.json,
the scores the reference tools give them, which tests/eval_metrics.rs compares
with ember-metrics (metrics/) and `ember eval bleu|rouge`.

Usage (from the workspace root; a small venv, no torch):
    python3 -m venv target/venv-eval
    target/venv-eval/bin/pip install -r scripts/requirements-eval.txt
    target/venv-eval/bin/python scripts/make_eval_goldens.py

Versions the committed goldens were made with (scripts/requirements-eval.txt):
    sacrebleu 2.6.0, rouge-score 0.1.2, nltk 3.10.4, regex 2026.12.2, CPython 3.11.
The script refuses other versions of the three metric packages unless --any-version
is given (a new release may change a default; then update the pins and the Rust side
together).

Files written (one segment per line, UTF-8, "\n" line ends):
  hyp.txt, ref.txt, ref2.txt   the texts (the SEGMENTS table below); ref2.txt is a
                               second reference for the multi-reference cases
  goldens.json
    versions                   package versions
    bleu[]                     sacrebleu.BLEU(tokenize=T, lowercase=L).corpus_score(
                               hyp, [ref] or [ref, ref2]) for every tokenizer none, 13a,
                               intl, char and both cases: score, counts, totals,
                               precisions, bp, ratio, sys_len, ref_len, signature and the
                               formatted line
    tokenized                  each tokenizer's output on every hyp.txt / ref.txt line
    rouge                      RougeScorer([rouge1, rouge2, rougeL, rougeLsum],
                               use_stemmer=S).score(ref, hyp) per line as [p, r, f] and
                               the arithmetic mean over lines, for S false ("plain") and
                               true ("stem"); "stem_multi": score_multi([ref, ref2], hyp)
                               with stemming; "lsum": texts with "<n>" replaced by "\n"
                               (multi-sentence summaries), with stemming
    lsum_random[]              score(target, prediction) without stemming for random
                               multi-sentence texts over the letters a-e (seeded)
  porter.tsv                   "word<TAB>stem" lines: nltk PorterStemmer().stem(word)
                               (default NLTK_EXTENSIONS mode, as rouge-score uses it) for
                               a generated word list
The files are read back the way sacreBLEU's command line reads them (split at "\n"
only); a line's trailing "\n" is not part of the segment.
"""
import argparse
import json
import os
import random
import re
import sys

import nltk
import rouge_score
import sacrebleu
from nltk.stem.porter import PorterStemmer
from rouge_score import rouge_scorer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "fixtures", "eval")

PINS = {"sacrebleu": "2.6.0", "rouge_score": "0.1.2", "nltk": "3.10.4"}

# (hypothesis, reference, second reference). Varied on purpose: Unicode punctuation,
# CJK, numbers, emoji, empty and very short lines, long lines, HTML entities, odd
# whitespace, words the Porter stemmer treats specially. "<n>" separates sentences
# for the ROUGE-Lsum case.
SEGMENTS = [
    ("The cat sat on the mat.", "The cat is sitting on the mat.", "A cat sat on a mat."),
    ("It costs $5.99 — roughly 50% off!", "It costs $5.99, about 50 % off.", "The price is 5.99 dollars, half off."),
    ("“Smart quotes” and «guillemets» … ¿Qué? ¡Sí!", "\"Smart quotes\" and «guillemets»... ¿Qué? ¡Sí!", "Quotes: “smart” and « guillemets »."),
    ("日本語の文です。東京は大きい。", "これは日本語の文です。東京は大きいです。", "日本語の文。"),
    ("我爱北京天安门。", "我爱北京天安门！", "我喜欢北京。"),
    ("Launch at 10:30 🚀🎉 👍🏽", "Launch at 10:30 🚀 🎉", "The launch is at half past ten 🚀"),
    ("", "An empty hypothesis scores nothing.", "Nothing at all."),
    ("", "", ""),
    ("A reference can be empty.", "", "A second reference is not."),
    ("a", "a", "b"),
    ("Yes.", "Yes.", "No."),
    ("!", "?", "!"),
    ("1,000,000 people on 2024-05-01 paid 3.14 each in 1999.", "On 2024-05-01, 1,000,000 people paid 3.14 each in 1999.", "A million people paid 3.14 on May 1, 2024."),
    ("Tom &amp; Jerry said &quot;hi&quot; &lt;b&gt; <skipped> e-mail 10-20", "Tom & Jerry said \"hi\" <b> e-mail 10 - 20", "Tom and Jerry said hi"),
    ("Tabs\tand\u00a0no-break\u3000spaces   inside .", "Tabs and no-break spaces inside.", "Tabs, no-break spaces inside ."),
    ("naïve café résumé İstanbul ΟΔΟΣ Straße", "Naive cafe resume Istanbul οδος strasse", "NAÏVE CAFÉ RÉSUMÉ ISTANBUL ΟΔΟΣ STRASSE"),
    ("The dogs were running and the flies were dying happily.", "The dog runs, a fly died, happy generalizations.", "Running dogs, dying flies, happiness."),
    ("Relational conditioning, hopefulness and electrical adoptions.", "Relate the condition; hope for electric adoption.", "Relations, conditions, hopes."),
    ("He said: “it’s fine”—then left… (really) [sic] {ok} @home #tag", "He said \"it's fine\" - then left ... (really) [sic] {ok} @home #tag", "He said it is fine and left."),
    ("Version 2.0.1 of x86-64 builds; see §3.2 and ¶4, e.g. 1.5x faster.", "Version 2.0.1 of x86-64 builds, see section 3.2 and paragraph 4.", "v2.0.1 x86_64 build notes"),
    ("The quick brown fox jumps over the lazy dog <n> It was not amused. <n> Then it slept.",
     "A quick brown fox leapt over a lazy dog. <n> The dog was not amused <n> and slept.",
     "The fox jumped. <n> The dog slept."),
    (" ".join(["Long hypotheses repeat words so that n-gram counts clip, and the"] * 6 + ["end."]),
     " ".join(["Long references repeat words so that n-gram counts clip; the"] * 5 + ["end ."]),
     " ".join(["long references repeat many words, so counts clip and the"] * 7)),
    ("Mixed 中文 and English 混合 text, with numbers ４２ and ½.", "Mixed 中文 and English 混合 text with numbers 42 and 1/2.", "中文 English text"),
    ("ends with a tokenized period .", "ends with a tokenized period.", "ends with a period ."),
    ("UPPER lower MiXeD", "upper LOWER mixed", "Upper Lower Mixed"),
    ("skies innings outings news proceed exceed succeed lying tying", "sky inning outing news proceeding exceeding succeeding lie tie", "skies"),
    ("x", "a much longer reference than the hypothesis is", "short"),
    ("repetition repetition repetition repetition repetition", "repetition", "repetition repetition"),
    ("emoji only 😀😃😄", "😀 😃 😄", "emoji 😀"),
    ("¡¿‽⁂※†‡•‣⁃‰‱′″‴‵‶‷‸‹›", "‹›‰", "•"),
    ("the cat the dog <n> the cat <n> dog the cat", "the dog the cat <n> cat the dog", "the cat <n> the dog"),
    ("A b a b. <n> B a. <n> <n> a a b b", "a a <n> b b <n> a b a b", "b <n> a"),
    ("Stocks rose 2% on Monday. <n> Bonds fell. <n> Oil was flat at $80.", "Bonds fell on Monday. <n> Stocks rose by 2%. <n> Oil stayed at $80.", "Stocks up, bonds down, oil flat."),
]

TOKENIZERS = ["none", "13a", "intl", "char"]

# Roots and suffixes for the stemmer word list: every combination, plus the words
# NLTK's extensions treat specially.
ROOTS = [
    "relat", "condit", "valen", "digit", "conform", "radic", "differ", "analog",
    "oper", "hope", "formal", "sensib", "electr", "good", "allow", "adjust", "replac",
    "depend", "adopt", "commun", "activ", "effect", "prob", "rate", "controll",
    "pony", "feed", "agree", "sing", "troubl", "hop", "fall", "hiss", "fil", "happ",
    "enjoy", "fly", "gener", "ab", "y", "syzyg", "toy", "1990",
]
SUFFIXES = [
    "", "s", "es", "ies", "sses", "ss", "ed", "eed", "ied", "ing", "y", "ly", "ily",
    "ational", "tional", "enci", "anci", "izer", "bli", "abli", "alli", "entli", "eli",
    "ousli", "ization", "ation", "ator", "alism", "iveness", "fulness", "ousness",
    "aliti", "iviti", "biliti", "fulli", "logi", "icate", "ative", "alize", "iciti",
    "ical", "ful", "ness", "al", "ance", "ence", "er", "ic", "able", "ible", "ant",
    "ement", "ment", "ent", "sion", "tion", "ou", "ism", "ate", "iti", "ous", "ive",
    "ize", "e", "ll",
]
EXTRA_WORDS = [
    "sky", "skies", "dying", "lying", "tying", "news", "innings", "inning", "outings",
    "outing", "cannings", "canning", "howe", "proceed", "exceed", "succeed", "dies",
    "ties", "pies", "died", "tied", "cried", "happily", "generously", "analogies",
    "yyyy", "yea", "eye", "by", "as", "is", "at", "AS", "Running", "ΟΔΟΣ",
]


def check_versions(any_version):
    found = {"sacrebleu": sacrebleu.__version__, "rouge_score": _dist_version("rouge-score"),
             "nltk": nltk.__version__}
    bad = {k: v for k, v in found.items() if v != PINS[k]}
    if bad and not any_version:
        sys.exit(f"versions differ from the pins {PINS}: {bad} (pass --any-version to go on)")
    import regex
    found["regex"] = regex.__version__
    found["python"] = sys.version.split()[0]
    return found


def _dist_version(name):
    from importlib.metadata import version
    return version(name)


def write_lines(name, lines):
    with open(os.path.join(OUT, name), "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            assert "\n" not in line
            f.write(line + "\n")


def read_lines(name):
    # As sacreBLEU's command line reads a file: split at "\n" only.
    with open(os.path.join(OUT, name), encoding="utf-8", newline="\n") as f:
        return [line[:-1] if line.endswith("\n") else line for line in f]


def bleu_case(hyp, refs, ref_names, tokenize, lowercase):
    metric = sacrebleu.BLEU(tokenize=tokenize, lowercase=lowercase)
    s = metric.corpus_score(hyp, refs)
    sig = str(metric.get_signature())
    return {
        "refs": ref_names,
        "tokenize": tokenize,
        "lowercase": lowercase,
        "score": s.score,
        "counts": list(s.counts),
        "totals": list(s.totals),
        "precisions": list(s.precisions),
        "bp": s.bp,
        "ratio": s.ratio,
        "sys_len": s.sys_len,
        "ref_len": s.ref_len,
        "signature": sig,
        "formatted": s.format(signature=sig),
    }


MEASURES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]


def rouge_case(hyp, refs, stem, multi=False):
    scorer = rouge_scorer.RougeScorer(MEASURES, use_stemmer=stem)
    per_line = []
    for i, h in enumerate(hyp):
        if multi:
            sc = scorer.score_multi([r[i] for r in refs], h)
        else:
            sc = scorer.score(refs[0][i], h)
        per_line.append({m: [sc[m].precision, sc[m].recall, sc[m].fmeasure] for m in MEASURES})
    mean = {}
    for m in MEASURES:
        mean[m] = [sum(line[m][k] for line in per_line) / len(per_line) for k in range(3)]
    return {"stem": stem, "per_line": per_line, "mean": mean}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--any-version", action="store_true",
                    help="run with metric package versions other than the pins")
    args = ap.parse_args()
    versions = check_versions(args.any_version)

    os.makedirs(OUT, exist_ok=True)
    write_lines("hyp.txt", [s[0] for s in SEGMENTS])
    write_lines("ref.txt", [s[1] for s in SEGMENTS])
    write_lines("ref2.txt", [s[2] for s in SEGMENTS])
    hyp, ref, ref2 = read_lines("hyp.txt"), read_lines("ref.txt"), read_lines("ref2.txt")
    assert len(hyp) == len(ref) == len(ref2) == len(SEGMENTS)

    bleu = []
    for refs, names in (([ref], ["ref.txt"]), ([ref, ref2], ["ref.txt", "ref2.txt"])):
        for tokenize in TOKENIZERS:
            for lowercase in (False, True):
                bleu.append(bleu_case(hyp, refs, names, tokenize, lowercase))

    tokenized = {}
    for tokenize in TOKENIZERS:
        tok = sacrebleu.BLEU(tokenize=tokenize).tokenizer
        tokenized[tokenize] = {
            "hyp": [tok(line.rstrip()) for line in hyp],
            "ref": [tok(line.rstrip()) for line in ref],
        }

    def sentences(lines):
        return [line.replace("<n>", "\n") for line in lines]

    rouge = {
        "plain": rouge_case(hyp, [ref], False),
        "stem": rouge_case(hyp, [ref], True),
        "stem_multi": rouge_case(hyp, [ref, ref2], True, multi=True),
        "lsum": rouge_case(sentences(hyp), [sentences(ref)], True),
    }

    # Summary-level LCS on random multi-sentence texts over a small vocabulary:
    # many repeated tokens and ties, where the union of LCSs depends on which LCS
    # the backtrack picks.
    rng = random.Random(31)

    def random_text():
        sents = [" ".join(rng.choice("abcde") for _ in range(rng.randint(0, 7)))
                 for _ in range(rng.randint(1, 4))]
        return "\n".join(sents)

    scorer = rouge_scorer.RougeScorer(MEASURES)
    lsum_random = []
    for _ in range(60):
        target, prediction = random_text(), random_text()
        sc = scorer.score(target, prediction)
        lsum_random.append({"target": target, "prediction": prediction,
                            "scores": {m: [sc[m].precision, sc[m].recall, sc[m].fmeasure]
                                       for m in MEASURES}})

    stemmer = PorterStemmer()
    words = sorted(set([r + s for r in ROOTS for s in SUFFIXES] + EXTRA_WORDS))
    write_lines("porter.tsv", [f"{w}\t{stemmer.stem(w)}" for w in words])

    goldens = {
        "versions": versions,
        "bleu": bleu,
        "tokenized": tokenized,
        "rouge": rouge,
        "lsum_random": lsum_random,
    }
    text = json.dumps(goldens, ensure_ascii=False, indent=1)
    # One line per list of numbers: the per-line ROUGE triples stay readable.
    text = re.sub(r"\[\s+([-+0-9.eE,\s]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    assert json.loads(text) == goldens
    with open(os.path.join(OUT, "goldens.json"), "w", encoding="utf-8", newline="\n") as f:
        f.write(text + "\n")
    print(f"wrote {OUT}: {len(hyp)} segments, {len(bleu)} BLEU cases, {len(words)} stems")


if __name__ == "__main__":
    main()
