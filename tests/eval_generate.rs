//! `ember eval generate` on a tiny fixture model: the outputs file (atomic,
//! one JSON line per prompt, the library's greedy outputs) and the scores,
//! which must be `ember_metrics::outputs::score_outputs` of the same strings.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ember_converter::{convert, ConvertOptions};
use ember_metrics::outputs::score_outputs;
use ember_runtime::generate::generate_greedy;
use ember_runtime::{Model, Session, SessionConfig};
use serde_json::Value;

/// Tokens generated per prompt.
const MAX_TOKENS: usize = 32;

fn tiny_model(dir: &Path) -> PathBuf {
    let out = dir.join("tiny.ember");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/llama");
    convert(&src, &out, &ConvertOptions::default()).expect("convert the tiny model");
    out
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The greedy output of `prompt` from the library, in the session the command
/// sets up by default (context capped by the model, f16 KV).
fn library_output(model: &Arc<Model>, prompt: &str) -> String {
    let ctx = 2048.min(model.hparams().max_context as usize);
    let mut s = Session::new(model.clone(), SessionConfig::new(ctx)).unwrap();
    let tok = model.tokenizer();
    let ids = tok.encode(prompt, tok.default_encode_options());
    let mut text = String::new();
    generate_greedy(&mut s, &ids, MAX_TOKENS, |_, piece| {
        text.push_str(piece);
        true
    })
    .unwrap();
    text
}

#[test]
fn generate_writes_outputs_and_scores_them() {
    let tmp = common::scratch();
    let model_path = tiny_model(tmp.path());
    let model = Arc::new(Model::load(&model_path).unwrap());
    // References made from the library's outputs, so the scores are not all
    // zero: one exact, one partial among two references, and none.
    let first = library_output(&model, "hello there");
    let second = library_output(&model, "the cat");
    let refs = vec![
        vec![first.clone()],
        vec![format!("{second} and more words"), "a cat".to_string()],
    ];
    let prompts = tmp.path().join("prompts.jsonl");
    std::fs::write(
        &prompts,
        format!(
            "{}\n\n{}\n{}\n",
            serde_json::json!({"id": "a", "prompt": "hello there", "reference": refs[0][0]}),
            serde_json::json!({"prompt": "the cat", "reference": refs[1]}),
            serde_json::json!({"id": 7, "prompt": "no reference here"}),
        ),
    )
    .unwrap();
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("outputs.jsonl");
    let n = MAX_TOKENS.to_string();
    let o = common::ember_command()
        .args(["eval", "generate", "-m"])
        .arg(&model_path)
        .arg("--file")
        .arg(&prompts)
        .arg("--out")
        .arg(&out)
        .args(["-n", &n, "--json", "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Only the finished file is left in its directory.
    let names: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["outputs.jsonl"]);

    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["id"], "a");
    assert_eq!(lines[1]["id"], 3, "the line number when the item has no id");
    assert_eq!(lines[2]["id"], 7);
    let outputs: Vec<String> = lines
        .iter()
        .map(|l| l["output"].as_str().unwrap().to_string())
        .collect();
    for (l, o) in lines.iter().zip(&outputs) {
        assert_eq!(*o, library_output(&model, l["prompt"].as_str().unwrap()));
    }

    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["prompts"], 3);
    let want = score_outputs(&outputs[..2], &refs).unwrap();
    let got = &v["scores"];
    assert_eq!(got["items"], 2, "only items with a reference are scored");
    let close = |key: &str, w: f64| {
        let g = got[key].as_f64().unwrap();
        // The same computation; JSON may move the last bit.
        assert!((g - w).abs() <= 1e-12, "{key}: {g} vs {w}");
    };
    close("bleu", want.bleu.score);
    close("rouge1_f1", want.rouge.rouge1.fmeasure);
    close("rouge2_f1", want.rouge.rouge2.fmeasure);
    close("rougeL_f1", want.rouge.rouge_l.fmeasure);
    close("exact_match", want.exact_match);
    assert_eq!(want.exact, [true, false]);
    assert!(want.bleu.score > 0.0 && want.rouge.rouge1.fmeasure > 0.0);
    assert!(got["bleu_signature"]
        .as_str()
        .unwrap()
        .starts_with("nrefs:2|"));
}

#[test]
fn generate_errors() {
    let tmp = common::scratch();
    let model_path = tiny_model(tmp.path());
    let prompts = tmp.path().join("prompts.jsonl");
    let run = |out: &Path| {
        common::ember_command()
            .args(["eval", "generate", "-q", "-n", "2", "-m"])
            .arg(&model_path)
            .arg("--file")
            .arg(&prompts)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let out = tmp.path().join("o.jsonl");
    for (bad, want) in [
        ("{\"prompt\": \"a\"", "prompts.jsonl:2: not valid JSON"),
        (
            "{\"text\": \"a\"}",
            "prompts.jsonl:2: \"prompt\" must be a string",
        ),
        (
            "{\"prompt\": \"a\", \"reference\": 3}",
            "prompts.jsonl:2: \"reference\" must be",
        ),
        (
            "{\"prompt\": \"a\", \"reference\": []}",
            "prompts.jsonl:2: \"reference\" must be",
        ),
    ] {
        std::fs::write(&prompts, format!("{{\"prompt\": \"ok\"}}\n{bad}\n")).unwrap();
        let o = run(&out);
        assert!(!o.status.success(), "{bad}");
        assert!(
            stderr(&o).contains(want),
            "{bad}: want {want:?} in {}",
            stderr(&o)
        );
        assert!(!out.exists(), "nothing written on error");
    }
    // An output directory that does not exist: an error, no stray file.
    std::fs::write(&prompts, "{\"prompt\": \"ok\"}\n").unwrap();
    let o = run(&tmp.path().join("missing/o.jsonl"));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot write"), "{}", stderr(&o));
    let o = run(&out);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("nothing to score"), "{text}");
}
