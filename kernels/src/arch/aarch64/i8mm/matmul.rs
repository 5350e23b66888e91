//! `smmla` products over the row-interleaved Q8_0 / Q4_0 layouts (`q8_0x4`,
//! `q4_0x4`: tiles of four rows' blocks, `blocks::TILE_ROWS`). The safe
//! wrappers assert the scalar kernels' shape contracts and are reachable only
//! through `table(I8mmToken)`, so `smmla` runs only on CPUs that have it.
//!
//! `smmla acc, a, b` treats `a` and `b` as two rows of eight i8 each and adds
//! the 2x2 i32 matrix `a * b^T` (row-major) into `acc`. One weight tile (rows
//! r0..r3) times one token pair (ta, tb) is two such tiles per 8-element chunk:
//! rows (r0, r1) and (r2, r3), each lane `[r ta, r tb, r+1 ta, r+1 tb]`.
//! The i32 sums are exact for every i8 input (at most 32 * 128 * 128 per block).
//!
//! Each block's term is `(d_w * d_a) * isum` added to an f32 accumulator in
//! block order, exactly as `scalar::matvec_q8_0x4_q8_0` does per row, so every
//! output is bit-identical to the scalar kernel, and a token's results do not
//! depend on which token it is paired with. A token without a partner is paired
//! with itself; the matrix-vector products are the one-token case.
//! `smmla` is emitted with `asm!` because `vmmlaq_s32` is unstable.

use core::arch::aarch64::*;
use core::arch::asm;

use crate::arch::aarch64::neon::matvec::{scale1, scales4, F16Scale};
use crate::blocks::{BlockQ4_0, BlockQ8_0, TILE_ROWS};
use crate::scalar::{check_matmul_shape, check_tiled_shape};

/// `acc + a * b^T` for `a`, `b` two rows of eight i8 (bytes 0..8, 8..16):
/// lanes `[a0.b0, a0.b1, a1.b0, a1.b1]`.
#[inline]
#[target_feature(enable = "neon,i8mm")]
fn smmla(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: `smmla` only reads and writes the named vector registers (no
    // memory, no flags); the i8mm feature is enabled for this function and
    // proven present by the `I8mmToken` that guards every caller.
    unsafe {
        asm!(
            "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// A weight block type of the row-interleaved layouts: its 32 quants as i8 in
/// element order (two vectors: elements 0..16, 16..32) and its f16 scale.
trait WeightBlock: F16Scale {
    /// # Safety
    /// The CPU has NEON.
    unsafe fn quants(&self) -> [int8x16_t; 2];
}

impl WeightBlock for BlockQ8_0 {
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn quants(&self) -> [int8x16_t; 2] {
        load_q8_0(self)
    }
}

impl WeightBlock for BlockQ4_0 {
    /// The centred quants `q - 8`: low nibbles are elements 0..16, high 16..32.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn quants(&self) -> [int8x16_t; 2] {
        // SAFETY: `qs` is 16 bytes; `vld1q_u8` has no alignment requirement.
        let q = unsafe { vld1q_u8(self.qs.as_ptr()) };
        let eight = vdupq_n_s8(8);
        [
            vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))), eight),
            vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)), eight),
        ]
    }
}

/// The 32 quants of a Q8_0 block in element order.
#[inline]
#[target_feature(enable = "neon")]
fn load_q8_0(b: &BlockQ8_0) -> [int8x16_t; 2] {
    let p = b.qs.as_ptr() as *const i8;
    // SAFETY: `qs` is 32 bytes; `vld1q_s8` has no alignment requirement.
    unsafe { [vld1q_s8(p), vld1q_s8(p.add(16))] }
}

/// Elements `0..8` of `x` then of `y`, and elements `8..16` of `x` then of `y`.
#[inline]
#[target_feature(enable = "neon")]
fn zip_halves(x: int8x16_t, y: int8x16_t) -> (int8x16_t, int8x16_t) {
    let (x, y) = (vreinterpretq_s64_s8(x), vreinterpretq_s64_s8(y));
    (
        vreinterpretq_s8_s64(vzip1q_s64(x, y)),
        vreinterpretq_s8_s64(vzip2q_s64(x, y)),
    )
}

/// Two 32-element rows `x`, `y` as four `smmla` operands: chunk `c` holds
/// elements `8c..8c + 8` of `x` then of `y`.
#[inline]
#[target_feature(enable = "neon")]
fn pair_chunks(x: [int8x16_t; 2], y: [int8x16_t; 2]) -> [int8x16_t; 4] {
    let (c0, c1) = zip_halves(x[0], y[0]);
    let (c2, c3) = zip_halves(x[1], y[1]);
    [c0, c1, c2, c3]
}

/// Exact i32 dot products of one block of two weight rows with one block of
/// two tokens: `[w0.a0, w0.a1, w1.a0, w1.a1]`.
#[inline]
#[target_feature(enable = "neon,i8mm")]
fn block_mmla(w: &[int8x16_t; 4], a: &[int8x16_t; 4]) -> int32x4_t {
    let mut acc = vdupq_n_s32(0);
    for (&wc, &ac) in w.iter().zip(a) {
        acc = smmla(acc, wc, ac);
    }
    acc
}

/// Four f32 as a vector.
#[inline]
#[target_feature(enable = "neon")]
fn f32x4(v: [f32; 4]) -> float32x4_t {
    // SAFETY: `v` is four f32; `vld1q_f32` has no alignment requirement.
    unsafe { vld1q_f32(v.as_ptr()) }
}

/// One weight tile (`tile`: `nb` tiles of four blocks, rows `4g..4g + 4`) times
/// `P` token pairs (`toks[p] = [ta, tb]`, `ta == tb` allowed): writes
/// `out[t * rows + 4g + i]` for every listed token `t` and `i < 4`.
///
/// # Safety
/// The CPU has NEON and I8MM; `tile.len() == nb * TILE_ROWS`, every token's
/// `nb` blocks lie in `a`, and `out` holds `rows` outputs of every token,
/// `4g + 4 <= rows`.
#[inline]
#[target_feature(enable = "neon,i8mm")]
unsafe fn tile_tokens<B: WeightBlock, const P: usize>(
    tile: &[B],
    a: &[BlockQ8_0],
    nb: usize,
    toks: [[usize; 2]; P],
    g: usize,
    rows: usize,
    out: &mut [f32],
) {
    // acc[p][h]: rows (4g + 2h, 4g + 2h + 1) x tokens toks[p].
    let mut acc = [[vdupq_n_f32(0.0); 2]; P];
    for (k, wb) in tile.chunks_exact(TILE_ROWS).enumerate() {
        // SAFETY: the CPU has NEON (contract).
        let q = unsafe {
            [
                wb[0].quants(),
                wb[1].quants(),
                wb[2].quants(),
                wb[3].quants(),
            ]
        };
        let w01 = pair_chunks(q[0], q[1]);
        let w23 = pair_chunks(q[2], q[3]);
        let dw = scales4([&wb[0], &wb[1], &wb[2], &wb[3]]);
        // [d0, d0, d1, d1] and [d2, d2, d3, d3].
        let (dw01, dw23) = (vzip1q_f32(dw, dw), vzip2q_f32(dw, dw));
        for (acc, &[ta, tb]) in acc.iter_mut().zip(&toks) {
            let (ba, bb) = (&a[ta * nb + k], &a[tb * nb + k]);
            let av = pair_chunks(load_q8_0(ba), load_q8_0(bb));
            let (da, db) = (scale1(ba), scale1(bb));
            let dab = f32x4([da, db, da, db]);
            // Per lane: sum += (d_w * d_a) * isum, the scalar kernel's term.
            let i01 = vcvtq_f32_s32(block_mmla(&w01, &av));
            let i23 = vcvtq_f32_s32(block_mmla(&w23, &av));
            acc[0] = vaddq_f32(acc[0], vmulq_f32(vmulq_f32(dw01, dab), i01));
            acc[1] = vaddq_f32(acc[1], vmulq_f32(vmulq_f32(dw23, dab), i23));
        }
    }
    for (acc, &[ta, tb]) in acc.iter().zip(&toks) {
        // Even lanes are token ta's rows 4g..4g + 4, odd lanes token tb's.
        let (ra, rb) = (vuzp1q_f32(acc[0], acc[1]), vuzp2q_f32(acc[0], acc[1]));
        let (oa, ob) = (ta * rows + g * TILE_ROWS, tb * rows + g * TILE_ROWS);
        // SAFETY: `oa + 4` and `ob + 4` are within `out` (contract). When
        // `ta == tb` both stores write the same values.
        unsafe {
            vst1q_f32(out[oa..oa + 4].as_mut_ptr(), ra);
            vst1q_f32(out[ob..ob + 4].as_mut_ptr(), rb);
        }
    }
}

/// `out[t * rows + r] = dot(row r, token t)` for `n` tokens.
///
/// # Safety
/// The CPU has NEON and I8MM; shapes as `scalar::check_matmul_shape`.
#[target_feature(enable = "neon,i8mm")]
unsafe fn matmul_impl<B: WeightBlock>(w: &[B], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    let (nb, rows) = (a.len() / n, out.len() / n);
    // Tiles outermost: each tile's weights stay in L1 while every token passes.
    for (g, tile) in w.chunks_exact(nb * TILE_ROWS).enumerate() {
        let mut t = 0;
        // SAFETY (all calls): the tile, tokens and outputs satisfy
        // `tile_tokens`'s contract by the shape checks of the callers.
        while t + 4 <= n {
            unsafe { tile_tokens(tile, a, nb, [[t, t + 1], [t + 2, t + 3]], g, rows, out) };
            t += 4;
        }
        match n - t {
            3 => unsafe { tile_tokens(tile, a, nb, [[t, t + 1], [t + 2, t + 2]], g, rows, out) },
            2 => unsafe { tile_tokens(tile, a, nb, [[t, t + 1]], g, rows, out) },
            1 => unsafe { tile_tokens(tile, a, nb, [[t, t]], g, rows, out) },
            _ => {}
        }
    }
}

pub(super) fn matvec_q8_0x4_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0], out: &mut [f32]) {
    check_tiled_shape(w.len(), a.len(), out.len(), "matvec_q8_0x4_q8_0");
    if a.is_empty() {
        out.fill(0.0);
        return;
    }
    // SAFETY: reachable only through `table(I8mmToken)`; shape checked above.
    unsafe { matmul_impl(w, a, 1, out) }
}

pub(super) fn matvec_q4_0x4_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0], out: &mut [f32]) {
    check_tiled_shape(w.len(), a.len(), out.len(), "matvec_q4_0x4_q8_0");
    if a.is_empty() {
        out.fill(0.0);
        return;
    }
    // SAFETY: reachable only through `table(I8mmToken)`; shape checked above.
    unsafe { matmul_impl(w, a, 1, out) }
}

pub(super) fn matmul_q8_0x4_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    check_matmul_shape(w.len(), a.len(), n, out.len(), "matmul_q8_0x4_q8_0");
    // SAFETY: reachable only through `table(I8mmToken)`; shape checked above.
    unsafe { matmul_impl(w, a, n, out) }
}

pub(super) fn matmul_q4_0x4_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    check_matmul_shape(w.len(), a.len(), n, out.len(), "matmul_q4_0x4_q8_0");
    // SAFETY: reachable only through `table(I8mmToken)`; shape checked above.
    unsafe { matmul_impl(w, a, n, out) }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use std::vec::Vec;
    use std::{eprintln, vec};

    use super::*;
    use crate::arch::aarch64::I8mmToken;
    use crate::blocks::interleave_rows;
    use crate::scalar;

    /// xorshift64: deterministic test data without a dependency.
    fn next(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    fn scale(s: &mut u64) -> [u8; 2] {
        let d = half::f16::from_f32((next(s) % 1000) as f32 / 997.0 + 1e-3);
        d.to_bits().to_le_bytes()
    }

    /// The documented contract: every output bit-identical to the scalar
    /// kernels, for token counts that exercise every pairing remainder,
    /// including extreme quants (-128 in weights, +-127 in activations).
    #[test]
    fn bit_identical_to_scalar() {
        if I8mmToken::new().is_none() {
            eprintln!("no i8mm on this CPU: skipped");
            return;
        }
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for (rows, nb) in [(4, 1), (8, 3), (12, 7), (4, 17)] {
            let w8: Vec<BlockQ8_0> = (0..rows * nb)
                .map(|_| BlockQ8_0 {
                    d: scale(&mut s),
                    qs: core::array::from_fn(|_| next(&mut s) as u8),
                })
                .collect();
            let w4: Vec<BlockQ4_0> = (0..rows * nb)
                .map(|_| BlockQ4_0 {
                    d: scale(&mut s),
                    qs: core::array::from_fn(|_| next(&mut s) as u8),
                })
                .collect();
            let (mut t8, mut t4) = (w8.clone(), w4.clone());
            interleave_rows(&w8, nb, &mut t8);
            interleave_rows(&w4, nb, &mut t4);
            for n in 1..=9 {
                let a: Vec<BlockQ8_0> = (0..n * nb)
                    .map(|i| BlockQ8_0 {
                        d: scale(&mut s),
                        qs: core::array::from_fn(|j| match (i + j) % 7 {
                            0 => 127u8,
                            1 => (-127i8) as u8,
                            _ => ((next(&mut s) % 255) as i32 - 127) as i8 as u8,
                        }),
                    })
                    .collect();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let (mut got, mut want) = (vec![f32::NAN; n * rows], vec![0.0; n * rows]);
                scalar::matmul_q8_0x4_q8_0(&t8, &a, n, &mut want);
                matmul_q8_0x4_q8_0(&t8, &a, n, &mut got);
                assert_eq!(bits(&got), bits(&want), "q8_0x4 rows={rows} nb={nb} n={n}");
                scalar::matmul_q4_0x4_q8_0(&t4, &a, n, &mut want);
                matmul_q4_0x4_q8_0(&t4, &a, n, &mut got);
                assert_eq!(bits(&got), bits(&want), "q4_0x4 rows={rows} nb={nb} n={n}");
                let (mut g1, mut w1) = (vec![f32::NAN; rows], vec![0.0; rows]);
                scalar::matvec_q8_0x4_q8_0(&t8, &a[..nb], &mut w1);
                matvec_q8_0x4_q8_0(&t8, &a[..nb], &mut g1);
                assert_eq!(bits(&g1), bits(&w1), "matvec q8_0x4 rows={rows} nb={nb}");
                scalar::matvec_q4_0x4_q8_0(&t4, &a[..nb], &mut w1);
                matvec_q4_0x4_q8_0(&t4, &a[..nb], &mut g1);
                assert_eq!(bits(&g1), bits(&w1), "matvec q4_0x4 rows={rows} nb={nb}");
            }
        }
    }
}
