//! Ember LoRA fine-tuning.
//!
//! The base model stays frozen in its stored type (f32, f16, bf16, q8_0, q4_0):
//! the training forward and backward passes ([`grad`]) read one weight row at a
//! time through `Weights::row_to_f32`, so no full-precision copy of a matrix is
//! ever made. Only the LoRA matrices (f32, [`params`]) are trained, by AdamW
//! ([`optim`]) on a warmup + cosine/constant schedule ([`schedule`]), from data
//! prepared by [`data`]; [`trainer`] runs the loop and [`checkpoint`] writes and
//! restores resumable checkpoints.

#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod data;
pub mod error;
pub mod float;
pub mod grad;
pub mod merge;
pub mod optim;
pub mod params;
pub mod peft;
pub mod schedule;
pub mod trainer;

pub use error::{Result, TrainError};
