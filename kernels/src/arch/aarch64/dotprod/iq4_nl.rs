//! Dot-product (`sdot`) products of IQ4_NL weights with Q8_0 activations: the
//! NEON tier's loops and table lookup (`neon::iq4_nl`) with `sdot` block
//! products (exact for every i8 input). Reachable only through
//! `table(DotprodToken)`.

use core::arch::aarch64::*;
use core::arch::asm;

use crate::arch::aarch64::neon::iq4_nl::{matmul_tiles, matvec_rows};
use crate::blocks::{BlockIq4Nl, BlockQ8_0};

/// `acc + sdot(a, b)`: lane `i` gains `sum_{j<4} a[4i+j] * b[4i+j]`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: `sdot` only reads and writes the named vector registers (no
    // memory, no flags); the dotprod feature is enabled for this function and
    // proven present by the `DotprodToken` that guards every caller.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Four i32 lanes summing to the exact dot product of one block pair.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn block_dot(w: [int8x16_t; 2], a: [int8x16_t; 2]) -> int32x4_t {
    sdot(sdot(vdupq_n_s32(0), w[0], a[0]), w[1], a[1])
}

pub(super) fn matvec_iq4_nl_q8_0(w: &[BlockIq4Nl], a: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(
        w.len(),
        out.len() * a.len(),
        "matvec_iq4_nl_q8_0: shape mismatch"
    );
    // SAFETY: reachable only through `table(DotprodToken)`; shape checked above.
    unsafe { matvec_impl(w, a, out) }
}

/// # Safety
/// The CPU has NEON and dotprod; `w.len() == out.len() * a.len()`.
#[target_feature(enable = "neon,dotprod")]
unsafe fn matvec_impl(w: &[BlockIq4Nl], a: &[BlockQ8_0], out: &mut [f32]) {
    matvec_rows(w, a, out, |wv, av| block_dot(wv, av))
}

pub(super) fn matvec_iq4_nlx4_q8_0(w: &[BlockIq4Nl], a: &[BlockQ8_0], out: &mut [f32]) {
    crate::scalar::check_tiled_shape(w.len(), a.len(), out.len(), "matvec_iq4_nlx4_q8_0");
    // SAFETY: reachable only through `table(DotprodToken)`; shape checked above.
    unsafe { matmul_impl(w, a, 1, out) }
}

pub(super) fn matmul_iq4_nlx4_q8_0(w: &[BlockIq4Nl], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    crate::scalar::check_matmul_shape(w.len(), a.len(), n, out.len(), "matmul_iq4_nlx4_q8_0");
    // SAFETY: reachable only through `table(DotprodToken)`; shape checked above.
    unsafe { matmul_impl(w, a, n, out) }
}

/// # Safety
/// The CPU has NEON and dotprod; the matrix-matrix shape contract holds.
#[target_feature(enable = "neon,dotprod")]
unsafe fn matmul_impl(w: &[BlockIq4Nl], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    matmul_tiles(w, a, n, out, |wv, av| block_dot(wv, av))
}
