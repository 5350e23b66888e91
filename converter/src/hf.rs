//! Hugging Face checkpoint directories: config.json + safetensors (single or
//! sharded) + tokenizer.json (+ tokenizer_config.json, chat template).

use std::path::Path;

use crate::error::Result;
use crate::ir::ModelIr;

/// Reads a Hugging Face model directory into a `ModelIr`.
pub fn load(_dir: &Path) -> Result<ModelIr> {
    todo!("hf helper")
}
