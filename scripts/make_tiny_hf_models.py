#!/usr/bin/env python3
"""Generate the tiny Hugging Face fixtures in tests/fixtures/hf-tiny/.

Usage: make_tiny_hf_models.py [--only NAME,NAME,...] [OUTDIR]
       (default: every fixture, into tests/fixtures/hf-tiny)

--only builds just the named fixtures and leaves the other directories alone, e.g.
`--only gemma3,qwen3` regenerates those two without touching the others.

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
  gemma3/        Gemma3ForCausalLM (gemma3_text), float32, tied, 6 layers in the default
                 5 sliding : 1 global pattern, sliding window 4, head_dim 16 with
                 query_pre_attn_scalar 24, per-layer-type RoPE (global: theta 1e6 with
                 linear scaling 4; sliding: theta 1e4, unscaled), final logit softcap 3
  gemma3-gguf/   gemma3 with query_pre_attn_scalar 16 = head_dim and otherwise the
                 same settings and seed (so the same weights, tokenizer and greedy_ids;
                 different logits): the Gemma 3 that a GGUF can describe (see below)
  qwen3/         Qwen3ForCausalLM, float32, tied, QK-norm, head_dim 24 != hidden/heads
  qwen3-yarn/    Qwen3ForCausalLM, bfloat16, untied, YaRN RoPE (factor 4) with an
                 original context that puts the correction ramp inside the rotary dims
  phi3/          Phi3ForCausalLM, float16, untied, fused qkv_proj and gate_up_proj,
                 partial rotary factor 0.5
  llama-gelu/    LlamaForCausalLM, float32, untied, exact (erf) GELU MLP, biases on
                 every attention and MLP projection
  stablelm/      StableLmForCausalLM, float32, untied, LayerNorm with bias, partial
                 rotary 0.25, q/k/v biases, sequential residual
  gpt-neox-seq/  GPTNeoXForCausalLM, float32, untied, sequential residual
                 (use_parallel_residual false), erf GELU MLP, rotary 0.25, fused
                 per-head-interleaved query_key_value

The fixtures from gemma3 on also record "greedy_ids": the 16 tokens transformers'
generate() appends to input_ids (do_sample=False, float32, eager attention, with EOS
not stopping generation), checked against an argmax loop over full forward passes,
and only if every step's top-1 logit beats the runner-up by more than 1e-3.

scripts/make_tiny_gguf.py converts some of these to GGUF with llama.cpp's converter
(tests/fixtures/gguf-tiny/). Three are HF-only, because their GGUF would be a
different model to llama.cpp than the checkpoint is to transformers:
  gemma3        llama.cpp's gemma3 scales attention scores by 1/sqrt(key_length) and
                GGUF has no key for query_pre_attn_scalar (24 here); gemma3-gguf
                exists to be the GGUF-convertible twin
  llama-gelu    GGUF has no activation key for llama: llama.cpp runs SiLU
  gpt-neox-seq  ggml's GELU is the tanh approximation, transformers' "gelu" is erf
llama-rope-linear is simply not converted. mistral is converted although llama.cpp
writes no sliding-window key for it (its "llama" architecture has none) and so
attends to all previous tokens: its GGUF equals the HF model only for the first 8
positions of the reference (a query at p < 8 sees every key either way).

All share one byte-level BPE tokenizer trained here on Shakespeare to exactly the
models' vocabulary size. Weights are drawn wider than transformers' default
initialisation (and norm weights / biases are made non-trivial) so that attention
is not uniform and every tensor influences the logits. Gemma's RMSNorm multiplies by
(1 + weight), so its norm weights are drawn around 0 instead of around 1.

Reference logits are computed in float32 from the *saved* weights (low-precision
checkpoints are loaded and upcast), with attn_implementation="eager". They are
stored as the shortest decimal that round-trips to the same float32.

Requires: torch, transformers, tokenizers, numpy (scripts/requirements-ref.txt).
"""

import argparse
import copy
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
    StableLmConfig,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS = REPO_ROOT.parent / "shared" / "corpus" / "tinyshakespeare.txt"
VOCAB = 300
SEQ_LEN = 20
GREEDY_NEW_TOKENS = 16
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
# LayerNorm models: no rms_norm_eps (GPT-NeoX also has no GQA, so no num_key_value_heads);
# transformers would otherwise keep the unused keys in config.json.
LAYERNORM = {k: v for k, v in COMMON.items() if k != "rms_norm_eps"}


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


def randomize(model: torch.nn.Module, seed: int, norm_center: float = 1.0, embed_std: float = 0.5) -> None:
    """Wider-than-default weights, non-unit norms and non-zero biases.

    norm_center is where norm weights are centred: 1 for x*w norms, 0 for Gemma's
    x*(1+w). LayerNorm biases get 0.2*noise. embed_std scales the embedding and
    lm_head noise.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name and name.endswith(".bias"):
                p.copy_(0.2 * noise)
            elif "norm" in name:
                p.copy_(norm_center + 0.2 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.5 * noise)
            elif any(k in name for k in ("embed_tokens", "lm_head", "embed_in", "embed_out")):
                p.copy_(embed_std * noise)
            else:
                fan_in = p.shape[-1]
                p.copy_(noise * (1.5 / fan_in**0.5))


def fmt_f32(x: np.float32) -> str:
    s = str(x)  # numpy prints the shortest string that round-trips the float32
    assert np.float32(float(s)) == x, (s, x)
    return s


def write_reference(out: Path, text: str, ids: list[int], logits: np.ndarray, note: str,
                    greedy_ids: list[int] | None = None) -> None:
    rows = ",\n".join("[" + ",".join(fmt_f32(v) for v in row) + "]" for row in logits)
    greedy = f'"greedy_ids": {json.dumps(greedy_ids)},\n' if greedy_ids is not None else ""
    (out / "reference.json").write_text(
        "{\n"
        f'"note": {json.dumps(note)},\n'
        f'"text": {json.dumps(text)},\n'
        f'"input_ids": {json.dumps(ids)},\n'
        f"{greedy}"
        f'"logits": [\n{rows}\n]\n'
        "}\n"
    )


def greedy_continuation(model, ids: list[int], n: int) -> list[int]:
    """transformers' greedy generate() (EOS does not stop it), checked against an
    argmax loop over full forward passes without a cache."""
    gen_cfg = copy.deepcopy(model.generation_config)
    gen_cfg.do_sample = False
    gen_cfg.max_new_tokens = n
    gen_cfg.min_new_tokens = None
    gen_cfg.eos_token_id = None
    gen_cfg.pad_token_id = 2
    for k in ("temperature", "top_p", "top_k"):
        setattr(gen_cfg, k, None)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
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
    print(f"greedy {new}, smallest top-1/top-2 logit gap {min(gaps):.3g}")
    return new


def build(name, cls_config, cfg, dtype, out_root, tokenizer, text, ids, seed, *, shard=None, legacy_rope=None,
          template_in_config=False, norm_center=1.0, embed_std=0.5, extra_config=None, note_extra="", greedy=False):
    out = out_root / name
    if out.exists():
        shutil.rmtree(out)
    torch.manual_seed(seed)
    config = cls_config(**cfg)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    randomize(model, seed, norm_center, embed_std)
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
    if extra_config is not None:
        # Extra top-level config.json fields (e.g. ones older configs carried).
        cfg_path = out / "config.json"
        c = json.loads(cfg_path.read_text())
        c.update(extra_config)
        cfg_path.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")

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
        f"{type(ref).__name__}, weights stored as {str(dtype).removeprefix('torch.')}; "
        "logits from transformers in float32 (eager attention) on the upcast stored weights, "
        "each the shortest decimal that round-trips to the same float32"
    )
    greedy_ids = None
    if greedy:
        greedy_ids = greedy_continuation(ref, ids, GREEDY_NEW_TOKENS)
        note += (
            f"; greedy_ids: the {GREEDY_NEW_TOKENS} tokens transformers' generate() appends to input_ids "
            "(do_sample=False, float32, eager, EOS does not stop it)"
        )
    if callable(note_extra):
        note_extra = note_extra(ref)  # may also assert things about the reloaded model
    if note_extra:
        note += "; " + note_extra
    probs = torch.softmax(torch.from_numpy(logits), -1)
    print(f"{name}: mean max prob {probs.max(-1).values.mean():.3f}, logit std {logits.std():.3f}")
    write_reference(out, text, ids, logits, note, greedy_ids)
    files = sorted(p.name for p in out.iterdir())
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{name}: {size} bytes: {', '.join(files)}")


def yarn_details(ref) -> str:
    """What transformers' YaRN computed (recomputed here with its formulas and
    checked against the model's inv_freq)."""
    cfg = ref.config
    rp = cfg.rope_parameters
    dim = int(cfg.head_dim * rp.get("partial_rotary_factor", 1.0))
    base, factor, orig = rp["rope_theta"], rp["factor"], rp["original_max_position_embeddings"]
    beta_fast, beta_slow = rp.get("beta_fast") or 32, rp.get("beta_slow") or 1
    corr = lambda rot: dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))
    low_raw, high_raw = corr(beta_fast), corr(beta_slow)
    low, high = max(math.floor(low_raw), 0), min(math.ceil(high_raw), dim - 1)
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos = base ** (torch.arange(0, dim, 2).float() / dim)
    inv = (1 / (factor * pos)) * ramp + (1 / pos) * (1 - ramp)
    rot = ref.model.rotary_emb
    assert torch.allclose(rot.inv_freq, inv, rtol=1e-6, atol=0), (rot.inv_freq, inv)
    att = rot.attention_scaling
    assert abs(att - (0.1 * math.log(factor) + 1.0)) < 1e-12, att
    return (
        f"YaRN over the {dim} rotary dims: factor {factor}, original_max_position_embeddings {orig}, "
        f"rope_theta {base}, beta_fast {beta_fast}, beta_slow {beta_slow}, truncate true; "
        f"attention_factor = 0.1*ln(factor)+1 = {att!r} (cos and sin are both multiplied by it); "
        f"correction range low = max(floor({low_raw:.4f}), 0) = {low}, high = min(ceil({high_raw:.4f}), {dim - 1}) = {high}; "
        f"per frequency pair i (0..{dim // 2 - 1}) the interpolated weight ramp(i) = clamp((i - low)/(high - low), 0, 1) = "
        f"[{', '.join(f'{x:g}' for x in ramp.tolist())}] and inv_freq = ramp*inv_freq/factor + (1-ramp)*inv_freq"
    )


def gemma3_details(ref) -> str:
    cfg = ref.config
    rot = ref.model.rotary_emb
    types = cfg.layer_types
    assert types == ["sliding_attention"] * 5 + ["full_attention"], types
    rp = cfg.rope_parameters
    head_dim = cfg.head_dim
    default = 1.0 / (rp["sliding_attention"]["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim))
    assert torch.equal(rot.sliding_attention_inv_freq, default)
    glob = 1.0 / (rp["full_attention"]["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim))
    assert torch.allclose(rot.full_attention_inv_freq, glob / rp["full_attention"]["factor"], rtol=1e-6, atol=0)
    assert rot.sliding_attention_attention_scaling == 1.0 and rot.full_attention_attention_scaling == 1.0
    if cfg.query_pre_attn_scalar == head_dim:
        scale_remark = ("(= head_dim**-0.5, the scale llama.cpp's gemma3 always uses: GGUF has no key for "
                        "query_pre_attn_scalar)")
    else:
        scale_remark = "(not head_dim**-0.5)"
    return (
        f"layer_types {types} (layers 0-4 sliding, layer 5 global); sliding layers: window {cfg.sliding_window} "
        "(a query at position p sees keys p-3..p) and RoPE theta "
        f"{rp['sliding_attention']['rope_theta']} unscaled (rope_type {rp['sliding_attention']['rope_type']}); "
        f"global layer: full causal attention and RoPE theta {rp['full_attention']['rope_theta']} with linear "
        f"scaling factor {rp['full_attention']['factor']} (inv_freq divided by 4); both rotate all {head_dim} dims "
        f"(rotate-half), no attention scaling of cos/sin; q_norm/k_norm (RMSNorm over head_dim, x*(1+w)) before RoPE; "
        f"attention scores scaled by query_pre_attn_scalar**-0.5 = {cfg.query_pre_attn_scalar}**-0.5 "
        f"{scale_remark}; embeddings times sqrt(hidden_size) = sqrt({cfg.hidden_size}) in the weight dtype; "
        "all RMSNorms (input, post_attention, pre_feedforward, post_feedforward, final, q, k) compute x*(1+w); "
        f"MLP gelu_pytorch_tanh(gate)*up; logits = {cfg.final_logit_softcapping}*tanh(logits/{cfg.final_logit_softcapping}); "
        "no attention-logit softcapping"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated fixture names to build (default: all)")
    ap.add_argument("outdir", nargs="?", type=Path, default=REPO_ROOT / "tests" / "fixtures" / "hf-tiny")
    args = ap.parse_args()
    out_root = args.outdir
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
    common = (out_root, hf_tok, text, ids)

    def gemma3(name, query_pre_attn_scalar, seed):
        return build(
            name, Gemma3TextConfig,
            dict(COMMON, hidden_size=32, intermediate_size=64, num_hidden_layers=6, head_dim=16,
                 rms_norm_eps=1e-6, pad_token_id=None,
                 query_pre_attn_scalar=query_pre_attn_scalar, sliding_window=4,
                 rope_parameters={
                     "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1_000_000.0},
                     "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                 },
                 final_logit_softcapping=3.0, attn_logit_softcapping=None,
                 hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True),
            # Gemma multiplies embeddings by sqrt(hidden): 0.15*sqrt(32) = 0.85 at the input. With
            # 0.5 the current token's (tied) embedding dominates the residual stream and greedy
            # decoding just repeats one token; the seed is one whose continuation does not.
            torch.float32, *common, seed=seed, norm_center=0.0, embed_std=0.15, greedy=True,
            note_extra=gemma3_details)

    fixtures = {
        "llama": lambda: build(
            "llama", LlamaConfig, dict(COMMON, tie_word_embeddings=False, **rope(rope_type="default")),
            torch.float32, *common, seed=1),
        "llama-rope-linear": lambda: build(
            "llama-rope-linear", LlamaConfig,
            dict(SMALL, tie_word_embeddings=True, **rope(rope_type="linear", factor=2.0)),
            torch.float32, *common, seed=2,
            legacy_rope={"rope_theta": 10000.0, "rope_scaling": {"type": "linear", "factor": 2.0}}),
        "llama-rope-llama3": lambda: build(
            "llama-rope-llama3", LlamaConfig,
            dict(SMALL, tie_word_embeddings=True,
                 **rope(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                        original_max_position_embeddings=16)),
            torch.bfloat16, *common, seed=3),
        "mistral": lambda: build(
            "mistral", MistralConfig,
            dict(COMMON, tie_word_embeddings=False, sliding_window=8, head_dim=16, **rope(rope_type="default")),
            torch.bfloat16, *common, seed=4, shard="80KB", template_in_config=True),
        "qwen2": lambda: build(
            "qwen2", Qwen2Config,
            dict(COMMON, tie_word_embeddings=True, use_sliding_window=False, **rope(rope_type="default")),
            torch.float16, *common, seed=5),
        # From here on the reference also carries greedy_ids.
        "gemma3": lambda: gemma3("gemma3", query_pre_attn_scalar=24, seed=32),
        # The same model except query_pre_attn_scalar = head_dim: llama.cpp's gemma3 scales scores by
        # 1/sqrt(key_length) and GGUF has no key for the scalar, so only this variant converts to a GGUF
        # that means the same model to llama.cpp as to transformers.
        "gemma3-gguf": lambda: gemma3("gemma3-gguf", query_pre_attn_scalar=16, seed=32),
        "qwen3": lambda: build(
            "qwen3", Qwen3Config,
            dict(COMMON, head_dim=24, tie_word_embeddings=True, use_sliding_window=False,
                 rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0}),
            # Seed chosen so that the greedy continuation (tied embeddings) is not one repeated token.
            torch.float32, *common, seed=27, greedy=True,
            note_extra="head_dim 24 (q_proj 96 rows, k/v_proj 48, o_proj input 96) != hidden/heads = 16; "
                       "q_norm/k_norm (RMSNorm over head_dim, x*w) per head before RoPE; RoPE theta 1e6 over all "
                       "24 dims (rotate-half); scores scaled by head_dim**-0.5 = 24**-0.5; all layers full attention"),
        "qwen3-yarn": lambda: build(
            "qwen3-yarn", Qwen3Config,
            dict(COMMON, head_dim=24, tie_word_embeddings=False, use_sliding_window=False,
                 max_position_embeddings=4096,
                 rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024,
                                  "rope_theta": 10000.0}),
            torch.bfloat16, *common, seed=8, greedy=True,
            note_extra=lambda ref: "head_dim 24, QK-norm before RoPE as in qwen3; " + yarn_details(ref)),
        "phi3": lambda: build(
            "phi3", Phi3Config,
            dict(COMMON, tie_word_embeddings=False, sliding_window=None, pad_token_id=None,
                 original_max_position_embeddings=128,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}),
            torch.float16, *common, seed=9, greedy=True,
            note_extra="qkv_proj rows are [q (4 heads x 16) | k (2 x 16) | v (2 x 16)]; gate_up_proj rows are "
                       "[gate (128) | up (128)], MLP silu(gate)*up; partial_rotary_factor 0.5: RoPE (rotate-half, "
                       "theta 1e4) on the first 8 of each head's 16 dims, the other 8 pass through; no sliding window"),
        "llama-gelu": lambda: build(
            "llama-gelu", LlamaConfig,
            dict(COMMON, tie_word_embeddings=False, hidden_act="gelu", mlp_bias=True, attention_bias=True,
                 **rope(rope_type="default")),
            torch.float32, *common, seed=10, greedy=True,
            note_extra="hidden_act gelu = exact erf GELU, down(gelu(gate(x)+b)*(up(x)+b))+b; biases on "
                       "q/k/v/o_proj and gate/up/down_proj"),
        "stablelm": lambda: build(
            "stablelm", StableLmConfig,
            dict(LAYERNORM, tie_word_embeddings=False, layer_norm_eps=1e-5, use_qkv_bias=True, qk_layernorm=False,
                 use_parallel_residual=False, hidden_act="silu",
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}),
            torch.float32, *common, seed=11, greedy=True,
            note_extra="LayerNorm with weight and bias (eps 1e-5) before attention, before the MLP and at the end; "
                       "q/k/v biases, no o_proj bias; RoPE (rotate-half, theta 1e4) on the first 4 of 16 head dims; "
                       "sequential residual; MLP silu(gate)*up"),
        "gpt-neox-seq": lambda: build(
            "gpt-neox-seq", GPTNeoXConfig,
            dict({k: v for k, v in LAYERNORM.items() if k != "num_key_value_heads"}, tie_word_embeddings=False, layer_norm_eps=1e-5, hidden_act="gelu",
                 use_parallel_residual=False, attention_bias=True,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}),
            torch.float32, *common, seed=12, greedy=True,
            # llama.cpp's converter reads the transformers-4 field rotary_pct; transformers reads it too
            # (as partial_rotary_factor) and agrees with rope_parameters.
            extra_config={"rotary_pct": 0.25},
            note_extra="no GQA (4 heads); query_key_value rows per head h: [q_h (16) | k_h (16) | v_h (16)] with "
                       "bias; dense (o) with bias; LayerNorm with bias; sequential residual "
                       "(x = x + attn(ln1(x)); x = x + mlp(ln2(x))); MLP dense_4h_to_h(gelu_erf(dense_h_to_4h(x))) "
                       "with biases; RoPE (rotate-half, theta 1e4) on the first 4 of 16 head dims"),
    }
    names = list(fixtures) if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in fixtures]
    if unknown:
        raise SystemExit(f"unknown fixture(s) {unknown}; known: {', '.join(fixtures)}")
    for n in names:
        fixtures[n]()
    total = sum(p.stat().st_size for n in names for p in (out_root / n).rglob("*") if p.is_file())
    print(f"total {total} bytes in {', '.join(names)} under {out_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
