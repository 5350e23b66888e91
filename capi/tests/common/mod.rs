//! Helpers shared by the C API test files.

#![allow(dead_code)]

use std::ffi::CStr;
use std::path::{Path, PathBuf};

use ember::{ember_last_error, ember_status, EMBER_OK};
use ember_converter::ir::{F32Source, IrTensor, ModelIr};
use ember_converter::writer::{write_model, WriteOptions};
use ember_runtime::format::{
    expected_tensors, Activation, Architecture, HyperParams, NormKind, RopePairing, RopeScaling,
};
use ember_runtime::tokenizer::{
    PreSplit, TokenType, TokenizerKind, TokenizerSpec, TOKENIZER_SCHEMA,
};

/// This thread's last error message.
pub fn last_error() -> String {
    // SAFETY: ember_last_error never returns NULL and the string is NUL-terminated.
    unsafe { CStr::from_ptr(ember_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Asserts `st` is `EMBER_OK`, showing the message otherwise.
pub fn check(st: ember_status) {
    assert_eq!(st, EMBER_OK, "{}", last_error());
}

/// Writes a tiny random Llama-style model (2 layers, dim 32, GQA 4/2, a
/// SentencePiece-style vocabulary of `<unk> <s> </s>`, 256 byte tokens and 5
/// pieces) declaring `max_context` positions to `dir/tiny.ember`.
pub fn tiny_model(dir: &Path, max_context: u32) -> PathBuf {
    let hp = HyperParams {
        architecture: Architecture::Llama as u32,
        activation: Activation::Silu as u32,
        dim: 32,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        ffn_dim: 48,
        vocab_size: 259 + 5,
        max_context,
        sliding_window: 0,
        rope_pairing: RopePairing::Half as u32,
        rope_dim: 8,
        rope_theta: 10000.0,
        rope_scaling: RopeScaling::None as u32,
        rope_scaling_factor: 1.0,
        norm: NormKind::RmsNorm as u32,
        norm_eps: 1e-5,
        ..Default::default()
    };
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let tensors = expected_tensors(&hp)
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product::<u64>() as usize;
            let norm = name.ends_with("norm");
            let values = (0..n)
                .map(|_| {
                    // xorshift64: values in [-0.5, 0.5), norm weights near 1.
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let r = (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                    if norm {
                        1.0 + r
                    } else {
                        r
                    }
                })
                .collect();
            IrTensor {
                name,
                shape,
                source: Box::new(F32Source(values)),
            }
        })
        .collect();
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![TokenType::Unknown, TokenType::Control, TokenType::Control];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(TokenType::Byte);
    }
    for p in ["\u{2581}", "e", "h", "\u{2581}h", "\u{2581}he"] {
        tokens.push(p.to_string());
        types.push(TokenType::Normal);
    }
    let tokenizer = TokenizerSpec {
        schema: TOKENIZER_SCHEMA,
        kind: TokenizerKind::SentencePieceBpe,
        pre_split: PreSplit::None,
        scores: (0..tokens.len()).map(|i| -(i as f32)).collect(),
        tokens,
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
    };
    let ir = ModelIr {
        hparams: hp,
        tensors,
        tokenizer,
        chat_template: None,
        metadata: vec![("source.kind".into(), "test".into())],
    };
    let path = dir.join("tiny.ember");
    write_model(&ir, &path, &WriteOptions::default()).expect("write the tiny model");
    path
}
