//! Data preparation through `ember_train::data::prepare` on a tiny model:
//! assistant-only loss masks for chat records, packing, NFC, duplicates, the
//! seeded split, and errors naming the file and line.

mod util;

use std::path::{Path, PathBuf};

use ember_runtime::Model;
use ember_train::data::{prepare, DataOptions, Prepared};

fn opts(train: PathBuf) -> DataOptions {
    DataOptions {
        train,
        val: None,
        val_split: 0.0,
        seq_len: 64,
        nfc: false,
        dedup: false,
        seed: 1,
        template: None,
        format: None,
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn setup() -> (tempfile::TempDir, Model) {
    let dir = util::scratch();
    let model = util::tiny_model(dir.path(), util::tiny_hparams(), None, 1);
    (dir, model)
}

fn learned_text(model: &Model, p: &Prepared) -> Vec<String> {
    p.train
        .iter()
        .map(|ex| {
            let ids: Vec<u32> = (0..ex.len())
                .filter(|&t| ex.loss_mask[t])
                .map(|t| ex.tokens[t + 1])
                .collect();
            model.tokenizer().decode(&ids)
        })
        .collect()
}

#[test]
fn chat_loss_covers_exactly_the_assistant_replies() {
    let (dir, model) = setup();
    // The tiny model's template: `<role>content</s>` per message, `<assistant>` as
    // the generation prompt.
    let data = write(
        dir.path(),
        "chat.jsonl",
        concat!(
            r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"},"#,
            r#"{"role":"user","content":"and?"},{"role":"assistant","content":"bye"}]}"#,
            "\n",
        ),
    );
    let p = prepare(&model, &opts(data)).unwrap();
    assert_eq!(p.train.len(), 1);
    let ex = &p.train[0];
    let full = model.tokenizer().decode(&ex.tokens);
    assert!(
        full.contains("<user>hi") && full.contains("<assistant>bye"),
        "{full}"
    );
    // Counted predictions: "yo</s>" and "bye</s>" (the end marker is learned too;
    // `</s>` is the EOS token and decodes to nothing).
    let learned = learned_text(&model, &p);
    assert_eq!(learned, vec!["yobye".to_string()]);
    // The first counted prediction is the one right after "<assistant>".
    let first = ex.loss_mask.iter().position(|&m| m).unwrap();
    assert!(model
        .tokenizer()
        .decode(&ex.tokens[..=first])
        .ends_with("<assistant>"));
}

#[test]
fn text_is_packed_normalised_deduplicated_and_split_by_seed() {
    let (dir, model) = setup();
    let mut text = String::new();
    for i in 0..20 {
        text.push_str(&format!("document {i} says he\n\n"));
    }
    text.push_str("caf\u{65}\u{301}\n\ncaf\u{e9}\n");
    let data = write(dir.path(), "t.txt", &text);
    let mut o = opts(data);
    o.seq_len = 16;
    o.nfc = true;
    o.dedup = true;
    o.val_split = 0.2;
    let a = prepare(&model, &o).unwrap();
    assert_eq!(a.report.documents, 21);
    assert_eq!(
        a.report.duplicates_removed, 1,
        "NFC makes the two cafés equal"
    );
    assert!(!a.val.is_empty());
    assert!(a
        .train
        .iter()
        .all(|e| e.len() <= 16 && e.loss_mask.iter().all(|&m| m)));
    let b = prepare(&model, &o).unwrap();
    assert_eq!(a.train, b.train);
    assert_eq!(a.fingerprint(), b.fingerprint());
    o.seed = 2;
    let c = prepare(&model, &o).unwrap();
    assert_ne!(a.val, c.val, "another seed, another split");
}

#[test]
fn errors_name_the_file_and_line() {
    let (dir, model) = setup();
    let err = |name: &str, text: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        prepare(&model, &opts(p)).unwrap_err().to_string()
    };
    let e = err("e.txt", b"");
    assert!(e.contains("e.txt") && e.contains("empty"), "{e}");
    let e = err("u.txt", b"ok\n\xc3\x28\n");
    assert!(e.contains("u.txt:2") && e.contains("UTF-8"), "{e}");
    let e = err(
        "j.jsonl",
        b"{\"messages\": [{\"role\": \"assistant\", \"content\": \"x\"}]}\nnot json\n",
    );
    assert!(e.contains("j.jsonl:2") && e.contains("JSON"), "{e}");
    let e = err("m.jsonl", b"{\"messages\": [{\"role\": \"user\"}]}\n");
    assert!(e.contains("m.jsonl:1") && e.contains("content"), "{e}");
    let e = err(
        "a.jsonl",
        b"{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n",
    );
    assert!(e.contains("a.jsonl:1") && e.contains("assistant"), "{e}");
}
