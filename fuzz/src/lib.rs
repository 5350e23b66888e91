//! Ember's fuzz targets as a library: `harness` holds one function per target
//! (an input is any byte string; the function returns normally or panics on a
//! bug), the seed builders and a deterministic mutator. The libFuzzer binaries
//! in `fuzz_targets/` call these functions; `tests/fuzz_smoke.rs` includes the
//! same module on stable Rust.

#![forbid(unsafe_code)]

pub mod harness;

/// Chat templates render within their memory limit here as in `ember` and
/// `libember.a` (`ember_runtime::memory_budget`).
#[global_allocator]
static ALLOCATOR: ember_runtime::memory_budget::BudgetAllocator =
    ember_runtime::memory_budget::BudgetAllocator;
