//! Session operations: determinism across thread counts, snapshot/restore,
//! rewind, context shift, KV types, and bad inputs (each a clear error).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ember_runtime::generate::{GenerateConfig, Generator, PrefillOptions, StopReason};
use ember_runtime::sampler::{Sampler, SamplerConfig};
use ember_runtime::{ContextPolicy, Error, KvType, Model, Session, SessionConfig};

/// Mean KL divergence bound of f16 / q8_0 KV against f32 KV on stories260K
/// (nats per token): f16 rounding is ~1e-3 relative, q8_0 ~1/254 of the block
/// maximum; both must stay far below the divergence of a different model.
const KV_KLD_BOUND: [(KvType, f64); 2] = [(KvType::F16, 1e-4), (KvType::Q8_0, 5e-3)];

fn tiny() -> Arc<Model> {
    Arc::new(Model::from_bytes(&common::tiny_model_bytes()).unwrap())
}

fn stories() -> Option<Arc<Model>> {
    let bin = common::shared_file("models/stories260K/stories260K.bin")?;
    let tok = common::shared_file("models/stories260K/tok512.bin")?;
    let dir = common::scratch();
    let out = dir.path().join("stories.ember");
    let opts = ember_converter::ConvertOptions {
        tokenizer: Some(tok),
        ..Default::default()
    };
    ember_converter::convert(&bin, &out, &opts).unwrap();
    Some(Arc::new(Model::load(&out).unwrap()))
}

fn sampling(seed: u64) -> SamplerConfig {
    SamplerConfig {
        temperature: 0.8,
        top_k: 40,
        top_p: 0.95,
        min_p: 0.05,
        repeat_penalty: 1.1,
        seed,
        ..Default::default()
    }
}

/// Generates `n` tokens after `prompt` and returns (token ids, text, stop).
fn generate(
    session: &mut Session,
    prompt: &[u32],
    cfg: &SamplerConfig,
    n: usize,
) -> (Vec<u32>, String, StopReason) {
    let model = session.model().clone();
    let sampler = Sampler::new(model.hparams().vocab_size as usize, cfg).unwrap();
    let config = GenerateConfig {
        max_tokens: n,
        ..Default::default()
    };
    let mut g = Generator::new(model.tokenizer(), sampler, config).unwrap();
    let (mut ids, mut text) = (Vec::new(), String::new());
    let stats = g
        .generate(session, prompt, |id, piece| {
            if id != u32::MAX {
                ids.push(id);
            }
            text.push_str(piece);
            true
        })
        .unwrap();
    (ids, text, stats.stop)
}

fn prompt(model: &Model, text: &str) -> Vec<u32> {
    model
        .tokenizer()
        .encode(text, model.tokenizer().default_encode_options())
}

#[test]
fn same_seed_same_tokens_for_one_and_two_threads() {
    // The session's worker pool must not change the output (stories260K's
    // matrices stay on one thread; tests/kernels_threads.rs covers models
    // whose matrices are split).
    let Some(model) = stories() else { return };
    let p = prompt(&model, "Once upon a time");
    let run = |threads| {
        let config = SessionConfig {
            context: 256,
            threads,
            ..Default::default()
        };
        let mut s = Session::new(model.clone(), config).unwrap();
        generate(&mut s, &p, &sampling(42), 150).0
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(1));
    let mut s = Session::new(model.clone(), SessionConfig::new(256)).unwrap();
    assert_ne!(
        one,
        generate(&mut s, &p, &sampling(43), 150).0,
        "seeds must matter"
    );
}

#[test]
fn restore_continues_exactly_like_an_uninterrupted_run() {
    let Some(model) = stories() else { return };
    let dir = common::scratch();
    for kv_type in KvType::ALL {
        let config = SessionConfig {
            context: 200,
            kv_type,
            ..Default::default()
        };
        let p = prompt(&model, "Once upon a time, there was a cat");
        // Uninterrupted: prompt, 30 greedy tokens, then 60 sampled ones.
        let mut a = Session::new(model.clone(), config).unwrap();
        let (first, _, _) = generate(&mut a, &p, &SamplerConfig::greedy(), 30);
        // Feed the last generated token too so the state is "after" it.
        a.step(*first.last().unwrap()).unwrap();
        let path = dir.path().join(format!("{}.cache", kv_type.name()));
        a.save_state(&path, b"my app data").unwrap();
        let (rest_a, text_a, _) = generate(&mut a, &[], &sampling(7), 60);

        // Restored into a fresh session (arena mode for good measure).
        let hp = model.config().clone();
        let mut arena = vec![0u8; Session::arena_bytes_required(&hp, &config)];
        let mut b = Session::new_in(model.clone(), config, &mut arena).unwrap();
        assert_eq!(b.load_state(&path).unwrap(), b"my app data");
        assert_eq!(b.pos(), p.len() + 30);
        assert!(b.has_logits());
        let (rest_b, text_b, _) = generate(&mut b, &[], &sampling(7), 60);
        assert_eq!(rest_a, rest_b, "{kv_type:?}");
        assert_eq!(text_a, text_b);
    }
}

#[test]
fn truncate_then_refeed_equals_a_fresh_prefill() {
    let Some(model) = stories() else { return };
    let config = SessionConfig {
        context: 64,
        kv_type: KvType::F32,
        ..Default::default()
    };
    let a_ids = prompt(&model, "Once upon a time");
    let b_ids = prompt(&model, " the dog ran");
    let mut s = Session::new(model.clone(), config).unwrap();
    s.prefill(&a_ids).unwrap();
    s.prefill(&b_ids).unwrap();
    s.truncate(a_ids.len() - 1).unwrap();
    assert!(!s.has_logits());
    let got = s.step(*a_ids.last().unwrap()).unwrap().to_vec();
    let mut fresh = Session::new(model.clone(), config).unwrap();
    let want = fresh.prefill(&a_ids).unwrap().to_vec();
    assert_eq!(got, want);
    assert!(s.truncate(s.pos() + 1).is_err());
}

/// `prefill_with_logits` (evaluation) gives every position the logits that
/// feeding the tokens one by one gives, across passes and logit-row chunks,
/// for f32 and q8_0 weights, and leaves the session as `prefill` does.
#[test]
fn prefill_with_logits_matches_step_by_step() {
    let mut models = vec![("tiny", tiny())];
    if let Some(m) = stories() {
        models.push(("stories260K f32", m));
    }
    if let (Some(bin), Some(tok)) = (
        common::shared_file("models/stories260K/stories260K.bin"),
        common::shared_file("models/stories260K/tok512.bin"),
    ) {
        let dir = common::scratch();
        let out = dir.path().join("q8.ember");
        let opts = ember_converter::ConvertOptions {
            tokenizer: Some(tok),
            dtype: ember_converter::DTypeChoice::Fixed(ember_runtime::format::DType::Q8_0),
            ..Default::default()
        };
        ember_converter::convert(&bin, &out, &opts).unwrap();
        models.push(("stories260K q8_0", Arc::new(Model::load(&out).unwrap())));
    }
    for (name, model) in models {
        let vocab = model.hparams().vocab_size as usize;
        let n = 150.min(model.hparams().max_context as usize - 1);
        let ids: Vec<u32> = (0..n as u32).map(|i| (i * 7 + 3) % vocab as u32).collect();
        let config = SessionConfig {
            context: n + 1,
            batch: 64,
            threads: 2,
            ..Default::default()
        };
        let mut one = Session::new(model.clone(), config).unwrap();
        let want: Vec<Vec<f32>> = ids.iter().map(|&t| one.step(t).unwrap().to_vec()).collect();
        let mut all = Session::new(model.clone(), config).unwrap();
        let mut got = vec![Vec::new(); n];
        all.prefill_with_logits(&ids, &mut |i, l| {
            assert!(got[i].is_empty(), "{name}: position {i} twice");
            got[i] = l.to_vec();
        })
        .unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.len(), vocab, "{name}: position {i} missing");
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
            let err = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= 1e-4 * scale, "{name}: position {i}: max error {err}");
        }
        assert_eq!(all.pos(), n);
        assert_eq!(all.logits(), got[n - 1].as_slice());
        assert_eq!(
            all.step(ids[0]).unwrap(),
            one.step(ids[0]).unwrap(),
            "{name}"
        );
    }
}

/// The generator's prefill with `reuse_cached` (chat turns, prompt caches)
/// keeps the cached tokens up to the first difference and gives the logits of
/// a fresh prefill bit for bit; a full hit feeds nothing; a raised cancel flag
/// stops before any token is fed and decoding reports `Cancelled`.
#[test]
fn generator_prefill_reuses_the_cached_prefix_and_can_be_cancelled() {
    let model = tiny();
    let config = SessionConfig {
        context: 64,
        kv_type: KvType::F32,
        batch: 4,
        ..Default::default()
    };
    let vocab = model.hparams().vocab_size as usize;
    let generator = || {
        let sampler = Sampler::new(vocab, &SamplerConfig::greedy()).unwrap();
        Generator::new(model.tokenizer(), sampler, GenerateConfig::default()).unwrap()
    };
    let first: Vec<u32> = (1..12).collect();
    let second: Vec<u32> = (1..9).chain([20, 21, 22]).collect();
    let reuse = PrefillOptions {
        reuse_cached: true,
        ..Default::default()
    };
    let mut g = generator();
    let mut s = Session::new(model.clone(), config).unwrap();
    let p = g.prefill(&mut s, &first, &reuse).unwrap();
    assert_eq!((p.reused_tokens, p.cancelled), (0, false));
    let p = g.prefill(&mut s, &second, &reuse).unwrap();
    assert_eq!(p.reused_tokens, 8, "the common prefix");
    assert_eq!(s.tokens(), second);
    let mut fresh = Session::new(model.clone(), config).unwrap();
    assert_eq!(s.logits(), fresh.prefill(&second).unwrap());
    // Everything cached, logits included: nothing to feed.
    let p = g.prefill(&mut s, &second, &reuse).unwrap();
    assert_eq!(p.reused_tokens, second.len());
    // A prefix of the cache: one token is fed again for fresh logits.
    let p = g.prefill(&mut s, &second[..5], &reuse).unwrap();
    assert_eq!((p.reused_tokens, s.pos()), (4, 5));

    let flag = AtomicBool::new(true);
    let cancel = PrefillOptions {
        cancel: Some(&flag),
        ..Default::default()
    };
    let mut s = Session::new(model.clone(), config).unwrap();
    let p = g.prefill(&mut s, &first, &cancel).unwrap();
    assert!(p.cancelled);
    assert_eq!(s.pos(), 0, "nothing fed after the flag was raised");
    let stats = g.decode(&mut s, &p, |_, _| true).unwrap();
    assert_eq!(
        (stats.stop, stats.generated_tokens),
        (StopReason::Cancelled, 0)
    );
    flag.store(false, Ordering::SeqCst);
    let p = g.prefill(&mut s, &first, &cancel).unwrap();
    assert!(!p.cancelled);
    assert_eq!(s.pos(), first.len());
}

// One test per KV cache type, so the test harness's threads run them side by
// side (each is minutes of emulated compute under qemu).
const _: () = assert!(KvType::ALL.len() == 3, "a context-shift test per KV type");

#[test]
fn context_shift_2000_tokens_in_256_f32_kv() {
    context_shift_2000_tokens_in_256(KvType::F32);
}

#[test]
fn context_shift_2000_tokens_in_256_f16_kv() {
    context_shift_2000_tokens_in_256(KvType::F16);
}

#[test]
fn context_shift_2000_tokens_in_256_q8_0_kv() {
    context_shift_2000_tokens_in_256(KvType::Q8_0);
}

fn context_shift_2000_tokens_in_256(kv_type: KvType) {
    let Some(model) = stories() else { return };
    let config = SessionConfig {
        context: 256,
        kv_type,
        context_policy: ContextPolicy::Shift { keep: 1 },
        ..Default::default()
    };
    let mut s = Session::new(model.clone(), config).unwrap();
    let p = prompt(&model, "Once upon a time");
    let model2 = model.clone();
    let sampler = Sampler::new(512, &SamplerConfig::greedy()).unwrap();
    let config = GenerateConfig {
        max_tokens: 2000,
        ignore_eos: true,
        ..Default::default()
    };
    let mut g = Generator::new(model2.tokenizer(), sampler, config).unwrap();
    let mut text = String::new();
    let stats = g
        .generate(&mut s, &p, |_, piece| {
            text.push_str(piece);
            true
        })
        .unwrap();
    assert_eq!(stats.generated_tokens, 2000, "{kv_type:?}");
    assert_eq!(stats.stop, StopReason::MaxTokens);
    assert!(
        stats.context_shifts >= 14,
        "{} shifts",
        stats.context_shifts
    );
    assert!(
        s.logits().iter().all(|v| v.is_finite()),
        "{kv_type:?}: NaN/inf logits"
    );
    assert_eq!(s.tokens()[0], p[0], "the kept BOS stays first");
    // Coherent: the text after the first shift is still made of words.
    let tail: String = text.chars().rev().take(400).collect();
    let letters = tail
        .chars()
        .filter(|c| c.is_alphabetic() || *c == ' ')
        .count();
    assert!(
        letters * 10 >= tail.chars().count() * 8,
        "{kv_type:?}: {tail}"
    );
}

#[test]
fn error_policy_stops_when_full() {
    let Some(model) = stories() else { return };
    let mut s = Session::new(model.clone(), SessionConfig::new(64)).unwrap();
    let p = prompt(&model, "Once upon a time");
    let model2 = model.clone();
    let sampler = Sampler::new(512, &SamplerConfig::greedy()).unwrap();
    let config = GenerateConfig {
        max_tokens: 500,
        ignore_eos: true,
        ..Default::default()
    };
    let stats = Generator::new(model2.tokenizer(), sampler, config)
        .unwrap()
        .generate(&mut s, &p, |_, _| true)
        .unwrap();
    assert_eq!(stats.stop, StopReason::ContextFull);
    assert_eq!(s.pos(), 64);
    let err = s.step(1).unwrap_err();
    assert!(matches!(err, Error::ContextFull { .. }), "{err}");
    assert!(err.to_string().contains("context full"), "{err}");
}

/// Mean KL(f32-KV || other-KV) of next-token distributions along a text.
fn mean_kld(model: &Arc<Model>, ids: &[u32], other: KvType) -> f64 {
    let cfg = |kv_type| SessionConfig {
        context: ids.len(),
        kv_type,
        ..Default::default()
    };
    let mut a = Session::new(model.clone(), cfg(KvType::F32)).unwrap();
    let mut b = Session::new(model.clone(), cfg(other)).unwrap();
    let mut total = 0.0;
    for &t in ids {
        let (p, q) = (a.step(t).unwrap(), b.step(t).unwrap());
        total += kld(p, q);
    }
    total / ids.len() as f64
}

/// KL(softmax(p) || softmax(q)) in f64.
pub fn kld(p: &[f32], q: &[f32]) -> f64 {
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
fn f16_and_q8_0_kv_stay_close_to_f32() {
    let Some(model) = stories() else { return };
    let mut s = Session::new(model.clone(), SessionConfig::new(300)).unwrap();
    let p = prompt(&model, "Once upon a time");
    let (mut ids, _, _) = generate(&mut s, &p, &sampling(5), 250);
    ids.splice(0..0, p);
    for (kv_type, bound) in KV_KLD_BOUND {
        let kld = mean_kld(&model, &ids, kv_type);
        assert!(kld <= bound, "{kv_type:?}: mean KLD {kld:e} > {bound:e}");
        eprintln!("{kv_type:?}: mean KLD vs f32 KV {kld:e}");
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let model = tiny();
    let max = model.hparams().max_context as usize;
    let err = |config: SessionConfig| {
        Session::new(model.clone(), config)
            .err()
            .unwrap()
            .to_string()
    };
    assert!(err(SessionConfig::new(0)).contains("context 0"));
    assert!(err(SessionConfig::new(max + 1)).contains("maximum"));
    assert!(err(SessionConfig::new(usize::MAX)).contains("maximum"));
    assert!(err(SessionConfig {
        threads: 0,
        ..SessionConfig::new(8)
    })
    .contains("threads"));
    assert!(err(SessionConfig {
        batch: 0,
        ..SessionConfig::new(8)
    })
    .contains("batch"));
    let shift = SessionConfig {
        context_policy: ContextPolicy::Shift { keep: 7 },
        ..SessionConfig::new(8)
    };
    assert!(err(shift).contains("keep"));
    assert!(KvType::from_name("q4_k")
        .unwrap_err()
        .to_string()
        .contains("q4_k"));

    let mut s = Session::new(model.clone(), SessionConfig::new(8)).unwrap();
    let e = s.prefill(&[1; 9]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ContextFull {
                needed: 9,
                capacity: 8
            }
        ),
        "{e}"
    );
    assert_eq!(s.pos(), 0, "a rejected prompt changes nothing");
    assert!(matches!(
        s.step(100_000),
        Err(Error::TokenOutOfRange { .. })
    ));
    assert!(s.prefill(&[]).is_err());
    assert_eq!(s.pos(), 0);
}

#[test]
fn corrupt_or_mismatched_prompt_caches_are_clear_errors() {
    let model = tiny();
    let dir = common::scratch();
    let path = dir.path().join("p.cache");
    let config = SessionConfig::new(32);
    let mut s = Session::new(model.clone(), config).unwrap();
    s.prefill(&[1, 2, 3, 4, 5]).unwrap();
    s.save_state(&path, b"x").unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut fresh = Session::new(model.clone(), config).unwrap();
    let mut load = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        let e = fresh.load_state(&path).unwrap_err().to_string();
        assert_eq!(fresh.pos(), 0, "a failed load leaves an empty session");
        e
    };
    let mut flipped = good.clone();
    flipped[300] ^= 1;
    assert!(load(&flipped).contains("corrupt"));
    assert!(load(&good[..good.len() - 7]).contains("truncated"));
    assert!(load(b"hello").contains("truncated"));
    assert!(load(&[0u8; 400]).contains("magic"));
    let mut longer = good.clone();
    longer.push(0);
    assert!(load(&longer).contains("trailing"));
    // Another model (different hyperparameters / header checksum).
    let mut ir = common::tiny_ir();
    ir.hparams.norm_eps = 1e-6;
    let other = dir.path().join("other.ember");
    ember_converter::writer::write_model(&ir, &other, &Default::default()).unwrap();
    let other = Arc::new(Model::load(&other).unwrap());
    let mut o = Session::new(other, config).unwrap();
    std::fs::write(&path, &good).unwrap();
    assert!(o
        .load_state(&path)
        .unwrap_err()
        .to_string()
        .contains("different model"));
    // Another KV type, and a context too small for the saved tokens.
    let mut q = Session::new(
        model.clone(),
        SessionConfig {
            kv_type: KvType::Q8_0,
            ..config
        },
    )
    .unwrap();
    assert!(q
        .load_state(&path)
        .unwrap_err()
        .to_string()
        .contains("f16 KV cache"));
    let mut small = Session::new(model.clone(), SessionConfig::new(4)).unwrap();
    assert!(small
        .load_state(&path)
        .unwrap_err()
        .to_string()
        .contains("holds 5 tokens"));
    // A larger context is fine.
    let mut big = Session::new(model.clone(), SessionConfig::new(64)).unwrap();
    assert_eq!(big.load_state(&path).unwrap(), b"x");
    assert_eq!(big.tokens(), &[1, 2, 3, 4, 5]);
    assert!(fresh.load_state(&dir.path().join("missing")).is_err());
}
