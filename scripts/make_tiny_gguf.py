#!/usr/bin/env python3
"""Convert the tiny Hugging Face fixtures to GGUF with llama.cpp's own converter.

Usage: make_tiny_gguf.py LLAMA_CPP_DIR [--only NAME,NAME,...] [--hf-dir DIR] [--out-dir DIR]

  LLAMA_CPP_DIR  an unpacked llama.cpp source tree (the directory holding
                 convert_hf_to_gguf.py, conversion/ and gguf-py/)
  --hf-dir       the HF fixtures (default tests/fixtures/hf-tiny)
  --out-dir      where <name>.gguf and <name>.json go (default tests/fixtures/gguf-tiny)

The GGUF files check Ember's GGUF reader against llama.cpp's conventions (Gemma's
norm +1 folding, the Llama Q/K row permutation, Phi-3's fused tensors, the
rope_freqs tensor for Llama 3 RoPE scaling, which metadata keys exist), so they must
come from llama.cpp's converter and not from a re-implementation of it.

Converted by default (each, but for mistral's caveat, the same model to llama.cpp as
its HF original is to transformers, so that the HF reference.json with its logits and
greedy_ids is also the GGUF's reference):
  llama, qwen2, qwen3, qwen3-yarn, phi3, stablelm
  llama-rope-llama3  Llama 3 RoPE scaling: no rope.scaling key is written; the converter
                     writes rope_freqs.weight, per frequency pair the factor llama.cpp
                     divides that pair's frequency by (here [1.7359413, 8, 8, 8], equal
                     in float32 to transformers' default inv_freq / llama3 inv_freq)
  gemma3-gguf        Gemma 3 with query_pre_attn_scalar = head_dim (see below)
  mistral            with one caveat: llama.cpp's converter writes no sliding-window key
                     for MistralForCausalLM (arch "llama", which has none), so llama.cpp
                     runs it with full causal attention; transformers uses window 8, and
                     the two agree only on the reference's first 8 positions
HF-only (not converted by default; --only still converts them, with a warning),
because llama.cpp would run a different model than transformers:
  gemma3        query_pre_attn_scalar 24 != head_dim 16: llama.cpp's gemma3 scales
                scores by 1/sqrt(key_length) and GGUF has no key for the scalar
                (gemma3-gguf is the same model with the scalar = head_dim; its GGUF
                differs from gemma3's only in general.name)
  llama-gelu    GGUF has no activation key for llama; llama.cpp runs SiLU, the
                checkpoint is erf GELU
  gpt-neox-seq  erf GELU; ggml's GELU is the tanh approximation
(llama-rope-linear is not converted either, for no such reason.)

The committed files were made with the llama.cpp vendored in the llama-cpp-python
0.3.36 sdist (llama.cpp commit 0c1e57098, gguf-py 0.19.0). To get that tree:

    d=$(mktemp -d) && cd "$d"
    pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36
    tar xzf llama_cpp_python-0.3.36.tar.gz
    # LLAMA_CPP_DIR is then $d/llama_cpp_python-0.3.36/vendor/llama.cpp

(`--no-binary :all:` fetches the same sdist but makes pip build cmake from source
while preparing the metadata; restricting --no-binary to the one package avoids that.)
Python needs what the converter imports: torch, numpy, transformers, safetensors,
sentencepiece, pyyaml, tqdm (scripts/requirements-ref.txt plus gguf's dependencies).

The vocabulary step is patched, because our fixtures share a small custom
byte-level BPE tokenizer that llama.cpp does not know:
  * TextModel.get_vocab_base_pre returns "gpt-2" instead of looking the tokenizer's
    pre-tokenizer hash up (ours is unknown to it; its regex is GPT-2's);
  * Phi-3 and Gemma 3 write the GPT-2/BPE vocabulary (Phi-3's set_vocab otherwise
    wants a SentencePiece tokenizer.model; Gemma 3's already falls back to GPT-2
    without one in this llama.cpp, so for it the patch changes nothing).
Tensor conversion and hyperparameter handling are llama.cpp's, untouched. One shim
feeds the converter its input as its pinned transformers (4.57.6, in
requirements/requirements-convert_hf_to_gguf.txt) would: llama.cpp reads the
hyperparameters from AutoConfig.from_pretrained(dir).to_dict(), and transformers 5
drops legacy top-level fields it folded into rope_parameters, so config.json keys
missing from that dict are added back as they are in config.json. Of our fixtures
this only restores gpt-neox-seq's "rotary_pct" (GPTNeoXModel reads
hparams["rotary_pct"] and fails with a KeyError without it); for the default ones it
changes nothing. Every tensor is written as F32 (--outtype f32).

Beside each <name>.gguf, <name>.json records, read back with gguf-py's GGUFReader:
the architecture, every metadata key and value except the tokenizer's token, type,
score and merge arrays (their lengths are given instead), and every tensor's name,
shape (GGUF order, fastest dimension first) and type, plus the Hugging Face tensor
it equals and how ("identity", "plus_one" = w + 1, "llama_permute" = the Q/K row
permutation for interleaved RoPE, "neox_qkv_regroup" = per-head [q|k|v] rows
regrouped into [all q | all k | all v]), found by comparing values with numpy.
A tensor the converter computes itself (no HF tensor equals it, e.g. rope_freqs.weight)
has hf_tensor null and, if it has at most 64 elements, its "values" listed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_NAMES = [
    "llama", "llama-rope-llama3", "mistral", "qwen2", "gemma3-gguf", "qwen3", "qwen3-yarn", "phi3", "stablelm",
]
# HF fixtures that llama.cpp would run as a different model than transformers does (see the
# docstring); converting them with --only still works, but they are not converted by default.
HF_ONLY = {
    "gemma3": "query_pre_attn_scalar 24 != head_dim: GGUF has no key for it, llama.cpp scales by 1/sqrt(key_length)",
    "llama-gelu": "GGUF has no activation key: llama.cpp's llama runs SiLU, the checkpoint wants erf GELU",
    "gpt-neox-seq": "ggml's GELU is the tanh approximation, the checkpoint wants erf GELU",
}
# Tensors the converter makes up (no HF tensor equals them) of at most this many
# elements get their values written to the manifest.
MAX_LISTED_VALUES = 64
TOKENIZER_ARRAYS = {
    "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores", "tokenizer.ggml.merges",
}


def import_converter(llama_cpp: Path):
    """Imports llama.cpp's convert_hf_to_gguf with its own gguf-py, and patches the
    vocabulary step only."""
    llama_cpp = llama_cpp.resolve()
    if not (llama_cpp / "convert_hf_to_gguf.py").is_file():
        raise SystemExit(f"{llama_cpp} has no convert_hf_to_gguf.py")
    os.environ.pop("NO_LOCAL_GGUF", None)
    sys.path.insert(0, str(llama_cpp / "gguf-py"))
    sys.path.insert(0, str(llama_cpp))
    import gguf  # noqa: E402  (must be llama.cpp's gguf-py, not an installed one)
    if not Path(gguf.__file__).resolve().is_relative_to(llama_cpp):
        raise SystemExit(f"imported gguf from {gguf.__file__}, not from {llama_cpp}/gguf-py")
    import convert_hf_to_gguf  # noqa: E402
    from conversion import base  # noqa: E402
    from conversion.gemma import Gemma3Model  # noqa: E402
    from conversion.phi import Phi3MiniModel  # noqa: E402

    def get_vocab_base_pre(self, tokenizer) -> str:
        return "gpt-2"

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    Phi3MiniModel.set_vocab = base.TextModel._set_vocab_gpt2
    Gemma3Model.set_vocab = base.TextModel._set_vocab_gpt2

    load_hparams = base.ModelBase.load_hparams

    def load_hparams_with_raw_keys(dir_model: Path, is_mistral_format: bool):
        hparams = load_hparams(dir_model, is_mistral_format)
        raw_path = Path(dir_model) / "config.json"
        if not is_mistral_format and raw_path.is_file():
            raw = json.loads(raw_path.read_text())
            for k, v in raw.items():
                hparams.setdefault(k, v)
        return hparams

    base.ModelBase.load_hparams = staticmethod(load_hparams_with_raw_keys)
    return convert_hf_to_gguf, gguf


def llama_cpp_version(llama_cpp: Path) -> str:
    """The llama.cpp commit a llama-cpp-python sdist vendors (from its CHANGELOG),
    and gguf-py's version."""
    import re
    desc = "llama.cpp (version unknown)"
    changelog = llama_cpp.resolve().parent.parent / "CHANGELOG.md"
    if changelog.is_file():
        m = re.search(r"## \[(\d+\.\d+\.\d+)\]\s*\n\s*\n- feat: update llama.cpp to ggml-org/llama.cpp@([0-9a-f]+)",
                      changelog.read_text())
        if m:
            desc = f"llama.cpp {m.group(2)} (vendored in llama-cpp-python {m.group(1)})"
    pyproject = llama_cpp / "gguf-py" / "pyproject.toml"
    if pyproject.is_file():
        m = re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.M)
        if m:
            desc += f", gguf-py {m.group(1)}"
    return desc


def convert(converter, hf_dir: Path, out: Path) -> None:
    argv = sys.argv
    sys.argv = ["convert_hf_to_gguf.py", str(hf_dir), "--outtype", "f32", "--outfile", str(out)]
    try:
        converter.main()
    finally:
        sys.argv = argv


def field_value(gguf, field):
    types = field.types
    if types and types[0] == gguf.GGUFValueType.ARRAY:
        return [field_scalar(gguf, field, i, types[-1]) for i in field.data]
    return field_scalar(gguf, field, field.data[0], types[0])


def field_scalar(gguf, field, idx, vtype):
    part = field.parts[idx]
    if vtype == gguf.GGUFValueType.STRING:
        return bytes(part).decode("utf-8")
    v = part.tolist()[0] if hasattr(part, "tolist") else part
    if vtype in (gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.FLOAT64):
        # Shortest decimal that round-trips the stored float.
        dt = np.float32 if vtype == gguf.GGUFValueType.FLOAT32 else np.float64
        return float(str(dt(v)))
    if vtype == gguf.GGUFValueType.BOOL:
        return bool(v)
    return int(v)


def load_hf(hf_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    tensors = {}
    for f in sorted(hf_dir.glob("*.safetensors")):
        try:
            part = load_file(f)
        except TypeError:  # bfloat16 has no numpy dtype: go through torch
            from safetensors.torch import load_file as load_torch
            part = {k: v.float().numpy() for k, v in load_torch(f).items()}
        tensors.update({k: v.astype(np.float32) for k, v in part.items()})
    return tensors


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # convert_hf_to_gguf's LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def neox_regroup(w: np.ndarray, n_head: int) -> np.ndarray:
    # [h][q|k|v] rows -> [q all heads | k | v]
    r = w.reshape(n_head, 3, w.shape[0] // n_head // 3, *w.shape[1:])
    return np.concatenate([r[:, i].reshape(-1, *w.shape[1:]) for i in range(3)], axis=0)


def relate(data: np.ndarray, hf: dict[str, np.ndarray], cfg: dict) -> tuple[str | None, str | None]:
    """The HF tensor and transform that give exactly `data` (numpy order)."""
    n_head = cfg.get("num_attention_heads")
    n_kv = cfg.get("num_key_value_heads") or n_head
    for name, w in hf.items():
        if w.shape != data.shape:
            continue
        cands = [("identity", lambda x: x), ("plus_one", lambda x: x + np.float32(1))]
        if w.ndim >= 1 and n_head:
            for h in sorted({n_head, n_kv}):
                if w.shape[0] % (2 * h) == 0:
                    cands.append((f"llama_permute(n_head={h})", lambda x, h=h: llama_permute(x, h)))
            if w.shape[0] % (3 * n_head) == 0:
                cands.append((f"neox_qkv_regroup(n_head={n_head})", lambda x: neox_regroup(x, n_head)))
        for label, fn in cands:
            if np.array_equal(fn(w), data):
                return name, label
    return None, None


def manifest(gguf, path: Path, hf_dir: Path, version: str) -> dict:
    reader = gguf.GGUFReader(path)
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if key in TOKENIZER_ARRAYS:
            meta[key] = {"array_length": len(field.data)}
        else:
            meta[key] = field_value(gguf, field)
    cfg = json.loads((hf_dir / "config.json").read_text())
    hf = load_hf(hf_dir)
    tensors = []
    for t in reader.tensors:
        data = np.asarray(t.data)
        src, how = relate(data, hf, cfg)
        entry = {
            "name": t.name,
            "shape": [int(x) for x in t.shape],
            "type": t.tensor_type.name,
            "hf_tensor": src,
            "hf_transform": how,
        }
        if src is None and data.size <= MAX_LISTED_VALUES and data.dtype == np.float32:
            # e.g. rope_freqs.weight, computed by the converter from the RoPE parameters
            entry["values"] = [float(str(v)) for v in data.reshape(-1)]
        tensors.append(entry)
    return {
        "arch": meta.get("general.architecture"),
        "source": f"hf-tiny/{hf_dir.name}",
        "converter": f"{version}: convert_hf_to_gguf.py --outtype f32 (vocabulary step patched, see scripts/make_tiny_gguf.py)",
        "metadata": meta,
        "tensors": tensors,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("llama_cpp", type=Path, help="unpacked llama.cpp source tree")
    ap.add_argument("--only", help="comma-separated fixture names (default: %s)" % ",".join(DEFAULT_NAMES))
    ap.add_argument("--hf-dir", type=Path, default=REPO_ROOT / "tests" / "fixtures" / "hf-tiny")
    ap.add_argument("--out-dir", type=Path, default=REPO_ROOT / "tests" / "fixtures" / "gguf-tiny")
    args = ap.parse_args()
    converter, gguf = import_converter(args.llama_cpp)
    version = llama_cpp_version(args.llama_cpp)
    print(f"converting with {version}")
    names = DEFAULT_NAMES if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    for name in names:
        if name in HF_ONLY:
            print(f"warning: {name} is HF-only ({HF_ONLY[name]}); converting it anyway")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        hf_dir = args.hf_dir / name
        out = args.out_dir / f"{name}.gguf"
        convert(converter, hf_dir, out)
        m = manifest(gguf, out, hf_dir, version)
        unmatched = [t["name"] for t in m["tensors"] if t["hf_tensor"] is None]
        (args.out_dir / f"{name}.json").write_text(json.dumps(m, indent=1) + "\n")
        print(f"{name}: {m['arch']}, {len(m['tensors'])} tensors, {out.stat().st_size} bytes"
              + (f"; tensors not found in the HF checkpoint: {unmatched}" if unmatched else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
