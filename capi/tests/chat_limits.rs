//! `ember_chat_render` on hostile templates, called from a thread with a small
//! stack as a C program may use: each ends in `EMBER_ERR_TEMPLATE` with a message
//! naming the limit it broke (`ember_runtime::chat::limits`), never a crash or a
//! hang, and a real template still renders from there.

mod common;

use std::ffi::{c_char, CString};
use std::path::Path;
use std::ptr::null_mut;

use common::{check, last_error, tiny_model};
use ember::*;

/// A small thread's stack, as a C caller may render from.
const SMALL_STACK: usize = 256 << 10;

/// A loaded model handle that may be used from one other thread at a time.
struct Model(*mut ember_model);

// SAFETY: the handle is used by one thread at a time (the test joins each
// thread it lends it to before going on).
unsafe impl Send for Model {}

fn load(path: &Path) -> Model {
    let path = CString::new(path.to_str().unwrap()).unwrap();
    let mut m = null_mut();
    // SAFETY: a NUL-terminated path and a writable out-pointer.
    check(unsafe { ember_model_load(path.as_ptr(), &mut m) });
    Model(m)
}

/// Renders `template` for one user message on a `SMALL_STACK` thread: the
/// status and, on success, the text, else the thread's last error.
fn render_small(model: &Model, template: String) -> (ember_status, String) {
    let handle = Model(model.0);
    std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(move || {
            let handle = handle;
            let template = CString::new(template).unwrap();
            let (role, content) = (c"user", c"Hello.");
            let msg = ember_chat_message {
                role: role.as_ptr(),
                content: content.as_ptr(),
            };
            let mut buf = vec![0 as c_char; 4096];
            let mut len = 0usize;
            // SAFETY: a live model, NUL-terminated strings, one message, a
            // writable buffer of the capacity given and a writable length.
            let st = unsafe {
                ember_chat_render(
                    handle.0,
                    template.as_ptr(),
                    &msg,
                    1,
                    1,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut len,
                )
            };
            if st != EMBER_OK {
                return (st, last_error());
            }
            let bytes: Vec<u8> = buf[..len].iter().map(|&c| c.to_ne_bytes()[0]).collect();
            (st, String::from_utf8(bytes).unwrap())
        })
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn hostile_templates_fail_from_a_small_stack() {
    let dir = tempfile::tempdir().unwrap();
    let model = load(&tiny_model(dir.path(), 64));
    let cases = [
        (
            format!("{{{{ {}1 }}}}", "-".repeat(40_000)),
            "chat template: expression nested deeper than 256",
        ),
        (
            format!("{{{{ 1{} }}}}", " | abs".repeat(7_000)),
            "chat template: expression nested deeper than 256",
        ),
        (
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}"
                .to_string(),
            "chat template: rendering exceeded its fuel",
        ),
        (
            "{{ 'x' * 10000000 }}".to_string(),
            "chat template output larger than",
        ),
        (
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}".to_string(),
            "recursion limit exceeded",
        ),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}\
             {% set ns.s = ns.s ~ ns.s %}{% endfor %}"
                .to_string(),
            "rendering needed more than",
        ),
    ];
    for (template, needle) in cases {
        let (st, msg) = render_small(&model, template);
        assert_eq!(st, EMBER_ERR_TEMPLATE, "{needle}: {msg}");
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
    let chatml = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n\
                  {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let (st, text) = render_small(&model, chatml.to_string());
    assert_eq!(st, EMBER_OK, "{text}");
    assert_eq!(
        text,
        "<|im_start|>user\nHello.<|im_end|>\n<|im_start|>assistant\n"
    );
    // SAFETY: a live handle, freed once.
    unsafe { ember_model_free(model.0) };
}
