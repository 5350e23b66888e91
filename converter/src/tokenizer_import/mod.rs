//! Builds `TokenizerSpec`s from the tokenizer formats found next to checkpoints.

pub mod gguf;
pub mod hf_json;
pub mod llama2c;
pub mod sentencepiece;
