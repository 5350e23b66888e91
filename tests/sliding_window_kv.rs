//! Sliding-window layers whose KV cache holds only their window (plus a pass):
//! the same logits, bit for bit, as a cache holding every position, through
//! token-by-token decoding, batched prefill, rewinds within the window and
//! prompt-cache save/load; less memory; clear errors for what it cannot do.
//! Model: the tiny Gemma 3 fixture (window 4, five of six layers sliding).

use std::path::Path;
use std::sync::Arc;

use ember_converter::{convert, ConvertOptions};
use ember_runtime::{ContextPolicy, KvType, Model, Session, SessionConfig};

const CONTEXT: usize = 64;

fn gemma3(dir: &Path) -> Arc<Model> {
    let out = dir.join("gemma3.ember");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/gemma3");
    convert(&src, &out, &ConvertOptions::default()).expect("convert");
    Arc::new(Model::load(&out).expect("load"))
}

fn config(kv_type: KvType, batch: usize, policy: ContextPolicy) -> SessionConfig {
    SessionConfig {
        context: CONTEXT,
        kv_type,
        batch,
        context_policy: policy,
        ..Default::default()
    }
}

/// A session holding every position: the shift policy keeps the whole
/// context in every layer (no shift happens below the context size).
fn full(model: &Arc<Model>, kv_type: KvType) -> Session<'static> {
    Session::new(
        model.clone(),
        config(kv_type, 1, ContextPolicy::Shift { keep: 0 }),
    )
    .unwrap()
}

fn tokens(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % 300).collect()
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn windowed_cache_gives_the_full_caches_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let model = gemma3(tmp.path());
    let ids = tokens(60);
    for kv_type in KvType::ALL {
        let mut reference = full(&model, kv_type);
        let want: Vec<Vec<u32>> = ids
            .iter()
            .map(|&t| bits(reference.step(t).unwrap()))
            .collect();

        // Token by token: the window's rows are compacted every few tokens.
        let windowed = config(kv_type, 1, ContextPolicy::Error);
        let mut s = Session::new(model.clone(), windowed).unwrap();
        for (i, &t) in ids.iter().enumerate() {
            assert_eq!(bits(s.step(t).unwrap()), want[i], "{kv_type:?} token {i}");
        }
        let (small, large) = (
            Session::memory_required(model.config(), &windowed),
            Session::memory_required(model.config(), reference.config()),
        );
        assert!(small < large, "{kv_type:?}: {small} >= {large}");

        // Batched prefill in passes of 3, then decoding.
        let mut s = Session::new(model.clone(), config(kv_type, 3, ContextPolicy::Error)).unwrap();
        assert_eq!(
            bits(s.prefill(&ids[..57]).unwrap()),
            want[56],
            "{kv_type:?} prefill"
        );
        for (i, &t) in ids.iter().enumerate().skip(57) {
            assert_eq!(
                bits(s.step(t).unwrap()),
                want[i],
                "{kv_type:?} token {i} after prefill"
            );
        }
    }
}

#[test]
fn rewinds_within_the_window_and_refuses_beyond_it() {
    let tmp = tempfile::tempdir().unwrap();
    let model = gemma3(tmp.path());
    let ids = tokens(50);
    let mut reference = full(&model, KvType::F16);
    let mut s = Session::new(model.clone(), config(KvType::F16, 1, ContextPolicy::Error)).unwrap();
    for &t in &ids {
        reference.step(t).unwrap();
        s.step(t).unwrap();
    }
    // Back two tokens: the window of the next one is still held.
    s.truncate(48).unwrap();
    reference.truncate(48).unwrap();
    assert_eq!(bits(s.step(7).unwrap()), bits(reference.step(7).unwrap()));
    // Far back: the sliding layers no longer hold what token 20 would see.
    let e = s.truncate(20).unwrap_err().to_string();
    assert!(e.contains("sliding-window layers"), "{e}");
    assert_eq!(s.pos(), 49, "a refused rewind changes nothing");
    // Back to the start always works.
    s.truncate(0).unwrap();
    let mut fresh = full(&model, KvType::F16);
    for &t in &ids[..10] {
        assert_eq!(bits(s.step(t).unwrap()), bits(fresh.step(t).unwrap()));
    }
    // A shift needs every position: not on this session.
    let e = s
        .set_context_policy(ContextPolicy::Shift { keep: 0 })
        .unwrap_err()
        .to_string();
    assert!(e.contains("shift"), "{e}");
}

#[test]
fn prompt_cache_of_a_windowed_session_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let model = gemma3(tmp.path());
    let ids = tokens(40);
    for kv_type in KvType::ALL {
        let cfg = config(kv_type, 1, ContextPolicy::Error);
        let mut a = Session::new(model.clone(), cfg).unwrap();
        a.prefill(&ids).unwrap();
        let mut saved = Vec::new();
        a.write_state(&mut saved, b"app").unwrap();

        // Into a windowed session with another pass size: same continuation.
        let mut b = Session::new(model.clone(), config(kv_type, 5, ContextPolicy::Error)).unwrap();
        assert_eq!(b.read_state(&saved[..]).unwrap(), b"app");
        assert_eq!(b.pos(), 40);
        for t in [3u32, 99, 250] {
            assert_eq!(
                bits(b.step(t).unwrap()),
                bits(a.step(t).unwrap()),
                "{kv_type:?}"
            );
        }
        // A shift-policy session needs the rows the file no longer has.
        let mut c = full(&model, kv_type);
        let e = c.read_state(&saved[..]).unwrap_err().to_string();
        assert!(e.contains("sliding windows"), "{e}");
    }
}
