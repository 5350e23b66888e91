//! Ember converter: reads llama2.c, GGUF and Hugging Face checkpoints into a
//! common in-memory description (`ir`) and writes `.ember` files (`writer`).
//!
//! Readers and the writer meet only at `ModelIr`; adding an input format means
//! adding a reader that produces one.

#![forbid(unsafe_code)]

pub mod calibrate;
pub mod error;
pub mod gguf;
pub mod hf;
pub mod ir;
pub mod llama2c;
pub mod output;
pub mod quantize;
pub mod rope;
pub mod tokenizer_import;
pub mod writer;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

pub use error::{ConvertError, Result};
pub use writer::{mixed_policy, tiled_if_possible, DTypeChoice, WriteSummary};

/// The kind of checkpoint an input path holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// A llama2.c `.bin` checkpoint (needs a tokenizer file).
    Llama2c,
    /// A GGUF file.
    Gguf,
    /// A Hugging Face directory with config.json.
    HuggingFace,
}

impl InputKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama2c => "llama2.c",
            Self::Gguf => "GGUF",
            Self::HuggingFace => "Hugging Face",
        }
    }
}

/// Options for `convert`.
#[derive(Debug, Default)]
pub struct ConvertOptions<'a> {
    pub dtype: DTypeChoice,
    /// Dtype of the token embeddings and output matrix; `None`: the mixed
    /// policy's default (`writer::mixed_policy`).
    pub embed_dtype: Option<ember_runtime::format::DType>,
    /// Tokenizer file for inputs that do not carry one (llama2.c `.bin`).
    pub tokenizer: Option<PathBuf>,
    /// Report progress on stderr (see `writer::WriteOptions::progress`).
    pub progress: bool,
    /// Abort flag (e.g. set by a Ctrl-C handler).
    pub interrupt: Option<&'a AtomicBool>,
    /// Calibrated quantization (smoothing + importance-weighted scales) from
    /// sample text; see `calibrate`.
    pub calibrate: Option<calibrate::CalibrateOptions>,
    /// Which block-quantized matrices to store rotated (`writer::Rotation`).
    pub rotation: writer::Rotation,
}

/// What `convert` did.
#[derive(Clone, Debug)]
pub struct ConvertSummary {
    pub input_kind: InputKind,
    pub write: WriteSummary,
    /// Tokens run and matrices smoothed, with `ConvertOptions::calibrate`.
    pub calibration: Option<(usize, usize)>,
}

/// Detects the kind of checkpoint at `path` from its content.
pub fn detect(path: &Path) -> Result<InputKind> {
    let meta = std::fs::metadata(path).map_err(|e| ConvertError::io(path, e))?;
    if meta.is_dir() {
        if path.join("config.json").is_file() {
            return Ok(InputKind::HuggingFace);
        }
        return Err(ConvertError::UnknownInput(path.to_path_buf()));
    }
    if !meta.is_file() {
        // A FIFO or a device would block or never end.
        return Err(ConvertError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        ));
    }
    let mut head = [0u8; 32];
    let mut f = std::fs::File::open(path).map_err(|e| ConvertError::io(path, e))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ConvertError::io(path, e)),
        }
    }
    let head = &head[..n];
    if head.starts_with(b"GGUF") {
        return Ok(InputKind::Gguf);
    }
    if head.starts_with(&ember_runtime::format::MAGIC) {
        return Err(ConvertError::Unsupported(format!(
            "{} is already an .ember file",
            path.display()
        )));
    }
    if path.file_name().is_some_and(|n| n == "config.json") {
        return Ok(InputKind::HuggingFace);
    }
    if llama2c::sniff(head, meta.len()) {
        return Ok(InputKind::Llama2c);
    }
    Err(ConvertError::UnknownInput(path.to_path_buf()))
}

/// Reads the checkpoint at `input` (kind detected from its content) into a `ModelIr`.
pub fn read_input(input: &Path, opts: &ConvertOptions) -> Result<(InputKind, ir::ModelIr)> {
    let kind = detect(input)?;
    let ir = match kind {
        InputKind::Gguf => gguf::load(input)?,
        InputKind::HuggingFace => {
            let dir = if input.is_dir() {
                input
            } else {
                input.parent().unwrap_or(Path::new("."))
            };
            hf::load(dir)?
        }
        InputKind::Llama2c => {
            let tok = opts.tokenizer.as_deref().ok_or_else(|| {
                ConvertError::Tokenizer(
                    "llama2.c checkpoints carry no tokenizer: pass --tokenizer TOKENIZER.bin"
                        .into(),
                )
            })?;
            llama2c::load(input, tok)?
        }
    };
    Ok((kind, ir))
}

/// Converts `input` to an `.ember` file at `output`, atomically.
/// Refuses an `output` that would replace `input` or the tokenizer file.
pub fn convert(input: &Path, output: &Path, opts: &ConvertOptions) -> Result<ConvertSummary> {
    let target = output::resolve_symlinks(output)?;
    let mut inputs = vec![input];
    inputs.extend(opts.tokenizer.as_deref());
    output::check_not_an_input(&target, &inputs)?;
    let (input_kind, mut ir) = read_input(input, opts)?;
    ir.metadata
        .push(("converter.version".into(), env!("CARGO_PKG_VERSION").into()));
    let calibration = match &opts.calibrate {
        Some(c) => Some(calibrate::calibrate(&mut ir, c, opts.progress)?),
        None => None,
    };
    let write = writer::write_model(
        &ir,
        output,
        &writer::WriteOptions {
            dtype: opts.dtype,
            embed_dtype: opts.embed_dtype,
            progress: opts.progress,
            interrupt: opts.interrupt,
            importance: calibration.as_ref().map(|c| &c.importance),
            rotation: opts.rotation,
        },
    )?;
    Ok(ConvertSummary {
        input_kind,
        write,
        calibration: calibration.map(|c| (c.tokens, c.smoothed)),
    })
}
