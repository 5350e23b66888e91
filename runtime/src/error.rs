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
    #[error("this build supports little-endian hosts only")]
    BigEndianHost,
}
