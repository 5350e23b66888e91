//! The converter's error type. Every malformed input maps to a variant naming
//! the file and the problem; nothing in the converter panics on bad input.

use std::path::PathBuf;

pub type Result<T, E = ConvertError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot tell what kind of checkpoint {0} is (expected a llama2.c .bin, a .gguf file, or a Hugging Face directory with config.json)")]
    UnknownInput(PathBuf),
    #[error("malformed GGUF: {0}")]
    Gguf(String),
    #[error("malformed llama2.c checkpoint: {0}")]
    Llama2c(String),
    #[error("malformed safetensors: {0}")]
    Safetensors(String),
    #[error("bad config.json: {0}")]
    Config(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("tensor {name}: {reason}")]
    Tensor { name: String, reason: String },
    #[error("interrupted: no output written")]
    Interrupted,
    /// The model's chat template fails `ember_runtime::chat::check` (it does not
    /// parse, breaks a rendering limit, or cannot render a plain conversation);
    /// `origin` names where it came from.
    #[error("{origin}: the chat template cannot be used: {source}")]
    ChatTemplate {
        origin: String,
        #[source]
        source: ember_runtime::chat::ChatError,
    },
    #[error(transparent)]
    Runtime(#[from] ember_runtime::Error),
}

impl ConvertError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
