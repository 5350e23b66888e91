//! The C API returns a status where it used to abort or hang: allocation
//! failures (a session for a context the memory cannot hold, under a lowered
//! address-space limit in a child process) are `EMBER_ERR_OUT_OF_MEMORY`, and
//! calls on a session from inside its own `ember_generate` callback are
//! `EMBER_ERR_STATE` instead of a deadlock. Also: detokenized text is streamed
//! into the caller's buffer and equals the runtime's `decode`.

mod common;

use std::ffi::{c_char, c_void, CString};
use std::path::Path;
use std::process::Command;
use std::ptr::{null, null_mut};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use common::{check, last_error, tiny_model};
use ember::*;

/// Environment variable naming the model file: set, the child tests below
/// run their checks (under the address-space limit of their parent).
const CHILD_ENV: &str = "EMBER_CAPI_OOM_CHILD";
/// Address space the child may use: room for the test binary, its threads
/// and a small session, far below the 2 GiB KV cache of a 16M-token context.
const CHILD_AS_KIB: u64 = 1 << 20;
/// The largest context a model file may declare (`runtime/src/config.rs`).
const HUGE_CONTEXT: u32 = 1 << 24;
/// Bound on the reentrancy test: it takes milliseconds; a deadlock never ends.
const REENTRANCY_TIMEOUT: Duration = Duration::from_secs(120);

fn c_path(p: &Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

fn load(path: &Path) -> *mut ember_model {
    let mut m = null_mut();
    // SAFETY: a NUL-terminated path and a writable out-pointer.
    check(unsafe { ember_model_load(c_path(path).as_ptr(), &mut m) });
    m
}

fn config(context: u32, threads: u32) -> ember_session_config {
    // SAFETY: zeroed is a valid bit pattern for this plain struct.
    let mut cfg: ember_session_config = unsafe { std::mem::zeroed() };
    // SAFETY: a writable config of the size given.
    check(unsafe { ember_session_config_default(&mut cfg, size_of::<ember_session_config>()) });
    cfg.context = context;
    cfg.threads = threads;
    cfg
}

/// Runs the test `name` of this binary in a child process whose address
/// space is limited to `CHILD_AS_KIB` (`ulimit -v`), with `CHILD_ENV` set to
/// `model`; panics with the child's output unless it exits successfully (an
/// abort is a signal, not a success).
fn run_limited_child(name: &str, model: &Path) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {CHILD_AS_KIB} && exec \"$0\" \"$@\""))
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, model)
        .output()
        .expect("run sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the limited child failed ({}):\n{text}",
        out.status
    );
    assert!(
        text.contains("child checks passed"),
        "the child did not run its checks:\n{text}"
    );
}

/// The model path when running as the limited child, else `None`.
fn child_model() -> Option<std::path::PathBuf> {
    std::env::var_os(CHILD_ENV).map(Into::into)
}

fn emulated() -> bool {
    std::env::var_os("EMBER_TEST_EMULATED").is_some_and(|v| !v.is_empty())
}

#[test]
fn a_session_that_does_not_fit_is_out_of_memory_not_an_abort() {
    if emulated() {
        eprintln!("skipping under emulation: an address-space limit applies to the emulator");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), HUGE_CONTEXT);
    run_limited_child("oom_child", &model);
}

/// The checks of the test above, in the limited child (a no-op otherwise).
#[test]
fn oom_child() {
    let Some(path) = child_model() else { return };
    let model = load(&path);
    // SAFETY: a live model, valid configs and out-pointers throughout.
    unsafe {
        // The model's full context (config 0): f16 KV alone is 2 GiB.
        let mut s = std::ptr::dangling_mut::<ember_session>();
        let st = ember_session_new(model, &config(0, 1), &mut s);
        let msg = last_error();
        println!("ember_session_new(context {HUGE_CONTEXT}): {st}: {msg}");
        assert_eq!(st, EMBER_ERR_OUT_OF_MEMORY, "{msg}");
        assert!(s.is_null());
        assert!(
            msg.starts_with("cannot allocate ")
                && msg.contains(&format!("context {HUGE_CONTEXT}"))
                && msg.contains("lower the context"),
            "{msg}"
        );

        // The memory a caller can check first says the same.
        let mut heap = 0usize;
        check(ember_session_memory_required(
            model,
            &config(0, 1),
            &mut heap,
            null_mut(),
            null_mut(),
        ));
        assert!(heap as u64 > CHILD_AS_KIB << 10, "{heap}");

        // Worker thread stacks the limit cannot hold.
        let st = ember_session_new(model, &config(64, 1024), &mut s);
        let msg = last_error();
        println!("ember_session_new(threads 1024): {st}: {msg}");
        assert_eq!(st, EMBER_ERR_OUT_OF_MEMORY, "{msg}");
        assert!(
            msg.contains("worker threads") && msg.contains("lower the threads"),
            "{msg}"
        );
        assert!(s.is_null());

        // The process is fine: a small session works.
        check(ember_session_new(model, &config(64, 1), &mut s));
        let tok = [1u32, 263];
        check(ember_session_eval(s, tok.as_ptr(), tok.len()));
        ember_session_free(s);
    }

    // Text too long to tokenize within the limit (the encoder's peak is about
    // 48 bytes per byte of text).
    let text = CString::new("the cat sat ".repeat(3 << 20)).unwrap();
    let mut n = 0usize;
    // SAFETY: a live model, NUL-terminated text, no buffer (capacity 0).
    let st = unsafe { ember_tokenize(model, text.as_ptr(), 0, null_mut(), 0, &mut n) };
    let msg = last_error();
    println!(
        "ember_tokenize({} bytes): {st}: {msg}",
        text.as_bytes().len()
    );
    assert_eq!(st, EMBER_ERR_OUT_OF_MEMORY, "{msg}");
    drop(text);

    // A model image to copy that the limit cannot hold twice: the largest
    // buffer the limit leaves room for.
    let mut image = Vec::new();
    let mut mib = 1024usize;
    while mib > 8 && image.try_reserve_exact(mib << 20).is_err() {
        mib -= 8;
    }
    assert!(mib > 8, "no room for a model image under the limit");
    image.resize(mib << 20, 0u8);
    let mut copied = null_mut();
    // SAFETY: `image.len()` readable bytes and a writable out-pointer.
    let st = unsafe {
        ember_model_from_buffer(
            image.as_ptr().cast(),
            image.len(),
            EMBER_BUFFER_COPY,
            &mut copied,
        )
    };
    let msg = last_error();
    println!("ember_model_from_buffer({mib} MiB, copy): {st}: {msg}");
    assert_eq!(st, EMBER_ERR_OUT_OF_MEMORY, "{msg}");
    assert!(copied.is_null());
    drop(image);

    // The runtime itself, without the C API.
    let m = Arc::new(ember_runtime::Model::load(&path).unwrap());
    let config = ember_runtime::SessionConfig::new(HUGE_CONTEXT as usize);
    match ember_runtime::Session::new(m, config) {
        Err(e @ ember_runtime::Error::OutOfMemory { .. }) => println!("Session::new: {e}"),
        Err(e) => panic!("Session::new: {e}"),
        Ok(_) => panic!("Session::new({HUGE_CONTEXT}) succeeded under the limit"),
    }
    // SAFETY: a live handle, freed once.
    unsafe { ember_model_free(model) };
    println!("child checks passed");
}

#[test]
fn out_of_memory_has_a_name() {
    // SAFETY: a static NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(ember_status_name(EMBER_ERR_OUT_OF_MEMORY)) };
    assert_eq!(name.to_str().unwrap(), "EMBER_ERR_OUT_OF_MEMORY");
}

/// What the callback saw: the session it runs on, another session, and the
/// status of each call it made on them.
struct Probe {
    session: *mut ember_session,
    other: *mut ember_session,
    scratch: CString,
    calls: Vec<(&'static str, ember_status, String)>,
    tokens: usize,
}

/// Calls every session function on its own session (and one on another
/// session) from inside the callback, on the first token, then cancels.
unsafe extern "C" fn reenter(
    ud: *mut c_void,
    _t: ember_token,
    _x: *const c_char,
    _n: usize,
) -> i32 {
    // SAFETY: `ud` is the Probe passed to ember_generate; its sessions are live.
    unsafe {
        let p = &mut *(ud as *mut Probe);
        p.tokens += 1;
        if p.tokens > 1 {
            return 0;
        }
        let s = p.session;
        let tok = [5u32];
        let mut rec = |name, st| p_push(&mut p.calls, name, st);
        rec("eval", ember_session_eval(s, tok.as_ptr(), 1));
        rec(
            "generate",
            ember_generate(
                s,
                tok.as_ptr(),
                1,
                null(),
                null(),
                None,
                null_mut(),
                null_mut(),
            ),
        );
        rec("reset", ember_session_reset(s));
        rec("truncate", ember_session_truncate(s, 0));
        let (mut lp, mut n) = (null(), 0usize);
        rec("logits", ember_session_logits(s, &mut lp, &mut n));
        let mut tp = null();
        rec("tokens", ember_session_tokens(s, &mut tp, &mut n));
        rec("save", ember_session_save(s, p.scratch.as_ptr()));
        rec("load", ember_session_load(s, p.scratch.as_ptr()));
        let mut buf = [0u8; 16];
        rec(
            "state_write",
            ember_session_state_write(s, buf.as_mut_ptr().cast(), buf.len(), &mut n),
        );
        rec(
            "state_read",
            ember_session_state_read(s, buf.as_ptr().cast(), buf.len()),
        );
        rec("set_lora", ember_session_set_lora(s, null(), 1.0));
        ember_session_free(s);
        rec(
            "free (ignored)",
            if last_error().contains("ignored") {
                EMBER_ERR_STATE
            } else {
                -1
            },
        );
        rec(
            "other session eval",
            ember_session_eval(p.other, tok.as_ptr(), 1),
        );
        rec("cancel", ember_session_cancel(s));
        0
    }
}

fn p_push(
    calls: &mut Vec<(&'static str, ember_status, String)>,
    name: &'static str,
    st: ember_status,
) {
    calls.push((name, st, last_error()));
}

#[test]
fn calls_from_inside_the_callback_fail_instead_of_deadlocking() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_model(dir.path(), 64);
    let scratch = c_path(&dir.path().join("state.bin"));
    let (tx, rx) = mpsc::channel();
    // On a thread, so that a deadlock fails the test instead of hanging it.
    std::thread::spawn(move || {
        let model = load(&path);
        // SAFETY: a live model, valid configs, out-pointers and callback data.
        let (probe, status, result, after) = unsafe {
            let (mut s, mut other) = (null_mut(), null_mut());
            check(ember_session_new(model, &config(64, 1), &mut s));
            check(ember_session_new(model, &config(64, 1), &mut other));
            let mut probe = Probe {
                session: s,
                other,
                scratch,
                calls: vec![],
                tokens: 0,
            };
            let mut result = ember_generate_result {
                struct_size: size_of::<ember_generate_result>(),
                ..Default::default()
            };
            let prompt = [1u32, 263, 260];
            let status = ember_generate(
                s,
                prompt.as_ptr(),
                prompt.len(),
                null(),
                null(),
                Some(reenter),
                (&raw mut probe).cast(),
                &mut result,
            );
            // The session works normally afterwards.
            let after = [
                ember_session_reset(s),
                ember_session_eval(s, prompt.as_ptr(), prompt.len()),
            ];
            ember_session_free(s);
            ember_session_free(other);
            ember_model_free(model);
            (probe.calls, status, result, after)
        };
        let _ = tx.send((probe, status, result, after));
    });
    let (calls, status, result, after) = rx
        .recv_timeout(REENTRANCY_TIMEOUT)
        .expect("ember_generate deadlocked on a call from its own callback");
    assert_eq!(status, EMBER_OK);
    assert_eq!(result.stop_reason, EMBER_STOP_CANCELLED, "{calls:?}");
    assert_eq!(result.generated_tokens, 1);
    assert_eq!(after, [EMBER_OK, EMBER_OK]);
    for (name, st, msg) in &calls {
        let want = match *name {
            "other session eval" | "cancel" => EMBER_OK,
            _ => EMBER_ERR_STATE,
        };
        assert_eq!(*st, want, "{name}: {msg}");
        if want == EMBER_ERR_STATE {
            assert!(msg.contains("callback"), "{name}: {msg}");
        }
    }
    assert_eq!(calls.len(), 14, "{calls:?}");
}

/// `ember_detokenize` writes the streaming decoder's text into the caller's
/// buffer: the runtime's `decode` for every id sequence, invalid UTF-8 and
/// leading spaces included, and the size alone when the buffer is short.
#[test]
fn detokenized_text_equals_decode() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_model(dir.path(), 64);
    let model = load(&path);
    let rt = ember_runtime::Model::load(&path).unwrap();
    // <s>, "▁he", bytes of "é" split and misplaced, a lone continuation byte.
    let byte = |b: u8| 3 + b as u32;
    let cases: Vec<Vec<u32>> = vec![
        vec![],
        vec![1],
        vec![263, 262, 260],
        vec![1, 263, byte(0xC3), byte(0xA9), byte(b'!')],
        vec![byte(0xC3), byte(b'x'), byte(0xA9), byte(0xE4), byte(0xBD)],
        vec![
            byte(0x80),
            2,
            byte(0xF0),
            byte(0x9F),
            byte(0x98),
            byte(0x80),
        ],
    ];
    for ids in cases {
        let want = rt.tokenizer().decode(&ids);
        let mut len = usize::MAX;
        // SAFETY: `ids` readable, a NULL buffer of capacity 0, `len` writable.
        let st =
            unsafe { ember_detokenize(model, ids.as_ptr(), ids.len(), null_mut(), 0, &mut len) };
        assert_eq!(st, EMBER_ERR_BUFFER_TOO_SMALL, "{ids:?}");
        assert_eq!(len, want.len(), "{ids:?}");
        let mut buf = vec![0xAAu8; want.len() + 1];
        // SAFETY: one byte too few: nothing may be written.
        let st = unsafe {
            ember_detokenize(
                model,
                ids.as_ptr(),
                ids.len(),
                buf.as_mut_ptr().cast(),
                want.len(),
                &mut len,
            )
        };
        assert_eq!(st, EMBER_ERR_BUFFER_TOO_SMALL, "{ids:?}");
        assert!(
            buf.iter().all(|&b| b == 0xAA),
            "{ids:?}: written on failure"
        );
        // SAFETY: a buffer of want.len() + 1 writable bytes.
        check(unsafe {
            ember_detokenize(
                model,
                ids.as_ptr(),
                ids.len(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut len,
            )
        });
        assert_eq!(&buf[..len], want.as_bytes(), "{ids:?}");
        assert_eq!(buf[len], 0);
    }
    // SAFETY: a live handle, freed once.
    unsafe { ember_model_free(model) };
}
