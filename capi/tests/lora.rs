//! LoRA adapters through the C API: a PEFT-made adapter gives PEFT's logits
//! (tests/fixtures/lora/peft-tiny, made by scripts/make_peft_goldens.py),
//! detaching restores the base model, and misuse is an error code.

mod common;

use std::ffi::{c_char, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};

use common::{check, last_error};
use ember::*;
use ember_converter::{convert, ConvertOptions};

/// PEFT's float32 logits vs Ember's f32 path: the same math, summed in
/// another order (as tests/lora_adapters.rs).
const MAX_NMSE: f64 = 1e-8;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn c_path(p: &Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

/// Converts `tests/fixtures/hf-tiny/<family>` and loads it through the C API.
fn load(dir: &Path, family: &str) -> *mut ember_model {
    let out = dir.join(format!("{family}.ember"));
    convert(
        &fixtures().join("hf-tiny").join(family),
        &out,
        &ConvertOptions::default(),
    )
    .unwrap_or_else(|e| panic!("convert {family}: {e}"));
    let mut m = null_mut();
    // SAFETY: valid path string and out-pointer.
    check(unsafe { ember_model_load(c_path(&out).as_ptr(), &mut m) });
    m
}

fn session(model: *const ember_model) -> *mut ember_session {
    let mut cfg = ember_session_config {
        struct_size: 0,
        context: 0,
        kv_type: 0,
        threads: 0,
        batch: 0,
        context_policy: 0,
        keep: 0,
    };
    // SAFETY: a writable config of the size given.
    check(unsafe { ember_session_config_default(&mut cfg, std::mem::size_of_val(&cfg)) });
    // The default thread count, 0, is one per physical core (sessions here use it).
    assert_eq!(cfg.threads, 0);
    cfg.context = 64;
    cfg.kv_type = EMBER_KV_F32;
    let mut s = null_mut();
    // SAFETY: live model, valid config and out-pointer.
    check(unsafe { ember_session_new(model, &cfg, &mut s) });
    s
}

/// The logits after each of `ids`, fed one at a time.
fn logits(s: *mut ember_session, ids: &[u32]) -> Vec<Vec<f32>> {
    // SAFETY: live session.
    check(unsafe { ember_session_reset(s) });
    ids.iter()
        .map(|&t| {
            // SAFETY: live session, one token.
            check(unsafe { ember_session_eval(s, &t, 1) });
            let (mut p, mut n) = (null(), 0usize);
            // SAFETY: live session, writable outputs.
            check(unsafe { ember_session_logits(s, &mut p, &mut n) });
            // SAFETY: the API returned `n` floats at `p`, valid until the next call.
            unsafe { std::slice::from_raw_parts(p, n) }.to_vec()
        })
        .collect()
}

fn nmse(got: &[Vec<f32>], want: &[Vec<f32>]) -> f64 {
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(w) {
            err += f64::from(a - b).powi(2);
            norm += f64::from(*b).powi(2);
        }
    }
    err / norm
}

/// `(input_ids, logits)` of a reference.json.
fn reference(path: &Path) -> (Vec<u32>, Vec<Vec<f32>>) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ids = v["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let rows = v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    (ids, rows)
}

fn load_lora(model: *const ember_model, dir: &Path) -> (ember_status, *mut ember_lora) {
    let mut l = null_mut();
    // SAFETY: live model, valid string and out-pointer.
    let st = unsafe { ember_lora_load(model, c_path(dir).as_ptr(), &mut l) };
    (st, l)
}

#[test]
fn peft_adapter_gives_peft_logits_and_detaches() {
    let tmp = tempfile::tempdir().unwrap();
    let model = load(tmp.path(), "llama");
    let s = session(model);
    let (ids, want) = reference(&fixtures().join("lora/peft-tiny/reference.json"));
    let base = logits(s, &ids);

    let (st, lora) = load_lora(model, &fixtures().join("lora/peft-tiny"));
    check(st);
    // SAFETY: live session and adapter.
    check(unsafe { ember_session_set_lora(s, lora, 1.0) });
    // The session keeps the adapter alive after its handle is released.
    // SAFETY: a live handle, not used afterwards.
    unsafe { ember_lora_free(lora) };
    let got = logits(s, &ids);
    let e = nmse(&got, &want);
    assert!(e <= MAX_NMSE, "adapted logits vs PEFT: NMSE {e:.3e}");
    assert!(
        nmse(&base, &want) > 1e3 * MAX_NMSE,
        "the adapter changes nothing"
    );

    // SAFETY: live session; NULL detaches.
    check(unsafe { ember_session_set_lora(s, null(), 1.0) });
    assert_eq!(logits(s, &ids), base, "detached: the base model's logits");
    // SAFETY: live handles, not used afterwards.
    unsafe {
        ember_session_free(s);
        ember_model_free(model);
    }
}

#[test]
fn misuse_is_an_error_code() {
    let tmp = tempfile::tempdir().unwrap();
    let llama = load(tmp.path(), "llama");
    let qwen3 = load(tmp.path(), "qwen3");

    // An adapter for another base model's shapes.
    let (st, l) = load_lora(llama, &fixtures().join("lora/peft-qwen3"));
    assert_eq!(st, EMBER_ERR_FORMAT, "{}", last_error());
    assert!(l.is_null());
    assert!(
        last_error().contains("another base model"),
        "{}",
        last_error()
    );
    // Not a directory; NULL arguments.
    let (st, _) = load_lora(llama, &tmp.path().join("missing"));
    assert_eq!(st, EMBER_ERR_FORMAT, "{}", last_error());
    let mut out = null_mut();
    // SAFETY: NULL inputs are checked by the API.
    unsafe {
        assert_eq!(
            ember_lora_load(llama, null::<c_char>(), &mut out),
            EMBER_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            ember_lora_load(null(), c"x".as_ptr(), &mut out),
            EMBER_ERR_INVALID_ARGUMENT
        );
        ember_lora_free(null_mut());
    }

    // An adapter attached to another model's session, and a NaN scale.
    let (st, lora) = load_lora(llama, &fixtures().join("lora/peft-tiny"));
    check(st);
    let other = session(qwen3);
    let mine = session(llama);
    // SAFETY: live handles.
    unsafe {
        assert_eq!(
            ember_session_set_lora(other, lora, 1.0),
            EMBER_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("another model"), "{}", last_error());
        assert_eq!(
            ember_session_set_lora(mine, lora, f32::NAN),
            EMBER_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            ember_session_set_lora(null_mut(), lora, 1.0),
            EMBER_ERR_INVALID_ARGUMENT
        );
        ember_lora_free(lora);
        ember_session_free(other);
        ember_session_free(mine);
        ember_model_free(llama);
        ember_model_free(qwen3);
    }
}
