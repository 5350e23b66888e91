//! NEON (Advanced SIMD) tier: the AArch64 baseline.

mod activation;
mod add;
mod attention;
pub(super) mod iq4_nl;
mod math;
mod matmul_f16;
pub(super) mod matvec;
mod norm;
mod rope;
mod softmax;

use super::NeonToken;
use crate::arch::{Kernels, Tier};

/// The NEON table: every slot this tier improves.
pub(super) fn table(_: NeonToken) -> Kernels {
    Kernels {
        tier: Tier::Neon,
        matvec_f32_f32: matvec::matvec_f32_f32,
        matvec_f16_f32: matmul_f16::matvec_f16_f32,
        matmul_f16_f32: matmul_f16::matmul_f16_f32,
        matvec_q8_0_q8_0: matvec::matvec_q8_0_q8_0,
        matvec_q4_0_q8_0: matvec::matvec_q4_0_q8_0,
        matvec_q8_0x4_q8_0: matvec::matvec_q8_0x4_q8_0,
        matvec_q4_0x4_q8_0: matvec::matvec_q4_0x4_q8_0,
        matmul_q8_0x4_q8_0: matvec::matmul_q8_0x4_q8_0,
        matmul_q4_0x4_q8_0: matvec::matmul_q4_0x4_q8_0,
        matvec_iq4_nl_q8_0: iq4_nl::matvec_iq4_nl_q8_0,
        matvec_iq4_nlx4_q8_0: iq4_nl::matvec_iq4_nlx4_q8_0,
        matmul_iq4_nlx4_q8_0: iq4_nl::matmul_iq4_nlx4_q8_0,
        quantize_row_q8_0: crate::scalar::quantize_row_q8_0,
        rmsnorm_f32: norm::rmsnorm_f32,
        softmax_f32: softmax::softmax_f32,
        silu_gate_f32: activation::silu_gate_f32,
        gelu_gate_f32: activation::gelu_gate_f32,
        rope_f32: rope::rope_f32,
        dot_f32: attention::dot_f32,
        dot_f16_f32: attention::dot_f16_f32,
        axpy_f32: attention::axpy_f32,
        axpy_f16_f32: attention::axpy_f16_f32,
        attend_f16: attention::attend::<half::f16>,
        attend_f32: attention::attend::<f32>,
        f16_to_f32: attention::f16_to_f32,
        add_f32: add::add_f32,
    }
}
