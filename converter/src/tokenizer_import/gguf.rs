//! Tokenizer from GGUF metadata (`tokenizer.ggml.*`).

use ember_runtime::tokenizer::TokenizerSpec;

use crate::error::Result;
use crate::gguf::GgufMetadata;

/// Builds the tokenizer stored in a GGUF file's metadata.
pub fn from_gguf_metadata(_meta: &GgufMetadata) -> Result<TokenizerSpec> {
    todo!("tokenizer helper")
}
