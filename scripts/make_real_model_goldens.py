#!/usr/bin/env python3
"""Writes reference outputs of two real GGUF models, computed by Hugging Face
transformers, to tests/fixtures/real/:

  gemma3-270m.json          Gemma-3-270M base, Q4_K_M (arch `gemma3`)
  qwen2.5-coder-0.5b.json   Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (arch `qwen2`)

Usage (from the workspace root, in a virtualenv with scripts/requirements-ref.txt
installed; torch on CPU is enough):
    scripts/fetch_models.sh --gemma3 --qwen
    python scripts/make_real_model_goldens.py [--only gemma3-270m|qwen2.5-coder-0.5b]

The GGUFs are read from ${EMBER_MODELS:-$HOME/.cache/ember/models} (where
`scripts/fetch_models.sh --gemma3 --qwen` puts them); the perplexity text is
../shared/corpus/tinyshakespeare.txt relative to the workspace root (found from this
script's location, never copied into the repo).

transformers loads each GGUF itself: `AutoTokenizer.from_pretrained(dir, gguf_file=name)`
(the tokenizer it rebuilds from the file's metadata) and
`AutoModelForCausalLM.from_pretrained(dir, gguf_file=name, dtype=torch.float32,
attn_implementation="eager")` (every tensor dequantized to f32 by the `gguf` package;
for gemma3 transformers subtracts 1 from every `*norm.weight`, which llama.cpp stored as
1 + w, and computes the norm as x * (1 + w)).

Each JSON file holds:
  model             file name, size, sha256, architecture, versions used
  tokenizer         BOS / EOS / pad ids, the EOS ids generation stops at, whether
                    the tokenizer adds BOS
  config            the transformers config values the forward pass uses
  prompts[]         per prompt: "text"; "input_ids" = tokenizer(text).input_ids, i.e.
                    with the tokenizer's default special tokens ("bos_added" says
                    whether the first id is BOS: yes for Gemma, whose file sets
                    add_bos_token; no for Qwen); "greedy_ids" = the new ids of
                    model.generate(do_sample=False, max_new_tokens=32), stopping early
                    at the config's EOS ("stopped_at_eos"); "greedy_text" = decode of
                    greedy_ids with special tokens kept; "greedy_min_margin" = [step,
                    top-1 minus top-2 logit] at the closest greedy choice (a small
                    margin is where a quantized runtime may diverge first). The first
                    prompt also has "top10_last_logits": [id, logit] of the 10 largest
                    logits at the last prompt position (one forward pass over
                    input_ids, no cache).
  perplexity        over tinyshakespeare.txt[:2000] (characters): "ids" are the first
                    256 ids of tokenizer(text) with default special tokens (so for
                    Gemma ids[0] is BOS and 255 text tokens follow; for Qwen 256 text
                    tokens, no BOS); one forward pass over them; NLL of ids[i+1] from
                    position i for i in 0..254 (255 predictions); "mean_nll" natural
                    log, "ppl" = exp(mean_nll). For Gemma "variants" adds the same
                    computed without BOS and with BOS + 256 text tokens.
"""
import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CORPUS = REPO.parent / "shared" / "corpus" / "tinyshakespeare.txt"
OUT_DIR = REPO / "tests" / "fixtures" / "real"

MAX_NEW_TOKENS = 32
PPL_CHARS = 2000
PPL_TOKENS = 256

MODELS = {
    "gemma3-270m": {
        "dir": "gemma3-270m",
        "file": "gemma-3-270m-q4_k_m.gguf",
        "size": 253113024,
        "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "prompts": [
            "The capital of France is",
            "def fibonacci(n):",
            "Once upon a time",
            "Der schnelle braune Fuchs springt über den faulen Hund. Où est la bibliothèque?",
        ],
    },
    "qwen2.5-coder-0.5b": {
        "dir": "qwen2.5-coder-0.5b",
        "file": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "size": 491400064,
        "sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "prompts": [
            "def fibonacci(n):",
            "The capital of France is",
            "<|im_start|>user\nWrite a Python function that squares a number.<|im_end|>\n"
            "<|im_start|>assistant\n",
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nWhat does `git rebase` do? Answer in one sentence.<|im_end|>\n"
            "<|im_start|>assistant\n",
        ],
    },
}

# Config attributes worth recording (those present on the loaded config are kept).
CONFIG_KEYS = [
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
    "rms_norm_eps", "rope_theta", "rope_local_base_freq", "rope_parameters",
    "sliding_window", "sliding_window_pattern", "layer_types", "use_sliding_window",
    "max_window_layers", "query_pre_attn_scalar", "attn_logit_softcapping",
    "final_logit_softcapping", "hidden_activation", "hidden_act", "attention_bias",
    "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
    "use_bidirectional_attention", "_sliding_window_pattern", "_attn_implementation",
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def jsonable(v):
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def config_summary(config):
    out = {}
    for k in CONFIG_KEYS:
        if hasattr(config, k):
            out[k] = jsonable(getattr(config, k))
    return out


def nll_over(model, ids):
    """Mean NLL of ids[i+1] given ids[..=i], one forward pass, natural log."""
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=x).logits[0].float()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    target = x[0, 1:]
    nll = -logp.gather(1, target[:, None])[:, 0]
    mean = float(nll.double().mean())
    return {"n_predictions": len(ids) - 1, "mean_nll": mean, "ppl": math.exp(mean)}


def run(key, spec, models_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import transformers, tokenizers, gguf

    d = models_dir / spec["dir"]
    path = d / spec["file"]
    if not path.is_file():
        sys.exit(f"{path} not found: run scripts/fetch_models.sh --gemma3 --qwen first")
    size = path.stat().st_size
    digest = sha256(path)
    if size != spec["size"] or digest != spec["sha256"]:
        sys.exit(f"{path}: {size} B, sha256 {digest}; expected {spec['size']} B, {spec['sha256']}")

    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(str(d), gguf_file=spec["file"])
    model = AutoModelForCausalLM.from_pretrained(
        str(d), gguf_file=spec["file"], dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    t_load = time.time() - t0
    # The reference is the plain f32 model: every weight dequantized, no packed GGUF layers.
    bad = [n for n, p in model.named_parameters() if p.dtype != torch.float32]
    assert not bad, f"non-f32 parameters: {bad[:5]}"
    linear_kinds = sorted({type(m).__name__ for m in model.modules() if "Linear" in type(m).__name__})
    assert linear_kinds == ["Linear"], linear_kinds
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    print(f"[{key}] loaded in {t_load:.1f}s: {type(model).__name__}, {type(tok).__name__}")
    print(f"[{key}] config:\n{model.config}")

    bos = tok.bos_token_id
    eos = model.generation_config.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else model.config.pad_token_id
    eos_list = eos if isinstance(eos, list) else [eos]

    t1 = time.time()
    prompts = []
    for i, text in enumerate(spec["prompts"]):
        ids = tok(text).input_ids
        x = torch.tensor([ids])
        with torch.no_grad():
            out = model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                do_sample=False,
                max_new_tokens=MAX_NEW_TOKENS,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=pad,
                return_dict_in_generate=True,
                output_logits=True,
            )
        new = out.sequences[0, len(ids):].tolist()
        # How close each greedy choice was: top-1 minus top-2 raw logit, per step.
        margins = [float(d) for d in (lambda t: t[:, 0] - t[:, 1])(
            torch.stack([l[0].float() for l in out.logits]).topk(2, dim=-1).values)]
        case = {
            "text": text,
            "input_ids": ids,
            "bos_added": bool(bos is not None and ids and ids[0] == bos),
            "greedy_ids": new,
            "greedy_text": tok.decode(new, skip_special_tokens=False),
            "stopped_at_eos": bool(new and new[-1] in eos_list),
            "greedy_min_margin": [min(range(len(margins)), key=margins.__getitem__),
                                  min(margins)],
        }
        if i == 0:
            with torch.no_grad():
                last = model(input_ids=x).logits[0, -1].float()
            vals, idx = torch.topk(last, 10)
            case["top10_last_logits"] = [[int(a), float(b)] for a, b in zip(idx, vals)]
        prompts.append(case)
        print(f"[{key}] {text!r}\n    ids {ids}\n    -> {new}\n    -> {case['greedy_text']!r}")
    t_gen = time.time() - t1

    t2 = time.time()
    text = CORPUS.read_text(encoding="utf-8")[:PPL_CHARS]
    all_ids = tok(text).input_ids
    ids = all_ids[:PPL_TOKENS]
    ppl = {
        "text": f"tinyshakespeare.txt[:{PPL_CHARS}]",
        "bos_added": bool(bos is not None and ids[0] == bos),
        "ids": ids,
    }
    ppl.update(nll_over(model, ids))
    print(f"[{key}] perplexity: bos={ppl['bos_added']} n={ppl['n_predictions']} "
          f"mean_nll={ppl['mean_nll']:.6f} ppl={ppl['ppl']:.4f}")
    if ppl["bos_added"]:
        text_ids = all_ids[1:]
        variants = {
            "no_bos_256_text_tokens": nll_over(model, text_ids[:PPL_TOKENS]),
            "bos_plus_256_text_tokens": nll_over(model, [bos] + text_ids[:PPL_TOKENS]),
        }
        for name, v in variants.items():
            print(f"[{key}] perplexity variant {name}: n={v['n_predictions']} "
                  f"mean_nll={v['mean_nll']:.6f} ppl={v['ppl']:.4f}")
        ppl["variants"] = variants
    t_ppl = time.time() - t2
    print(f"[{key}] times: load {t_load:.1f}s, generate {t_gen:.1f}s, perplexity {t_ppl:.1f}s")

    result = {
        "model": {
            "file": spec["file"],
            "size": size,
            "sha256": digest,
            "architecture": model.config.model_type,
            "reference": "transformers from_pretrained(gguf_file=..., dtype=float32, eager attention)",
            "versions": {
                "torch": torch.__version__.split("+")[0],
                "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__,
                "gguf": getattr(gguf, "__version__", None) or _dist_version("gguf"),
            },
        },
        "tokenizer": {
            "bos_token_id": bos,
            "eos_token_id": tok.eos_token_id,
            "generation_eos_token_ids": eos_list,
            "pad_token_id": pad,
            "adds_bos": prompts[0]["bos_added"],
        },
        "config": config_summary(model.config),
        "generation": {"do_sample": False, "max_new_tokens": MAX_NEW_TOKENS},
        "prompts": prompts,
        "perplexity": ppl,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out_path = OUT_DIR / f"{key}.json"
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(dumps(result) + "\n")
    print(f"[{key}] wrote {out_path.relative_to(REPO)}")


def dumps(v, indent=""):
    """JSON with one key per line, but lists of scalars (ids, [id, logit] pairs) on one line."""
    inner = indent + " "
    if isinstance(v, dict):
        items = [f"{inner}{json.dumps(k)}: {dumps(x, inner)}" for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}" if items else "{}"
    if isinstance(v, list) and any(isinstance(x, dict) for x in v):
        items = [inner + dumps(x, inner) for x in v]
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    return json.dumps(v, ensure_ascii=False)


def _dist_version(name):
    from importlib.metadata import version
    return version(name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=sorted(MODELS))
    args = ap.parse_args()
    models_dir = Path(os.environ.get("EMBER_MODELS") or Path.home() / ".cache" / "ember" / "models")
    if not CORPUS.is_file():
        sys.exit(f"{CORPUS} not found (the shared corpus next to the workspace)")
    torch.manual_seed(0)
    for key, spec in MODELS.items():
        if args.only and key != args.only:
            continue
        run(key, spec, models_dir)


if __name__ == "__main__":
    main()
