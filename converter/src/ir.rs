//! The converter's in-memory model description, shared by every reader and the
//! writer: hyperparameters, canonical tensors with lazy sources, tokenizer,
//! chat template and metadata.

use ember_runtime::format::{DType, HyperParams, Metadata};
use ember_runtime::tokenizer::TokenizerSpec;

use crate::error::Result;

/// A tensor's data in the input checkpoint, decoded on demand so that a
/// converter never holds more than one tensor in f32 at a time.
pub trait TensorSource: Send + Sync {
    /// The source storage type for summaries, e.g. `"q4_1"`, `"bf16"`.
    fn source_dtype(&self) -> String;
    /// The `.ember` dtype that stores the source values exactly, if any
    /// (f32, f16 and bf16 sources); `None` for quantized sources.
    fn native_dtype(&self) -> Option<DType>;
    /// Decodes to f32, row-major, exactly `shape.iter().product()` elements.
    fn to_f32(&self) -> Result<Vec<f32>>;
    /// The tensor's bytes exactly as `dtype` stores them on disk, if the source
    /// already holds that encoding (GGUF Q8_0 / Q4_0 blocks). The writer then
    /// copies them bit for bit instead of dequantizing and requantizing.
    fn raw_as(&self, _dtype: DType) -> Option<Result<Vec<u8>>> {
        None
    }
    /// Whether `raw_as(dtype)` has bytes to copy, without reading them
    /// (override together with `raw_as` where reading is costly).
    fn has_raw(&self, dtype: DType) -> bool {
        self.raw_as(dtype).is_some()
    }
    /// Whether the bytes `raw_as` returns are stored rotated
    /// (`ember_runtime::format::tensor_flags::ROTATED`); the writer flags the
    /// copy the same way and rotates the matrices that share its input alike.
    fn raw_rotated(&self) -> bool {
        false
    }
}

/// One tensor under its canonical `.ember` name (see `ember_runtime::format::names`).
pub struct IrTensor {
    pub name: String,
    /// Outermost first; matrices are `[out, in]`.
    pub shape: Vec<u64>,
    pub source: Box<dyn TensorSource>,
}

/// A whole model, ready to be written.
pub struct ModelIr {
    pub hparams: HyperParams,
    /// In any order; the writer emits them in canonical order.
    pub tensors: Vec<IrTensor>,
    pub tokenizer: TokenizerSpec,
    pub chat_template: Option<String>,
    pub metadata: Metadata,
}

/// A source holding f32 values already in memory (tests, llama2.c).
pub struct F32Source(pub Vec<f32>);

impl TensorSource for F32Source {
    fn source_dtype(&self) -> String {
        "f32".into()
    }
    fn native_dtype(&self) -> Option<DType> {
        Some(DType::F32)
    }
    fn to_f32(&self) -> Result<Vec<f32>> {
        Ok(self.0.clone())
    }
}
