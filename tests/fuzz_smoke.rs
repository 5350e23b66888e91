//! Smoke run of the fuzz targets on stable Rust (issue 24): each target of
//! `fuzz/` (the same functions the libFuzzer binaries call, included from
//! `fuzz/src/harness/`) runs its seeds, built from the real fixtures, then
//! deterministic mutations of them (`harness::mutate`) for at most
//! `SMOKE_MUTATIONS` inputs or `SMOKE_SECONDS`, whichever comes first. A
//! panic fails the test; the input is saved under
//! `target/fuzz-smoke-failures/` to replay. Each input that once crashed a
//! target is committed under `fuzz/regressions/<target>/` and has its own
//! test below.
//!
//! `scripts/fuzz_seeds.sh` writes the seed corpora for `cargo fuzz` with the
//! ignored `write_seeds`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../fuzz/src/harness/mod.rs"]
mod harness;

use harness::mutate::{mutate, Rng};
use harness::{Target, TARGETS};

/// Mutated inputs per target at most.
const SMOKE_MUTATIONS: usize = 2000;
/// Wall-clock budget of a target's mutations (seeds always run in full), so
/// the eight targets together stay well under a minute on two cores.
const SMOKE_SECONDS: u64 = 4;

fn target(name: &str) -> Target {
    *TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no target {name}"))
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `input` through `t`; on a panic saves it and returns where.
fn run_one(t: Target, label: &str, input: &[u8]) -> Option<PathBuf> {
    if catch_unwind(AssertUnwindSafe(|| (t.run)(input))).is_ok() {
        return None;
    }
    let dir = root().join("target/fuzz-smoke-failures");
    std::fs::create_dir_all(&dir).expect("create target/fuzz-smoke-failures");
    let path = dir.join(format!("{}-{label}.bin", t.name));
    std::fs::write(&path, input).expect("save the failing input");
    Some(path)
}

fn smoke(name: &str) {
    let t = target(name);
    let seeds = harness::seeds::seeds(name);
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let mut failures = Vec::new();
    for (label, input) in &seeds {
        failures.extend(run_one(t, label, input));
    }
    let start = Instant::now();
    let mut rng = Rng::new(name.len() as u64 * 0x1000_0001 + u64::from(name.as_bytes()[0]));
    let mut n = 0;
    while n < SMOKE_MUTATIONS && start.elapsed() < Duration::from_secs(SMOKE_SECONDS) {
        let (label, input) = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())].1;
        let mutated = mutate(&mut rng, input, other);
        failures.extend(run_one(t, &format!("{label}-m{n}"), &mutated));
        n += 1;
    }
    eprintln!(
        "{name}: {} seeds and {n} mutations in {:.1} s",
        seeds.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{name}: inputs that panic: {failures:?}"
    );
}

#[test]
fn smoke_ember_load() {
    smoke("ember_load");
}

#[test]
fn smoke_gguf() {
    smoke("gguf");
}

#[test]
fn smoke_hf_import() {
    smoke("hf_import");
}

#[test]
fn smoke_llama2c() {
    smoke("llama2c");
}

#[test]
fn smoke_session_state() {
    smoke("session_state");
}

#[test]
fn smoke_peft() {
    smoke("peft");
}

#[test]
fn smoke_tokenizer() {
    smoke("tokenizer");
}

#[test]
fn smoke_chat_template() {
    smoke("chat_template");
}

/// A chat template builds values of any size within its fuel and output
/// bounds: this one doubles a 2-byte string 26 times (128 MiB) and prints
/// only its length; the same loop run 60 times exhausts memory (found while
/// checking the `chat_template` target's bounds; libFuzzer reports
/// out-of-memory past 2 GiB). Rendering must refuse values larger than its
/// output bound.
#[test]
#[ignore = "reported: runtime/src/chat does not bound the values a template builds"]
fn chat_template_string_doubling() {
    let template = "{% set s = namespace(x='ab') %}{% for i in range(26) %}\
                    {% set s.x = s.x ~ s.x %}{% endfor %}{{ s.x | length }}";
    let rendered = ember_runtime::chat::render(template, &[], true, "", "");
    assert!(
        rendered.is_err(),
        "a 128 MiB string was built: {rendered:?}"
    );
}

/// The seeds reach the code past the parsers: every `.ember` seed loads,
/// every prompt-cache seed restores in the session its selector names, every
/// PEFT seed loads for its base model.
#[test]
fn seeds_are_accepted() {
    for (label, seed) in harness::seeds::seeds("ember_load") {
        if let Err(e) = ember_runtime::Model::from_bytes(&seed[1..]) {
            panic!("ember_load seed {label}: {e}");
        }
    }
    for (label, seed) in harness::seeds::seeds("session_state") {
        let (name, config) = harness::state::state_session(seed[0]);
        harness::fixtures::with_session(name, config, |s| {
            if let Err(e) = s.read_state(&seed[1..]) {
                panic!("session_state seed {label}: {e}");
            }
        });
    }
    for (label, seed) in harness::seeds::seeds("peft") {
        let base = harness::state::PEFT_BASES[usize::from(seed[0])];
        let (_, parts) = harness::frame::split::<2>(&seed, 2);
        let files = [
            ("adapter_config.json", Some(parts[0])),
            ("adapter_model.safetensors", Some(parts[1])),
        ];
        let model = harness::fixtures::model(base);
        harness::fixtures::with_files(&files, |dir| {
            if let Err(e) = ember_runtime::lora::peft::load_peft(dir, model.hparams()) {
                panic!("peft seed {label}: {e}");
            }
        });
    }
}

/// Writes every target's seeds to `$EMBER_FUZZ_SEEDS/<target>/` (default
/// `target/fuzz-seeds`), replacing what was there (`scripts/fuzz_seeds.sh`).
#[test]
#[ignore = "writes the seed corpora; run by scripts/fuzz_seeds.sh"]
fn write_seeds() {
    let out = std::env::var_os("EMBER_FUZZ_SEEDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/fuzz-seeds"));
    for t in TARGETS {
        let dir = out.join(t.name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("clear the seed directory");
        }
        std::fs::create_dir_all(&dir).expect("create the seed directory");
        let seeds = harness::seeds::seeds(t.name);
        let bytes: usize = seeds.iter().map(|s| s.1.len()).sum();
        for (label, input) in &seeds {
            std::fs::write(dir.join(label), input).expect("write a seed");
        }
        eprintln!("{}: {} seeds, {bytes} bytes", dir.display(), seeds.len());
    }
}
