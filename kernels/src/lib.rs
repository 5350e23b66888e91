//! Ember's compute kernels. `scalar` holds the reference kernels, which are the
//! specification every SIMD tier is checked against.

#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

pub mod scalar;
