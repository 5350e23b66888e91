//! Ember converter: reads llama2.c, GGUF and Hugging Face checkpoints into a
//! common in-memory description (`ir`) and writes `.ember` files (`writer`).

#![forbid(unsafe_code)]

pub mod error;
pub mod gguf;
pub mod hf;
pub mod ir;
pub mod tokenizer_import;

pub use error::{ConvertError, Result};
