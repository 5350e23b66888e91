//! Scalar reference kernels: the specification that every SIMD tier must match.
//! Pure functions over slices; shapes are stated per function and asserted.
//!
//! Matrices are row-major `[rows, cols]` (= `[out, in]` for a linear layer), so a
//! matrix-vector product is one dot product per output row.

mod activation;
mod attention;
mod convert;
mod iq4_nl;
mod matvec;
mod norm;
mod quant;
mod rope;
mod rotate;
mod softmax;

pub use activation::*;
pub use attention::*;
pub use convert::*;
pub use iq4_nl::*;
pub use matvec::*;
pub use norm::*;
pub use quant::*;
pub use rope::*;
pub use rotate::*;
pub use softmax::*;
