#!/usr/bin/env python3
"""LoRA adapter goldens for tests/lora_adapters.rs, made with Hugging Face PEFT.

Usage:
  make_peft_goldens.py                 write every adapter below into tests/fixtures/lora/
  make_peft_goldens.py --only A,B      write only the named adapters (e.g.
                                       --only peft-qwen3,peft-gemma3), leaving the
                                       others' files untouched
  make_peft_goldens.py --missing       write only the adapters whose directory
                                       does not exist yet
  make_peft_goldens.py --out DIR       write into DIR instead of tests/fixtures/lora/
                                       (e.g. to diff a regeneration against the fixtures)
  make_peft_goldens.py --check DIR [--base B]
                                       load the adapter in DIR (e.g. one Ember saved)
                                       with PEFT on base B (default llama), check that
                                       every tensor arrived, and write PEFT's logits to
                                       DIR/reference.json

Each adapter is made on a base model of tests/fixtures/hf-tiny/ (float32) and run on
the input ids of that base's own reference.json (20 tokens). A and B are drawn from
a seeded normal distribution (A ~ N(0, 1/in_features), B ~ N(0, 0.25); PEFT
initialises B to zero, which would test nothing), each adapter with its own seed,
so every adapter can be regenerated alone and comes out the same.

  peft-tiny/       base llama (LlamaForCausalLM); LoRA r=4, lora_alpha=8 on all
                   seven projections (q/k/v/o, gate/up/down) of both layers, saved
                   by PeftModel.save_pretrained in float32
  peft-tiny-bf16/  base llama; LoRA r=4, lora_alpha=6, use_rslora (scale
                   alpha/sqrt(r)) on q/v/down only, saved in bfloat16
  peft-qwen3/      base qwen3 (Qwen3ForCausalLM: q/k norms, head_dim 24 != hidden/heads,
                   tied embeddings); LoRA r=4, lora_alpha=8 on all seven projections
                   of both layers, float32
  peft-phi3/       base phi3 (Phi3ForCausalLM: fused qkv_proj and gate_up_proj, which
                   Ember splits); LoRA r=4, lora_alpha=8 on qkv_proj, o_proj,
                   gate_up_proj, down_proj of both layers, float32
  peft-gemma3/     base gemma3 (Gemma3ForCausalLM: 6 layers, sliding + global
                   attention, final logit softcapping, tied embeddings); LoRA r=4,
                   lora_alpha=8 on all seven projections of every layer, float32

reference.json holds PEFT's float32 logits (eager attention) for the adapted model,
each the shortest decimal that round-trips to the same float32 (same format as
tests/fixtures/hf-tiny/*/reference.json). Logits are computed from the adapter as
loaded back from disk (the bf16 one upcast to float32). adapter_config.json's
base_model_name_or_path is the repository-relative base directory.

peft-qwen3, peft-phi3 and peft-gemma3 also record "greedy_ids": the 16 tokens PEFT's generate()
appends to input_ids (do_sample=False, float32, eager attention, EOS not stopping
generation), checked against an argmax loop over full forward passes, and only if
every step's top-1 logit beats the runner-up by more than 1e-3. The script prints,
for each adapter, the NMSE of the adapted logits against the base model's
(sum (adapted - base)^2 / sum base^2), so that a golden whose adapter barely
moves the logits is noticed.

Requires: torch, transformers, peft, numpy (scripts/requirements-ref.txt + peft;
made with peft 0.21.2, transformers 5.24.0, torch 2.15.0).
"""

import argparse
import copy
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from peft import LoraConfig, PeftModel, get_peft_model

REPO_ROOT = Path(__file__).resolve().parent.parent
HF_TINY = REPO_ROOT / "tests" / "fixtures" / "hf-tiny"
OUT_ROOT = REPO_ROOT / "tests" / "fixtures" / "lora"
ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GREEDY_NEW_TOKENS = 16


def fmt_f32(x: np.float32) -> str:
    s = str(x)  # numpy prints the shortest string that round-trips the float32
    assert np.float32(float(s)) == x, (s, x)
    return s


def write_reference(out: Path, ids: list[int], logits: np.ndarray, note: str,
                    greedy_ids: list[int] | None = None) -> None:
    rows = ",\n".join("[" + ",".join(fmt_f32(v) for v in row) + "]" for row in logits)
    greedy = f'"greedy_ids": {json.dumps(greedy_ids)},\n' if greedy_ids is not None else ""
    (out / "reference.json").write_text(
        "{\n"
        f'"note": {json.dumps(note)},\n'
        f'"input_ids": {json.dumps(ids)},\n'
        f"{greedy}"
        f'"logits": [\n{rows}\n]\n'
        "}\n"
    )


def base_ids(base: str) -> list[int]:
    return json.loads((HF_TINY / base / "reference.json").read_text())["input_ids"]


def load_base(base: str):
    model = AutoModelForCausalLM.from_pretrained(HF_TINY / base, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return model


def base_logits(base: str, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return load_base(base)(torch.tensor([ids])).logits[0].numpy().astype(np.float32)


def nmse(got: np.ndarray, ref: np.ndarray) -> float:
    got, ref = got.astype(np.float64), ref.astype(np.float64)
    return float(((got - ref) ** 2).sum() / (ref**2).sum())


def load_peft(base: str, adapter_dir: Path):
    """Loads base + adapter with PEFT (upcast to float32) and checks that every
    tensor of the file arrived in the model."""
    model = PeftModel.from_pretrained(load_base(base), adapter_dir)
    model = model.float()
    model.eval()
    saved = load_file(adapter_dir / "adapter_model.safetensors")
    state = model.state_dict()
    for name, t in saved.items():
        # PEFT's in-model name carries the adapter name: …lora_A.default.weight
        key = name.replace(".lora_A.weight", ".lora_A.default.weight").replace(
            ".lora_B.weight", ".lora_B.default.weight"
        )
        assert key in state, f"{name}: not loaded by PEFT"
        assert torch.equal(state[key], t.float()), f"{name}: loaded values differ"
    n_lora = sum(1 for k in state if ".lora_A.default." in k or ".lora_B.default." in k)
    assert n_lora == len(saved), f"PEFT created {n_lora} LoRA tensors, the file has {len(saved)}"
    return model


def peft_logits(base: str, adapter_dir: Path, ids: list[int]) -> np.ndarray:
    model = load_peft(base, adapter_dir)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy().astype(np.float32)


def greedy_continuation(model, ids: list[int], n: int) -> tuple[list[int], float]:
    """PEFT's greedy generate() (EOS does not stop it), checked against an argmax
    loop over full forward passes without a cache; returns the new tokens and the
    smallest top-1/top-2 logit gap."""
    gen_cfg = copy.deepcopy(model.generation_config)
    gen_cfg.do_sample = False
    gen_cfg.max_new_tokens = n
    gen_cfg.min_new_tokens = None
    gen_cfg.eos_token_id = None
    gen_cfg.pad_token_id = 2
    for k in ("temperature", "top_p", "top_k"):
        setattr(gen_cfg, k, None)
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             generation_config=gen_cfg)
    new = out[0, len(ids):].tolist()
    assert len(new) == n, new
    seq, gaps = list(ids), []
    with torch.no_grad():
        for _ in range(n):
            last = model(torch.tensor([seq])).logits[0, -1]
            top2 = last.topk(2).values
            gaps.append(float(top2[0] - top2[1]))
            seq.append(int(last.argmax()))
    assert seq[len(ids):] == new, (seq[len(ids):], new)
    # Far from a tie, so an f32 implementation that sums in another order agrees.
    assert min(gaps) > 1e-3, gaps
    return new, min(gaps)


def make(out_root: Path, name: str, base: str, config: LoraConfig, dtype: torch.dtype, seed: int,
         greedy: bool = False) -> None:
    out = out_root / name
    if out.exists():
        shutil.rmtree(out)
    model = get_peft_model(load_base(base), config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "lora_A" in pname:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p.shape[1] ** 0.5))
            elif "lora_B" in pname:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    model = model.to(dtype)
    model.save_pretrained(out, safe_serialization=True)
    readme = out / "README.md"
    readme.unlink(missing_ok=True)  # PEFT's model card template: nothing we test
    # PEFT records the path the base was loaded from; keep the fixture machine-independent.
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = f"tests/fixtures/hf-tiny/{base}"
    # PEFT keeps target_modules as a set and writes it in set order, which varies
    # with Python's string hashing from run to run; sort it so reruns agree.
    # (peft-tiny{,-bf16} were written before this, in one run's set order.)
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    ids = base_ids(base)
    peft_model = load_peft(base, out)
    with torch.no_grad():
        logits = peft_model(torch.tensor([ids])).logits[0].numpy().astype(np.float32)
    note = (
        f"PEFT {name}: {config.peft_type.value if hasattr(config.peft_type, 'value') else config.peft_type} "
        f"r={config.r} lora_alpha={config.lora_alpha} use_rslora={config.use_rslora} "
        f"targets={sorted(config.target_modules)}, stored as {str(dtype).removeprefix('torch.')}; "
        f"logits from PEFT + transformers in float32 (eager attention) on tests/fixtures/hf-tiny/{base}"
    )
    greedy_ids = None
    if greedy:
        greedy_ids, gap = greedy_continuation(peft_model, ids, GREEDY_NEW_TOKENS)
        note += (
            f"; greedy_ids: the {GREEDY_NEW_TOKENS} tokens PEFT's generate() appends to input_ids "
            "(do_sample=False, float32, eager, EOS does not stop it)"
        )
    write_reference(out, ids, logits, note, greedy_ids)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{name}: {size} bytes: {', '.join(sorted(p.name for p in out.iterdir()))}")
    names = list(load_file(out / "adapter_model.safetensors").keys())
    print(f"  {len(names)} tensors, e.g. {', '.join(names[:4])}")
    print(f"  NMSE adapted vs base logits: {nmse(logits, base_logits(base, ids)):.4g}")
    if greedy:
        print(f"  greedy {greedy_ids}, smallest top-1/top-2 logit gap {gap:.4g}")


def check(adapter_dir: Path, base: str) -> None:
    ids = base_ids(base)
    logits = peft_logits(base, adapter_dir, ids)
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    patterns = ""
    if cfg.get("rank_pattern"):
        patterns = f", rank_pattern={cfg['rank_pattern']}, alpha_pattern={cfg['alpha_pattern']}"
    note = (
        f"an adapter saved by Ember (r={cfg['r']}, lora_alpha={cfg['lora_alpha']}{patterns}), loaded by "
        f"PEFT.from_pretrained on tests/fixtures/hf-tiny/{base}; logits in float32 (eager attention)"
    )
    write_reference(adapter_dir, ids, logits, note)
    print(f"{adapter_dir}: PEFT loaded every tensor; logits written to reference.json")


def all_targets() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=ALL_TARGETS, task_type="CAUSAL_LM")


# name -> (base under tests/fixtures/hf-tiny/, config, stored dtype, seed, record greedy_ids)
ADAPTERS = {
    "peft-tiny": lambda: ("llama", all_targets(), torch.float32, 1, False),
    "peft-tiny-bf16": lambda: (
        "llama",
        LoraConfig(
            r=4,
            lora_alpha=6,
            lora_dropout=0.0,
            use_rslora=True,
            target_modules=["q_proj", "v_proj", "down_proj"],
            task_type="CAUSAL_LM",
        ),
        torch.bfloat16,
        2,
        False,
    ),
    "peft-qwen3": lambda: ("qwen3", all_targets(), torch.float32, 3, True),
    "peft-phi3": lambda: (
        "phi3",
        LoraConfig(
            r=4,
            lora_alpha=8,
            lora_dropout=0.0,
            target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
            task_type="CAUSAL_LM",
        ),
        torch.float32,
        4,
        True,
    ),
    # Seed 10: with final logit softcapping (3.0) top-1/top-2 gaps are small; of seeds
    # 4-29 it has one of the widest smallest greedy gaps (0.021) with a varied continuation.
    "peft-gemma3": lambda: ("gemma3", all_targets(), torch.float32, 10, True),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", type=Path, help="load an adapter directory with PEFT and record its logits")
    ap.add_argument("--base", default="llama", help="base model of --check, under tests/fixtures/hf-tiny")
    ap.add_argument("--only", help=f"comma-separated adapters to write, of: {','.join(ADAPTERS)}")
    ap.add_argument("--missing", action="store_true", help="write only adapters whose directory does not exist")
    ap.add_argument("--out", type=Path, default=OUT_ROOT, help="output root (default tests/fixtures/lora)")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.check:
        check(args.check, args.base)
        return 0
    names = list(ADAPTERS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in ADAPTERS]
        if unknown:
            ap.error(f"unknown adapter(s) {unknown}; known: {list(ADAPTERS)}")
    if args.missing:
        names = [n for n in names if not (args.out / n).exists()]
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        base, config, dtype, seed, greedy = ADAPTERS[name]()
        make(args.out, name, base, config, dtype, seed=seed, greedy=greedy)
    if not names:
        print("nothing to write")
    return 0


if __name__ == "__main__":
    sys.exit(main())
