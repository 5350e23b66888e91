//! Chat-template parity: ember's renderer (`ember_runtime::chat`) against the
//! prompts transformers renders for SmolLM2's template and each built-in template
//! (`tests/fixtures/chat_template/goldens.json`, regenerate with
//! `scripts/make_chat_template_goldens.py`), including the cases where the template
//! rejects the conversation.

use std::path::Path;

use ember_runtime::chat::{render, BuiltinTemplate, ChatError, Message};
use serde_json::Value;

fn goldens() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_template/goldens.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn templates_match_transformers() {
    let g = goldens();
    let templates = g["templates"].as_array().unwrap();
    let mut seen = Vec::new();
    for t in templates {
        let name = t["name"].as_str().unwrap();
        let source = match t["template"].as_str() {
            Some(s) => s.to_string(),
            None => BuiltinTemplate::from_name(name)
                .unwrap_or_else(|| panic!("no built-in template {name}"))
                .source()
                .to_string(),
        };
        let (bos, eos) = (
            t["bos_token"].as_str().unwrap(),
            t["eos_token"].as_str().unwrap(),
        );
        for case in t["cases"].as_array().unwrap() {
            let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
            let gen = case["add_generation_prompt"].as_bool().unwrap();
            let what = format!("{name}/{}/gen={gen}", case["conversation"]);
            let got = render(&source, &messages, gen, bos, eos);
            match (case["text"].as_str(), got) {
                (Some(want), Ok(got)) => assert_eq!(got, want, "{what}"),
                (None, Err(ChatError::Rejected(msg))) => {
                    let want = case["error"].as_str().unwrap();
                    assert!(want.ends_with(&msg), "{what}: {msg:?} vs {want:?}");
                }
                (want, got) => panic!("{what}: expected {want:?}, got {got:?}"),
            }
        }
        seen.push(name.to_string());
    }
    for t in BuiltinTemplate::ALL {
        assert!(
            seen.iter().any(|s| s == t.name()),
            "no goldens for {}",
            t.name()
        );
    }
    assert!(seen.iter().any(|s| s == "smollm2"));
}

#[test]
fn smollm2_template_in_shared_is_the_golden_one() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/models/smollm2-135m-instruct-hf/chat_template.jinja");
    let Ok(shared) = std::fs::read_to_string(&p) else {
        eprintln!("skipping: {} not found", p.display());
        return;
    };
    let g = goldens();
    let smol = g["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "smollm2")
        .unwrap();
    assert_eq!(
        smol["template"].as_str().unwrap().trim_end(),
        shared.trim_end()
    );
}
