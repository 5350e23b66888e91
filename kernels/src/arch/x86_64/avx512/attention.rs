//! AVX-512 `axpy` over f16 values (weighted sum of values), bit-identical to
//! the scalar kernel (the product is rounded before the add), and the fused
//! attention over an f16 or f32 cache (AVX2's scores, this tier's softmax and
//! a 16-lane value pass). The dot products stay the AVX2 ones:
//! the reference's eight partial sums fill exactly one 256-bit register, so
//! scores are the same bits on every tier. The f32 `axpy` and f16 widening stay
//! AVX2's: on 64-element rows their 16-lane masked versions measured slower
//! (`benches/RESULTS.md`, "AVX-512 versions of the other ops").

use core::arch::x86_64::*;

use half::f16;

use super::avx2::attention::{attend_around, attend_values, RowElem, ValuePass};
use super::math::first_lanes;

pub(super) fn axpy_f16_f32(acc: &mut [f32], scale: f32, x: &[f16]) {
    assert_eq!(acc.len(), x.len(), "axpy_f16_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx512Token)`; lengths checked.
    unsafe { axpy_f16_f32_impl(acc, scale, x) }
}

/// # Safety
/// The CPU has AVX-512F/BW/VL; `acc.len() == x.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn axpy_f16_f32_impl(acc: &mut [f32], scale: f32, x: &[f16]) {
    let n = acc.len();
    let s = _mm512_set1_ps(scale);
    let (ap, xp) = (acc.as_mut_ptr(), x.as_ptr() as *const i16);
    let mut i = 0;
    while i < n {
        let k = first_lanes((n - i).min(16));
        // SAFETY: masked loads and stores touch only elements i..min(i + 16, n)
        // (f16 is a 2-byte value: 16 of them are one 256-bit masked load).
        unsafe {
            let xv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, xp.add(i)));
            let r = _mm512_add_ps(_mm512_maskz_loadu_ps(k, ap.add(i)), _mm512_mul_ps(s, xv));
            _mm512_mask_storeu_ps(ap.add(i), k, r);
        }
        i += 16;
    }
}

/// Fused attention over an f16 (`scalar::attend_f16`) or f32
/// (`scalar::attend_f32`) cache: bit-identical to `scalar::attend_with` over
/// this tier's dot product, softmax and `axpy` for that row type. AVX2's fused
/// kernel (its scores: the dot product is AVX2's in both tables) around this
/// tier's softmax, whose 16-lane sum differs in order from AVX2's, and this
/// tier's value pass (`Avx512Values`: 16-column registers, half the
/// instructions of AVX2's for the same bits). The table takes
/// `attend::<f16>` and `attend::<f32>`.
#[allow(clippy::too_many_arguments)] // the slot's signature (`arch::AttendF16`)
pub(super) fn attend<T: RowElem16>(
    heads: usize,
    q: &[f32],
    k: &[T],
    v: &[T],
    stride: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    attend_around::<T, Avx512Values>(
        super::softmax::softmax_f32,
        heads,
        (q, k, v, stride, scale),
        scores,
        out,
    );
}

/// A key/value row element AVX-512 loads sixteen at a time.
pub(super) trait RowElem16: RowElem {
    /// Sixteen elements from `p`, as f32 (f16 widened exactly).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `p` is valid for sixteen reads.
    unsafe fn load16(p: *const Self) -> __m512;
}

impl RowElem16 for f16 {
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const Self) -> __m512 {
        // SAFETY: sixteen f16 are one unaligned 256-bit load (caller's bounds).
        _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(p as *const __m256i) })
    }
}

impl RowElem16 for f32 {
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const Self) -> __m512 {
        // SAFETY: caller's bounds; unaligned load.
        unsafe { _mm512_loadu_ps(p) }
    }
}

/// Output registers (16 columns each) per head of a value pass: 64 columns,
/// so three heads take 12 of the 32 registers.
const OUT_REGS: usize = 4;

/// The value pass of this tier's fused attention: AVX2's arithmetic (each
/// element `out + p * v`, product rounded, in position order) sixteen columns
/// per register; the last `head_dim % 16` columns go through AVX2's pass.
struct Avx512Values;

impl<T: RowElem16> ValuePass<T> for Avx512Values {
    unsafe fn values<const H: usize>(v: &[T], stride: usize, p: &[f32], out: &mut [f32]) {
        // SAFETY: the caller's; this tier's table is only built on CPUs with
        // AVX-512F/BW/VL (and AVX2, F16C).
        unsafe { values::<T, H>(v, stride, p, out) }
    }
}

/// # Safety
/// As `ValuePass::values`; the CPU has AVX-512F/BW/VL, AVX2 and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
unsafe fn values<T: RowElem16, const H: usize>(v: &[T], stride: usize, p: &[f32], out: &mut [f32]) {
    let hd = out.len() / H;
    let mut c = 0;
    while c + 16 * OUT_REGS <= hd {
        // SAFETY: c + 64 <= head_dim; the caller's shapes.
        unsafe { values_cols::<T, H, OUT_REGS>(v, stride, p, c, out) };
        c += 16 * OUT_REGS;
    }
    while c + 16 <= hd {
        // SAFETY: c + 16 <= head_dim; the caller's shapes.
        unsafe { values_cols::<T, H, 1>(v, stride, p, c, out) };
        c += 16;
    }
    if c < hd {
        // SAFETY: c <= head_dim; the caller's shapes and features.
        unsafe { attend_values::<T, H, 1>(v, stride, p, c, out) };
    }
}

/// Columns `c..c + 16 * R` of every head of the value pass, held in `H * R`
/// registers.
///
/// # Safety
/// The CPU has AVX-512F; `c + 16 * R <= head_dim`; shapes as `check_attend`
/// accepts for `H` heads.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn values_cols<T: RowElem16, const H: usize, const R: usize>(
    v: &[T],
    stride: usize,
    p: &[f32],
    c: usize,
    out: &mut [f32],
) {
    let (hd, n) = (out.len() / H, p.len() / H);
    let (vp, pp) = (v.as_ptr(), p.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); R]; H];
    for j in 0..n {
        let row = j * stride + c;
        // SAFETY: h * n + j < H * n = p.len().
        let s: [__m512; H] =
            core::array::from_fn(|h| _mm512_set1_ps(unsafe { *pp.add(h * n + j) }));
        for g in 0..R {
            // SAFETY: c + 16 * g + 16 <= head_dim; row j < n has head_dim
            // elements from j * stride.
            let x = unsafe { T::load16(vp.add(row + 16 * g)) };
            for (a, sh) in acc.iter_mut().zip(&s) {
                a[g] = _mm512_add_ps(a[g], _mm512_mul_ps(*sh, x));
            }
        }
    }
    for (h, a) in acc.iter().enumerate() {
        for (g, ag) in a.iter().enumerate() {
            // SAFETY: h * hd + c + 16 * g + 16 <= H * hd = out.len().
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(h * hd + c + 16 * g), *ag) };
        }
    }
}
