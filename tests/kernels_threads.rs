//! Splitting a matrix-vector product over threads gives the same bits as one
//! thread, on every kernel tier and for every weight type with a SIMD kernel;
//! and a session's logits and greedy tokens are bitwise the same for 1, 2 and
//! 3 threads on models whose matrices take the threaded path.

mod common;

use std::sync::Arc;

use ember_converter::ir::{F32Source, IrTensor, ModelIr};
use ember_converter::writer::{write_model, WriteOptions};
use ember_converter::DTypeChoice;
use ember_kernels::arch::{kernels_for, Tier};
use ember_kernels::blocks::{BlockQ4_0, BlockQ8_0, QK};
use ember_kernels::scalar;
use ember_runtime::format::{expected_tensors, flags, DType};
use ember_runtime::model::{Input, Weights, PARALLEL_MIN_BYTES};
use ember_runtime::pool::Pool;
use ember_runtime::tokenizer::TokenType;
use ember_runtime::{argmax, KvType, Model, Session, SessionConfig};
use half::f16;

#[test]
fn threaded_matvec_is_bit_identical() {
    // Rows not a multiple of 4; every matrix above the parallel threshold.
    let (rows, cols) = (12_003usize, 640usize);
    let x: Vec<f32> = (0..cols)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect();
    let wf: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 504.0)
        .collect();
    let wh: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
    let mut w8 = vec![
        BlockQ8_0 {
            d: [0; 2],
            qs: [0; QK]
        };
        rows * cols / QK
    ];
    let mut w4 = vec![
        BlockQ4_0 {
            d: [0; 2],
            qs: [0; QK / 2]
        };
        rows * cols / QK
    ];
    scalar::quantize_row_q8_0(&wf, &mut w8);
    scalar::quantize_row_q4_0(&wf, &mut w4);
    let mut xq = vec![
        BlockQ8_0 {
            d: [0; 2],
            qs: [0; QK]
        };
        cols / QK
    ];
    let input = Input::quantized(&x, &mut xq);
    let views = [
        Weights::F32(&wf),
        Weights::F16(&wh),
        Weights::Q8_0(&w8),
        Weights::Q4_0(&w4),
    ];
    for k in Tier::ALL.into_iter().filter_map(kernels_for) {
        for w in views {
            let bytes = w.dtype().bytes_for(w.len() as u64).unwrap();
            assert!(
                bytes >= PARALLEL_MIN_BYTES,
                "{:?} must take the threaded path",
                w.dtype()
            );
            let mut one = vec![0.0f32; rows];
            w.matvec_input(&k, &input, &mut one);
            for threads in [2usize, 3, 4] {
                let mut pool = Pool::new(threads).unwrap();
                let mut many = vec![f32::NAN; rows];
                w.matvec_input_threaded(&k, &input, &mut many, &mut pool);
                assert!(
                    one.iter()
                        .zip(&many)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{} {:?} threads {threads} (matrix {bytes} B, threshold {PARALLEL_MIN_BYTES})",
                    k.tier.name(),
                    w.dtype()
                );
            }
        }
    }
}

/// A one-layer model (tiny model's layout, wider) whose output matrix, and for
/// f32 also the feed-forward matrices, are at least `PARALLEL_MIN_BYTES`.
fn wide_model(dtype: DType, vocab: usize) -> Arc<Model> {
    wide_model_windowed(dtype, vocab, 0)
}

/// `wide_model` with a sliding attention window of `window` positions (0: none).
fn wide_model_windowed(dtype: DType, vocab: usize, window: u32) -> Arc<Model> {
    wide_model_with(dtype, vocab, window, common::tiny_hparams().flags)
}

/// `wide_model_windowed` with the `format::flags` bits `flags` (which biases
/// the layers have).
fn wide_model_with(dtype: DType, vocab: usize, window: u32, flags: u32) -> Arc<Model> {
    let mut hp = common::tiny_hparams();
    hp.flags = flags;
    hp.sliding_window = window;
    hp.dim = 256;
    hp.n_layers = 1;
    hp.head_dim = 64;
    hp.rope_dim = 64;
    hp.ffn_dim = 4096;
    hp.vocab_size = vocab as u32;
    let tensors = expected_tensors(&hp)
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product::<u64>() as usize;
            let mut v = common::random_values(n, i as u64 + 7, 0.5);
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
    let mut tokenizer = common::tiny_tokenizer(264);
    for i in tokenizer.tokens.len()..vocab {
        tokenizer.tokens.push(format!("w{i}"));
        tokenizer.scores.push(-(i as f32));
        tokenizer.token_types.push(TokenType::Normal);
    }
    let ir = ModelIr {
        hparams: hp,
        tensors,
        tokenizer,
        chat_template: None,
        metadata: vec![],
    };
    let dir = common::scratch();
    let path = dir.path().join("wide.ember");
    let opts = WriteOptions {
        dtype: DTypeChoice::Fixed(dtype),
        embed_dtype: Some(dtype),
        ..Default::default()
    };
    write_model(&ir, &path, &opts).unwrap();
    let bytes = dtype.bytes_for((vocab * 256) as u64).unwrap();
    assert!(bytes >= PARALLEL_MIN_BYTES, "the output must be threaded");
    Arc::new(Model::load(&path).unwrap())
}

/// Logits of every step of a greedy run of `steps` tokens.
fn greedy_logits(model: &Arc<Model>, threads: usize, steps: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let config = SessionConfig {
        context: 64,
        threads,
        ..Default::default()
    };
    let mut s = Session::new(model.clone(), config).unwrap();
    let (mut tok, mut tokens, mut logits) = (1u32, vec![], vec![]);
    for _ in 0..steps {
        let l = s.step(tok).unwrap();
        tok = argmax(l);
        tokens.push(tok);
        logits.push(l.to_vec());
    }
    (tokens, logits)
}

#[test]
fn threaded_session_is_bit_identical() {
    for (dtype, vocab) in [(DType::F32, 4096), (DType::Q8_0, 16384)] {
        let model = wide_model(dtype, vocab);
        let (tokens, logits) = greedy_logits(&model, 1, 12);
        for threads in [2, 3] {
            let (t, l) = greedy_logits(&model, threads, 12);
            assert_eq!(tokens, t, "{dtype:?} threads {threads}: greedy tokens");
            for (step, (a, b)) in logits.iter().zip(&l).enumerate() {
                assert!(
                    a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{dtype:?} threads {threads}: logits of step {step} differ"
                );
            }
        }
    }
}

/// Batched prefill (the matrix-matrix path) leaves the same logits and cache as
/// feeding the prompt token by token, bit for bit, for every batch size and
/// thread count: checked on the logits after the prompt and after three more
/// greedy steps (which read the cache the prompt wrote). One test per weight
/// type, so the test harness's threads run them side by side (each takes a
/// minute of emulated compute under qemu).
#[test]
fn batched_prefill_is_bit_identical_to_token_by_token_q8_0() {
    batched_prefill_is_bit_identical_to_token_by_token(DType::Q8_0);
}

#[test]
fn batched_prefill_is_bit_identical_to_token_by_token_q4_0() {
    batched_prefill_is_bit_identical_to_token_by_token(DType::Q4_0);
}

#[test]
fn batched_prefill_is_bit_identical_to_token_by_token_f16() {
    batched_prefill_is_bit_identical_to_token_by_token(DType::F16);
}

#[test]
fn batched_prefill_is_bit_identical_to_token_by_token_f32() {
    batched_prefill_is_bit_identical_to_token_by_token(DType::F32);
}

fn batched_prefill_is_bit_identical_to_token_by_token(dtype: DType) {
    let prompt: Vec<u32> = (0..45u32).map(|i| (i * 37 + 5) % 250 + 3).collect();
    let model = wide_model(dtype, 4096);
    let want = prompt_then_greedy(&model, &prompt, KvType::F16, 1, 1);
    for (batch, threads) in [(7, 1), (32, 1), (512, 2), (5, 3)] {
        let got = prompt_then_greedy(&model, &prompt, KvType::F16, batch, threads);
        assert_same_logits(
            &want,
            &got,
            &format!("{dtype:?} batch {batch} threads {threads}"),
        );
    }
}

/// With every bias a layer can have (Q/K/V, attention output, gate/up/down),
/// batched prefill on any thread count still gives token-by-token's logits,
/// bit for bit: the per-row work of a batch (norms, bias and residual adds,
/// the gated activation) is split over the threads.
#[test]
fn batched_prefill_with_every_bias_is_bit_identical() {
    let prompt: Vec<u32> = (0..45u32).map(|i| (i * 41 + 9) % 250 + 3).collect();
    let all = flags::QKV_BIAS | flags::ATTN_OUT_BIAS | flags::MLP_BIAS;
    let model = wide_model_with(DType::Q8_0, 4096, 0, all);
    let hp = model.hparams();
    assert!(hp.qkv_bias() && hp.attn_out_bias() && hp.mlp_bias());
    let want = prompt_then_greedy(&model, &prompt, KvType::F16, 1, 1);
    for (batch, threads) in [(7, 1), (32, 2), (5, 3)] {
        let got = prompt_then_greedy(&model, &prompt, KvType::F16, batch, threads);
        let what = format!("all biases, batch {batch} threads {threads}");
        assert_same_logits(&want, &got, &what);
    }
}

/// `include/ember.h` asks C callers for 256 KiB of stack on a thread that
/// prefills or decodes (the batched quantized kernels keep 64 KiB of terms on
/// the calling thread's stack): batched prefill and decode run on such a
/// thread, alone and with a worker, and give the logits of a normal thread. A
/// frame that outgrew the promise would overflow the stack and abort this
/// test binary.
#[test]
fn prefill_and_decode_fit_the_documented_calling_thread_stack() {
    const CALLER_STACK: usize = 256 << 10;
    let prompt: Vec<u32> = (0..45u32).map(|i| (i * 29 + 7) % 250 + 3).collect();
    for dtype in [DType::Q8_0, DType::Q4_0, DType::F16] {
        let model = wide_model(dtype, 4096);
        for threads in [1, 2] {
            let want = prompt_then_greedy(&model, &prompt, KvType::F16, 32, threads);
            let (m, p) = (model.clone(), prompt.clone());
            let got = std::thread::Builder::new()
                .stack_size(CALLER_STACK)
                .spawn(move || prompt_then_greedy(&m, &p, KvType::F16, 32, threads))
                .unwrap()
                .join()
                .unwrap();
            assert_same_logits(
                &want,
                &got,
                &format!("{dtype:?} threads {threads}, 256 KiB stack"),
            );
        }
    }
}

/// The tokens of a batch attend on several threads, each with its own scratch:
/// for every KV cache type, with and without a sliding window, the logits
/// still equal token-by-token prefill's, bit for bit.
#[test]
fn threaded_batch_attention_is_bit_identical_for_every_kv_type_and_window() {
    let prompt: Vec<u32> = (0..45u32).map(|i| (i * 53 + 11) % 250 + 3).collect();
    for window in [0, 16] {
        let model = wide_model_windowed(DType::Q8_0, 4096, window);
        for kv_type in [KvType::F32, KvType::F16, KvType::Q8_0] {
            let want = prompt_then_greedy(&model, &prompt, kv_type, 1, 1);
            for (batch, threads) in [(32, 2), (5, 3)] {
                let got = prompt_then_greedy(&model, &prompt, kv_type, batch, threads);
                let what = format!("window {window} {kv_type:?} batch {batch} threads {threads}");
                assert_same_logits(&want, &got, &what);
            }
        }
    }
}

/// Logits after prefilling `prompt` (in batches of `batch`) and after each of
/// three greedy steps, which read the cache the prompt wrote.
fn prompt_then_greedy(
    model: &Arc<Model>,
    prompt: &[u32],
    kv_type: KvType,
    batch: usize,
    threads: usize,
) -> Vec<Vec<f32>> {
    let config = SessionConfig {
        context: 64,
        threads,
        batch,
        kv_type,
        ..Default::default()
    };
    let mut s = Session::new(model.clone(), config).unwrap();
    let mut all = vec![s.prefill(prompt).unwrap().to_vec()];
    for _ in 0..3 {
        let next = argmax(all.last().unwrap());
        all.push(s.step(next).unwrap().to_vec());
    }
    all
}

fn assert_same_logits(want: &[Vec<f32>], got: &[Vec<f32>], what: &str) {
    assert_eq!(want.len(), got.len(), "{what}: steps");
    for (step, (a, b)) in want.iter().zip(got).enumerate() {
        assert!(
            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{what}: logits of step {step} differ"
        );
    }
}
