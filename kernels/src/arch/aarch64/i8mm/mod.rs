//! Int8 matrix-multiply tier (`smmla`, ARMv8.6-A I8MM: Neoverse V1/N2,
//! Cortex-A710/X2 and later, Apple M2; no Raspberry Pi so far). `smmla`
//! multiplies a 2x8 by an 8x2 int8 matrix into a 2x2 i32 tile, so one
//! instruction serves two weight rows and two tokens: the prefill products
//! (`matmul_*x4_q8_0`) do half the multiply instructions of `sdot`.
//!
//! The row-interleaved matrix-vector products use the same kernel with the
//! token paired with itself, so each token's matmul results are bit-identical
//! to the matvec (by construction, not by test luck); both are also
//! bit-identical to the scalar kernels (same per-block terms, same f32 order).

mod matmul;

use super::{dotprod, I8mmToken};
use crate::arch::{Kernels, Tier};

/// The i8mm table: the row-interleaved int8 slots use `smmla`, the rest are
/// the dotprod ones.
pub(super) fn table(t: I8mmToken) -> Kernels {
    Kernels {
        tier: Tier::I8mm,
        matvec_q8_0x4_q8_0: matmul::matvec_q8_0x4_q8_0,
        matvec_q4_0x4_q8_0: matmul::matvec_q4_0x4_q8_0,
        matmul_q8_0x4_q8_0: matmul::matmul_q8_0x4_q8_0,
        matmul_q4_0x4_q8_0: matmul::matmul_q4_0x4_q8_0,
        ..dotprod::table(t.dotprod())
    }
}
