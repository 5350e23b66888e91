//! AVX-512 F/BW/VL + VNNI tier.

mod matvec;

use super::{avx2, Avx512Token};
use crate::arch::{Kernels, Tier};

/// The AVX-512 table: the plain-layout matrix-vector products (checked on an
/// AVX-512 CPU), the AVX2 kernels for every other slot. AVX-512 versions of the
/// row-interleaved products and of the non-matvec ops were written (commit
/// 93e04f3) but never run: the development host had no AVX-512 and qemu does not
/// emulate it, so they are not registered until a conformance run on such a CPU.
/// The f16 products are AVX2's: the batched `matmul_f16_f32` must match this
/// tier's `matvec_f16_f32` bit for bit, and the f16 matrix-vector product is
/// bound by memory bandwidth, not by vector width.
pub(super) fn table(t: Avx512Token) -> Kernels {
    Kernels {
        tier: Tier::Avx512,
        matvec_f32_f32: matvec::matvec_f32_f32,
        matvec_q8_0_q8_0: matvec::matvec_q8_0_q8_0,
        matvec_q4_0_q8_0: matvec::matvec_q4_0_q8_0,
        ..avx2::table(t.avx2())
    }
}
