//! NEON matrix-vector products. The safe wrappers assert the scalar kernels'
//! shape contracts and are reachable only through `table(NeonToken)`, so the
//! `#[target_feature]` code runs only on CPUs that have the features.
//!
//! Int8 blocks: `vmull_s8` / `vmlal_s8` form two products per i16 lane and
//! `vpadalq_s16` widens pairs into i32 lanes, so a block's integer sum is exact;
//! it is scaled by `d_w * d_a` in f32 (same contract as `scalar::quant`).

use core::arch::aarch64::*;
use core::arch::asm;

use crate::blocks::{BlockQ4_0, BlockQ8_0, QK, TILE_ROWS};

pub(super) fn matvec_f32_f32(w: &[f32], x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    assert_eq!(w.len(), out.len() * cols, "matvec_f32_f32: shape mismatch");
    // SAFETY: reachable only through `table(NeonToken)`, so NEON exists; the
    // shape was checked above.
    unsafe { matvec_f32_f32_impl(w, x, out) }
}

/// # Safety
/// The CPU has NEON; `w.len() == out.len() * x.len()`.
#[target_feature(enable = "neon")]
unsafe fn matvec_f32_f32_impl(w: &[f32], x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    let main = cols / 16 * 16;
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * cols..(r + 1) * cols];
        let (rp, xp) = (row.as_ptr(), x.as_ptr());
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut i = 0;
        while i < main {
            for (u, a) in acc.iter_mut().enumerate() {
                // SAFETY: i + 4u + 4 <= main <= cols, in bounds of both rows;
                // `vld1q_f32` needs only element alignment.
                let (wv, xv) =
                    unsafe { (vld1q_f32(rp.add(i + 4 * u)), vld1q_f32(xp.add(i + 4 * u))) };
                *a = vfmaq_f32(*a, wv, xv);
            }
            i += 16;
        }
        while i + 4 <= cols {
            // SAFETY: i + 4 <= cols.
            let (wv, xv) = unsafe { (vld1q_f32(rp.add(i)), vld1q_f32(xp.add(i))) };
            acc[0] = vfmaq_f32(acc[0], wv, xv);
            i += 4;
        }
        let v = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
        let mut s = vaddvq_f32(v);
        for j in i..cols {
            s += row[j] * x[j];
        }
        *o = s;
    }
}

/// Four f16 values (bit patterns) to f32 with `fcvtl`. Half-to-single
/// conversion is baseline Advanced SIMD (ARMv8.0; it does not need the FP16
/// arithmetic extension) and exact for every f16 value, NaN stays NaN. It is
/// emitted with `asm!` because `vcvt_f32_f16` takes the unstable `float16x4_t`.
#[inline]
#[target_feature(enable = "neon")]
pub(in crate::arch::aarch64) fn cvt_f16x4(h: uint16x4_t) -> float32x4_t {
    let out: float32x4_t;
    // SAFETY: `fcvtl` only reads and writes the named vector registers (no
    // memory, no flags); NEON is enabled for this function.
    unsafe {
        asm!(
            "fcvtl {o:v}.4s, {i:v}.4h",
            o = lateout(vreg) out,
            i = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    out
}

/// A block type whose scale is one little-endian f16 (`d`).
pub(in crate::arch::aarch64) trait F16Scale {
    /// The scale's f16 bit pattern, little-endian.
    fn scale_bits(&self) -> [u8; 2];
}

impl F16Scale for BlockQ8_0 {
    #[inline(always)]
    fn scale_bits(&self) -> [u8; 2] {
        self.d
    }
}

impl F16Scale for BlockQ4_0 {
    #[inline(always)]
    fn scale_bits(&self) -> [u8; 2] {
        self.d
    }
}

impl F16Scale for crate::blocks::BlockIq4Nl {
    #[inline(always)]
    fn scale_bits(&self) -> [u8; 2] {
        self.d
    }
}

/// The scales of four blocks as f32, with one `fcvtl`. Exact, like the
/// blocks' `scale()`, which the block loops avoid: `half`'s conversion checks
/// the CPU's features on every call and, on CPUs without FP16 arithmetic (the
/// Pi 3/4's A53/A72), runs a branchy software routine.
#[inline]
#[target_feature(enable = "neon")]
pub(in crate::arch::aarch64) fn scales4<B: F16Scale>(b: [&B; 4]) -> float32x4_t {
    let h = |i: usize| u16::from_le_bytes(b[i].scale_bits()) as u64;
    cvt_f16x4(vcreate_u16(h(0) | h(1) << 16 | h(2) << 32 | h(3) << 48))
}

/// One block's scale as f32 (`fcvtl` on one lane; see `scales4`).
#[inline]
#[target_feature(enable = "neon")]
pub(in crate::arch::aarch64) fn scale1<B: F16Scale>(b: &B) -> f32 {
    let h = u16::from_le_bytes(b.scale_bits()) as u64;
    vgetq_lane_f32::<0>(cvt_f16x4(vcreate_u16(h)))
}

/// The lanes of `v`.
#[inline]
#[target_feature(enable = "neon")]
pub(in crate::arch::aarch64) fn lanes(v: float32x4_t) -> [f32; 4] {
    let mut out = [0.0f32; 4];
    // SAFETY: `out` is four f32; `vst1q_f32` has no alignment requirement.
    unsafe { vst1q_f32(out.as_mut_ptr(), v) };
    out
}

/// A block's 32 quants as two registers (elements 0..16, 16..32).
#[inline]
#[target_feature(enable = "neon")]
pub(in crate::arch::aarch64) fn load_q8_0(b: &BlockQ8_0) -> [int8x16_t; 2] {
    let p = b.qs.as_ptr() as *const i8;
    // SAFETY: `qs` is 32 bytes; `vld1q_s8` has no alignment requirement.
    unsafe { [vld1q_s8(p), vld1q_s8(p.add(16))] }
}

/// The 32 centred quants `q - 8` of a Q4_0 block, in element order: the low
/// nibbles are elements 0..16, the high nibbles 16..32.
#[inline]
#[target_feature(enable = "neon")]
pub(in crate::arch::aarch64) fn unpack_q4_0(b: &BlockQ4_0) -> [int8x16_t; 2] {
    // SAFETY: `qs` is 16 bytes; no alignment requirement.
    let q = unsafe { vld1q_u8(b.qs.as_ptr()) };
    let lo = vandq_u8(q, vdupq_n_u8(0x0F));
    let hi = vshrq_n_u8::<4>(q);
    let eight = vdupq_n_s8(8);
    [
        vsubq_s8(vreinterpretq_s8_u8(lo), eight),
        vsubq_s8(vreinterpretq_s8_u8(hi), eight),
    ]
}

/// Four i32 lanes whose sum is the exact dot product of one block pair's quants.
/// Exact for weight quants in -128..=127 and activation quants in -127..=127:
/// each i16 lane holds two products, at most 2 * 128 * 127 = 32512 in magnitude
/// (with -128 on both sides it would be 32768, which wraps).
#[inline]
#[target_feature(enable = "neon")]
fn block_dot_i8(w: [int8x16_t; 2], a: [int8x16_t; 2]) -> int32x4_t {
    let mut acc = vdupq_n_s32(0);
    for h in 0..2 {
        let p = vmull_s8(vget_low_s8(w[h]), vget_low_s8(a[h]));
        let p = vmlal_s8(p, vget_high_s8(w[h]), vget_high_s8(a[h]));
        acc = vpadalq_s16(acc, p);
    }
    acc
}

/// Rows of blocks times one activation vector: `out[r] = sum_k d_w d_a isum`,
/// with `dot(w_block, a_quants)` giving four i32 lanes that sum to a block
/// pair's exact integer dot product. Shapes are checked by the callers.
///
/// Same structure as the x86 tiers: four rows at a time, so each activation
/// block is loaded once for four weight rows and four independent accumulators
/// keep four weight streams in flight; the remaining rows use two accumulators
/// that alternate blocks.
#[inline(always)]
pub(in crate::arch::aarch64) fn matvec_blocks<B: F16Scale>(
    w: &[B],
    a: &[BlockQ8_0],
    out: &mut [f32],
    dot: impl Fn(&B, [int8x16_t; 2]) -> int32x4_t,
) {
    let nb = a.len();
    let rows4 = out.len() / 4 * 4;
    // The unsafe blocks below call NEON intrinsics: this helper is only
    // inlined into NEON kernels (NEON is also the AArch64 baseline).
    for r in (0..rows4).step_by(4) {
        let rows: [&[B]; 4] = core::array::from_fn(|j| &w[(r + j) * nb..(r + j + 1) * nb]);
        // SAFETY: NEON (see above); registers only.
        let mut acc = [unsafe { vdupq_n_f32(0.0) }; 4];
        for (k, ba) in a.iter().enumerate() {
            // SAFETY: NEON (see above); reads the 32 quants and the scales of
            // `ba` and the rows' blocks `k`.
            let (av, d) = unsafe {
                let dw = scales4(core::array::from_fn(|j| &rows[j][k]));
                (load_q8_0(ba), lanes(vmulq_n_f32(dw, scale1(ba))))
            };
            for j in 0..4 {
                // SAFETY: NEON (see above); registers only.
                acc[j] = unsafe { vfmaq_n_f32(acc[j], vcvtq_f32_s32(dot(&rows[j][k], av)), d[j]) };
            }
        }
        for j in 0..4 {
            // SAFETY: NEON (see above); registers only.
            out[r + j] = unsafe { vaddvq_f32(acc[j]) };
        }
    }
    for (r, o) in out.iter_mut().enumerate().skip(rows4) {
        let row = &w[r * nb..(r + 1) * nb];
        // SAFETY: NEON (see above); `load_q8_0` reads the 32 quants of `a[k]`.
        unsafe {
            let step = |k: usize, acc: float32x4_t| {
                let (bw, ba) = (&row[k], &a[k]);
                let p = vcvtq_f32_s32(dot(bw, load_q8_0(ba)));
                vfmaq_n_f32(acc, p, scale1(bw) * scale1(ba))
            };
            let (mut acc0, mut acc1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
            let mut k = 0;
            while k + 2 <= nb {
                acc0 = step(k, acc0);
                acc1 = step(k + 1, acc1);
                k += 2;
            }
            if k < nb {
                acc0 = step(k, acc0);
            }
            *o = vaddvq_f32(vaddq_f32(acc0, acc1));
        }
    }
}

/// Row-interleaved tiles (`crate::blocks::TILE_ROWS`) times `n` activation
/// vectors (`a: [n, nb]`, `out: [n, rows]`, token-major; `n == 1` is the
/// matrix-vector product): the same per-block arithmetic as `matvec_blocks`,
/// reading the tiles as one sequential stream, group-major so that a group's
/// tiles stay in L1 while every token reads them. A token's results do not
/// depend on `n`. Shapes are checked by the callers.
#[inline(always)]
pub(in crate::arch::aarch64) fn matmul_tiles<B: F16Scale>(
    w: &[B],
    a: &[BlockQ8_0],
    n: usize,
    out: &mut [f32],
    dot: impl Fn(&B, [int8x16_t; 2]) -> int32x4_t,
) {
    let (nb, rows) = (a.len() / n.max(1), out.len() / n.max(1));
    // The unsafe blocks below call NEON intrinsics: this helper is only
    // inlined into NEON kernels (NEON is also the AArch64 baseline).
    for g in 0..rows / TILE_ROWS {
        let tiles = &w[g * nb * TILE_ROWS..(g + 1) * nb * TILE_ROWS];
        for t in 0..n {
            // SAFETY: NEON (see above); registers only.
            let mut acc = [unsafe { vdupq_n_f32(0.0) }; TILE_ROWS];
            for (tile, ba) in tiles.chunks_exact(TILE_ROWS).zip(&a[t * nb..(t + 1) * nb]) {
                // SAFETY: NEON (see above); reads the 32 quants and the scales
                // of `ba` and the tile's blocks.
                let (av, d) = unsafe {
                    let dw = scales4(core::array::from_fn(|j| &tile[j]));
                    (load_q8_0(ba), lanes(vmulq_n_f32(dw, scale1(ba))))
                };
                for ((bw, acc), d) in tile.iter().zip(acc.iter_mut()).zip(d) {
                    // SAFETY: NEON (see above); registers only.
                    *acc = unsafe { vfmaq_n_f32(*acc, vcvtq_f32_s32(dot(bw, av)), d) };
                }
            }
            for (o, acc) in out[t * rows + g * TILE_ROWS..][..TILE_ROWS]
                .iter_mut()
                .zip(acc)
            {
                // SAFETY: NEON (see above); registers only.
                *o = unsafe { vaddvq_f32(acc) };
            }
        }
    }
}

pub(super) fn matvec_q8_0x4_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0], out: &mut [f32]) {
    crate::scalar::check_tiled_shape(w.len(), a.len(), out.len(), "matvec_q8_0x4_q8_0");
    // SAFETY: reachable only through `table(NeonToken)`; shape checked above.
    unsafe { matmul_q8_0x4_impl(w, a, 1, out) }
}

pub(super) fn matmul_q8_0x4_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    crate::scalar::check_matmul_shape(w.len(), a.len(), n, out.len(), "matmul_q8_0x4_q8_0");
    // SAFETY: reachable only through `table(NeonToken)`; shape checked above.
    unsafe { matmul_q8_0x4_impl(w, a, n, out) }
}

/// # Safety
/// The CPU has NEON; the matrix-matrix shape contract holds.
#[target_feature(enable = "neon")]
unsafe fn matmul_q8_0x4_impl(w: &[BlockQ8_0], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    matmul_tiles(w, a, n, out, |bw, av| block_dot_i8(load_q8_0(bw), av))
}

pub(super) fn matvec_q4_0x4_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0], out: &mut [f32]) {
    crate::scalar::check_tiled_shape(w.len(), a.len(), out.len(), "matvec_q4_0x4_q8_0");
    // SAFETY: reachable only through `table(NeonToken)`; shape checked above.
    unsafe { matmul_q4_0x4_impl(w, a, 1, out) }
}

pub(super) fn matmul_q4_0x4_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    crate::scalar::check_matmul_shape(w.len(), a.len(), n, out.len(), "matmul_q4_0x4_q8_0");
    // SAFETY: reachable only through `table(NeonToken)`; shape checked above.
    unsafe { matmul_q4_0x4_impl(w, a, n, out) }
}

/// # Safety
/// The CPU has NEON; the matrix-matrix shape contract holds.
#[target_feature(enable = "neon")]
unsafe fn matmul_q4_0x4_impl(w: &[BlockQ4_0], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    matmul_tiles(w, a, n, out, |bw, av| block_dot_i8(unpack_q4_0(bw), av))
}

pub(super) fn matvec_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(
        w.len(),
        out.len() * a.len(),
        "matvec_q8_0_q8_0: shape mismatch"
    );
    // SAFETY: reachable only through `table(NeonToken)`; shape checked above.
    unsafe { matvec_q8_0_q8_0_impl(w, a, out) }
}

/// # Safety
/// The CPU has NEON; `w.len() == out.len() * a.len()`.
#[target_feature(enable = "neon")]
unsafe fn matvec_q8_0_q8_0_impl(w: &[BlockQ8_0], a: &[BlockQ8_0], out: &mut [f32]) {
    matvec_blocks(w, a, out, |bw, av| block_dot_i8(load_q8_0(bw), av))
}

pub(super) fn matvec_q4_0_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(
        w.len(),
        out.len() * a.len(),
        "matvec_q4_0_q8_0: shape mismatch"
    );
    // SAFETY: reachable only through `table(NeonToken)`; shape checked above.
    unsafe { matvec_q4_0_q8_0_impl(w, a, out) }
}

/// # Safety
/// The CPU has NEON; `w.len() == out.len() * a.len()`.
#[target_feature(enable = "neon")]
unsafe fn matvec_q4_0_q8_0_impl(w: &[BlockQ4_0], a: &[BlockQ8_0], out: &mut [f32]) {
    matvec_blocks(w, a, out, |bw, av| block_dot_i8(unpack_q4_0(bw), av))
}

const _: () = assert!(QK == 32, "one block per two 128-bit registers");
const _: () = assert!(TILE_ROWS == 4, "a tile's scales are one scales4 vector");
