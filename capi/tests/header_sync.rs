//! `include/ember.h` is written by hand; these tests keep it in step with the
//! Rust side: the same functions, the same constant values, the same struct
//! layouts (measured by a C compiler), and it compiles as C99 and as C++.
//! (`scripts/test_capi.sh` also compares the header with the symbols that
//! `libember.a` actually exports.)

use std::collections::BTreeSet;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn header() -> String {
    std::fs::read_to_string(root().join("include/ember.h")).expect("read include/ember.h")
}

/// The text without `/* ... */` comments.
fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        rest = match rest[i + 2..].find("*/") {
            Some(j) => &rest[i + 2 + j + 2..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// Identifiers `ember_xxx` directly followed by `(` (declarations; the
/// callback typedef `(*ember_token_callback)(` is not matched).
fn called_names(code: &str) -> BTreeSet<String> {
    let b = code.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while let Some(off) = code[i..].find("ember_") {
        let start = i + off;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        let boundary =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut k = end;
        while k < b.len() && b[k].is_ascii_whitespace() {
            k += 1;
        }
        if boundary && k < b.len() && b[k] == b'(' {
            names.insert(code[start..end].to_string());
        }
        i = end.max(start + 1);
    }
    names
}

/// Names of the `extern "C" fn ember_*` functions in the crate's sources.
fn exported_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("capi/src")).unwrap() {
        let src = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in src.lines() {
            if let Some(pos) = line.find("extern \"C\" fn ember_") {
                let name: String = line[pos + "extern \"C\" fn ".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                names.insert(name);
            }
        }
    }
    names
}

#[test]
fn header_declares_exactly_the_exported_functions() {
    let declared = called_names(&strip_comments(&header()));
    let exported = exported_names();
    assert!(exported.len() >= 30, "found only {exported:?}");
    let missing: Vec<_> = exported.difference(&declared).collect();
    let extra: Vec<_> = declared.difference(&exported).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "exported but not declared in ember.h: {missing:?}; declared but not exported: {extra:?}"
    );
}

/// `NAME value` pairs from `#define EMBER_X n[u]` and enum `EMBER_X = n`.
fn header_constants() -> Vec<(String, String)> {
    let code = strip_comments(&header());
    let mut out = Vec::new();
    for line in code.lines() {
        let line = line.trim();
        let (name, value) = if let Some(rest) = line.strip_prefix("#define ") {
            let mut it = rest.split_whitespace();
            match (it.next(), it.next()) {
                (Some(n), Some(v)) => (n, v),
                _ => continue,
            }
        } else if let Some((n, v)) = line.split_once('=') {
            (n.trim(), v.trim().trim_end_matches(','))
        } else {
            continue;
        };
        if name.starts_with("EMBER_") {
            out.push((name.to_string(), value.trim_end_matches('u').to_string()));
        }
    }
    out
}

#[test]
fn header_constants_match_the_rust_values() {
    let rust: Vec<(&str, i64)> = vec![
        ("EMBER_ABI_VERSION", ember::ABI_VERSION as i64),
        ("EMBER_OK", ember::EMBER_OK as i64),
        (
            "EMBER_ERR_INVALID_ARGUMENT",
            ember::EMBER_ERR_INVALID_ARGUMENT as i64,
        ),
        (
            "EMBER_ERR_BUFFER_TOO_SMALL",
            ember::EMBER_ERR_BUFFER_TOO_SMALL as i64,
        ),
        ("EMBER_ERR_IO", ember::EMBER_ERR_IO as i64),
        ("EMBER_ERR_FORMAT", ember::EMBER_ERR_FORMAT as i64),
        (
            "EMBER_ERR_TOKEN_OUT_OF_RANGE",
            ember::EMBER_ERR_TOKEN_OUT_OF_RANGE as i64,
        ),
        (
            "EMBER_ERR_CONTEXT_FULL",
            ember::EMBER_ERR_CONTEXT_FULL as i64,
        ),
        ("EMBER_ERR_TEMPLATE", ember::EMBER_ERR_TEMPLATE as i64),
        ("EMBER_ERR_STATE", ember::EMBER_ERR_STATE as i64),
        ("EMBER_ERR_UNSUPPORTED", ember::EMBER_ERR_UNSUPPORTED as i64),
        ("EMBER_ERR_INTERNAL", ember::EMBER_ERR_INTERNAL as i64),
        (
            "EMBER_ERR_OUT_OF_MEMORY",
            ember::EMBER_ERR_OUT_OF_MEMORY as i64,
        ),
        ("EMBER_BUFFER_COPY", ember::EMBER_BUFFER_COPY as i64),
        ("EMBER_STORAGE_MAPPED", ember::EMBER_STORAGE_MAPPED as i64),
        ("EMBER_STORAGE_COPY", ember::EMBER_STORAGE_COPY as i64),
        (
            "EMBER_STORAGE_BORROWED",
            ember::EMBER_STORAGE_BORROWED as i64,
        ),
        ("EMBER_TOKENIZE_NO_BOS", ember::EMBER_TOKENIZE_NO_BOS as i64),
        (
            "EMBER_TOKENIZE_NO_SPECIAL",
            ember::EMBER_TOKENIZE_NO_SPECIAL as i64,
        ),
        ("EMBER_SPECIAL_BOS", ember::EMBER_SPECIAL_BOS as i64),
        ("EMBER_SPECIAL_EOS", ember::EMBER_SPECIAL_EOS as i64),
        ("EMBER_SPECIAL_UNK", ember::EMBER_SPECIAL_UNK as i64),
        ("EMBER_SPECIAL_PAD", ember::EMBER_SPECIAL_PAD as i64),
        ("EMBER_KV_F32", ember::EMBER_KV_F32 as i64),
        ("EMBER_KV_F16", ember::EMBER_KV_F16 as i64),
        ("EMBER_KV_Q8_0", ember::EMBER_KV_Q8_0 as i64),
        ("EMBER_CONTEXT_ERROR", ember::EMBER_CONTEXT_ERROR as i64),
        ("EMBER_CONTEXT_SHIFT", ember::EMBER_CONTEXT_SHIFT as i64),
        ("EMBER_STOP_MAX_TOKENS", ember::EMBER_STOP_MAX_TOKENS as i64),
        (
            "EMBER_STOP_END_OF_GENERATION",
            ember::EMBER_STOP_END_OF_GENERATION as i64,
        ),
        (
            "EMBER_STOP_STOP_SEQUENCE",
            ember::EMBER_STOP_STOP_SEQUENCE as i64,
        ),
        (
            "EMBER_STOP_CONTEXT_FULL",
            ember::EMBER_STOP_CONTEXT_FULL as i64,
        ),
        ("EMBER_STOP_CALLBACK", ember::EMBER_STOP_CALLBACK as i64),
        ("EMBER_STOP_CANCELLED", ember::EMBER_STOP_CANCELLED as i64),
    ];
    let header = header_constants();
    let special = ["EMBER_H", "EMBER_VERSION", "EMBER_TOKEN_NONE"];
    for (name, value) in &header {
        if special.contains(&name.as_str()) {
            continue;
        }
        let Some((_, v)) = rust.iter().find(|(n, _)| n == name) else {
            panic!("ember.h defines {name} = {value} but the Rust side has no such constant");
        };
        assert_eq!(value.parse::<i64>().ok(), Some(*v), "{name}");
    }
    for (name, _) in &rust {
        assert!(
            header.iter().any(|(n, _)| n == name),
            "{name} missing from ember.h"
        );
    }
    let version = header.iter().find(|(n, _)| n == "EMBER_VERSION").unwrap();
    assert_eq!(version.1, format!("\"{}\"", env!("CARGO_PKG_VERSION")));
    let none = header
        .iter()
        .find(|(n, _)| n == "EMBER_TOKEN_NONE")
        .unwrap();
    assert_eq!(
        (none.1.as_str(), ember::EMBER_TOKEN_NONE),
        ("UINT32_MAX", u32::MAX)
    );
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

/// The C side of the layout check: `struct.field offset` lines and `struct size`.
fn c_layouts(dir: &Path) -> Option<String> {
    let structs: &[(&str, &[&str])] = &[
        (
            "ember_model_info",
            &[
                "struct_size",
                "vocab_size",
                "max_context",
                "n_layers",
                "dim",
                "n_heads",
                "n_kv_heads",
                "n_params",
                "storage",
                "has_chat_template",
            ],
        ),
        ("ember_chat_message", &["role", "content"]),
        (
            "ember_session_config",
            &[
                "struct_size",
                "context",
                "kv_type",
                "threads",
                "batch",
                "context_policy",
                "keep",
            ],
        ),
        ("ember_logit_bias", &["token", "bias"]),
        (
            "ember_sampler_config",
            &[
                "struct_size",
                "temperature",
                "top_k",
                "top_p",
                "min_p",
                "repeat_penalty",
                "repeat_last_n",
                "presence_penalty",
                "frequency_penalty",
                "seed",
                "logit_bias",
                "n_logit_bias",
            ],
        ),
        (
            "ember_generate_options",
            &["struct_size", "max_tokens", "ignore_eos", "stop", "n_stop"],
        ),
        (
            "ember_generate_result",
            &[
                "struct_size",
                "stop_reason",
                "prompt_tokens",
                "generated_tokens",
                "prefill_seconds",
                "decode_seconds",
            ],
        ),
    ];
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"ember.h\"\nint main(void) {\n",
    );
    for (s, fields) in structs {
        c.push_str(&format!("printf(\"{s} %zu\\n\", sizeof({s}));\n"));
        for f in *fields {
            c.push_str(&format!(
                "printf(\"{s}.{f} %zu\\n\", offsetof({s}, {f}));\n"
            ));
        }
    }
    c.push_str(
        "printf(\"ember_status %zu\\n\", sizeof(ember_status));\n\
         printf(\"ember_token %zu\\n\", sizeof(ember_token));\nreturn 0;\n}\n",
    );
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&src, c).unwrap();
    let st = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Werror", "-I"])
        .arg(root().join("include"))
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .status()
        .ok()?;
    assert!(st.success(), "layout.c does not compile");
    let out = Command::new(&exe).output().unwrap();
    Some(String::from_utf8(out.stdout).unwrap())
}

macro_rules! layout {
    ($out:ident, $t:ident { $($f:ident),* }) => {
        $out.push(format!("{} {}", stringify!($t), size_of::<ember::$t>()));
        $( $out.push(format!("{}.{} {}", stringify!($t), stringify!($f), offset_of!(ember::$t, $f))); )*
    };
}

#[test]
fn struct_layouts_match_the_c_compiler() {
    if !have("cc") {
        eprintln!("skipping: no C compiler (cc)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(c) = c_layouts(dir.path()) else {
        eprintln!("skipping: cc failed to run");
        return;
    };
    let mut rust = Vec::new();
    layout!(
        rust,
        ember_model_info {
            struct_size,
            vocab_size,
            max_context,
            n_layers,
            dim,
            n_heads,
            n_kv_heads,
            n_params,
            storage,
            has_chat_template
        }
    );
    layout!(rust, ember_chat_message { role, content });
    layout!(
        rust,
        ember_session_config {
            struct_size,
            context,
            kv_type,
            threads,
            batch,
            context_policy,
            keep
        }
    );
    layout!(rust, ember_logit_bias { token, bias });
    layout!(
        rust,
        ember_sampler_config {
            struct_size,
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            repeat_last_n,
            presence_penalty,
            frequency_penalty,
            seed,
            logit_bias,
            n_logit_bias
        }
    );
    layout!(
        rust,
        ember_generate_options {
            struct_size,
            max_tokens,
            ignore_eos,
            stop,
            n_stop
        }
    );
    layout!(
        rust,
        ember_generate_result {
            struct_size,
            stop_reason,
            prompt_tokens,
            generated_tokens,
            prefill_seconds,
            decode_seconds
        }
    );
    rust.push(format!("ember_status {}", size_of::<ember::ember_status>()));
    rust.push(format!("ember_token {}", size_of::<ember::ember_token>()));
    let c: Vec<&str> = c.lines().collect();
    assert_eq!(c, rust.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn header_compiles_as_c99_and_cpp_with_warnings_as_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("h.c");
    std::fs::write(
        &src,
        "#include \"ember.h\"\nint main(void) { return ember_abi_version() == EMBER_ABI_VERSION ? 0 : 1; }\n",
    )
    .unwrap();
    let inc = root().join("include");
    for (tool, args) in [
        (
            "cc",
            &[
                "-std=c99",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-pedantic",
                "-fsyntax-only",
            ][..],
        ),
        (
            "g++",
            &[
                "-x",
                "c++",
                "-std=c++11",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-pedantic",
                "-fsyntax-only",
            ][..],
        ),
    ] {
        if !have(tool) {
            eprintln!("skipping: {tool} not installed");
            continue;
        }
        let out = Command::new(tool)
            .args(args)
            .arg("-I")
            .arg(&inc)
            .arg(&src)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} rejects ember.h:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
