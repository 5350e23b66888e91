//! Dot-product tier (`sdot`, ARMv8.2-A DotProd: Cortex-A76 and later).

mod iq4_nl;
mod matvec;

use super::{neon, DotprodToken};
use crate::arch::{Kernels, Tier};

/// The dotprod table: the int8 slots use `sdot`, the rest are the NEON ones.
pub(super) fn table(t: DotprodToken) -> Kernels {
    Kernels {
        tier: Tier::Dotprod,
        matvec_q8_0_q8_0: matvec::matvec_q8_0_q8_0,
        matvec_q4_0_q8_0: matvec::matvec_q4_0_q8_0,
        matvec_q8_0x4_q8_0: matvec::matvec_q8_0x4_q8_0,
        matvec_q4_0x4_q8_0: matvec::matvec_q4_0x4_q8_0,
        matmul_q8_0x4_q8_0: matvec::matmul_q8_0x4_q8_0,
        matmul_q4_0x4_q8_0: matvec::matmul_q4_0x4_q8_0,
        matvec_iq4_nl_q8_0: iq4_nl::matvec_iq4_nl_q8_0,
        matvec_iq4_nlx4_q8_0: iq4_nl::matvec_iq4_nlx4_q8_0,
        matmul_iq4_nlx4_q8_0: iq4_nl::matmul_iq4_nlx4_q8_0,
        ..neon::table(t.neon())
    }
}
