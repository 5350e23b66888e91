//! AVX-512 F/BW/VL + VNNI tier.

mod matvec;

use super::Avx512Token;
use crate::arch::{Kernels, Tier};

/// The AVX-512 table: every slot this tier improves, the AVX2 ones for the rest.
pub(super) fn table(_: Avx512Token) -> Kernels {
    Kernels {
        tier: Tier::Avx512,
        matvec_f32_f32: matvec::matvec_f32_f32,
        matvec_f16_f32: matvec::matvec_f16_f32,
        matvec_q8_0_q8_0: matvec::matvec_q8_0_q8_0,
        matvec_q4_0_q8_0: matvec::matvec_q4_0_q8_0,
    }
}
