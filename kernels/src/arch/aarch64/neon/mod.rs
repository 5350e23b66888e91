//! NEON (Advanced SIMD) tier: the AArch64 baseline.

pub(super) mod matvec;

use super::NeonToken;
use crate::arch::{Kernels, Tier};

/// The NEON table: every slot this tier improves.
pub(super) fn table(_: NeonToken) -> Kernels {
    Kernels {
        tier: Tier::Neon,
        matvec_f32_f32: matvec::matvec_f32_f32,
        matvec_f16_f32: matvec::matvec_f16_f32,
        matvec_q8_0_q8_0: matvec::matvec_q8_0_q8_0,
        matvec_q4_0_q8_0: matvec::matvec_q4_0_q8_0,
    }
}
