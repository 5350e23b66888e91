//! Ember runtime: the `.ember` format, the memory-mapped loader with validation,
//! tokenizers, the reference forward pass, sessions and generation.
//!
//! Unsafe code is confined to `storage` (the memory map), `memory_budget` (an
//! allocator wrapping the system one) and `pool` (handing a
//! job on the caller's stack to the worker threads); everything else is safe.

#![deny(unsafe_code)]

#[cfg(feature = "chat")]
pub mod chat;
pub mod config;
pub mod cpus;
pub mod error;
pub mod eval;
pub mod format;
pub mod forward;
pub mod generate;
pub mod kv_cache;
pub mod loader;
pub mod lora;
pub mod memory_budget;
pub mod model;
pub mod pool;
pub mod read_file;
mod rope;
pub mod sampler;
pub mod session;
mod storage;
pub mod tokenizer;

/// Unit tests count as the binaries do (the chat template memory limit).
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: memory_budget::BudgetAllocator = memory_budget::BudgetAllocator;

pub use error::{Error, Result};
pub use kv_cache::KvType;
pub use model::{Model, Weights};
/// RoPE inverse frequencies (with scaling) exactly as the forward pass uses them;
/// public for the training forward pass in `ember-train`.
pub use rope::inverse_frequencies;
pub use sampler::{Sampler, SamplerConfig};
pub use session::{argmax, ContextPolicy, Session, SessionConfig};
