//! Chat-template parity: ember's renderer (`ember_runtime::chat`) against the
//! prompts transformers renders for SmolLM2's template, each built-in template and
//! the real templates of the families Ember runs (Gemma 3, Qwen2.5, Qwen3, Phi-3.5,
//! Llama 3.1 / 3.2; `tests/fixtures/chat_template/goldens.json`, regenerate with
//! `scripts/make_chat_template_goldens.py`), including the cases where the template
//! rejects the conversation. `strftime_now` reads the clock the goldens pin.

use std::path::Path;

use ember_runtime::chat::{render_at, BuiltinTemplate, ChatError, DateTime, Message};
use serde_json::Value;

fn goldens() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_template/goldens.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The instant `strftime_now` returned when the goldens were rendered
/// (`"strftime_now": "YYYY-MM-DDTHH:MM:SS"`).
fn pinned_clock(g: &Value) -> DateTime {
    let s = g["strftime_now"]
        .as_str()
        .expect("goldens pin strftime_now");
    let n: Vec<u32> = s
        .split(['-', 'T', ':'])
        .map(|p| p.parse().unwrap())
        .collect();
    let [year, month, day, hour, minute, second] = n[..] else {
        panic!("strftime_now {s:?} is not YYYY-MM-DDTHH:MM:SS")
    };
    DateTime::new(year as i32, month, day, hour, minute, second)
        .unwrap_or_else(|| panic!("strftime_now {s:?} is not a valid time"))
}

/// The families whose real template must have goldens.
const REAL_TEMPLATES: [&str; 6] = [
    "gemma3", "qwen2.5", "qwen3", "phi3.5", "llama3.1", "llama3.2",
];

#[test]
fn templates_match_transformers() {
    let g = goldens();
    let now = pinned_clock(&g);
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
            let got = render_at(&source, &messages, gen, bos, eos, now);
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
    for name in REAL_TEMPLATES {
        let t = templates.iter().find(|t| t["name"] == name);
        let t = t.unwrap_or_else(|| panic!("no goldens for the {name} template"));
        assert!(
            t["source"].is_string(),
            "{name}: where the template came from"
        );
    }
}

#[test]
fn llama32_prints_the_pinned_date() {
    // Llama 3.2 prints strftime_now("%d %b %Y") and falls back to "26 Jul 2024"
    // only where strftime_now is not defined, as it is in transformers.
    let g = goldens();
    assert_eq!(
        pinned_clock(&g),
        DateTime::new(2025, 3, 9, 14, 5, 6).unwrap()
    );
    let llama32 = g["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "llama3.2")
        .unwrap();
    for case in llama32["cases"].as_array().unwrap() {
        if let Some(text) = case["text"].as_str() {
            assert!(text.contains("Today Date: 09 Mar 2025\n"), "{text:?}");
        }
    }
}

#[test]
fn builtin_gemma_is_gemma3s_own_template() {
    let g = goldens();
    let gemma3 = g["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "gemma3")
        .unwrap();
    assert_eq!(
        BuiltinTemplate::Gemma.source(),
        gemma3["template"].as_str().unwrap()
    );
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
