//! NEON products of IQ4_NL weights with Q8_0 activations (contracts:
//! `scalar::iq4_nl`). The 4-bit indices become codebook values with one
//! `vqtbl1q_s8` table lookup per 16 elements; the int8 products then use the
//! widening multiply (`vmull_s8` / `vmlal_s8`, pairs widened by `vpadalq_s16`),
//! exact because codebook values are in -127..=113 and activation quants in
//! -127..=127 (an i16 lane holds at most 2 x 127 x 127). The loops are shared
//! with the dotprod tier, which passes its `sdot` block product.

use core::arch::aarch64::*;

use super::matvec::{lanes, scale1, scales4};
use crate::blocks::{BlockIq4Nl, BlockQ8_0, IQ4_NL_VALUES, QK, TILE_ROWS};

const _: () = assert!(QK == 32, "one block per two 128-bit registers");
const _: () = assert!(TILE_ROWS == 4, "a tile's scales are one scales4 vector");

/// The codebook as a 16-entry table register.
#[inline]
#[target_feature(enable = "neon")]
pub(in crate::arch::aarch64) fn codebook() -> int8x16_t {
    // SAFETY: `IQ4_NL_VALUES` is 16 bytes; `vld1q_s8` has no alignment requirement.
    unsafe { vld1q_s8(IQ4_NL_VALUES.as_ptr()) }
}

/// A block's 32 codebook values (elements 0..16 from the low nibbles, 16..32
/// from the high nibbles).
#[inline]
#[target_feature(enable = "neon")]
pub(in crate::arch::aarch64) fn unpack(b: &BlockIq4Nl, table: int8x16_t) -> [int8x16_t; 2] {
    // SAFETY: `qs` is 16 bytes; no alignment requirement.
    let q = unsafe { vld1q_u8(b.qs.as_ptr()) };
    [
        vqtbl1q_s8(table, vandq_u8(q, vdupq_n_u8(0x0F))),
        vqtbl1q_s8(table, vshrq_n_u8::<4>(q)),
    ]
}

/// A Q8_0 block's 32 quants as two registers.
#[inline]
#[target_feature(enable = "neon")]
pub(in crate::arch::aarch64) fn load_q8(b: &BlockQ8_0) -> [int8x16_t; 2] {
    let p = b.qs.as_ptr() as *const i8;
    // SAFETY: `qs` is 32 bytes; `vld1q_s8` has no alignment requirement.
    unsafe { [vld1q_s8(p), vld1q_s8(p.add(16))] }
}

/// Four i32 lanes summing to the exact dot product of one block pair.
#[inline]
#[target_feature(enable = "neon")]
fn block_dot(w: [int8x16_t; 2], a: [int8x16_t; 2]) -> int32x4_t {
    let mut acc = vdupq_n_s32(0);
    for h in 0..2 {
        let p = vmull_s8(vget_low_s8(w[h]), vget_low_s8(a[h]));
        let p = vmlal_s8(p, vget_high_s8(w[h]), vget_high_s8(a[h]));
        acc = vpadalq_s16(acc, p);
    }
    acc
}

/// Rows of IQ4_NL blocks times one activation vector (plain layout), four rows
/// at a time (each activation block loaded once for four rows), the rest with
/// two accumulators alternating blocks. `dot` gives four i32 lanes summing to
/// a block pair's integer dot product. Shapes are checked by the callers;
/// inlined only into NEON kernels.
#[inline(always)]
pub(in crate::arch::aarch64) fn matvec_rows(
    w: &[BlockIq4Nl],
    a: &[BlockQ8_0],
    out: &mut [f32],
    dot: impl Fn([int8x16_t; 2], [int8x16_t; 2]) -> int32x4_t,
) {
    let nb = a.len();
    let rows4 = out.len() / 4 * 4;
    // SAFETY (every unsafe block below): NEON is enabled in every caller (and
    // is the AArch64 baseline); `load_q8` / `unpack` read only their block.
    let table = unsafe { codebook() };
    for r in (0..rows4).step_by(4) {
        let rows: [&[BlockIq4Nl]; 4] = core::array::from_fn(|j| &w[(r + j) * nb..(r + j + 1) * nb]);
        // SAFETY: see above.
        let mut acc = [unsafe { vdupq_n_f32(0.0) }; 4];
        for (k, ba) in a.iter().enumerate() {
            // SAFETY: see above.
            let (av, d) = unsafe {
                let dw = scales4(core::array::from_fn(|j| &rows[j][k]));
                (load_q8(ba), lanes(vmulq_n_f32(dw, scale1(ba))))
            };
            for j in 0..4 {
                // SAFETY: see above.
                acc[j] = unsafe {
                    let p = vcvtq_f32_s32(dot(unpack(&rows[j][k], table), av));
                    vfmaq_n_f32(acc[j], p, d[j])
                };
            }
        }
        for j in 0..4 {
            // SAFETY: see above.
            out[r + j] = unsafe { vaddvq_f32(acc[j]) };
        }
    }
    for (r, o) in out.iter_mut().enumerate().skip(rows4) {
        let row = &w[r * nb..(r + 1) * nb];
        // SAFETY: see above.
        let mut acc = [unsafe { vdupq_n_f32(0.0) }; 2];
        for (k, (bw, ba)) in row.iter().zip(a).enumerate() {
            // SAFETY: see above.
            acc[k % 2] = unsafe {
                let p = vcvtq_f32_s32(dot(unpack(bw, table), load_q8(ba)));
                vfmaq_n_f32(acc[k % 2], p, scale1(bw) * scale1(ba))
            };
        }
        // SAFETY: see above.
        *o = unsafe { vaddvq_f32(vaddq_f32(acc[0], acc[1])) };
    }
}

/// Row-interleaved IQ4_NL tiles times `n` activation vectors (`a: [n, nb]`,
/// `out: [n, rows]`, token-major; `n == 1` is the matrix-vector product),
/// group-major so a group's tiles stay in L1 while every token reads them. A
/// token's results do not depend on `n`. Shapes are checked by the callers;
/// inlined only into NEON kernels.
#[inline(always)]
pub(in crate::arch::aarch64) fn matmul_tiles(
    w: &[BlockIq4Nl],
    a: &[BlockQ8_0],
    n: usize,
    out: &mut [f32],
    dot: impl Fn([int8x16_t; 2], [int8x16_t; 2]) -> int32x4_t,
) {
    let (nb, rows) = (a.len() / n, out.len() / n);
    // SAFETY (every unsafe block below): as in `matvec_rows`.
    let table = unsafe { codebook() };
    for g in 0..rows / TILE_ROWS {
        let tiles = &w[g * nb * TILE_ROWS..(g + 1) * nb * TILE_ROWS];
        for t in 0..n {
            // SAFETY: see above.
            let mut acc = [unsafe { vdupq_n_f32(0.0) }; TILE_ROWS];
            for (tile, ba) in tiles.chunks_exact(TILE_ROWS).zip(&a[t * nb..(t + 1) * nb]) {
                // SAFETY: see above.
                let (av, d) = unsafe {
                    let dw = scales4(core::array::from_fn(|j| &tile[j]));
                    (load_q8(ba), lanes(vmulq_n_f32(dw, scale1(ba))))
                };
                for ((bw, acc), d) in tile.iter().zip(acc.iter_mut()).zip(d) {
                    // SAFETY: see above.
                    *acc = unsafe {
                        let p = vcvtq_f32_s32(dot(unpack(bw, table), av));
                        vfmaq_n_f32(*acc, p, d)
                    };
                }
            }
            for (o, acc) in out[t * rows + g * TILE_ROWS..][..TILE_ROWS]
                .iter_mut()
                .zip(acc)
            {
                // SAFETY: see above.
                *o = unsafe { vaddvq_f32(acc) };
            }
        }
    }
}

pub(super) fn matvec_iq4_nl_q8_0(w: &[BlockIq4Nl], a: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(
        w.len(),
        out.len() * a.len(),
        "matvec_iq4_nl_q8_0: shape mismatch"
    );
    // SAFETY: reachable only through `table(NeonToken)`; shape checked above.
    unsafe { matvec_impl(w, a, out) }
}

/// # Safety
/// The CPU has NEON; `w.len() == out.len() * a.len()`.
#[target_feature(enable = "neon")]
unsafe fn matvec_impl(w: &[BlockIq4Nl], a: &[BlockQ8_0], out: &mut [f32]) {
    matvec_rows(w, a, out, |wv, av| block_dot(wv, av))
}

pub(super) fn matvec_iq4_nlx4_q8_0(w: &[BlockIq4Nl], a: &[BlockQ8_0], out: &mut [f32]) {
    crate::scalar::check_tiled_shape(w.len(), a.len(), out.len(), "matvec_iq4_nlx4_q8_0");
    // SAFETY: reachable only through `table(NeonToken)`; shape checked above.
    unsafe { matmul_impl(w, a, 1, out) }
}

pub(super) fn matmul_iq4_nlx4_q8_0(w: &[BlockIq4Nl], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    crate::scalar::check_matmul_shape(w.len(), a.len(), n, out.len(), "matmul_iq4_nlx4_q8_0");
    // SAFETY: reachable only through `table(NeonToken)`; shape checked above.
    unsafe { matmul_impl(w, a, n, out) }
}

/// # Safety
/// The CPU has NEON; the matrix-matrix shape contract holds.
#[target_feature(enable = "neon")]
unsafe fn matmul_impl(w: &[BlockIq4Nl], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    matmul_tiles(w, a, n, out, |wv, av| block_dot(wv, av))
}
