//! AVX-512 F/BW/VL + VNNI tier.

mod activation;
mod add;
mod attention;
mod math;
mod matmul;
mod matmul_f16;
mod matvec;
mod norm;
mod rope;
mod softmax;

use super::{avx2, Avx512Token};
use crate::arch::{Kernels, Tier};

/// The AVX-512 table: the plain-layout matrix-vector products, the f16
/// products (16-lane tiles, so decode and prefill agree bit for bit within
/// this tier), the VNNI batched (prefill) products of the row-interleaved
/// matrices, and 16-lane versions of the other ops (RMSNorm, softmax, gates,
/// RoPE, f16 `axpy`, fused f16 and f32 attention, residual add; each passes
/// the conformance suite on an AVX-512 CPU). The AVX2 kernels remain for the
/// row-interleaved matrix-vector products of decode (bound by memory
/// bandwidth; the batched kernels match them bit for bit: integer block sums
/// are exact, the f32 steps are the same), the activation quantizer, the dot
/// products (the reference's eight partial sums are one 256-bit register, so
/// scores are the same bits on every tier), and the f32 `axpy` and f16
/// widening (slower with 16 masked lanes on 64-element rows:
/// `benches/RESULTS.md`, "AVX-512 versions of the other ops").
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
        rmsnorm_f32: norm::rmsnorm_f32,
        softmax_f32: softmax::softmax_f32,
        silu_gate_f32: activation::silu_gate_f32,
        gelu_gate_f32: activation::gelu_gate_f32,
        rope_f32: rope::rope_f32,
        axpy_f16_f32: attention::axpy_f16_f32,
        attend_f16: attention::attend::<half::f16>,
        attend_f32: attention::attend::<f32>,
        add_f32: add::add_f32,
        ..avx2::table(t.avx2())
    }
}
