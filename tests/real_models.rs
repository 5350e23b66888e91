//! Real checkpoints of the families Ember runs, converted to f32, against
//! Hugging Face transformers loading the same GGUF (`gguf_file=`, f32, eager
//! attention): the tokenizer's ids, greedy continuations and perplexity.
//! Goldens: `tests/fixtures/real/*.json`, made by
//! `scripts/make_real_model_goldens.py`; weights: `scripts/fetch_models.sh
//! --gemma3 --qwen` (each test skips with a message when its file is absent).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ember_converter::{convert, ConvertOptions};
use ember_runtime::tokenizer::EncodeOptions;
use ember_runtime::{argmax, KvType, Model, Session, SessionConfig};
use serde_json::Value;

/// Relative perplexity difference allowed against transformers: both compute
/// in f32 from the same dequantized weights, so they differ by summation
/// order (measured: 5e-5 on Gemma-3-270M, 7e-5 on Qwen2.5-Coder-0.5B); the
/// acceptance bound is 0.1 %.
const MAX_PPL_REL_DIFF: f64 = 1e-3;

struct RealModel {
    /// Path of the GGUF under the models directory.
    gguf: &'static str,
    /// Golden file under `tests/fixtures/real/`.
    golden: &'static str,
    /// The flag of `scripts/fetch_models.sh` that downloads it.
    fetch_flag: &'static str,
}

const GEMMA3: RealModel = RealModel {
    gguf: "gemma3-270m/gemma-3-270m-q4_k_m.gguf",
    golden: "gemma3-270m.json",
    fetch_flag: "--gemma3",
};

const QWEN_CODER: RealModel = RealModel {
    gguf: "qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    golden: "qwen2.5-coder-0.5b.json",
    fetch_flag: "--qwen",
};

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn golden(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/real")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("golden JSON")
}

/// The GGUF converted to f32 in `dir`, or `None` (after saying why) when the
/// model has not been fetched.
fn convert_f32(m: &RealModel, dir: &Path) -> Option<Arc<Model>> {
    let gguf: PathBuf = common::models_dir().join(m.gguf);
    if !gguf.is_file() {
        eprintln!(
            "skipping: {} not found (run scripts/fetch_models.sh {})",
            gguf.display(),
            m.fetch_flag
        );
        return None;
    }
    let out = dir.join("model.ember");
    // The default keeps float tensors and dequantizes the K-quant and other
    // block types to f32, exactly as transformers' GGUF loader does.
    convert(&gguf, &out, &ConvertOptions::default())
        .unwrap_or_else(|e| panic!("converting {}: {e}", gguf.display()));
    Some(Arc::new(Model::load(&out).expect("load")))
}

fn session(model: &Arc<Model>, context: usize) -> Session<'static> {
    Session::new(
        model.clone(),
        SessionConfig {
            context,
            kv_type: KvType::F32,
            threads: 2,
            batch: 64,
            ..Default::default()
        },
    )
    .expect("session")
}

/// Every prompt of the golden: Ember's tokenizer gives transformers' ids,
/// and greedy decoding after a batched prefill gives transformers' tokens
/// (up to its end of sequence, where it stopped).
fn check_prompts(model: &Arc<Model>, golden: &Value) {
    let eos = golden["tokenizer"]["eos_token_id"].as_u64().expect("eos") as u32;
    for p in golden["prompts"].as_array().expect("prompts") {
        let text = p["text"].as_str().expect("text");
        let opts = EncodeOptions {
            add_bos: p["bos_added"].as_bool().expect("bos_added"),
            parse_special: true,
        };
        let want_ids = ids(&p["input_ids"]);
        assert_eq!(
            model.tokenizer().encode(text, opts),
            want_ids,
            "token ids of {text:?}"
        );
        let want = ids(&p["greedy_ids"]);
        let mut s = session(model, want_ids.len() + want.len() + 1);
        let mut next = argmax(s.prefill(&want_ids).expect("prefill"));
        let mut got = Vec::new();
        for _ in 0..want.len() {
            got.push(next);
            if next == eos {
                break;
            }
            next = argmax(s.step(next).expect("step"));
        }
        assert_eq!(got, want, "greedy continuation of {text:?}");
    }
}

/// Perplexity over the golden's ids (its predictions only), in one prefill
/// per token so every position's logits are seen.
fn check_perplexity(model: &Arc<Model>, golden: &Value) {
    let p = &golden["perplexity"];
    let ids = ids(&p["ids"]);
    let want = p["ppl"].as_f64().expect("ppl");
    let mut s = session(model, ids.len());
    let mut nll = 0.0f64;
    for (i, &t) in ids[..ids.len() - 1].iter().enumerate() {
        let logits = s.step(t).expect("step");
        let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let lse = max
            + logits
                .iter()
                .map(|&l| (l as f64 - max).exp())
                .sum::<f64>()
                .ln();
        nll += lse - logits[ids[i + 1] as usize] as f64;
    }
    let ppl = (nll / (ids.len() - 1) as f64).exp();
    let rel = (ppl - want).abs() / want;
    eprintln!("perplexity {ppl:.4} (transformers {want:.4}, relative difference {rel:.2e})");
    assert!(rel <= MAX_PPL_REL_DIFF, "perplexity {ppl} vs {want}");
}

#[test]
fn gemma3_270m_matches_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(model) = convert_f32(&GEMMA3, tmp.path()) else {
        return;
    };
    let golden = golden(GEMMA3.golden);
    check_prompts(&model, &golden);
    check_perplexity(&model, &golden);
}

#[test]
fn qwen25_coder_05b_matches_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(model) = convert_f32(&QWEN_CODER, tmp.path()) else {
        return;
    };
    let golden = golden(QWEN_CODER.golden);
    check_prompts(&model, &golden);
    check_perplexity(&model, &golden);
}
