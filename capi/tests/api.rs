//! The C API called from Rust: greedy text equals the runtime's, zero-copy
//! loading, arenas, cancellation from another thread, struct-size rules.
//! The C programs themselves run in `scripts/test_capi.sh`.

mod common;

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use std::sync::Arc;

use common::{check, last_error};
use ember::*;
use ember_converter::{convert, ConvertOptions};
use ember_runtime::generate::generate_greedy;
use ember_runtime::{Model, Session, SessionConfig};

/// stories260K converted into a temporary directory, or `None` (skip).
fn stories() -> Option<(tempfile::TempDir, PathBuf)> {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/stories260K");
    let (bin, tok) = (shared.join("stories260K.bin"), shared.join("tok512.bin"));
    if !bin.exists() || !tok.exists() {
        eprintln!("skipping: {} not found", bin.display());
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stories.ember");
    let opts = ConvertOptions {
        tokenizer: Some(tok),
        ..Default::default()
    };
    convert(&bin, &out, &opts).expect("convert stories260K");
    Some((dir, out))
}

/// Greedy text from the runtime directly, as `ember run` does it.
fn runtime_text(path: &Path, prompt: &str, n: usize) -> String {
    let model = Arc::new(Model::load(path).unwrap());
    let tok = model.tokenizer();
    let ids = tok.encode(prompt, tok.default_encode_options());
    let ctx = (ids.len() + n).min(model.hparams().max_context as usize);
    let mut s = Session::new(model.clone(), SessionConfig::new(ctx)).unwrap();
    let mut text = String::new();
    generate_greedy(&mut s, &ids, n, |_, p| {
        text.push_str(p);
        true
    })
    .unwrap();
    text
}

unsafe extern "C" fn collect(
    ud: *mut c_void,
    _t: ember_token,
    text: *const c_char,
    len: usize,
) -> i32 {
    // SAFETY: `ud` is the String passed to ember_generate; `text` has `len` bytes.
    unsafe {
        let s = &mut *(ud as *mut String);
        let bytes = std::slice::from_raw_parts(text.cast::<u8>(), len);
        assert_eq!(*text.add(len), 0, "text is NUL-terminated");
        s.push_str(std::str::from_utf8(bytes).unwrap());
    }
    0
}

/// Generates greedily through the C API on `model`, optionally in an arena.
unsafe fn c_text(model: *const ember_model, prompt: &str, n: u32, arena: bool) -> String {
    unsafe {
        let p = CString::new(prompt).unwrap();
        let mut count = 0usize;
        let st = ember_tokenize(model, p.as_ptr(), 0, null_mut(), 0, &mut count);
        assert!(st == EMBER_OK || st == EMBER_ERR_BUFFER_TOO_SMALL);
        let mut ids = vec![0u32; count];
        check(ember_tokenize(
            model,
            p.as_ptr(),
            0,
            ids.as_mut_ptr(),
            ids.len(),
            &mut count,
        ));
        let mut info = ember_model_info {
            struct_size: size_of::<ember_model_info>(),
            ..Default::default()
        };
        check(ember_model_info_get(model, &mut info));
        let mut cfg = std::mem::zeroed::<ember_session_config>();
        check(ember_session_config_default(
            &mut cfg,
            size_of::<ember_session_config>(),
        ));
        cfg.context = (count as u32 + n).min(info.max_context);
        let mut session = null_mut();
        let mut buf = Vec::new();
        if arena {
            let mut need = 0;
            check(ember_session_memory_required(
                model,
                &cfg,
                null_mut(),
                &mut need,
                null_mut(),
            ));
            buf = vec![0u8; need + 3];
            // Deliberately misaligned: any alignment works.
            check(ember_session_new_in(
                model,
                &cfg,
                buf.as_mut_ptr().add(3).cast(),
                need,
                &mut session,
            ));
        } else {
            check(ember_session_new(model, &cfg, &mut session));
        }
        let mut opts = std::mem::zeroed::<ember_generate_options>();
        check(ember_generate_options_default(
            &mut opts,
            size_of::<ember_generate_options>(),
        ));
        opts.max_tokens = n;
        let mut text = String::new();
        let mut res = ember_generate_result {
            struct_size: size_of::<ember_generate_result>(),
            ..Default::default()
        };
        check(ember_generate(
            session,
            ids.as_ptr(),
            ids.len(),
            null(),
            &opts,
            Some(collect),
            (&raw mut text).cast(),
            &mut res,
        ));
        assert_eq!(res.generated_tokens, n);
        assert_eq!(res.stop_reason, EMBER_STOP_MAX_TOKENS);
        ember_session_free(session);
        drop(buf);
        text
    }
}

#[test]
fn greedy_text_matches_the_runtime_for_every_loading_mode() {
    let Some((_dir, path)) = stories() else {
        return;
    };
    let expected = runtime_text(&path, "Once upon a time", 50);
    assert!(expected.len() > 50);
    let cpath = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: valid arguments throughout; handles freed once.
    unsafe {
        let mut model = null_mut();
        check(ember_model_load(cpath.as_ptr(), &mut model));
        assert_eq!(c_text(model, "Once upon a time", 50, false), expected);
        assert_eq!(c_text(model, "Once upon a time", 50, true), expected);
        ember_model_free(model);

        // Zero copy from a 64-byte aligned buffer.
        let bytes = std::fs::read(&path).unwrap();
        let mut buf = vec![0u8; bytes.len() + 64];
        let off = buf.as_ptr().align_offset(64);
        buf[off..off + bytes.len()].copy_from_slice(&bytes);
        let data = buf.as_ptr().add(off);
        for (flags, storage) in [
            (0, EMBER_STORAGE_BORROWED),
            (EMBER_BUFFER_COPY, EMBER_STORAGE_COPY),
        ] {
            let mut m = null_mut();
            check(ember_model_from_buffer(
                data.cast(),
                bytes.len(),
                flags,
                &mut m,
            ));
            let mut info = ember_model_info {
                struct_size: size_of::<ember_model_info>(),
                ..Default::default()
            };
            check(ember_model_info_get(m, &mut info));
            assert_eq!(info.storage, storage);
            assert_eq!(c_text(m, "Once upon a time", 50, false), expected);
            ember_model_free(m);
        }
        drop(buf);
    }
}

struct SendPtr(*mut ember_session);
// SAFETY: only ember_session_cancel, documented as callable from any thread, uses it.
unsafe impl Send for SendPtr {}

unsafe extern "C" fn slow(
    _ud: *mut c_void,
    _t: ember_token,
    _text: *const c_char,
    _len: usize,
) -> i32 {
    std::thread::sleep(std::time::Duration::from_millis(2));
    0
}

#[test]
fn another_thread_cancels_a_generation() {
    let Some((_dir, path)) = stories() else {
        return;
    };
    let cpath = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: valid arguments; the session outlives the cancelling thread (joined).
    unsafe {
        let mut model = null_mut();
        check(ember_model_load(cpath.as_ptr(), &mut model));
        let mut session = null_mut();
        check(ember_session_new(model, null(), &mut session));
        let mut opts = std::mem::zeroed::<ember_generate_options>();
        check(ember_generate_options_default(
            &mut opts,
            size_of::<ember_generate_options>(),
        ));
        opts.max_tokens = 100_000;
        opts.ignore_eos = 1;
        let bos = [1u32];
        let p = SendPtr(session);
        let t = std::thread::spawn(move || {
            let p = p;
            std::thread::sleep(std::time::Duration::from_millis(50));
            check(ember_session_cancel(p.0));
        });
        let mut res = ember_generate_result {
            struct_size: size_of::<ember_generate_result>(),
            ..Default::default()
        };
        let r = ember_generate(
            session,
            bos.as_ptr(),
            1,
            null(),
            &opts,
            Some(slow),
            null_mut(),
            &mut res,
        );
        t.join().unwrap();
        check(r);
        assert_eq!(res.stop_reason, EMBER_STOP_CANCELLED);
        assert!(
            res.generated_tokens > 0 && res.generated_tokens < 400,
            "{res:?}"
        );
        ember_session_free(session);
        ember_model_free(model);
    }
}

#[test]
fn struct_sizes_are_checked() {
    // SAFETY: the pointers are valid for the sizes passed.
    unsafe {
        let mut cfg = std::mem::zeroed::<ember_sampler_config>();
        let size = size_of::<ember_sampler_config>();
        assert_eq!(
            ember_sampler_config_default(&mut cfg, size - 1),
            EMBER_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            ember_sampler_config_default(&mut cfg, size + 8),
            EMBER_ERR_UNSUPPORTED
        );
        assert!(last_error().contains("newer"), "{}", last_error());
        check(ember_sampler_config_default(&mut cfg, size));
        assert_eq!(cfg.struct_size, size);
        assert_eq!(cfg.temperature, 0.0);
        assert_eq!(cfg.top_k, 40);
        assert_eq!(
            ember_sampler_config_default(null_mut(), size),
            EMBER_ERR_INVALID_ARGUMENT
        );
        assert!(last_error().contains("NULL"));
    }
}

#[test]
fn version_and_status_names() {
    // SAFETY: static NUL-terminated strings.
    unsafe {
        assert_eq!(
            CStr::from_ptr(ember_version()).to_str().unwrap(),
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(
            CStr::from_ptr(ember_status_name(EMBER_ERR_CONTEXT_FULL))
                .to_str()
                .unwrap(),
            "EMBER_ERR_CONTEXT_FULL"
        );
        assert!(!ember_chat_builtin_template(c"llama3".as_ptr()).is_null());
    }
    assert_eq!(ember_abi_version(), ABI_VERSION);
}

#[test]
fn last_error_is_per_thread() {
    // SAFETY: NULL arguments are rejected before any dereference.
    unsafe {
        assert_eq!(
            ember_model_load(null(), null_mut()),
            EMBER_ERR_INVALID_ARGUMENT
        );
    }
    let here = last_error();
    assert!(!here.is_empty());
    let other = std::thread::spawn(last_error).join().unwrap();
    assert_eq!(other, "");
}
