//! One function per fuzz target: it takes any byte string, runs the code under
//! test on it and returns, or panics on a bug (a panic inside Ember, or a
//! contract the target checks). Inputs that stand for several files or
//! choices are framed as in [`frame`]; models, tokenizers and templates the
//! targets hold fixed come from `tests/fixtures` (and `../shared` when present),
//! loaded once per process ([`fixtures`]).
//!
//! Work per input is bounded by the input's size: sessions hold at most 32
//! positions, padded checkpoints at most 256 KiB, and rendered messages at
//! most [`text::MAX_MESSAGES`]. Files are written to a per-thread scratch
//! directory under `$TMPDIR` (a tmpfs such as `/dev/shm` keeps the writer's
//! `fsync` cheap).
//!
//! Shared by the libFuzzer binaries (`fuzz/fuzz_targets/`) and the stable smoke
//! run (`tests/fuzz_smoke.rs`), which also uses [`seeds`] and [`mutate`].

pub mod fixtures;
pub mod frame;
pub mod mutate;
pub mod readers;
pub mod seeds;
pub mod state;
pub mod text;

pub use readers::{ember_load, gguf, hf_import, llama2c};
pub use state::{peft, session_state};
pub use text::{chat_template, tokenizer};

/// A fuzz target: its name (that of its libFuzzer binary and its seed
/// directory) and its one-input function.
#[derive(Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order of issue 24's list.
pub const TARGETS: [Target; 8] = [
    Target {
        name: "ember_load",
        run: ember_load,
    },
    Target {
        name: "gguf",
        run: gguf,
    },
    Target {
        name: "hf_import",
        run: hf_import,
    },
    Target {
        name: "llama2c",
        run: llama2c,
    },
    Target {
        name: "session_state",
        run: session_state,
    },
    Target {
        name: "peft",
        run: peft,
    },
    Target {
        name: "tokenizer",
        run: tokenizer,
    },
    Target {
        name: "chat_template",
        run: chat_template,
    },
];
