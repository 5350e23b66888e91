#!/usr/bin/env python3
"""Rebuild SmolLM2-135M-Instruct in Hugging Face layout from its GGUF file.

Usage: rebuild_smollm2_hf.py GGUF OUTDIR [HF_FILES_DIR]

Dequantizes every tensor of the llama.cpp GGUF to float32 with gguf-py, undoes
llama.cpp's Q/K row permutation (GGUF stores Q and K rows in the order that
interleaved-pair RoPE expects; Hugging Face uses rotate_half), renames tensors to
Hugging Face names and writes OUTDIR/model.safetensors (float32; the embedding is
tied, so there is no lm_head.weight). config.json, tokenizer.json,
tokenizer_config.json and chat_template.jinja are copied from HF_FILES_DIR
(default: ../shared/models/smollm2-135m-instruct-hf relative to the repository
root). OUTDIR is a cache directory; never point it into the repository.

Requires the PyPI packages gguf, numpy and safetensors (scripts/requirements-hf.txt).
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HF_FILES = REPO_ROOT.parent / "shared" / "models" / "smollm2-135m-instruct-hf"
COPIED_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]

# GGUF per-block tensor name -> Hugging Face name (format with the layer index).
BLOCK_NAMES = {
    "attn_norm.weight": "model.layers.{}.input_layernorm.weight",
    "attn_q.weight": "model.layers.{}.self_attn.q_proj.weight",
    "attn_k.weight": "model.layers.{}.self_attn.k_proj.weight",
    "attn_v.weight": "model.layers.{}.self_attn.v_proj.weight",
    "attn_output.weight": "model.layers.{}.self_attn.o_proj.weight",
    "ffn_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "ffn_gate.weight": "model.layers.{}.mlp.gate_proj.weight",
    "ffn_up.weight": "model.layers.{}.mlp.up_proj.weight",
    "ffn_down.weight": "model.layers.{}.mlp.down_proj.weight",
}
GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's convert_hf_to_gguf `permute`.

    llama.cpp views each head's rows as [2, head_dim/2] (the rotate_half halves)
    and transposes to [head_dim/2, 2], so rows (i, i + head_dim/2) become adjacent
    pairs (2i, 2i+1). Here we view each head as [head_dim/2, 2] and transpose back.
    """
    rows = w.shape[0]
    assert rows % (2 * n_head) == 0, (rows, n_head)
    return (
        w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def field_int(reader: GGUFReader, key: str) -> int:
    field = reader.fields[key]
    return int(field.parts[field.data[0]][0])


def main() -> int:
    if len(sys.argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    gguf_path = Path(sys.argv[1])
    out_dir = Path(sys.argv[2])
    hf_files = Path(sys.argv[3]) if len(sys.argv) == 4 else DEFAULT_HF_FILES
    if not gguf_path.is_file():
        print(f"error: GGUF file {gguf_path} not found", file=sys.stderr)
        return 1
    missing = [f for f in COPIED_FILES if not (hf_files / f).is_file()]
    if missing:
        print(f"error: {hf_files} lacks {', '.join(missing)}", file=sys.stderr)
        return 1

    reader = GGUFReader(str(gguf_path))
    arch_field = reader.fields["general.architecture"]
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
    if arch != "llama":
        print(f"error: expected a llama GGUF, got architecture {arch!r}", file=sys.stderr)
        return 1
    n_head = field_int(reader, "llama.attention.head_count")
    n_head_kv = field_int(reader, "llama.attention.head_count_kv")
    n_layers = field_int(reader, "llama.block_count")

    tensors = {}
    for t in reader.tensors:
        # gguf-py returns the numpy shape (outermost first), e.g. [rows, cols].
        w = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        name = t.name
        if name.startswith("blk."):
            _, layer, rest = name.split(".", 2)
            if rest not in BLOCK_NAMES:
                print(f"error: unexpected GGUF tensor {name}", file=sys.stderr)
                return 1
            if rest == "attn_q.weight":
                w = unpermute(w, n_head)
            elif rest == "attn_k.weight":
                w = unpermute(w, n_head_kv)
            hf_name = BLOCK_NAMES[rest].format(int(layer))
        elif name in GLOBAL_NAMES:
            hf_name = GLOBAL_NAMES[name]
        else:
            print(f"error: unexpected GGUF tensor {name}", file=sys.stderr)
            return 1
        tensors[hf_name] = np.ascontiguousarray(w)

    expected_blocks = n_layers * len(BLOCK_NAMES)
    got_blocks = sum(1 for k in tensors if k.startswith("model.layers."))
    if got_blocks != expected_blocks:
        print(f"error: expected {expected_blocks} block tensors, got {got_blocks}", file=sys.stderr)
        return 1

    config = json.loads((hf_files / "config.json").read_text())
    if config.get("tie_word_embeddings") and "lm_head.weight" in tensors:
        del tensors["lm_head.weight"]

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(out_dir / "model.safetensors")
    for f in COPIED_FILES:
        shutil.copyfile(hf_files / f, out_dir / f)
    print(f"wrote {len(tensors)} float32 tensors to {out_dir / 'model.safetensors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
