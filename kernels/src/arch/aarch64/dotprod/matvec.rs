//! Dot-product (`sdot`) matrix-vector products for the int8 block types. The
//! safe wrappers assert the scalar kernels' shape contracts and are reachable
//! only through `table(DotprodToken)`, so `sdot` runs only on CPUs that have it.
//!
//! `sdot` adds four i8 x i8 products into each i32 lane: exact for every i8
//! input, so this tier has no value-domain restriction beyond the scalar one.
//! It is emitted with `asm!` because `vdotq_s32` is unstable.

use core::arch::aarch64::*;
use core::arch::asm;

use crate::arch::aarch64::neon::matvec::{load_q8_0, matmul_tiles, matvec_blocks, unpack_q4_0};
use crate::blocks::{BlockQ4_0, BlockQ8_0};

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

/// Four i32 lanes whose sum is the exact dot product of one block pair's quants.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn block_dot_i8(w: [int8x16_t; 2], a: [int8x16_t; 2]) -> int32x4_t {
    sdot(sdot(vdupq_n_s32(0), w[0], a[0]), w[1], a[1])
}

pub(super) fn matvec_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(
        w.len(),
        out.len() * a.len(),
        "matvec_q8_0_q8_0: shape mismatch"
    );
    // SAFETY: reachable only through `table(DotprodToken)`; shape checked above.
    unsafe { matvec_q8_0_q8_0_impl(w, a, out) }
}

/// # Safety
/// The CPU has NEON and dotprod; `w.len() == out.len() * a.len()`.
#[target_feature(enable = "neon,dotprod")]
unsafe fn matvec_q8_0_q8_0_impl(w: &[BlockQ8_0], a: &[BlockQ8_0], out: &mut [f32]) {
    matvec_blocks(w, a, out, |bw, av| block_dot_i8(load_q8_0(bw), av))
}

pub(super) fn matvec_q4_0_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(
        w.len(),
        out.len() * a.len(),
        "matvec_q4_0_q8_0: shape mismatch"
    );
    // SAFETY: reachable only through `table(DotprodToken)`; shape checked above.
    unsafe { matvec_q4_0_q8_0_impl(w, a, out) }
}

/// # Safety
/// The CPU has NEON and dotprod; `w.len() == out.len() * a.len()`.
#[target_feature(enable = "neon,dotprod")]
unsafe fn matvec_q4_0_q8_0_impl(w: &[BlockQ4_0], a: &[BlockQ8_0], out: &mut [f32]) {
    matvec_blocks(w, a, out, |bw, av| block_dot_i8(unpack_q4_0(bw), av))
}

pub(super) fn matvec_q8_0x4_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0], out: &mut [f32]) {
    crate::scalar::check_tiled_shape(w.len(), a.len(), out.len(), "matvec_q8_0x4_q8_0");
    // SAFETY: reachable only through `table(DotprodToken)`; shape checked above.
    unsafe { matmul_q8_0x4_impl(w, a, 1, out) }
}

pub(super) fn matmul_q8_0x4_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    crate::scalar::check_matmul_shape(w.len(), a.len(), n, out.len(), "matmul_q8_0x4_q8_0");
    // SAFETY: reachable only through `table(DotprodToken)`; shape checked above.
    unsafe { matmul_q8_0x4_impl(w, a, n, out) }
}

/// # Safety
/// The CPU has NEON and dotprod; the matrix-matrix shape contract holds.
#[target_feature(enable = "neon,dotprod")]
unsafe fn matmul_q8_0x4_impl(w: &[BlockQ8_0], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    matmul_tiles(w, a, n, out, |bw, av| block_dot_i8(load_q8_0(bw), av))
}

pub(super) fn matvec_q4_0x4_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0], out: &mut [f32]) {
    crate::scalar::check_tiled_shape(w.len(), a.len(), out.len(), "matvec_q4_0x4_q8_0");
    // SAFETY: reachable only through `table(DotprodToken)`; shape checked above.
    unsafe { matmul_q4_0x4_impl(w, a, 1, out) }
}

pub(super) fn matmul_q4_0x4_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    crate::scalar::check_matmul_shape(w.len(), a.len(), n, out.len(), "matmul_q4_0x4_q8_0");
    // SAFETY: reachable only through `table(DotprodToken)`; shape checked above.
    unsafe { matmul_q4_0x4_impl(w, a, n, out) }
}

/// # Safety
/// The CPU has NEON and dotprod; the matrix-matrix shape contract holds.
#[target_feature(enable = "neon,dotprod")]
unsafe fn matmul_q4_0x4_impl(w: &[BlockQ4_0], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    matmul_tiles(w, a, n, out, |bw, av| block_dot_i8(unpack_q4_0(bw), av))
}
