//! NEON attention helpers over f32 and f16 rows: dot products (scores), `axpy`
//! (weighted sum of values) and f16 widening. All bit-identical to the scalar
//! kernels: the dot products keep the reference's eight partial sums in two
//! registers (element `i` in lane `i % 8`, multiply then add, no FMA) and its
//! final reduction order; `axpy` rounds the product before adding; f16 values
//! are widened with `fcvtl` (exact).

use core::arch::aarch64::*;

use half::f16;

use super::matvec::cvt_f16x4;
use crate::scalar::{reduce_dot_lanes, DOT_LANES};

const _: () = assert!(DOT_LANES == 8, "one partial sum per lane of two registers");

/// Finishes a dot product: the register partial sums, the tail elements
/// `main..n` added to their lanes as in the reference, the reference reduction.
#[inline]
#[target_feature(enable = "neon")]
fn finish(
    lo: float32x4_t,
    hi: float32x4_t,
    main: usize,
    n: usize,
    term: impl Fn(usize) -> f32,
) -> f32 {
    let mut lanes = [0.0f32; DOT_LANES];
    // SAFETY: `lanes` holds 8 f32.
    unsafe {
        vst1q_f32(lanes.as_mut_ptr(), lo);
        vst1q_f32(lanes.as_mut_ptr().add(4), hi);
    }
    for j in main..n {
        lanes[j % DOT_LANES] += term(j);
    }
    reduce_dot_lanes(lanes)
}

pub(super) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: length mismatch");
    // SAFETY: reachable only through `table(NeonToken)`; lengths checked.
    unsafe { dot_f32_impl(a, b) }
}

/// # Safety
/// The CPU has NEON; `a.len() == b.len()`.
#[target_feature(enable = "neon")]
unsafe fn dot_f32_impl(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let main = n / 8 * 8;
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let (mut lo, mut hi) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= main <= n for both rows.
        unsafe {
            lo = vaddq_f32(lo, vmulq_f32(vld1q_f32(ap.add(i)), vld1q_f32(bp.add(i))));
            hi = vaddq_f32(
                hi,
                vmulq_f32(vld1q_f32(ap.add(i + 4)), vld1q_f32(bp.add(i + 4))),
            );
        }
        i += 8;
    }
    finish(lo, hi, main, n, |j| a[j] * b[j])
}

pub(super) fn dot_f16_f32(w: &[f16], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len(), "dot_f16_f32: length mismatch");
    // SAFETY: reachable only through `table(NeonToken)`; lengths checked.
    unsafe { dot_f16_f32_impl(w, x) }
}

/// # Safety
/// The CPU has NEON; `w.len() == x.len()`.
#[target_feature(enable = "neon")]
unsafe fn dot_f16_f32_impl(w: &[f16], x: &[f32]) -> f32 {
    let n = w.len();
    let main = n / 8 * 8;
    // f16 is a 2-byte plain value: its bits are a u16.
    let (wp, xp) = (w.as_ptr() as *const u16, x.as_ptr());
    let (mut lo, mut hi) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= main <= n for both rows (element alignment only).
        unsafe {
            let wv = vld1q_u16(wp.add(i));
            let (w0, w1) = (cvt_f16x4(vget_low_u16(wv)), cvt_f16x4(vget_high_u16(wv)));
            lo = vaddq_f32(lo, vmulq_f32(w0, vld1q_f32(xp.add(i))));
            hi = vaddq_f32(hi, vmulq_f32(w1, vld1q_f32(xp.add(i + 4))));
        }
        i += 8;
    }
    finish(lo, hi, main, n, |j| w[j].to_f32() * x[j])
}

pub(super) fn axpy_f32(acc: &mut [f32], scale: f32, x: &[f32]) {
    assert_eq!(acc.len(), x.len(), "axpy_f32: length mismatch");
    // SAFETY: reachable only through `table(NeonToken)`; lengths checked.
    unsafe { axpy_f32_impl(acc, scale, x) }
}

/// # Safety
/// The CPU has NEON; `acc.len() == x.len()`.
#[target_feature(enable = "neon")]
unsafe fn axpy_f32_impl(acc: &mut [f32], scale: f32, x: &[f32]) {
    let n = acc.len();
    let main = n / 4 * 4;
    let (ap, xp) = (acc.as_mut_ptr(), x.as_ptr());
    let mut i = 0;
    while i < main {
        // SAFETY: i + 4 <= main <= n for both rows.
        unsafe {
            let r = vaddq_f32(
                vld1q_f32(ap.add(i)),
                vmulq_n_f32(vld1q_f32(xp.add(i)), scale),
            );
            vst1q_f32(ap.add(i), r);
        }
        i += 4;
    }
    for j in main..n {
        acc[j] += scale * x[j];
    }
}

pub(super) fn axpy_f16_f32(acc: &mut [f32], scale: f32, x: &[f16]) {
    assert_eq!(acc.len(), x.len(), "axpy_f16_f32: length mismatch");
    // SAFETY: reachable only through `table(NeonToken)`; lengths checked.
    unsafe { axpy_f16_f32_impl(acc, scale, x) }
}

/// # Safety
/// The CPU has NEON; `acc.len() == x.len()`.
#[target_feature(enable = "neon")]
unsafe fn axpy_f16_f32_impl(acc: &mut [f32], scale: f32, x: &[f16]) {
    let n = acc.len();
    let main = n / 4 * 4;
    let (ap, xp) = (acc.as_mut_ptr(), x.as_ptr() as *const u16);
    let mut i = 0;
    while i < main {
        // SAFETY: i + 4 <= main <= n for both rows (element alignment only).
        unsafe {
            let xv = cvt_f16x4(vld1_u16(xp.add(i)));
            vst1q_f32(
                ap.add(i),
                vaddq_f32(vld1q_f32(ap.add(i)), vmulq_n_f32(xv, scale)),
            );
        }
        i += 4;
    }
    for j in main..n {
        acc[j] += scale * x[j].to_f32();
    }
}

/// Attention over an f16 cache: `scalar::attend_f16_with` over this tier's
/// dot product, softmax and `axpy` (not yet a fused kernel).
pub(super) fn attend_f16(
    q: &[f32],
    k: &[f16],
    v: &[f16],
    stride: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    crate::scalar::attend_f16_with(
        dot_f16_f32,
        super::softmax::softmax_f32,
        axpy_f16_f32,
        (q, k, v, stride, scale),
        scores,
        out,
    );
}

pub(super) fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "f16_to_f32: length mismatch");
    // SAFETY: reachable only through `table(NeonToken)`; lengths checked.
    unsafe { f16_to_f32_impl(src, dst) }
}

/// # Safety
/// The CPU has NEON; `src.len() == dst.len()`.
#[target_feature(enable = "neon")]
unsafe fn f16_to_f32_impl(src: &[f16], dst: &mut [f32]) {
    let n = src.len();
    let main = n / 4 * 4;
    let (sp, dp) = (src.as_ptr() as *const u16, dst.as_mut_ptr());
    let mut i = 0;
    while i < main {
        // SAFETY: i + 4 <= main <= n for both slices.
        unsafe { vst1q_f32(dp.add(i), cvt_f16x4(vld1_u16(sp.add(i)))) };
        i += 4;
    }
    for j in main..n {
        dst[j] = src[j].to_f32();
    }
}
