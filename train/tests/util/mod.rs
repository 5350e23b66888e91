//! Shared helpers of the `ember-train` integration tests: tiny random models
//! written through the converter, and the `../shared` fixtures.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ember_converter::ir::{F32Source, IrTensor, ModelIr};
use ember_converter::writer::{write_model, DTypeChoice, WriteOptions};
use ember_runtime::format::{
    expected_tensors, flags, Activation, Architecture, DType, HyperParams, NormKind, RopePairing,
    RopeScaling,
};
use ember_runtime::tokenizer::{
    PreSplit, TokenType, TokenizerKind, TokenizerSpec, TOKENIZER_SCHEMA,
};
use ember_runtime::Model;

/// `../shared` (next to the repository), if present.
pub fn shared_file(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared")
        .join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} not found", p.display());
        None
    }
}

/// A scratch directory under the workspace's `target/` (removed on drop).
pub fn scratch() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-scratch");
    std::fs::create_dir_all(&base).expect("create target/test-scratch");
    tempfile::tempdir_in(base).expect("create scratch dir")
}

/// Deterministic pseudo-random values in [-scale, scale) (xorshift64*).
pub fn random_values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            (r * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A tiny Llama-family shape: 2 layers, GQA (4 query heads, 2 KV heads),
/// q/k/v biases, half RoPE pairing, SiLU.
pub fn tiny_hparams() -> HyperParams {
    HyperParams {
        architecture: Architecture::Llama as u32,
        activation: Activation::Silu as u32,
        dim: 32,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        ffn_dim: 64,
        vocab_size: 259 + 5,
        max_context: 64,
        sliding_window: 0,
        rope_pairing: RopePairing::Half as u32,
        rope_dim: 8,
        rope_theta: 10000.0,
        rope_scaling: RopeScaling::None as u32,
        rope_scaling_factor: 1.0,
        norm: NormKind::RmsNorm as u32,
        norm_eps: 1e-5,
        flags: flags::QKV_BIAS,
        ..Default::default()
    }
}

/// The other branch of every option: interleaved pairing with partial rotary
/// dims, GELU-tanh, a sliding window of 3, tied output, all biases.
pub fn tiny_hparams_variant() -> HyperParams {
    HyperParams {
        activation: Activation::GeluTanh as u32,
        rope_pairing: RopePairing::Interleaved as u32,
        rope_dim: 6,
        sliding_window: 3,
        flags: flags::QKV_BIAS | flags::ATTN_OUT_BIAS | flags::MLP_BIAS | flags::TIED_OUTPUT,
        ..tiny_hparams()
    }
}

/// Gemma 3's block, and the rest of the format-1.5 options: QK norms,
/// post-attention and post-FFN norms, exact GELU, scaled embeddings and
/// attention scores, two sliding layers then a global one (period 3) with a
/// local RoPE base, YaRN on the global RoPE, soft-capped logits, tied output.
pub fn tiny_hparams_gemma() -> HyperParams {
    HyperParams {
        activation: Activation::GeluErf as u32,
        n_layers: 3,
        sliding_window: 3,
        swa_period: 3,
        rope_theta_local: 100.0,
        rope_scaling: RopeScaling::Yarn as u32,
        rope_scaling_factor: 4.0,
        rope_low_freq_factor: 1.0,
        rope_high_freq_factor: 3.0,
        rope_attn_factor: 1.1,
        attn_scale: 0.3,
        embed_scale: 2.0,
        logit_softcap: 5.0,
        flags: flags::QK_NORM | flags::POST_ATTN_NORM | flags::POST_FFN_NORM | flags::TIED_OUTPUT,
        ..tiny_hparams()
    }
    .with_extended_flag()
}

/// A SentencePiece-style tokenizer: `<unk> <s> </s>`, 256 byte tokens, a few pieces.
pub fn tiny_tokenizer(vocab: usize) -> TokenizerSpec {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![TokenType::Unknown, TokenType::Control, TokenType::Control];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(TokenType::Byte);
    }
    for p in ["▁", "e", "h", "▁h", "▁he"]
        .iter()
        .take(vocab - tokens.len())
    {
        tokens.push(p.to_string());
        types.push(TokenType::Normal);
    }
    let scores = (0..tokens.len()).map(|i| -(i as f32)).collect();
    TokenizerSpec {
        schema: TOKENIZER_SCHEMA,
        kind: TokenizerKind::SentencePieceBpe,
        pre_split: PreSplit::None,
        tokens,
        scores,
        token_types: types,
        merges: vec![],
        bos: Some(1),
        eos: Some(2),
        unk: Some(0),
        pad: None,
        eog: vec![],
        add_bos: true,
        add_eos: false,
        add_space_prefix: true,
        byte_fallback: true,
    }
}

/// Writes a random-weight model with `hp` in `dtype` (f32 when `None`) into
/// `dir` and loads it.
pub fn tiny_model(dir: &Path, hp: HyperParams, dtype: Option<DType>, seed: u64) -> Model {
    let tensors = expected_tensors(&hp)
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product::<u64>() as usize;
            let mut v = random_values(n, seed * 1000 + i as u64 + 1, 0.5);
            if name.ends_with("norm") {
                v.iter_mut().for_each(|x| *x += 1.0);
            }
            IrTensor {
                name,
                shape,
                source: Box::new(F32Source(v)),
            }
        })
        .collect();
    let ir = ModelIr {
        hparams: hp,
        tensors,
        tokenizer: tiny_tokenizer(hp.vocab_size as usize),
        chat_template: Some(
            "{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}\
             {% if add_generation_prompt %}<assistant>{% endif %}"
                .into(),
        ),
        metadata: vec![("source.kind".into(), "test".into())],
    };
    let path = dir.join(format!("tiny-{seed}.ember"));
    let opts = WriteOptions {
        dtype: dtype.map_or(DTypeChoice::Auto, DTypeChoice::Fixed),
        ..Default::default()
    };
    write_model(&ir, &path, &opts).expect("write tiny model");
    Model::load(&path).expect("load tiny model")
}
