//! AVX2 + FMA + F16C tier.

mod activation;
mod add;
pub(super) mod attention;
mod iq4_nl;
mod math;
pub(super) mod matmul;
mod matmul_f16;
mod matvec;
mod matvec_nibble;
mod matvec_q8;
mod norm;
mod quant;
mod rope;
mod softmax;

use super::Avx2Token;
use crate::arch::{Kernels, Tier};

/// The AVX2 table: every slot this tier improves, scalar for the rest.
pub(super) fn table(_: Avx2Token) -> Kernels {
    Kernels {
        tier: Tier::Avx2,
        matvec_f32_f32: matvec::matvec_f32_f32,
        matvec_f16_f32: matmul_f16::matvec_f16_f32,
        matmul_f16_f32: matmul_f16::matmul_f16_f32,
        matvec_q8_0_q8_0: matvec::matvec_q8_0_q8_0,
        matvec_q4_0_q8_0: matvec::matvec_q4_0_q8_0,
        matvec_q8_0x4_q8_0: matvec_q8::matvec_q8_0x4_q8_0,
        matvec_q4_0x4_q8_0: matvec_nibble::matvec_q4_0x4_q8_0,
        matmul_q8_0x4_q8_0: matmul::matmul_q8_0x4_q8_0,
        matmul_q4_0x4_q8_0: matmul::matmul_q4_0x4_q8_0,
        matvec_iq4_nl_q8_0: iq4_nl::matvec_iq4_nl_q8_0,
        matvec_iq4_nlx4_q8_0: matvec_nibble::matvec_iq4_nlx4_q8_0,
        matmul_iq4_nlx4_q8_0: matmul::matmul_iq4_nlx4_q8_0,
        quantize_row_q8_0: quant::quantize_row_q8_0,
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
