#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/smollm2_ids.json: reference token ids from the
Hugging Face `tokenizers` package for SmolLM2's tokenizer.json.

Usage (from the workspace root):
    /root/.cache/ember/venv-ref/bin/python scripts/make_tokenizer_goldens.py \
        [--tokenizer ../shared/models/smollm2-135m-instruct-hf/tokenizer.json]

Each case records a text and the ids of `encode(text, add_special_tokens=False)`.
HF always matches added (special) tokens in the text, which is ember's
`parse_special: true`; SmolLM2 adds no BOS, so ember's default options match.
tests/tokenizer_parity.rs compares ember's tokenizer against this file exactly.
"""
import argparse
import json
import os

import tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

TEXTS = [
    "Hello world",
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.",
    "The quick brown fox jumps over the lazy dog!",
    "don't I'll we're they've I'm he'd it's DON'T 'quoted' ''s",
    "你好，世界！今天天气很好。",
    "日本語のテキストを分割します。カタカナとひらがな、漢字。",
    "مرحبا بالعالم، كيف حالك؟",
    "Emoji: 👋🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🧑🏿‍💻!!",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n\tlet x: Vec<u32> = vec![1, 2, 3];\n\tprintln!(\"{x:?}\");\n}",
    "a\tb\t\tc   d    e\n\nf\r\n\r\ng \n h\n\n\n",
    "   leading and trailing spaces   ",
    "\n",
    " ",
    "",
    "12345 3.14159 1,000,000 -42 0x1F 2024-01-31",
    "Combining: e\u0301 a\u0308 n\u0303 Z\u0351\u0360a\u0352l\u0353g\u0354o",
    "Pneumonoultramicroscopicsilicovolcanoconiosis supercalifragilisticexpialidocious",
    "x" * 300,
    "NBSP:\u00a0here, thin\u2009space, ideographic\u3000space, zero\u200bwidth",
    "Ünïcödé ßtraße Ελληνικά Русский текст",
    "<|im_start|>user\nHi<|im_end|>",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>assistant\n",
    "text with <|endoftext|> inside and <|im_start|",
    "URLs: https://example.com/path?q=1&r=2#frag and emails a.b@c.de",
    "Math: ∑ᵢ xᵢ² ≤ ∞, ½ + ¼ = ¾, Ⅻ, ①②③",
    "Mixed\u2028line\u2029separators\u0085nel\u000bvt\u000cff",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--tokenizer",
        default=os.path.join(ROOT, "..", "shared", "models", "smollm2-135m-instruct-hf", "tokenizer.json"),
    )
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "tokenizer", "smollm2_ids.json"))
    args = ap.parse_args()
    tok = tokenizers.Tokenizer.from_file(args.tokenizer)
    cases = []
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False).ids
        cases.append({"text": text, "ids": ids})
    out = {
        "generator": "scripts/make_tokenizer_goldens.py",
        "tokenizers_version": tokenizers.__version__,
        "tokenizer": "smollm2-135m-instruct-hf/tokenizer.json",
        "note": "ids of Tokenizer.encode(text, add_special_tokens=False); added (special) tokens are matched in the text",
        "cases": cases,
    }
    # One case per line keeps diffs of regenerated goldens readable.
    head = json.dumps({k: v for k, v in out.items() if k != "cases"}, ensure_ascii=False, indent=1)[:-2]
    body = ",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(head + ',\n "cases": [\n' + body + "\n ]\n}\n")
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
