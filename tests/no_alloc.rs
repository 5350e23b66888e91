//! The decode loop never allocates: a counting global allocator (this test binary
//! only) proves zero heap allocations after session creation for greedy and
//! for a full sampler chain with streaming detokenization and stop sequences,
//! through context shifts, in arena mode, and with 2 threads (the worker pool
//! is started at session creation); and that `memory_required` equals what a
//! session keeps allocated.
//!
//! Counters are per thread, so the tests can run in parallel.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use ember_converter::ir::{F32Source, IrTensor, ModelIr};
use ember_converter::writer::{write_model, WriteOptions};
use ember_runtime::format::expected_tensors;
use ember_runtime::generate::{GenerateConfig, Generator};
use ember_runtime::model::PARALLEL_MIN_BYTES;
use ember_runtime::sampler::{Sampler, SamplerConfig};
use ember_runtime::tokenizer::TokenType;
use ember_runtime::{ContextPolicy, KvType, Model, Session, SessionConfig};

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

struct Counting;

fn note(allocs: usize, bytes: isize) {
    // try_with: the thread's slots may already be gone during thread teardown.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + allocs));
    let _ = LIVE.try_with(|c| c.set(c.get() + bytes));
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the counters are const-initialised thread-locals without
// destructors, so updating them never allocates or re-enters the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(1, layout.size() as isize);
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(1, layout.size() as isize);
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, -(layout.size() as isize));
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(1, new_size as isize - layout.size() as isize);
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// (allocations, net bytes) made by `f` on this thread.
fn count<R>(f: impl FnOnce() -> R) -> (R, usize, isize) {
    let (a0, l0) = (ALLOCS.with(Cell::get), LIVE.with(Cell::get));
    let r = f();
    let (a1, l1) = (ALLOCS.with(Cell::get), LIVE.with(Cell::get));
    (r, a1 - a0, l1 - l0)
}

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

fn full_chain() -> SamplerConfig {
    SamplerConfig {
        temperature: 0.9,
        top_k: 20,
        top_p: 0.9,
        min_p: 0.02,
        repeat_penalty: 1.1,
        repeat_last_n: 32,
        presence_penalty: 0.1,
        frequency_penalty: 0.1,
        logit_bias: vec![(3, -1.0)],
        seed: 1234,
    }
}

/// Generates with a generator created up front; returns (allocations, tokens).
fn decode_allocations(
    session: &mut Session,
    sampler: &SamplerConfig,
    stops: &[&str],
    max_tokens: usize,
) -> (usize, usize) {
    let model = session.model().clone();
    let prompt = model
        .tokenizer()
        .encode("hello there", model.tokenizer().default_encode_options());
    let sampler = Sampler::new(model.hparams().vocab_size as usize, sampler).unwrap();
    let config = GenerateConfig {
        max_tokens,
        stop: stops.iter().map(|s| s.to_string()).collect(),
        ignore_eos: true,
    };
    let mut generator = Generator::new(model.tokenizer(), sampler, config).unwrap();
    let mut text = String::with_capacity(1 << 16);
    let (stats, allocs, _) = count(|| {
        generator
            .generate(session, &prompt, |_, piece| {
                text.push_str(piece);
                true
            })
            .unwrap()
    });
    (allocs, stats.generated_tokens)
}

#[test]
fn greedy_decode_allocates_nothing_after_creation() {
    let model = tiny();
    for kv_type in KvType::ALL {
        let config = SessionConfig {
            context: 64,
            kv_type,
            ..Default::default()
        };
        let mut s = Session::new(model.clone(), config).unwrap();
        let (allocs, n) = decode_allocations(&mut s, &SamplerConfig::greedy(), &["zzz"], 40);
        assert_eq!(
            allocs, 0,
            "{kv_type:?}: {allocs} allocations for {n} tokens"
        );
    }
}

#[test]
fn full_chain_with_stops_and_shift_allocates_nothing() {
    let model = stories().unwrap_or_else(tiny);
    let config = SessionConfig {
        context: 48,
        kv_type: KvType::Q8_0,
        context_policy: ContextPolicy::Shift { keep: 1 },
        ..Default::default()
    };
    let mut s = Session::new(model.clone(), config).unwrap();
    let (allocs, n) = decode_allocations(&mut s, &full_chain(), &["\u{1F600}never", "qq"], 300);
    assert!(
        s.context_shifts() > 0,
        "the test must cross a context shift"
    );
    assert_eq!(allocs, 0, "{allocs} allocations for {n} tokens");
}

#[test]
fn decode_with_a_lora_adapter_allocates_nothing() {
    use ember_runtime::lora::{LoraAdapter, LoraTarget};
    for model in [tiny(), wide()] {
        let hp = *model.hparams();
        let mut adapter = LoraAdapter::zeros(&hp, 4, 8.0, &LoraTarget::ALL).unwrap();
        for (i, p) in adapter
            .layers
            .iter_mut()
            .flat_map(|l| l.pairs.iter_mut().flatten())
            .enumerate()
        {
            p.a = common::random_values(p.a.len(), i as u64, 0.1);
            p.b = common::random_values(p.b.len(), i as u64 + 99, 0.1);
        }
        let adapter = Arc::new(adapter);
        for threads in [1, 2] {
            let config = SessionConfig {
                context: 64,
                threads,
                ..Default::default()
            };
            let mut s = Session::new(model.clone(), config).unwrap();
            s.set_lora(Some(adapter.clone()), 0.5).unwrap();
            let (allocs, n) = decode_allocations(&mut s, &full_chain(), &["zzz"], 40);
            assert!(n > 0);
            assert_eq!(
                allocs, 0,
                "{threads} threads: {allocs} allocations for {n} tokens"
            );
        }
    }
}

#[test]
fn arena_session_allocates_nothing_after_creation() {
    let model = stories().unwrap_or_else(tiny);
    let hp = model.config().clone();
    for kv_type in KvType::ALL {
        let config = SessionConfig {
            context: 64,
            kv_type,
            context_policy: ContextPolicy::Shift { keep: 1 },
            ..Default::default()
        };
        let need = Session::arena_bytes_required(&hp, &config);
        // An odd start offset: the arena aligns its buffers itself.
        let mut arena = vec![0u8; need + 1];
        let (s, _, live) =
            count(|| Session::new_in(model.clone(), config, &mut arena[1..]).unwrap());
        // Every buffer is in the arena: nothing stays allocated on the heap.
        assert_eq!(live, 0, "{kv_type:?}: heap bytes of an arena session");
        assert_eq!(Session::arena_heap_bytes(&hp, &config), 0);
        let mut s = s;
        let (allocs, n) = decode_allocations(&mut s, &full_chain(), &["."], 150);
        assert_eq!(
            allocs, 0,
            "{kv_type:?}: {allocs} allocations for {n} tokens"
        );
        // State snapshots write without allocating (to a preallocated buffer).
        let mut buf = Vec::with_capacity(1 << 22);
        let (_, allocs, _) = count(|| s.write_state(&mut buf, b"app").unwrap());
        assert_eq!(allocs, 0);
        drop(s);
        let too_small = &mut arena[..need - 64];
        assert!(Session::new_in(model.clone(), config, too_small).is_err());
    }
}

#[test]
fn memory_required_equals_the_allocation() {
    let mut models = vec![tiny()];
    models.extend(stories());
    for model in models {
        let hp = model.config().clone();
        for kv_type in KvType::ALL {
            for context in [1, 17, 64] {
                let config = SessionConfig {
                    context,
                    kv_type,
                    ..Default::default()
                };
                let (s, _, live) = count(|| Session::new(model.clone(), config).unwrap());
                assert_eq!(
                    live as usize,
                    Session::memory_required(&hp, &config),
                    "{kv_type:?} context {context}"
                );
                drop(s);
            }
        }
    }
}

/// A one-layer f32 model (the tiny model's layout, wider) whose output and
/// feed-forward matrices take the threaded path (`PARALLEL_MIN_BYTES`).
fn wide() -> Arc<Model> {
    let mut hp = common::tiny_hparams();
    (hp.dim, hp.n_layers, hp.head_dim, hp.rope_dim) = (256, 1, 64, 64);
    (hp.ffn_dim, hp.vocab_size) = (4096, 4096);
    const { assert!(4 * 256 * 4096 >= PARALLEL_MIN_BYTES) };
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
    for i in tokenizer.tokens.len()..hp.vocab_size as usize {
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
    write_model(&ir, &path, &WriteOptions::default()).unwrap();
    Arc::new(Model::load(&path).unwrap())
}

#[test]
fn two_thread_decode_allocates_nothing_after_creation() {
    // Counts the calling thread; the pool's workers only run atomics, park
    // and the matrix kernels, none of which allocates.
    let model = wide();
    for sampler in [SamplerConfig::greedy(), full_chain()] {
        let config = SessionConfig {
            context: 64,
            threads: 2,
            ..Default::default()
        };
        let mut s = Session::new(model.clone(), config).unwrap();
        let (allocs, n) = decode_allocations(&mut s, &sampler, &["zzz"], 40);
        assert!(n > 0);
        assert_eq!(allocs, 0, "2 threads: {allocs} allocations for {n} tokens");
    }
}
