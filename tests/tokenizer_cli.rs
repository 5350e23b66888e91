//! `ember tokenize`, `ember detokenize` and `ember chat-template` as a user runs
//! them, on small models converted in the test: the tiny SentencePiece model of
//! `common`, and the same architecture carrying the byte-level BPE tokenizer trained
//! for the parity tests (with ChatML special tokens).

mod common;

use std::path::Path;
use std::process::Output;

use ember_converter::ir::{F32Source, IrTensor, ModelIr};
use ember_converter::tokenizer_import::hf_json;
use ember_converter::writer::{write_model, WriteOptions};
use ember_runtime::format::expected_tensors;

fn ember(args: &[&str]) -> Output {
    common::ember_command()
        .args(args)
        .output()
        .expect("run ember")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "ember failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn fails(out: &Output) -> String {
    assert!(!out.status.success(), "ember should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_tiny(dir: &Path) -> String {
    let path = dir.join("tiny.ember");
    std::fs::write(&path, common::tiny_model_bytes()).unwrap();
    path.to_string_lossy().into_owned()
}

/// The tiny architecture with the trained GPT-2-split BPE tokenizer, no chat template.
fn write_bpe(dir: &Path) -> String {
    let json = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tokenizer/trained/gpt2_bpe.json");
    let tokenizer = hf_json::from_hf_files(&json, None).unwrap();
    let mut hp = common::tiny_hparams();
    hp.vocab_size = tokenizer.tokens.len() as u32;
    let tensors = expected_tensors(&hp)
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product::<u64>() as usize;
            IrTensor {
                name,
                shape,
                source: Box::new(F32Source(common::random_values(n, i as u64 + 1, 0.5))),
            }
        })
        .collect();
    let ir = ModelIr {
        hparams: hp,
        tensors,
        tokenizer,
        chat_template: None,
        metadata: vec![("source.kind".into(), "test".into())],
    };
    let path = dir.join("bpe.ember");
    write_model(&ir, &path, &WriteOptions::default()).unwrap();
    path.to_string_lossy().into_owned()
}

fn ids_of(stdout: &str) -> Vec<u32> {
    stdout
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect()
}

#[test]
fn tokenize_then_detokenize_round_trips() {
    let dir = common::scratch();
    let m = write_bpe(dir.path());
    let text = "Hello, world! 你好 👋🏽\n\tcode();";
    let ids = ids_of(&ok(&ember(&["tokenize", "-m", &m, text])));
    assert!(ids.len() > 5);
    let id_args: Vec<String> = ids.iter().map(u32::to_string).collect();
    let mut args = vec!["detokenize", "-m", &m];
    args.extend(id_args.iter().map(String::as_str));
    assert_eq!(ok(&ember(&args)), format!("{text}\n"));
    // Comma-separated and JSON-ish lists work too.
    let joined = format!("[{}]", id_args.join(", "));
    let out = ok(&ember(&["detokenize", "-m", &m, "--json", &joined]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["text"], text);
}

#[test]
fn tokenize_json_pieces_file_and_lines() {
    let dir = common::scratch();
    let m = write_bpe(dir.path());
    let out = ok(&ember(&[
        "tokenize", "-m", &m, "--json", "--pieces", "Hi there",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let pieces: Vec<&str> = v["pieces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(pieces.concat(), "HiĠthere");
    assert_eq!(v["ids"].as_array().unwrap().len(), pieces.len());

    let out = ok(&ember(&["tokenize", "-m", &m, "--pieces", "a b"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[1].ends_with("\tĠb"), "{out}");

    let f = dir.path().join("in.txt");
    std::fs::write(&f, "one\ntwo three\n").unwrap();
    let fs = f.to_str().unwrap();
    let whole = ids_of(&ok(&ember(&["tokenize", "-m", &m, "--file", fs])));
    let direct = ids_of(&ok(&ember(&["tokenize", "-m", &m, "one\ntwo three\n"])));
    assert_eq!(whole, direct);
    let out = ok(&ember(&[
        "tokenize", "-m", &m, "--file", fs, "--lines", "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);

    let err = fails(&ember(&[
        "tokenize",
        "-m",
        &m,
        "--file",
        "/nonexistent/x.txt",
    ]));
    assert!(err.contains("x.txt"), "{err}");
    let err = fails(&ember(&["tokenize", "-m", &m]));
    assert!(err.contains("TEXT") || err.contains("text"), "{err}");
}

#[test]
fn special_tokens_only_when_allowed() {
    let dir = common::scratch();
    let m = write_bpe(dir.path());
    let special = ids_of(&ok(&ember(&["tokenize", "-m", &m, "<|im_start|>"])));
    assert_eq!(special, [1]);
    let plain = ids_of(&ok(&ember(&[
        "tokenize",
        "-m",
        &m,
        "--no-special",
        "<|im_start|>",
    ])));
    assert!(plain.len() > 1 && !plain.contains(&1), "{plain:?}");
    // The tiny SentencePiece model adds BOS by default.
    let tiny = write_tiny(dir.path());
    let ids = ids_of(&ok(&ember(&["tokenize", "-m", &tiny, "he"])));
    assert_eq!(ids[0], 1);
}

#[test]
fn detokenize_rejects_bad_ids() {
    let dir = common::scratch();
    let m = write_tiny(dir.path());
    let err = fails(&ember(&["detokenize", "-m", &m, "1", "264"]));
    assert!(err.contains("out of range") && err.contains("264"), "{err}");
    let err = fails(&ember(&["detokenize", "-m", &m, "-5"]));
    assert!(!err.is_empty());
    let err = fails(&ember(&["detokenize", "-m", &m, "abc"]));
    assert!(err.contains("\"abc\""), "{err}");
    assert!(fails(&ember(&["detokenize", "-m", &m])).contains("IDS"));
}

#[test]
fn chat_template_renders_model_and_builtin_templates() {
    let dir = common::scratch();
    let tiny = write_tiny(dir.path());
    let bpe = write_bpe(dir.path());
    let msgs = dir.path().join("m.json");
    std::fs::write(
        &msgs,
        r#"[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]"#,
    )
    .unwrap();
    let ms = msgs.to_str().unwrap();
    // The tiny model's own template concatenates the contents.
    assert_eq!(
        ok(&ember(&["chat-template", "-m", &tiny, "--messages", ms])),
        "Be brief.Hi"
    );
    let chatml = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n";
    let out = ok(&ember(&[
        "chat-template",
        "-m",
        &bpe,
        "--messages",
        ms,
        "--template",
        "chatml",
    ]));
    assert_eq!(out, format!("{chatml}<|im_start|>assistant\n"));
    let out = ok(&ember(&[
        "chat-template",
        "-m",
        &bpe,
        "--messages",
        ms,
        "--template",
        "chatml",
        "--no-generation-prompt",
    ]));
    assert_eq!(out, chatml);
    // {"messages": [...]} is accepted too; llama2 uses the model's BOS/EOS texts.
    std::fs::write(
        &msgs,
        r#"{"messages": [{"role": "user", "content": "Hi"}]}"#,
    )
    .unwrap();
    let out = ok(&ember(&[
        "chat-template",
        "-m",
        &tiny,
        "--messages",
        ms,
        "--template",
        "llama2",
    ]));
    assert_eq!(out, "<s>[INST] Hi [/INST]");
    // A model without a template needs --template.
    let err = fails(&ember(&["chat-template", "-m", &bpe, "--messages", ms]));
    assert!(err.contains("--template"), "{err}");
}

#[test]
fn chat_template_reports_bad_messages() {
    let dir = common::scratch();
    let m = write_tiny(dir.path());
    let f = dir.path().join("m.json");
    let fs = f.to_str().unwrap();
    let run = |body: &str, extra: &[&str]| {
        std::fs::write(&f, body).unwrap();
        let mut args = vec!["chat-template", "-m", &m, "--messages", fs];
        args.extend_from_slice(extra);
        fails(&ember(&args))
    };
    let err = run("[{\"role\": \"user\", ", &[]);
    assert!(err.contains("bad JSON") && err.contains("m.json"), "{err}");
    let err = run(r#"[{"content": "hi"}]"#, &[]);
    assert!(
        err.contains("message 0") && err.contains("\"role\""),
        "{err}"
    );
    let err = run(r#"[{"role": "user", "content": 5}]"#, &[]);
    assert!(err.contains("\"content\""), "{err}");
    let err = run(r#""hello""#, &[]);
    assert!(err.contains("list of messages"), "{err}");
    let err = run(
        r#"[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]"#,
        &["--template", "llama2"],
    );
    assert!(err.contains("alternate"), "{err}");
    let err = fails(&ember(&[
        "chat-template",
        "-m",
        &m,
        "--messages",
        "/nonexistent.json",
    ]));
    assert!(err.contains("nonexistent.json"), "{err}");
}
