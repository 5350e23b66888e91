//! Quality of the KV-cache types on SmolLM2-135M: mean KL divergence of q8_0 and
//! f32 KV against the default f16 KV, and perplexity per type, over the first 256
//! tokens of tiny-shakespeare. Ignored by default (about a minute of scalar
//! compute); run with
//! `cargo test --release --test session_kv_quality -- --ignored --nocapture`.

mod common;

use std::sync::Arc;

use ember_converter::{convert, ConvertOptions};
use ember_runtime::eval::negative_log_likelihood;
use ember_runtime::{KvType, Model, Session, SessionConfig};

/// Mean KLD budget of q8_0 KV against f16 KV (nats/token): q8_0 keeps ~8 bits
/// per value, so the divergence must stay well under 0.01 (a visible change).
const Q8_0_KLD_BUDGET: f64 = 0.01;
const TOKENS: usize = 256;

fn kld(p: &[f32], q: &[f32]) -> f64 {
    let lse = |x: &[f32]| {
        let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln()
    };
    let (lp, lq) = (lse(p), lse(q));
    p.iter()
        .zip(q)
        .map(|(&a, &b)| {
            let la = a as f64 - lp;
            la.exp() * (la - (b as f64 - lq))
        })
        .sum()
}

#[test]
#[ignore]
fn q8_0_kv_against_f16_kv_on_tinyshakespeare() {
    let Some(gguf) = common::smollm2_gguf() else {
        return;
    };
    let Some(corpus) = common::shared_file("corpus/tinyshakespeare.txt") else {
        return;
    };
    let dir = common::scratch();
    let path = dir.path().join("smollm2.ember");
    convert(&gguf, &path, &ConvertOptions::default()).unwrap();
    let model = Arc::new(Model::load(&path).unwrap());
    let text: String = std::fs::read_to_string(corpus)
        .unwrap()
        .chars()
        .take(2000)
        .collect();
    let tok = model.tokenizer();
    let mut opts = tok.default_encode_options();
    opts.add_bos = false;
    opts.parse_special = false;
    let mut ids = tok.encode(&text, opts);
    ids.truncate(TOKENS);
    let session = |kv_type| {
        let config = SessionConfig {
            context: TOKENS,
            kv_type,
            ..Default::default()
        };
        Session::new(model.clone(), config).unwrap()
    };
    let (mut f16, mut q8, mut f32) = (
        session(KvType::F16),
        session(KvType::Q8_0),
        session(KvType::F32),
    );
    let (mut kld_q8, mut kld_f32, mut max_q8) = (0.0, 0.0, 0.0f64);
    let mut nll = [0.0f64; 3];
    for (i, &t) in ids[..TOKENS - 1].iter().enumerate() {
        let (a, b, c) = (
            f16.step(t).unwrap(),
            q8.step(t).unwrap(),
            f32.step(t).unwrap(),
        );
        let k = kld(a, b);
        kld_q8 += k;
        max_q8 = max_q8.max(k);
        kld_f32 += kld(a, c);
        for (n, l) in nll.iter_mut().zip([a, b, c]) {
            *n += negative_log_likelihood(l, ids[i + 1]);
        }
    }
    let n = (TOKENS - 1) as f64;
    let ppl = nll.map(|v| (v / n).exp());
    println!(
        "mean KLD vs f16 KV over {} predictions: q8_0 {:.3e} (max {:.3e}), f32 {:.3e}",
        TOKENS - 1,
        kld_q8 / n,
        max_q8,
        kld_f32 / n
    );
    println!(
        "perplexity: f16 KV {:.4}, q8_0 KV {:.4}, f32 KV {:.4}",
        ppl[0], ppl[1], ppl[2]
    );
    assert!(kld_q8 / n < Q8_0_KLD_BUDGET);
}
