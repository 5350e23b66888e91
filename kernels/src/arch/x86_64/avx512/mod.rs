//! AVX-512 F/BW/VL + VNNI tier.

mod activation;
mod add;
mod attention;
mod math;
mod matvec;
mod norm;
mod rope;
mod softmax;

use super::{avx2, Avx512Token};
use crate::arch::{Kernels, Tier};

/// The AVX-512 table: every slot this tier improves, the AVX2 ones for the rest
/// (`dot_f32`, `dot_f16_f32`: see `attention.rs`).
pub(super) fn table(t: Avx512Token) -> Kernels {
    Kernels {
        tier: Tier::Avx512,
        matvec_f32_f32: matvec::matvec_f32_f32,
        matvec_f16_f32: matvec::matvec_f16_f32,
        matvec_q8_0_q8_0: matvec::matvec_q8_0_q8_0,
        matvec_q4_0_q8_0: matvec::matvec_q4_0_q8_0,
        rmsnorm_f32: norm::rmsnorm_f32,
        softmax_f32: softmax::softmax_f32,
        silu_gate_f32: activation::silu_gate_f32,
        gelu_gate_f32: activation::gelu_gate_f32,
        rope_f32: rope::rope_f32,
        axpy_f32: attention::axpy_f32,
        axpy_f16_f32: attention::axpy_f16_f32,
        f16_to_f32: attention::f16_to_f32,
        add_f32: add::add_f32,
        ..avx2::table(t.avx2())
    }
}
