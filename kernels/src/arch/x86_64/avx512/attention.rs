//! AVX-512 `axpy` over f16 values (weighted sum of values), bit-identical to
//! the scalar kernel (the product is rounded before the add), and the fused
//! attention over an f16 or f32 cache. The dot products stay the AVX2 ones:
//! the reference's eight partial sums fill exactly one 256-bit register, so
//! scores are the same bits on every tier. The f32 `axpy` and f16 widening stay
//! AVX2's: on 64-element rows their 16-lane masked versions measured slower
//! (`benches/RESULTS.md`, session 10).

use core::arch::x86_64::*;

use half::f16;

use super::avx2::attention::{attend_around, RowElem};
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
/// kernel around this tier's softmax, whose 16-lane sum differs in order from
/// AVX2's (the dot product is AVX2's in both tables, and the weighted sum
/// equals any `axpy` bit for bit). The table takes `attend::<f16>` and
/// `attend::<f32>`.
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
    attend_around(
        super::softmax::softmax_f32,
        heads,
        (q, k, v, stride, scale),
        scores,
        out,
    );
}
