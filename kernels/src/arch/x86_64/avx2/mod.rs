//! AVX2 + FMA + F16C tier.

mod matvec;

use super::Avx2Token;
use crate::arch::{Kernels, Tier};

/// The AVX2 table: every slot this tier improves, scalar for the rest.
pub(super) fn table(_: Avx2Token) -> Kernels {
    Kernels {
        tier: Tier::Avx2,
        matvec_f32_f32: matvec::matvec_f32_f32,
        matvec_f16_f32: matvec::matvec_f16_f32,
        matvec_q8_0_q8_0: matvec::matvec_q8_0_q8_0,
        matvec_q4_0_q8_0: matvec::matvec_q4_0_q8_0,
    }
}
