//! NEON attention helpers over f32 and f16 rows: dot products (scores), `axpy`
//! (weighted sum of values), f16 widening and the fused attention over an f16
//! or f32 cache. All bit-identical to the scalar kernels: the dot products keep the
//! reference's eight partial sums in two registers (element `i` in lane
//! `i % 8`, multiply then add, no FMA) and its final reduction order; `axpy`
//! rounds the product before adding; f16 values are widened with `fcvtl`
//! (exact). The fused attention equals this tier's composition of them.

use core::arch::aarch64::*;

use half::f16;

use super::matvec::cvt_f16x4;
use crate::scalar::{reduce_dot_lanes, DOT_LANES};

const _: () = assert!(DOT_LANES == 8, "one partial sum per lane of two registers");

/// The element type of the key and value rows the fused attention reads: f16
/// (widened exactly on load) or f32. The f32 form of every step is the same,
/// so both give the same bits on the same (widened) values.
pub(super) trait RowElem: Copy {
    /// Four elements from `p`, as f32.
    ///
    /// # Safety
    /// The CPU has NEON; `p` is valid for four reads.
    unsafe fn load4(p: *const Self) -> float32x4_t;
    /// One element as f32 (exact), for the scalar tails.
    fn to_f32(self) -> f32;
}

impl RowElem for f16 {
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn load4(p: *const Self) -> float32x4_t {
        // SAFETY: f16 is a 2-byte plain value (its bits are a u16); caller's
        // bounds.
        cvt_f16x4(unsafe { vld1_u16(p as *const u16) })
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl RowElem for f32 {
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn load4(p: *const Self) -> float32x4_t {
        // SAFETY: caller's bounds.
        unsafe { vld1q_f32(p) }
    }
    fn to_f32(self) -> f32 {
        self
    }
}

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

/// Positions whose scores one pass computes together (two accumulators each
/// per head, sharing the loads of the keys and queries).
const SCORE_ROWS: usize = 4;
const _: () = assert!(SCORE_ROWS == 4, "the in-register reduction sums 4 rows");
/// Output registers (4 columns each, over all heads of a pass) one pass over
/// the values keeps: 64 columns of one head, 32 of two, 16 of three.
const OUT_REGS: usize = 16;

/// Fused attention over an f16 (`scalar::attend_f16`) or f32
/// (`scalar::attend_f32`) cache: bit-identical to `scalar::attend_with` over
/// this tier's dot product, `softmax::softmax_f32` and `axpy` for that row
/// type. As on x86, the heads of the group are served in passes of up to three
/// (`scalar::attend_passes`), so each key and value row is loaded (and widened)
/// once per pass for all of them; a pass computes the scores of four positions
/// per head together, and keeps the outputs in registers while all values are
/// added in, instead of loading and storing them once per position. Each head's
/// arithmetic is the same, in the same order, however many share a pass. The
/// table takes `attend::<f16>` and `attend::<f32>`.
#[allow(clippy::too_many_arguments)] // the slot's signature (`arch::AttendF16`)
pub(super) fn attend<T: RowElem>(
    heads: usize,
    q: &[f32],
    k: &[T],
    v: &[T],
    stride: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let (hd, n) = crate::scalar::check_attend(heads, q, (k, v, stride), scores, out);
    for (h, g) in crate::scalar::attend_passes(heads) {
        let (q, k) = (&q[h * hd..][..g * hd], (k, v, stride));
        let (scores, out) = (&mut scores[h * n..][..g * n], &mut out[h * hd..][..g * hd]);
        // SAFETY: reachable only through `table(NeonToken)`; shapes checked
        // (a slice of whole heads of a checked call is a checked call).
        unsafe {
            match g {
                1 => attend_pass::<T, 1, OUT_REGS>(q, k, scale, scores, out),
                2 => attend_pass::<T, 2, { OUT_REGS / 2 }>(q, k, scale, scores, out),
                _ => attend_pass::<T, 3, { OUT_REGS / 4 }>(q, k, scale, scores, out),
            }
        }
    }
}

/// One pass of `attend` over `H` heads, `R` output registers per head.
///
/// # Safety
/// The CPU has NEON; the shapes are those `check_attend` accepts for `H`
/// heads.
#[target_feature(enable = "neon")]
unsafe fn attend_pass<T: RowElem, const H: usize, const R: usize>(
    q: &[f32],
    (k, v, stride): (&[T], &[T], usize),
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let n = scores.len() / H;
    // SAFETY: the caller's.
    unsafe { attend_scores::<T, H>(q, k, stride, scale, scores) };
    for s in scores.chunks_exact_mut(n.max(1)) {
        super::softmax::softmax_f32(s);
    }
    // SAFETY: the caller's.
    unsafe { attend_values::<T, H, R>(v, stride, scores, out) };
}

/// `scores[h * n + j] = dot(K_j, q_h) * scale` for every position `j` and
/// head `h < H`, with the lanes, products and reduction of `dot_f16_f32_impl`
/// (and `dot_f32_impl`).
///
/// # Safety
/// The CPU has NEON; shapes as `check_attend` accepts for `H` heads.
#[target_feature(enable = "neon")]
unsafe fn attend_scores<T: RowElem, const H: usize>(
    q: &[f32],
    k: &[T],
    stride: usize,
    scale: f32,
    scores: &mut [f32],
) {
    let (hd, n) = (q.len() / H, scores.len() / H);
    let main = hd / 8 * 8;
    let (qp, kp) = (q.as_ptr(), k.as_ptr());
    let mut j = 0;
    while j + SCORE_ROWS <= n {
        // Head h, row r's partial sums: lanes 0..4 in lo[h][r], 4..8 in hi[h][r].
        let mut lo = [[vdupq_n_f32(0.0); SCORE_ROWS]; H];
        let mut hi = [[vdupq_n_f32(0.0); SCORE_ROWS]; H];
        let mut i = 0;
        while i < main {
            for r in 0..SCORE_ROWS {
                // SAFETY: i + 8 <= main <= hd; row j + r < n starts at
                // (j + r) * stride and has hd elements in `k` (checked); head
                // h's query is q[h * hd..][..hd].
                unsafe {
                    let row = kp.add((j + r) * stride + i);
                    let (k0, k1) = (T::load4(row), T::load4(row.add(4)));
                    for h in 0..H {
                        let qh = qp.add(h * hd + i);
                        let (q0, q1) = (vld1q_f32(qh), vld1q_f32(qh.add(4)));
                        lo[h][r] = vaddq_f32(lo[h][r], vmulq_f32(k0, q0));
                        hi[h][r] = vaddq_f32(hi[h][r], vmulq_f32(k1, q1));
                    }
                }
            }
            i += 8;
        }
        for h in 0..H {
            let (lo, hi) = (&lo[h], &hi[h]);
            let out = &mut scores[h * n + j..][..SCORE_ROWS];
            if main == hd {
                // The reference order `((a0 + a4) + (a1 + a5)) + ((a2 + a6) +
                // (a3 + a7))` for four rows at once: lo + hi, then two rounds
                // of pairwise `faddp` (whose pairs, first operand first, are
                // the reference's).
                let sum = |r: usize| vaddq_f32(lo[r], hi[r]);
                let p01 = vpaddq_f32(sum(0), sum(1));
                let p23 = vpaddq_f32(sum(2), sum(3));
                let s4 = vmulq_f32(vpaddq_f32(p01, p23), vdupq_n_f32(scale));
                // SAFETY: `out` holds 4 f32.
                unsafe { vst1q_f32(out.as_mut_ptr(), s4) };
            } else {
                let qh = &q[h * hd..][..hd];
                for (r, o) in out.iter_mut().enumerate() {
                    let row = &k[(j + r) * stride..][..hd];
                    *o = finish(lo[r], hi[r], main, hd, |c| row[c].to_f32() * qh[c]) * scale;
                }
            }
        }
        j += SCORE_ROWS;
    }
    for h in 0..H {
        let (qh, qhp) = (&q[h * hd..][..hd], qp.wrapping_add(h * hd));
        for jj in j..n {
            let row = &k[jj * stride..][..hd];
            let (mut lo, mut hi) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
            let mut i = 0;
            while i < main {
                // SAFETY: same CPU features; i + 8 <= main <= hd for the row
                // and head h's query.
                unsafe {
                    let (k0, k1) = (
                        T::load4(row.as_ptr().add(i)),
                        T::load4(row.as_ptr().add(i + 4)),
                    );
                    lo = vaddq_f32(lo, vmulq_f32(k0, vld1q_f32(qhp.add(i))));
                    hi = vaddq_f32(hi, vmulq_f32(k1, vld1q_f32(qhp.add(i + 4))));
                }
                i += 8;
            }
            scores[h * n + jj] = finish(lo, hi, main, hd, |c| row[c].to_f32() * qh[c]) * scale;
        }
    }
}

/// `out_h = sum_j p_h[j] * V_j` for each head `h < H` (`p_h` is `p[h * n..]`,
/// `out_h` is `out[h * hd..]`), accumulated from zero in `j` order (each step
/// `out + v * p`, rounded and with operands in the order `axpy_f16_f32_impl`
/// and `axpy_f32_impl` use: their 4-column groups, then their scalar tail).
///
/// # Safety
/// The CPU has NEON; shapes as `check_attend` accepts for `H` heads.
#[target_feature(enable = "neon")]
unsafe fn attend_values<T: RowElem, const H: usize, const R: usize>(
    v: &[T],
    stride: usize,
    p: &[f32],
    out: &mut [f32],
) {
    let (hd, n) = (out.len() / H, p.len() / H);
    let main = hd / 4 * 4;
    let mut c = 0;
    while c + 4 * R <= main {
        // SAFETY: c + 4 * R <= main; same features.
        unsafe { attend_values_cols::<T, H, R>(v, stride, p, c, out) };
        c += 4 * R;
    }
    while c < main {
        // SAFETY: c + 4 <= main; same features.
        unsafe { attend_values_cols::<T, H, 1>(v, stride, p, c, out) };
        c += 4;
    }
    for h in 0..H {
        let ph = &p[h * n..][..n];
        for col in main..hd {
            let o = &mut out[h * hd + col];
            *o = 0.0;
            for (j, &pj) in ph.iter().enumerate() {
                *o += pj * v[j * stride + col].to_f32();
            }
        }
    }
}

/// Columns `c..c + 4 * R` of every head of `attend_values`, held in `H * R`
/// registers.
///
/// # Safety
/// The CPU has NEON; `c + 4 * R <= head_dim`; shapes as `check_attend`
/// accepts for `H` heads.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn attend_values_cols<T: RowElem, const H: usize, const R: usize>(
    v: &[T],
    stride: usize,
    p: &[f32],
    c: usize,
    out: &mut [f32],
) {
    let (hd, n) = (out.len() / H, p.len() / H);
    let vp = v.as_ptr();
    let mut acc = [[vdupq_n_f32(0.0); R]; H];
    for j in 0..n {
        let row = j * stride + c;
        let pj: [f32; H] = core::array::from_fn(|h| p[h * n + j]);
        for g in 0..R {
            // SAFETY: c + 4 * g + 4 <= head_dim; row j < n has head_dim
            // elements from j * stride.
            let x = unsafe { T::load4(vp.add(row + 4 * g)) };
            for (a, &ph) in acc.iter_mut().zip(&pj) {
                a[g] = vaddq_f32(a[g], vmulq_n_f32(x, ph));
            }
        }
    }
    for (h, a) in acc.iter().enumerate() {
        for (g, ag) in a.iter().enumerate() {
            // SAFETY: h * hd + c + 4 * g + 4 <= H * hd = out.len().
            unsafe { vst1q_f32(out.as_mut_ptr().add(h * hd + c + 4 * g), *ag) };
        }
    }
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
