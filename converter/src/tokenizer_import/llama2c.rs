//! Tokenizer from a llama2.c `tokenizer.bin` (e.g. `tok512.bin`).

use std::path::Path;

use ember_runtime::tokenizer::TokenizerSpec;

use crate::error::Result;

/// Reads a llama2.c tokenizer file for a model with `vocab_size` tokens.
pub fn from_llama2c_bin(_path: &Path, _vocab_size: u32) -> Result<TokenizerSpec> {
    todo!("tokenizer helper")
}
