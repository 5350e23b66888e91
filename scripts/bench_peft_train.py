#!/usr/bin/env python3
"""PyTorch + PEFT LoRA training speed and memory on CPU, for comparison with
`ember finetune` (benches/RESULTS.md, "LoRA fine-tuning").

Usage: bench_peft_train.py HF_MODEL_DIR TEXT_FILE [--steps N] [--threads T]
       [--rank R] [--alpha A] [--seq-len L] [--batch B]

Trains a LoRA adapter on all seven projection matrices of a Llama-family model
(float32, the base frozen) with AdamW on consecutive `--seq-len` windows of the
text, and prints JSON: tokens per second over the steps after the first (which
includes warm-up) and the process's peak RSS (ru_maxrss). Needs torch,
transformers and peft (scripts/requirements-ref.txt).
"""
import argparse
import json
import resource
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("text")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--seq-len", type=int, default=96)
    ap.add_argument("--batch", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32)
    cfg = LoraConfig(
        r=a.rank,
        lora_alpha=a.alpha,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, cfg)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    ids = tok(open(a.text, encoding="utf-8").read(), return_tensors="pt").input_ids[0]
    need = a.steps * a.batch * a.seq_len
    assert ids.numel() >= need, f"text has {ids.numel()} tokens, need {need}"
    windows = ids[:need].view(a.steps, a.batch, a.seq_len)
    times = []
    for step in range(a.steps):
        t0 = time.perf_counter()
        batch = windows[step]
        out = model(input_ids=batch, labels=batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    timed = times[1:] or times
    tokens = a.batch * a.seq_len * len(timed)
    print(json.dumps({
        "tokens_per_second": tokens / sum(timed),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "steps": a.steps, "threads": a.threads, "rank": a.rank,
        "seq_len": a.seq_len, "batch": a.batch,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
