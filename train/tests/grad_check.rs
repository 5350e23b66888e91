//! The hand-written LoRA backward pass against central finite differences of
//! the same forward pass run in f64, on tiny models covering every branch
//! (GQA, biases, both RoPE pairings, partial rotary dims, SiLU and both GELUs,
//! sliding windows and their period, local and YaRN RoPE, QK norms, post-norms,
//! scaled embeddings and scores, soft-capped logits, tied output, q8_0 weights,
//! dropout, a loss mask); the training forward pass against inference; and the
//! per-sequence gradients' independence of the thread count.

mod util;

use ember_runtime::format::DType;
use ember_runtime::lora::{LoraAdapter, LoraTarget};
use ember_runtime::Model;
use ember_train::grad::{sequence_loss, Base, Dropout, Example, Workspace};
use ember_train::params::Layout;
use ember_train::trainer::batch_loss;

/// Step of the central differences. In f64 the truncation error is
/// O(h^2 * third derivative) ~ 1e-10 here and the rounding error
/// O(eps_f64 * |loss| / h) ~ 1e-11, both far below the tolerance.
const FD_STEP: f64 = 1e-5;
/// Allowed |analytic - numeric| per entry, relative to max(|numeric|, 1e-3).
/// The two agree to ~1e-8 in f64; any wrong term of the backward pass (a
/// missing dropout scale, a transposed index, a wrong RoPE sign) shows up as an
/// error of order 1.
const FD_REL_TOL: f64 = 1e-5;

fn adapter(model: &Model, rank: usize, seed: u64) -> (LoraAdapter, Layout, Vec<f64>) {
    let hp = model.hparams();
    let ad = LoraAdapter::zeros(hp, rank, 2.0 * rank as f32, &LoraTarget::ALL).unwrap();
    let layout = Layout::of(&ad, hp).unwrap();
    // Non-zero A and B, so every gradient term is exercised.
    let vals = util::random_values(layout.len, seed, 0.3);
    (ad, layout, vals.iter().map(|&v| v as f64).collect())
}

fn example(vocab: u32, len: usize, seed: u64, mask_first: usize) -> Example {
    let tokens: Vec<u32> = util::random_values(len + 1, seed, 1.0)
        .iter()
        .map(|v| ((v + 1.0) * 0.5 * vocab as f32) as u32 % vocab)
        .collect();
    let loss_mask = (0..len).map(|t| t >= mask_first).collect();
    Example { tokens, loss_mask }
}

/// Checks `n_checks` parameters spread over every slot.
fn check_model(model: &Model, dropout: Option<Dropout>, n_checks: usize) {
    let base = Base::new(model).unwrap();
    let (_, layout, params) = adapter(model, 2, 7);
    let ex = example(model.hparams().vocab_size, 9, 3, 2);
    let mut ws = Workspace::<f64>::new(&base, &layout, ex.len());
    let mut grads = vec![0.0f64; layout.len];
    let loss = sequence_loss(
        &base,
        &layout,
        &params,
        &ex,
        dropout.as_ref(),
        Some(&mut grads),
        &mut ws,
    );
    assert_eq!(loss.count, 7);
    assert!(loss.sum.is_finite() && loss.sum > 0.0);
    let mut p = params.clone();
    let mut failures = Vec::new();
    let mut max_err = 0.0f64;
    let stride = (layout.len / n_checks).max(1);
    for k in 0..n_checks {
        // Spread over the vector, offset so A and B entries of every slot are hit.
        let i = (k * stride + k * 7) % layout.len;
        let f = |p: &[f64], ws: &mut Workspace<f64>| {
            sequence_loss(&base, &layout, p, &ex, dropout.as_ref(), None, ws).sum
        };
        p[i] = params[i] + FD_STEP;
        let up = f(&p, &mut ws);
        p[i] = params[i] - FD_STEP;
        let down = f(&p, &mut ws);
        p[i] = params[i];
        let numeric = (up - down) / (2.0 * FD_STEP);
        let err = (grads[i] - numeric).abs() / numeric.abs().max(1e-3);
        max_err = max_err.max(err);
        if err > FD_REL_TOL {
            failures.push(format!(
                "param {i}: analytic {} numeric {numeric}",
                grads[i]
            ));
        }
    }
    eprintln!("max relative error {max_err:.2e} over {n_checks} parameters");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(grads.iter().any(|&g| g != 0.0));
}

#[test]
fn lora_gradients_match_finite_differences() {
    let dir = util::scratch();
    let model = util::tiny_model(dir.path(), util::tiny_hparams(), None, 1);
    check_model(&model, None, 80);
}

#[test]
fn gradients_match_with_every_variant_and_dropout() {
    let dir = util::scratch();
    let model = util::tiny_model(dir.path(), util::tiny_hparams_variant(), None, 2);
    check_model(&model, Some(Dropout { p: 0.3, seed: 99 }), 80);
}

#[test]
fn gradients_match_on_gemma_style_blocks() {
    let dir = util::scratch();
    let model = util::tiny_model(dir.path(), util::tiny_hparams_gemma(), None, 6);
    check_model(&model, None, 80);
}

/// With a zero adapter, the summed cross-entropy of a sequence from the
/// training forward pass equals the one computed from a session's logits
/// (f64 training against f32 inference: 1e-5 relative).
fn assert_training_matches_inference(model: std::sync::Arc<ember_runtime::Model>, what: &str) {
    let hp = *model.hparams();
    let base = Base::new(&model).unwrap();
    let (_, layout, _) = adapter(&model, 2, 8);
    let zeros = vec![0.0f64; layout.len];
    let ex = example(hp.vocab_size, 10, 11, 0);
    let train = sequence_loss(
        &base,
        &layout,
        &zeros,
        &ex,
        None,
        None,
        &mut Workspace::new(&base, &layout, ex.len()),
    );
    let mut s = ember_runtime::Session::new(
        model.clone(),
        ember_runtime::SessionConfig {
            context: 32,
            kv_type: ember_runtime::KvType::F32,
            ..Default::default()
        },
    )
    .unwrap();
    let mut infer = 0.0f64;
    for t in 0..ex.len() {
        let logits = s.step(ex.tokens[t]).unwrap();
        let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let lse = m + logits
            .iter()
            .map(|&v| (v as f64 - m).exp())
            .sum::<f64>()
            .ln();
        infer += lse - logits[ex.tokens[t + 1] as usize] as f64;
    }
    let rel = (train.sum - infer).abs() / infer;
    eprintln!(
        "{what}: training {} inference {infer} ({rel:.1e})",
        train.sum
    );
    assert!(
        rel < 1e-5,
        "{what}: training {} vs inference {infer}",
        train.sum
    );
}

/// The training forward pass and the inference forward pass are the same
/// function of the weights, for every block variant.
#[test]
fn training_forward_matches_inference() {
    let dir = util::scratch();
    for (i, hp) in [
        util::tiny_hparams(),
        util::tiny_hparams_variant(),
        util::tiny_hparams_gemma(),
    ]
    .into_iter()
    .enumerate()
    {
        let model = util::tiny_model(dir.path(), hp, None, 20 + i as u64);
        assert_training_matches_inference(std::sync::Arc::new(model), &format!("variant {i}"));
    }
}

/// The same on every family fine-tuning supports, as converted from the tiny
/// transformers checkpoints of tests/fixtures/hf-tiny (RoPE scalings, QK norms,
/// fused Phi-3 projections, sliding windows, Gemma 3's block).
#[test]
fn training_forward_matches_inference_on_every_family() {
    let dir = util::scratch();
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf-tiny");
    for family in [
        "llama",
        "llama-gelu",
        "llama-rope-linear",
        "llama-rope-llama3",
        "mistral",
        "qwen2",
        "qwen3",
        "qwen3-yarn",
        "phi3",
        "gemma3",
    ] {
        let out = dir.path().join(format!("{family}.ember"));
        ember_converter::convert(&fixtures.join(family), &out, &Default::default())
            .unwrap_or_else(|e| panic!("convert {family}: {e}"));
        let model = ember_runtime::Model::load(&out).unwrap();
        assert_training_matches_inference(std::sync::Arc::new(model), family);
    }
}

#[test]
fn gradients_match_on_q8_0_weights() {
    let dir = util::scratch();
    let model = util::tiny_model(dir.path(), util::tiny_hparams(), Some(DType::Q8_0), 3);
    assert!(model.tensors().iter().any(|t| t.dtype.is_quantized()));
    check_model(&model, None, 40);
}

#[test]
fn f32_pass_agrees_with_f64() {
    // The training precision against the checked one: loss to 1e-5 relative,
    // gradient to 1e-4 relative in norm (f32 rounding through 2 layers).
    let dir = util::scratch();
    let model = util::tiny_model(dir.path(), util::tiny_hparams(), None, 4);
    let base = Base::new(&model).unwrap();
    let (_, layout, p64) = adapter(&model, 2, 8);
    let p32: Vec<f32> = p64.iter().map(|&v| v as f32).collect();
    let ex = example(model.hparams().vocab_size, 12, 5, 0);
    let mut g64 = vec![0.0f64; layout.len];
    let mut g32 = vec![0.0f32; layout.len];
    let l64 = sequence_loss(
        &base,
        &layout,
        &p64,
        &ex,
        None,
        Some(&mut g64),
        &mut Workspace::new(&base, &layout, 12),
    );
    let l32 = sequence_loss(
        &base,
        &layout,
        &p32,
        &ex,
        None,
        Some(&mut g32),
        &mut Workspace::new(&base, &layout, 12),
    );
    assert!(
        (l64.sum - l32.sum).abs() / l64.sum < 1e-5,
        "{} vs {}",
        l64.sum,
        l32.sum
    );
    let diff: f64 = g64
        .iter()
        .zip(&g32)
        .map(|(a, &b)| (a - b as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = g64.iter().map(|a| a * a).sum::<f64>().sqrt();
    assert!(
        diff / norm < 1e-4,
        "relative gradient error {}",
        diff / norm
    );
}

#[test]
fn per_sequence_gradients_do_not_depend_on_threads() {
    let dir = util::scratch();
    let model = util::tiny_model(dir.path(), util::tiny_hparams(), None, 5);
    let base = Base::new(&model).unwrap();
    let (_, layout, p64) = adapter(&model, 2, 9);
    let params: Vec<f32> = p64.iter().map(|&v| v as f32).collect();
    let exs: Vec<Example> = (0..5)
        .map(|i| example(264, 6 + i, 20 + i as u64, 1))
        .collect();
    let refs: Vec<&Example> = exs.iter().collect();
    let drops: Vec<Option<Dropout>> = (0..5).map(|i| Some(Dropout { p: 0.1, seed: i })).collect();
    let run = |threads: usize| {
        let mut ws: Vec<Workspace<f32>> = (0..threads)
            .map(|_| Workspace::new(&base, &layout, 10))
            .collect();
        let mut slots = vec![vec![1.0f32; layout.len]; 5];
        let losses = batch_loss(
            &base,
            &layout,
            &params,
            &refs,
            &drops,
            &mut ws,
            Some(&mut slots),
        );
        (losses, slots)
    };
    let (l1, s1) = run(1);
    let (l3, s3) = run(3);
    assert_eq!(l1, l3);
    assert_eq!(s1, s3);
    assert!(s1[0].iter().any(|&g| g != 0.0 && g != 1.0));
}
