//! Ember runtime: the `.ember` format, the memory-mapped loader with validation,
//! tokenizers, the reference forward pass and generation.
//!
//! Unsafe code is confined to `loader` (the memory map); everything else forbids it.

#![deny(unsafe_code)]

pub mod error;
pub mod format;
pub mod tokenizer;

pub use error::{Error, Result};
