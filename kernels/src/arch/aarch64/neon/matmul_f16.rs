//! NEON products over plain row-major f16 matrices: the matrix-vector product
//! (decode) and the matrix-matrix product (batched prefill), with the
//! structure of the AVX2 kernels (`arch/x86_64/avx2/matmul_f16.rs`).
//!
//! Both run the same register tile (`tile`): every (row, token) pair owns one
//! 8-lane accumulator (two `float32x4_t`: lanes 0..4 and 4..8) that takes the
//! row's 8-element chunks in order (element `i` in lane `i % 8`, the lane
//! assignment of `scalar::dot_f16_f32`; a ragged tail is one zero-padded chunk)
//! and is reduced in the order of `scalar::reduce_dot_lanes`. A (row, token)
//! result therefore does not depend on which rows or tokens share its tile:
//! `matmul_f16_f32` equals `matvec_f16_f32` per token bit for bit, and both
//! differ from the scalar kernel only by the rounding the fused multiply-adds
//! save. Each weight chunk is widened (`fcvtl`) once per tile and used for
//! every token of the tile.

use core::arch::aarch64::*;

use half::f16;

use super::matvec::cvt_f16x4;
use crate::scalar::check_matmul_f16_shape;

/// Lanes per accumulator (and f16 elements per widened chunk).
const LANES: usize = 8;
/// Rows per tile of the matrix-vector product.
const MATVEC_ROWS: usize = 4;
/// Weight bytes per row panel of the matrix-matrix product: a panel is read
/// from memory once (by the first token tile) and stays in cache for the others.
const PANEL_BYTES: usize = 64 << 10;

/// One 8-lane accumulator: lanes 0..4 and 4..8.
type Acc = [float32x4_t; 2];

/// Sum of the 8 lanes in the order of `scalar::reduce_dot_lanes`:
/// `((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7))`.
#[inline]
#[target_feature(enable = "neon")]
fn reduce(v: Acc) -> f32 {
    // s = [a0 + a4, a1 + a5, a2 + a6, a3 + a7]
    let s = vaddq_f32(v[0], v[1]);
    // p = [s0 + s1, s2 + s3, ..]
    let p = vpaddq_f32(s, s);
    vpadds_f32(vget_low_f32(p))
}

/// Eight f16 (as bits) widened to f32 lanes 0..4 and 4..8.
#[inline]
#[target_feature(enable = "neon")]
fn widen(h: uint16x8_t) -> Acc {
    [cvt_f16x4(vget_low_u16(h)), cvt_f16x4(vget_high_u16(h))]
}

/// The `< LANES` f16 of `w`, widened and zero-padded to a full chunk.
#[inline]
#[target_feature(enable = "neon")]
fn widen_tail(w: &[f16]) -> Acc {
    let mut b = [0u16; LANES];
    for (d, s) in b.iter_mut().zip(w) {
        *d = s.to_bits();
    }
    // SAFETY: `b` is 8 u16; no alignment requirement beyond the element's.
    widen(unsafe { vld1q_u16(b.as_ptr()) })
}

/// The `< LANES` f32 of `x`, zero-padded to a full chunk.
#[inline]
#[target_feature(enable = "neon")]
fn load_tail(x: &[f32]) -> Acc {
    let mut b = [0.0f32; LANES];
    b[..x.len()].copy_from_slice(x);
    // SAFETY: `b` is 8 f32.
    unsafe { [vld1q_f32(b.as_ptr()), vld1q_f32(b.as_ptr().add(4))] }
}

/// `acc += w * x` lane-wise (fused).
#[inline]
#[target_feature(enable = "neon")]
fn fma(acc: &mut Acc, w: &Acc, x: &Acc) {
    acc[0] = vfmaq_f32(acc[0], w[0], x[0]);
    acc[1] = vfmaq_f32(acc[1], w[1], x[1]);
}

/// Dot products of `R` consecutive rows (`w`: `R * cols` f16, row-major) with
/// `T` tokens (`x`: `T * cols` f32, token-major): `result[t][j]`.
///
/// # Safety
/// The CPU has NEON; `w` is valid for `R * cols` reads and `x` for `T * cols`
/// reads; `cols >= 1`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn tile<const R: usize, const T: usize>(
    w: *const f16,
    x: *const f32,
    cols: usize,
) -> [[f32; R]; T] {
    let zero = vdupq_n_f32(0.0);
    let mut acc = [[[zero; 2]; R]; T];
    // f16 is a 2-byte plain value: its bits are a u16.
    let wb = w as *const u16;
    let mut i = 0;
    while i + LANES <= cols {
        // SAFETY (both blocks): rows j < R and tokens t < T hold `cols`
        // elements (caller) and i + 8 <= cols; the loads need only element
        // alignment.
        let wv: [Acc; R] =
            core::array::from_fn(|j| widen(unsafe { vld1q_u16(wb.add(j * cols + i)) }));
        for (t, acc) in acc.iter_mut().enumerate() {
            let xp = unsafe { x.add(t * cols + i) };
            let xv = unsafe { [vld1q_f32(xp), vld1q_f32(xp.add(4))] };
            for (a, wv) in acc.iter_mut().zip(&wv) {
                fma(a, wv, &xv);
            }
        }
        i += LANES;
    }
    if i < cols {
        let rem = cols - i;
        // SAFETY: rows j < R and tokens t < T hold `cols` elements (caller).
        let wv: [Acc; R] = core::array::from_fn(|j| {
            widen_tail(unsafe { core::slice::from_raw_parts(w.add(j * cols + i), rem) })
        });
        for (t, acc) in acc.iter_mut().enumerate() {
            // SAFETY: as above.
            let xv = load_tail(unsafe { core::slice::from_raw_parts(x.add(t * cols + i), rem) });
            for (a, wv) in acc.iter_mut().zip(&wv) {
                fma(a, wv, &xv);
            }
        }
    }
    // Plain loops: `map` closures would not inherit the target features, so
    // `reduce` would not be inlined.
    let mut out = [[0.0f32; R]; T];
    for (o, a) in out.iter_mut().zip(&acc) {
        for (o, a) in o.iter_mut().zip(a) {
            *o = reduce(*a);
        }
    }
    out
}

pub(super) fn matvec_f16_f32(w: &[f16], x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    assert_eq!(w.len(), out.len() * cols, "matvec_f16_f32: shape mismatch");
    if cols == 0 {
        out.fill(0.0);
        return;
    }
    // SAFETY: reachable only through `table(NeonToken)`, so NEON exists; the
    // shape was checked above and `cols >= 1`.
    unsafe { matvec_impl(w, x, out) }
}

/// # Safety
/// The CPU has NEON; `w.len() == out.len() * x.len()`, `x.len() >= 1`.
#[target_feature(enable = "neon")]
unsafe fn matvec_impl(w: &[f16], x: &[f32], out: &mut [f32]) {
    let (cols, rows) = (x.len(), out.len());
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut r = 0;
    while r + MATVEC_ROWS <= rows {
        // SAFETY: rows r..r + 4 are in `w` (shape contract).
        let [o] = unsafe { tile::<MATVEC_ROWS, 1>(wp.add(r * cols), xp, cols) };
        out[r..r + MATVEC_ROWS].copy_from_slice(&o);
        r += MATVEC_ROWS;
    }
    while r < rows {
        // SAFETY: row r is in `w`.
        let [[o]] = unsafe { tile::<1, 1>(wp.add(r * cols), xp, cols) };
        out[r] = o;
        r += 1;
    }
}

pub(super) fn matmul_f16_f32(w: &[f16], x: &[f32], n: usize, out: &mut [f32]) {
    let (cols, rows) = check_matmul_f16_shape(w.len(), x.len(), n, out.len(), "matmul_f16_f32");
    if cols == 0 {
        out.fill(0.0);
        return;
    }
    // SAFETY: reachable only through `table(NeonToken)`; shape checked above
    // and `cols >= 1`.
    unsafe { matmul_impl(w, x, n, cols, rows, out) }
}

/// Row panels of `PANEL_BYTES`; within a panel, tiles of up to 4 tokens, and
/// within a token tile, the panel's rows in order.
///
/// # Safety
/// The CPU has NEON; `w: [rows, cols]`, `x: [n, cols]`, `out: [n, rows]`,
/// `cols >= 1`.
#[target_feature(enable = "neon")]
unsafe fn matmul_impl(w: &[f16], x: &[f32], n: usize, cols: usize, rows: usize, out: &mut [f32]) {
    let panel = (PANEL_BYTES / (cols * 2)).div_ceil(4).max(1) * 4;
    let mut p0 = 0;
    while p0 < rows {
        let p1 = (p0 + panel).min(rows);
        let mut t = 0;
        while t < n {
            let nt = (n - t).min(4);
            // SAFETY (all arms): tokens t..t + nt, rows p0..p1 are in bounds.
            unsafe {
                match nt {
                    4 => panel_tile::<2, 4>(w, x, cols, rows, p0, p1, t, out),
                    3 => panel_tile::<2, 3>(w, x, cols, rows, p0, p1, t, out),
                    2 => panel_tile::<4, 2>(w, x, cols, rows, p0, p1, t, out),
                    _ => panel_tile::<4, 1>(w, x, cols, rows, p0, p1, t, out),
                }
            }
            t += nt;
        }
        p0 = p1;
    }
}

/// Rows `p0..p1` times tokens `t0..t0 + T`, `R` rows per tile (the rest one
/// at a time), written to `out: [n, rows]`.
///
/// # Safety
/// As `matmul_impl`; `p0 <= p1 <= rows`, `t0 + T <= n`.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "neon")]
unsafe fn panel_tile<const R: usize, const T: usize>(
    w: &[f16],
    x: &[f32],
    cols: usize,
    rows: usize,
    p0: usize,
    p1: usize,
    t0: usize,
    out: &mut [f32],
) {
    // SAFETY: token t0 starts inside `x` (t0 < n).
    let xp = unsafe { x.as_ptr().add(t0 * cols) };
    let mut r = p0;
    while r + R <= p1 {
        // SAFETY: rows r..r + R < rows and tokens t0..t0 + T <= n are in bounds.
        let o = unsafe { tile::<R, T>(w.as_ptr().add(r * cols), xp, cols) };
        for (t, o) in o.iter().enumerate() {
            out[(t0 + t) * rows + r..][..R].copy_from_slice(o);
        }
        r += R;
    }
    while r < p1 {
        // SAFETY: row r < rows and tokens t0..t0 + T <= n are in bounds.
        let o = unsafe { tile::<1, T>(w.as_ptr().add(r * cols), xp, cols) };
        for (t, [o]) in o.iter().enumerate() {
            out[(t0 + t) * rows + r] = *o;
        }
        r += 1;
    }
}
