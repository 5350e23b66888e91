#!/usr/bin/env python3
"""LoRA adapter goldens for tests/lora_adapters.rs, made with Hugging Face PEFT.

Usage:
  make_peft_goldens.py                 write tests/fixtures/lora/peft-tiny{,-bf16}/
  make_peft_goldens.py --check DIR     load the adapter in DIR (e.g. one Ember saved)
                                       with PEFT, check that every tensor arrived,
                                       and write PEFT's logits to DIR/reference.json

Base model: tests/fixtures/hf-tiny/llama (LlamaForCausalLM, float32), run on the
input ids of its own reference.json (20 tokens).

  peft-tiny/       LoRA r=4, lora_alpha=8 on all seven projections (q/k/v/o,
                   gate/up/down) of both layers; A and B drawn from a seeded normal
                   distribution (PEFT initialises B to zero, which would test
                   nothing), saved by PeftModel.save_pretrained in float32
  peft-tiny-bf16/  LoRA r=4, lora_alpha=6, use_rslora (scale alpha/sqrt(r)) on
                   q/v/down only, saved in bfloat16

reference.json holds PEFT's float32 logits (eager attention) for the adapted model,
each the shortest decimal that round-trips to the same float32 (same format as
tests/fixtures/hf-tiny/*/reference.json). Logits are computed from the adapter as
loaded back from disk (the bf16 one upcast to float32).

Requires: torch, transformers, peft, numpy (scripts/requirements-ref.txt + peft).
"""

import argparse
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
BASE = REPO_ROOT / "tests" / "fixtures" / "hf-tiny" / "llama"
OUT_ROOT = REPO_ROOT / "tests" / "fixtures" / "lora"
ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def fmt_f32(x: np.float32) -> str:
    s = str(x)  # numpy prints the shortest string that round-trips the float32
    assert np.float32(float(s)) == x, (s, x)
    return s


def write_reference(out: Path, ids: list[int], logits: np.ndarray, note: str) -> None:
    rows = ",\n".join("[" + ",".join(fmt_f32(v) for v in row) + "]" for row in logits)
    (out / "reference.json").write_text(
        "{\n"
        f'"note": {json.dumps(note)},\n'
        f'"input_ids": {json.dumps(ids)},\n'
        f'"logits": [\n{rows}\n]\n'
        "}\n"
    )


def base_ids() -> list[int]:
    return json.loads((BASE / "reference.json").read_text())["input_ids"]


def load_base():
    model = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return model


def peft_logits(adapter_dir: Path, ids: list[int]) -> np.ndarray:
    """Loads base + adapter with PEFT (upcast to float32) and checks that every
    tensor of the file arrived in the model."""
    model = PeftModel.from_pretrained(load_base(), adapter_dir)
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
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy().astype(np.float32)


def make(name: str, config: LoraConfig, dtype: torch.dtype, seed: int) -> None:
    out = OUT_ROOT / name
    if out.exists():
        shutil.rmtree(out)
    model = get_peft_model(load_base(), config)
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
    cfg["base_model_name_or_path"] = "tests/fixtures/hf-tiny/llama"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    ids = base_ids()
    logits = peft_logits(out, ids)
    note = (
        f"PEFT {name}: {config.peft_type.value if hasattr(config.peft_type, 'value') else config.peft_type} "
        f"r={config.r} lora_alpha={config.lora_alpha} use_rslora={config.use_rslora} "
        f"targets={sorted(config.target_modules)}, stored as {str(dtype).removeprefix('torch.')}; "
        "logits from PEFT + transformers in float32 (eager attention) on tests/fixtures/hf-tiny/llama"
    )
    write_reference(out, ids, logits, note)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{name}: {size} bytes: {', '.join(sorted(p.name for p in out.iterdir()))}")


def check(adapter_dir: Path) -> None:
    ids = base_ids()
    logits = peft_logits(adapter_dir, ids)
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    note = (
        f"an adapter saved by Ember (r={cfg['r']}, lora_alpha={cfg['lora_alpha']}), loaded by "
        "PEFT.from_pretrained on tests/fixtures/hf-tiny/llama; logits in float32 (eager attention)"
    )
    write_reference(adapter_dir, ids, logits, note)
    print(f"{adapter_dir}: PEFT loaded every tensor; logits written to reference.json")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", type=Path, help="load an adapter directory with PEFT and record its logits")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.check:
        check(args.check)
        return 0
    OUT_ROOT.mkdir(parents=True, exist_ok=True)
    make(
        "peft-tiny",
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=ALL_TARGETS, task_type="CAUSAL_LM"),
        torch.float32,
        seed=1,
    )
    make(
        "peft-tiny-bf16",
        LoraConfig(
            r=4,
            lora_alpha=6,
            lora_dropout=0.0,
            use_rslora=True,
            target_modules=["q_proj", "v_proj", "down_proj"],
            task_type="CAUSAL_LM",
        ),
        torch.bfloat16,
        seed=2,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
