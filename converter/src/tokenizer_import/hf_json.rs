//! Tokenizer from Hugging Face `tokenizer.json` (+ `tokenizer_config.json`).

use std::path::Path;

use ember_runtime::tokenizer::TokenizerSpec;

use crate::error::Result;

/// Builds the tokenizer described by `tokenizer.json`, taking BOS/EOS choices from
/// `tokenizer_config.json` when given.
pub fn from_hf_files(_tokenizer_json: &Path, _tokenizer_config: Option<&Path>) -> Result<TokenizerSpec> {
    todo!("tokenizer helper")
}
