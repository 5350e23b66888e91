//! Chat-template parity: ember's renderer (`ember_runtime::chat`) against the
//! prompts transformers renders for SmolLM2's template, each built-in template and
//! the real templates of the families Ember runs (Gemma 3, Qwen2.5, Qwen3, Phi-3.5,
//! Llama 3.1 / 3.2; `tests/fixtures/chat_template/goldens.json`, regenerate with
//! `scripts/make_chat_template_goldens.py`), including the cases where the template
//! rejects the conversation. `strftime_now` reads the clock the goldens pin.
//! Also the rendering limits (`chat::limits`): hostile templates end in an error,
//! whatever the caller's stack, and every real template stays within them.

use std::path::Path;
use std::time::{Duration, Instant};

use ember_runtime::chat::{
    check, limits, render_at, BuiltinTemplate, ChatError, DateTime, Message,
};
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
        check(&source, bos, eos).unwrap_or_else(|e| panic!("{name}: {e}"));
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

/// A thread's stack the size of a typical main thread's.
const MAIN_STACK: usize = 8 << 20;

/// A small thread's stack, as a C caller may render from.
const SMALL_STACK: usize = 256 << 10;

/// Bound on the time a hostile template takes to fail: each fails within
/// milliseconds; the bound only tells "ends" from "runs away" on a loaded machine.
const QUICKLY: Duration = Duration::from_secs(30);

/// `render_at` of `template` with `messages` (pinned clock, no BOS / EOS) on a new
/// thread with a `stack`-byte stack.
fn render_on(stack: usize, template: String, messages: Vec<Message>) -> Result<String, ChatError> {
    let now = DateTime::new(2025, 3, 9, 14, 5, 6).unwrap();
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || render_at(&template, &messages, true, "", "", now))
        .unwrap()
        .join()
        .unwrap()
}

/// Expressions of about 40,000 characters that chain one construct minijinja's
/// parser or compiler recurses on once per link.
fn long_chains() -> Vec<(&'static str, String)> {
    const CHARS: usize = 40_000;
    let chain = |head: &str, link: &str, tail: &str| {
        format!("{{{{ {head}{}{tail} }}}}", link.repeat(CHARS / link.len()))
    };
    vec![
        ("unary minus", chain("", "-", "1")),
        ("plus", chain("1", " + 1", "")),
        ("filters", chain("1", " | abs", "")),
        ("attributes", chain("messages", ".a", "")),
        ("not", chain("", "not ", "1")),
        ("items", chain("messages", "[0]", "")),
        ("calls", chain("range", "()", "")),
        ("conditionals", chain("1", " if 1 else 1", "")),
        ("unterminated tag", format!("{{{{ {}1", "-".repeat(CHARS))),
    ]
}

#[test]
fn long_expression_chains_fail_on_any_stack() {
    for stack in [MAIN_STACK, SMALL_STACK] {
        for (what, template) in long_chains() {
            let got = render_on(stack, template, vec![]);
            assert!(
                matches!(&got, Err(ChatError::TooDeep { line: 1, .. })),
                "{what} on a {stack}-byte stack: {got:?}"
            );
        }
    }
    // Chains at the limit render, from a small stack too.
    let n = limits::MAX_TAG_LINKS;
    let at_limit = format!(
        "{{{{ {}1 }}}}|{{{{ 1{} }}}}",
        "-".repeat(n),
        " + 1".repeat(n)
    );
    let got = render_on(SMALL_STACK, at_limit, vec![]).unwrap();
    assert_eq!(
        got,
        format!("{}|{}", if n.is_multiple_of(2) { 1 } else { -1 }, n + 1)
    );
}

#[test]
fn endless_loops_run_out_of_fuel() {
    let loops = "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}";
    let messages = vec![Message::new("user", "hi")];
    let start = Instant::now();
    let got = render_on(SMALL_STACK, loops.into(), messages);
    assert!(
        matches!(got, Err(ChatError::OutOfFuel(f)) if f == limits::fuel(1)),
        "{got:?}"
    );
    assert!(start.elapsed() < QUICKLY, "{:?}", start.elapsed());
    assert_eq!(
        ChatError::OutOfFuel(limits::fuel(1)).to_string(),
        format!(
            "chat template: rendering exceeded its fuel of {} steps (a loop that does not end?)",
            limits::fuel(1)
        )
    );
}

#[test]
fn huge_output_is_refused() {
    let big = "{% for i in range(1000) %}{{ 'x' * 100000 }}{% endfor %}";
    let messages = vec![Message::new("user", "hi")];
    let limit = limits::max_output("user".len() + "hi".len());
    let got = render_on(SMALL_STACK, big.into(), messages);
    assert!(
        matches!(got, Err(ChatError::OutputTooLarge(n)) if n == limit),
        "{got:?}"
    );
    assert_eq!(
        ChatError::OutputTooLarge(limit).to_string(),
        format!("chat template output larger than {limit} bytes")
    );
}

#[test]
fn recursion_is_limited_on_any_stack() {
    for t in [
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "x{% include 'chat' %}",
        "{% for m in [[1]] recursive %}{{ loop([m]) }}{% endfor %}",
    ] {
        let Err(ChatError::Render(e)) = render_on(SMALL_STACK, t.into(), vec![]) else {
            panic!("{t}: not a render error");
        };
        // An include's error wraps the one of the template it includes.
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cause.and_then(|c| c.source()) {
            cause = Some(c);
        }
        let cause = cause.unwrap().to_string();
        assert!(cause.contains("recursion limit exceeded"), "{t}: {cause}");
    }
}

#[test]
fn deep_values_fit_the_render_stack() {
    // Lists nested 32,000 deep, about as deep as the fuel of one message lets a
    // template build them, printed and compared (both recurse per level) and
    // dropped, from a small stack.
    let deep = "{% set ns = namespace(x=0, y=0) %}{% for i in range(2000) %}\
                {% set ns.x = [[[[[[[[[[[[[[[[ns.x]]]]]]]]]]]]]]]] %}\
                {% set ns.y = [[[[[[[[[[[[[[[[ns.y]]]]]]]]]]]]]]]] %}\
                {% endfor %}{{ ns.x == ns.y }}{{ ns.x }}";
    let got = render_on(SMALL_STACK, deep.into(), vec![Message::new("user", "hi")]).unwrap();
    let levels = 2000 * 16;
    assert_eq!(
        got,
        format!("True{}0{}", "[".repeat(levels), "]".repeat(levels))
    );
}
