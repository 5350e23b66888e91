//! The runtime's one error type: every failure at load time or at an API entry
//! point is one of these variants, naming the problem.

use std::path::PathBuf;

/// Result alias for the runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when opening, validating or using a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not an .ember file (bad magic bytes)")]
    BadMagic,
    #[error(
        "unsupported .ember format version {major}.{minor} (this reader understands {supported}.x)"
    )]
    UnsupportedVersion {
        major: u16,
        minor: u16,
        supported: u16,
    },
    #[error("file truncated: {what} needs {needed} bytes but the file has {actual}")]
    Truncated {
        what: String,
        needed: u64,
        actual: u64,
    },
    #[error("header checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the header or directory is corrupt")]
    HeaderChecksum { stored: u32, computed: u32 },
    #[error("bad header: {0}")]
    BadHeader(String),
    #[error("section {section} is invalid: {reason}")]
    BadSection {
        section: &'static str,
        reason: String,
    },
    #[error("bad hyperparameters: {0}")]
    BadHyperParams(String),
    #[error("unknown {what} id {id}")]
    UnknownId { what: &'static str, id: u32 },
    #[error("tensor name is not valid NUL-padded UTF-8")]
    BadTensorName,
    #[error("tensor {name}: unknown dtype id {id}")]
    UnknownDType { name: String, id: u32 },
    #[error("tensor {name}: {reason}")]
    BadTensor { name: String, reason: String },
    #[error("tensor {name} is out of bounds: bytes {offset}..{end} but the data section is {data_start}..{data_end}")]
    TensorOutOfBounds {
        name: String,
        offset: u64,
        end: u64,
        data_start: u64,
        data_end: u64,
    },
    #[error("tensors {a} and {b} overlap")]
    TensorOverlap { a: String, b: String },
    #[error("tensor {name} at offset {offset} is not aligned to {align} bytes")]
    Misaligned {
        name: String,
        offset: u64,
        align: u64,
    },
    #[error("tensor {name} has shape {actual:?} but the hyperparameters require {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<u64>,
        actual: Vec<u64>,
    },
    #[error("tensor {0} is required by the hyperparameters but missing")]
    MissingTensor(String),
    #[error("tensor {0} is not expected by the hyperparameters")]
    UnexpectedTensor(String),
    #[error("duplicate tensor {0}")]
    DuplicateTensor(String),
    #[error("tensor {name}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    TensorChecksum {
        name: String,
        stored: u32,
        computed: u32,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("token id {id} is out of range (vocabulary size {vocab})")]
    TokenOutOfRange { id: u32, vocab: u32 },
    #[error("context full: {needed} tokens requested but the context holds {capacity}")]
    ContextFull { needed: usize, capacity: usize },
    /// A LoRA adapter directory that cannot be read or applied (the message
    /// names the directory and the problem).
    #[error("{0}")]
    Adapter(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A buffer whose size the caller or a file decides could not be
    /// allocated: the allocator refused it, or the size does not fit the
    /// address space. `what` names the buffer and the setting that sized it,
    /// `hint` (may be empty) what to change.
    #[error("{}", out_of_memory_message(what, *bytes, hint))]
    OutOfMemory {
        what: String,
        bytes: u64,
        hint: String,
    },
    #[error("this build supports little-endian hosts only")]
    BigEndianHost,
}

impl Error {
    /// [`Error::OutOfMemory`] for `bytes` (saturated to `u64::MAX` when the size
    /// itself overflows) of `what`, with an optional `hint`.
    pub fn out_of_memory(what: impl Into<String>, bytes: u64, hint: impl Into<String>) -> Self {
        Self::OutOfMemory {
            what: what.into(),
            bytes,
            hint: hint.into(),
        }
    }
}

/// `cannot allocate 19.5 GiB for the KV cache (context 16777216): lower the context`.
fn out_of_memory_message(what: &str, bytes: u64, hint: &str) -> String {
    let size = if bytes == u64::MAX {
        "more than the address space".to_string()
    } else {
        human_bytes(bytes)
    };
    let mut m = format!("cannot allocate {size} for {what}");
    if !hint.is_empty() {
        m.push_str(": ");
        m.push_str(hint);
    }
    m
}

/// `512 B`, `1.5 MiB`, `19.5 GiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_names_the_size_the_buffer_and_the_fix() {
        let e = Error::out_of_memory(
            "the KV cache (context 16777216)",
            19_500 << 20,
            "lower the context",
        );
        assert_eq!(
            e.to_string(),
            "cannot allocate 19.0 GiB for the KV cache (context 16777216): lower the context"
        );
        let e = Error::out_of_memory("a session (context 7)", u64::MAX, "");
        assert_eq!(
            e.to_string(),
            "cannot allocate more than the address space for a session (context 7)"
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 19), "1.5 MiB");
    }
}
