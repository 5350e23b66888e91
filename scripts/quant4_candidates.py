#!/usr/bin/env python3
"""Normalised squared error (sum err^2 / sum x^2) of 4-bit block quantizers on
Gaussian and Laplacian data and on SmolLM2-135M-Instruct's matrices: q4_0
(ggml's reference rule), a q4_1-style block (f16 scale + f16 minimum, 5 bits per
weight) and IQ4_NL (32 weights, f16 scale, ggml's 16-entry codebook) with the
scale from the largest element alone or with the 15-candidate scale search of
`kernels/src/scalar/iq4_nl.rs` (weights x^2 as llama.cpp, or uniform as Ember).
The measurement behind the choice of Ember's 4-bit type (benches/RESULTS.md).

Usage: python3 scripts/quant4_candidates.py [model.safetensors]
(the Hugging Face SmolLM2 rebuilt by scripts/rebuild_smollm2_hf.py; needs numpy
and safetensors). Note: those weights were dequantized from a Q4_1 GGUF, so a
q4_1-style block reproduces them exactly; the Gaussian/Laplacian rows are the
fair comparison.
"""
import sys

import numpy as np

K = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32)
MIDS = (K[1:] + K[:-1]) / 2


def f16(x):
    return x.astype(np.float16).astype(np.float32)


def inv(d):
    return np.where(d != 0, 1 / np.where(d != 0, d, 1), 0)


def q4_0(X):
    m = X[np.arange(len(X)), np.argmax(np.abs(X), axis=1)]
    d = f16(m / -8)
    q = np.clip((X * inv(d)[:, None] + 8.5).astype(np.int32), 0, 15)
    return (q - 8) * d[:, None]


def q4_1(X):
    mn, mx = X.min(1), X.max(1)
    d = (mx - mn) / 15
    q = np.clip(np.floor((X - mn[:, None]) * inv(d)[:, None] + 0.5), 0, 15)
    return q * f16(d)[:, None] + f16(mn)[:, None]


def iq4_max(X):
    m = X[np.arange(len(X)), np.argmax(np.abs(X), axis=1)]
    d = f16(m / K[0])
    return K[np.searchsorted(MIDS, X * inv(d)[:, None])] * d[:, None]


def iq4_search(X, W, ntry=7):
    m = X[np.arange(len(X)), np.argmax(np.abs(X), axis=1)]
    safe = np.where(m != 0, m, 1)
    best, bd = np.zeros(len(X)), m / K[0]
    for t in range(-ntry, ntry + 1):
        q = K[np.searchsorted(MIDS, X * ((t + K[0]) / safe)[:, None])]
        sqx, sq2 = (W * q * X).sum(1), (W * q * q).sum(1)
        d = np.where(sq2 > 0, sqx / np.where(sq2 > 0, sq2, 1), 0)
        upd = d * sqx > best
        best, bd = np.where(upd, d * sqx, best), np.where(upd, d, bd)
    d = f16(bd)
    return K[np.searchsorted(MIDS, X * inv(d)[:, None])] * d[:, None]


def run(name, X):
    X = X.reshape(-1, 32).astype(np.float32)
    err = lambda Y: ((X - Y) ** 2).sum() / (X ** 2).sum()
    r = {"q4_0": err(q4_0(X)), "q4_1": err(q4_1(X)), "iq4_nl max": err(iq4_max(X)),
         "iq4_nl search x^2": err(iq4_search(X, X * X)),
         "iq4_nl search uniform": err(iq4_search(X, np.ones_like(X)))}
    print(f"| {name} | " + " | ".join(f"{v:.5f}" for v in r.values()) + " |", flush=True)


if __name__ == "__main__":
    print("| data | q4_0 | q4_1-style | iq4_nl, max scale | iq4_nl, search (x^2) | iq4_nl, search (uniform) |")
    print("|---|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    run("Gaussian", rng.standard_normal(32 * 20000))
    run("Laplacian", rng.laplace(size=32 * 20000))
    if len(sys.argv) > 1:
        from safetensors.numpy import load_file
        st = load_file(sys.argv[1])
        for n in ["model.layers.0.self_attn.q_proj.weight", "model.layers.5.mlp.down_proj.weight",
                  "model.layers.15.mlp.up_proj.weight", "model.layers.29.self_attn.v_proj.weight"]:
            run(n.replace("model.", ""), st[n])
