//! AVX-512 F/BW/VL + VNNI tier.

mod matmul;
mod matmul_f16;
mod matvec;

use super::{avx2, Avx512Token};
use crate::arch::{Kernels, Tier};

/// The AVX-512 table: the plain-layout matrix-vector products, the f16
/// products (16-lane tiles, so decode and prefill agree bit for bit within
/// this tier), the VNNI batched (prefill) products of the row-interleaved
/// matrices, and the AVX2 kernels for every other slot. The row-interleaved
/// matrix-vector products of decode stay AVX2's: they are bound by memory
/// bandwidth, and the batched kernels match them bit for bit (integer block
/// sums are exact, the f32 steps are the same). AVX-512 versions of the
/// non-matvec ops (commit 93e04f3) are not registered: those ops are a small
/// share of the time.
pub(super) fn table(t: Avx512Token) -> Kernels {
    Kernels {
        tier: Tier::Avx512,
        matvec_f32_f32: matvec::matvec_f32_f32,
        matvec_q8_0_q8_0: matvec::matvec_q8_0_q8_0,
        matvec_q4_0_q8_0: matvec::matvec_q4_0_q8_0,
        matvec_f16_f32: matmul_f16::matvec_f16_f32,
        matmul_f16_f32: matmul_f16::matmul_f16_f32,
        matmul_q8_0x4_q8_0: matmul::matmul_q8_0x4_q8_0,
        matmul_q4_0x4_q8_0: matmul::matmul_q4_0x4_q8_0,
        matmul_iq4_nlx4_q8_0: matmul::matmul_iq4_nlx4_q8_0,
        ..avx2::table(t.avx2())
    }
}
