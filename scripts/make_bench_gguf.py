#!/usr/bin/env python3
"""Writes a random-weight F16 GGUF of a benchmark shape for side-by-side speed
runs of llama.cpp (`llama-bench`) and Ember (`ember convert` of the same file,
then `ember bench`): weights do not change speed, so both run the identical
model. Quantize it with `llama-quantize OUT.gguf OUT-Q8_0.gguf Q8_0` (or Q4_0);
`ember convert` copies those blocks bit for bit.

The tokenizer (and so the vocabulary size) is copied from a donor GGUF, because
llama.cpp needs a real vocabulary to load a model; with SmolLM2's GGUF the
135M shape is exactly SmolLM-135M's, and the 1.1B shape is TinyLlama-1.1B's
with a 49152-token vocabulary instead of 32000 (3 % more weights).

Usage: make_bench_gguf.py --shape 135m|1.1b --donor SmolLM2.gguf --out OUT.gguf
Needs numpy and llama.cpp's gguf-py (`PYTHONPATH=.../llama.cpp/gguf-py`).
"""

import argparse
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("error: gguf-py not found: set PYTHONPATH to llama.cpp's gguf-py directory")

# hidden, layers, heads, kv heads, ffn, tied output (BASELINES.md shapes)
SHAPES = {
    "135m": (576, 30, 9, 3, 1536, True),
    "1.1b": (2048, 22, 32, 4, 5632, False),
}

# Donor fields copied as they are (the tokenizer and its chat template).
COPIED = ("tokenizer.",)


def copy_field(w, r, key):
    f = r.fields[key]
    t = f.types[0]
    if t == gguf.GGUFValueType.ARRAY:
        sub = f.types[1]
        if sub == gguf.GGUFValueType.STRING:
            vals = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        else:
            vals = [f.parts[i].tolist()[0] for i in f.data]
        w.add_array(key, vals)
    elif t == gguf.GGUFValueType.STRING:
        w.add_string(key, bytes(f.parts[f.data[0]]).decode("utf-8"))
    elif t == gguf.GGUFValueType.BOOL:
        w.add_bool(key, bool(f.parts[f.data[0]][0]))
    else:
        w.add_key_value(key, f.parts[f.data[0]].tolist()[0], t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=SHAPES, required=True)
    ap.add_argument("--donor", required=True, help="GGUF whose tokenizer is copied")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    dim, layers, heads, kv_heads, ffn, tied = SHAPES[a.shape]
    head_dim = dim // heads
    r = gguf.GGUFReader(a.donor)
    vocab = len(r.fields["tokenizer.ggml.tokens"].data)
    rng = np.random.default_rng(a.seed)

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name(f"random {a.shape}")
    w.add_block_count(layers)
    w.add_context_length(2048)
    w.add_embedding_length(dim)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for key in r.fields:
        if key.startswith(COPIED):
            copy_field(w, r, key)

    ones = np.ones(dim, dtype=np.float32)
    w.add_tensor("token_embd.weight", mat(vocab, dim))
    for l in range(layers):
        p = f"blk.{l}."
        w.add_tensor(p + "attn_norm.weight", ones)
        w.add_tensor(p + "attn_q.weight", mat(heads * head_dim, dim))
        w.add_tensor(p + "attn_k.weight", mat(kv_heads * head_dim, dim))
        w.add_tensor(p + "attn_v.weight", mat(kv_heads * head_dim, dim))
        w.add_tensor(p + "attn_output.weight", mat(dim, heads * head_dim))
        w.add_tensor(p + "ffn_norm.weight", ones)
        w.add_tensor(p + "ffn_gate.weight", mat(ffn, dim))
        w.add_tensor(p + "ffn_up.weight", mat(ffn, dim))
        w.add_tensor(p + "ffn_down.weight", mat(dim, ffn))
    w.add_tensor("output_norm.weight", ones)
    if not tied:
        w.add_tensor("output.weight", mat(vocab, dim))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {a.out}: {a.shape} shape, vocab {vocab}")


if __name__ == "__main__":
    main()
