//! Ember's compute kernels. `scalar` holds the reference kernels, which are the
//! specification every SIMD tier is checked against; `arch` holds the SIMD tiers
//! and the dispatch table (the only code here that may use `unsafe`).

#![no_std]
#![deny(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

#[allow(unsafe_code)]
pub mod arch;
pub mod blocks;
pub mod scalar;
