#!/usr/bin/env python3
"""LoRA gradient golden for train/tests/grad_golden.rs, made with PyTorch autograd
through Hugging Face PEFT.

Usage:
  make_lora_grad_golden.py     write tests/fixtures/lora/grad-golden.safetensors

Base model: tests/fixtures/hf-tiny/llama (LlamaForCausalLM, float32, eager
attention), frozen. Adapter: PEFT LoRA r=4, lora_alpha=8 on all seven
projections (q/k/v/o, gate/up/down) of both layers, dropout 0. A and B are drawn
from a seeded normal distribution (std 0.2; PEFT's own init sets B = 0, which
would make every dA zero and test nothing).

Batch: one sequence of 24 token ids drawn with a seeded generator; labels are the
ids with the first 5 positions set to -100 (not counted), as an assistant-only
chat mask does. Loss: transformers' causal-LM loss (mean cross-entropy over the
counted next-token predictions), float32.

The file holds, per adapted module `layers.{i}.{module}` (module as in
LoraTarget::peft_module, e.g. `self_attn.q_proj`):
  `{name}.lora_A` [r, in], `{name}.lora_B` [out, r]       the adapter values
  `{name}.lora_A.grad`, `{name}.lora_B.grad`              d loss / d A, d B
and `input_ids` (int64 [24]), `labels` (int64 [24]), `loss` (float32 [1]);
metadata: r, lora_alpha, torch/transformers/peft versions.

Requires: torch, transformers, peft (scripts/requirements-ref.txt + peft).
"""

from pathlib import Path

import peft
import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from peft import LoraConfig, get_peft_model

REPO_ROOT = Path(__file__).resolve().parent.parent
BASE = REPO_ROOT / "tests" / "fixtures" / "hf-tiny" / "llama"
OUT = REPO_ROOT / "tests" / "fixtures" / "lora" / "grad-golden.safetensors"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA = 4, 8
SEQ, MASKED = 24, 5


def main() -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(
        BASE, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    cfg = LoraConfig(
        r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, lora_dropout=0.0, bias="none"
    )
    pm = get_peft_model(model, cfg)
    gen = torch.Generator().manual_seed(1234)
    lora = {}
    for name, mod in pm.named_modules():
        if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
            a = mod.lora_A["default"].weight
            b = mod.lora_B["default"].weight
            with torch.no_grad():
                a.copy_(torch.randn(a.shape, generator=gen) * 0.2)
                b.copy_(torch.randn(b.shape, generator=gen) * 0.2)
            short = "layers." + name.split(".layers.", 1)[1]  # layers.{i}.{self_attn|mlp}.{x}_proj
            lora[short] = (a, b)
    assert len(lora) == 2 * len(TARGETS), sorted(lora)

    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (1, SEQ), generator=gen)
    labels = ids.clone()
    labels[0, :MASKED] = -100
    out = pm(input_ids=ids, labels=labels)
    out.loss.backward()

    tensors = {
        "input_ids": ids[0].to(torch.int64).contiguous(),
        "labels": labels[0].to(torch.int64).contiguous(),
        "loss": out.loss.detach().reshape(1).to(torch.float32).contiguous(),
    }
    for short, (a, b) in sorted(lora.items()):
        tensors[f"{short}.lora_A"] = a.detach().contiguous()
        tensors[f"{short}.lora_B"] = b.detach().contiguous()
        tensors[f"{short}.lora_A.grad"] = a.grad.detach().contiguous()
        tensors[f"{short}.lora_B.grad"] = b.grad.detach().contiguous()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        tensors,
        str(OUT),
        metadata={
            "r": str(RANK),
            "lora_alpha": str(ALPHA),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
    )
    OUT.chmod(0o644)
    print(f"wrote {OUT} (loss {out.loss.item():.6f}, {len(lora)} modules)")


if __name__ == "__main__":
    main()
