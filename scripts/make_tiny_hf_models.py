#!/usr/bin/env python3
"""Generate the tiny Hugging Face fixtures in tests/fixtures/hf-tiny/.

Usage: make_tiny_hf_models.py [OUTDIR]   (default: tests/fixtures/hf-tiny)

Builds small randomly initialised models with transformers (seeded, so the output
is reproducible for a given transformers/torch version), saves them as Hugging Face
checkpoints and records transformers' own float32 logits for a fixed input
sequence in reference.json. tests/hf_reference_logits.rs converts each directory
with Ember and compares.

  llama/         LlamaForCausalLM, float32, untied lm_head, GQA (4 query / 2 KV heads)
  llama-rope-linear/  LlamaForCausalLM, float32, tied, linear RoPE scaling (factor 2),
                 written in the transformers 4 config style (top-level rope_theta +
                 rope_scaling {"type": "linear"})
  llama-rope-llama3/  LlamaForCausalLM, bfloat16, tied, Llama 3 RoPE scaling with
                 original context 16 so that both the scaled and the smoothed
                 frequency bands occur
  mistral/       MistralForCausalLM, bfloat16, sharded into several safetensors files
                 with an index, sliding window 8 < sequence length 20; chat template
                 in tokenizer_config.json
  qwen2/         Qwen2ForCausalLM, float16, tied embeddings, q/k/v biases

All share one byte-level BPE tokenizer trained here on Shakespeare to exactly the
models' vocabulary size. Weights are drawn wider than transformers' default
initialisation (and norm weights / biases are made non-trivial) so that attention
is not uniform and every tensor influences the logits.

Reference logits are computed in float32 from the *saved* weights (low-precision
checkpoints are loaded and upcast), with attn_implementation="eager". They are
stored as the shortest decimal that round-trips to the same float32.

Requires: torch, transformers, tokenizers, numpy (scripts/requirements-ref.txt).
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS = REPO_ROOT.parent / "shared" / "corpus" / "tinyshakespeare.txt"
VOCAB = 300
SEQ_LEN = 20
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
PROMPT = "<|im_start|>user\nFirst Citizen: Before we proceed any further, hear me speak."

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
)
SMALL = dict(COMMON, hidden_size=32, num_hidden_layers=1, intermediate_size=64)


def train_tokenizer() -> Tokenizer:
    text = CORPUS.read_text()[:200_000]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer=trainer)
    if tok.get_vocab_size() != VOCAB:
        raise SystemExit(f"tokenizer has {tok.get_vocab_size()} tokens, wanted {VOCAB}")
    return tok


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Wider-than-default weights, non-unit norms and non-zero biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.5 * noise)
            elif "embed_tokens" in name or "lm_head" in name:
                p.copy_(0.5 * noise)
            else:
                fan_in = p.shape[-1]
                p.copy_(noise * (1.5 / fan_in**0.5))


def fmt_f32(x: np.float32) -> str:
    s = str(x)  # numpy prints the shortest string that round-trips the float32
    assert np.float32(float(s)) == x, (s, x)
    return s


def write_reference(out: Path, text: str, ids: list[int], logits: np.ndarray, note: str) -> None:
    rows = ",\n".join("[" + ",".join(fmt_f32(v) for v in row) + "]" for row in logits)
    (out / "reference.json").write_text(
        "{\n"
        f'"note": {json.dumps(note)},\n'
        f'"text": {json.dumps(text)},\n'
        f'"input_ids": {json.dumps(ids)},\n'
        f'"logits": [\n{rows}\n]\n'
        "}\n"
    )


def build(name, cls_config, cfg, dtype, out_root, tokenizer, text, ids, seed, *, shard=None, legacy_rope=None, template_in_config=False):
    out = out_root / name
    if out.exists():
        shutil.rmtree(out)
    torch.manual_seed(seed)
    config = cls_config(**cfg)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    randomize(model, seed)
    model = model.to(dtype)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(out, **kwargs)

    tokenizer.save_pretrained(out)
    if template_in_config:
        # Older transformers kept the template inside tokenizer_config.json.
        jinja = out / "chat_template.jinja"
        tc_path = out / "tokenizer_config.json"
        tc = json.loads(tc_path.read_text())
        tc["chat_template"] = jinja.read_text() if jinja.exists() else CHATML
        tc_path.write_text(json.dumps(tc, indent=2) + "\n")
        jinja.unlink(missing_ok=True)
    if legacy_rope is not None:
        # Rewrite the RoPE settings in the transformers 4 style.
        cfg_path = out / "config.json"
        c = json.loads(cfg_path.read_text())
        c.pop("rope_parameters", None)
        c.update(legacy_rope)
        cfg_path.write_text(json.dumps(c, indent=2) + "\n")

    # Reference: reload what was written, upcast, run in float32.
    ref = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    ref.eval()
    for p in ref.parameters():
        assert p.dtype == torch.float32
    with torch.no_grad():
        logits = ref(torch.tensor([ids])).logits[0].numpy().astype(np.float32)
    assert logits.shape == (len(ids), VOCAB), logits.shape
    # The reloaded model must be exactly the saved one.
    reloaded = {k: v for k, v in ref.state_dict().items()}
    for k, v in model.state_dict().items():
        assert torch.equal(reloaded[k], v.float()), k
    note = (
        f"{cls_config.__name__.replace('Config', 'ForCausalLM')}, weights stored as {str(dtype).removeprefix('torch.')}; "
        "logits from transformers in float32 (eager attention) on the upcast stored weights, "
        "each the shortest decimal that round-trips to the same float32"
    )
    write_reference(out, text, ids, logits, note)
    files = sorted(p.name for p in out.iterdir())
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{name}: {size} bytes: {', '.join(files)}")


def main() -> int:
    out_root = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT / "tests" / "fixtures" / "hf-tiny"
    out_root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tok = train_tokenizer()
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    hf_tok.chat_template = CHATML
    ids = tok.encode(PROMPT).ids
    if len(ids) < SEQ_LEN:
        raise SystemExit(f"prompt is only {len(ids)} tokens")
    ids = ids[:SEQ_LEN]
    # `text` encodes (special tokens parsed, no BOS added) to exactly `ids`.
    text = tok.decode(ids, skip_special_tokens=False)
    if tok.encode(text).ids != ids:
        raise SystemExit(f"{text!r} does not re-encode to the same {SEQ_LEN} ids")

    rope = lambda **kw: {"rope_parameters": dict(rope_theta=10000.0, **kw)}
    build("llama", LlamaConfig, dict(COMMON, tie_word_embeddings=False, **rope(rope_type="default")),
          torch.float32, out_root, hf_tok, text, ids, seed=1)
    build("llama-rope-linear", LlamaConfig,
          dict(SMALL, tie_word_embeddings=True, **rope(rope_type="linear", factor=2.0)),
          torch.float32, out_root, hf_tok, text, ids, seed=2,
          legacy_rope={"rope_theta": 10000.0, "rope_scaling": {"type": "linear", "factor": 2.0}})
    build("llama-rope-llama3", LlamaConfig,
          dict(SMALL, tie_word_embeddings=True,
               **rope(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                      original_max_position_embeddings=16)),
          torch.bfloat16, out_root, hf_tok, text, ids, seed=3)
    build("mistral", MistralConfig,
          dict(COMMON, tie_word_embeddings=False, sliding_window=8, head_dim=16, **rope(rope_type="default")),
          torch.bfloat16, out_root, hf_tok, text, ids, seed=4, shard="80KB", template_in_config=True)
    build("qwen2", Qwen2Config,
          dict(COMMON, tie_word_embeddings=True, use_sliding_window=False, **rope(rope_type="default")),
          torch.float16, out_root, hf_tok, text, ids, seed=5)
    total = sum(p.stat().st_size for p in out_root.rglob("*") if p.is_file())
    print(f"total {total} bytes in {out_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
