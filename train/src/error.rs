//! The crate's error type.

/// Why preparing data, training or checkpointing failed. Messages name the file,
/// line or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Bad training or validation data (the message names the file and line).
    #[error("{0}")]
    Data(String),
    /// An invalid setting or a combination that cannot work.
    #[error("{0}")]
    Config(String),
    /// A checkpoint that cannot be resumed (another base model, another
    /// configuration, damaged files).
    #[error("{0}")]
    Checkpoint(String),
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// An error from the runtime (model, tokenizer, adapter validation).
    #[error(transparent)]
    Runtime(#[from] ember_runtime::Error),
    /// Training diverged (a non-finite loss or gradient).
    #[error("{0}")]
    Diverged(String),
    /// A LoRA adapter directory that cannot be read, written or applied (PEFT
    /// files: the message names the directory and the problem).
    #[error("{0}")]
    Adapter(String),
    /// Writing a merged model (`merge`).
    #[error(transparent)]
    Convert(#[from] ember_converter::ConvertError),
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

impl TrainError {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
