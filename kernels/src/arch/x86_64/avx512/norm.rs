//! AVX-512 RMSNorm. Same contract and formula as `scalar::rmsnorm_f32`: the mean
//! of squares accumulated in f64 (8 + 8 lanes; only the summation order differs
//! from the reference), then `x * inv * w` with the reference's two roundings.

use core::arch::x86_64::*;

use super::math::first_lanes;

pub(super) fn rmsnorm_f32(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    assert!(!x.is_empty(), "rmsnorm_f32: empty input");
    assert!(
        out.len() == x.len() && weight.len() == x.len(),
        "rmsnorm_f32: length mismatch"
    );
    // SAFETY: reachable only through `table(Avx512Token)`; lengths checked above.
    unsafe { rmsnorm_f32_impl(out, x, weight, eps) }
}

/// # Safety
/// The CPU has AVX-512F; `out`, `x`, `weight` have the same length.
#[target_feature(enable = "avx512f")]
unsafe fn rmsnorm_f32_impl(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let n = x.len();
    let xp = x.as_ptr();
    let (mut a0, mut a1) = (_mm512_setzero_pd(), _mm512_setzero_pd());
    let mut i = 0;
    while i < n {
        let m = first_lanes((n - i).min(16));
        // SAFETY: the mask covers only elements i..min(i + 16, n); masked-off
        // lanes are zero and add nothing to the sum of squares.
        let v = unsafe { _mm512_maskz_loadu_ps(m, xp.add(i)) };
        let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
            _mm512_castps_pd(v),
        )));
        // A square of an f32 is exact in f64: fused = multiply-then-add.
        a0 = _mm512_fmadd_pd(lo, lo, a0);
        a1 = _mm512_fmadd_pd(hi, hi, a1);
        i += 16;
    }
    let ss = _mm512_reduce_add_pd(_mm512_add_pd(a0, a1)) / n as f64;
    let inv = (1.0 / libm::sqrt(ss + eps as f64)) as f32;
    let iv = _mm512_set1_ps(inv);
    let (op, wp) = (out.as_mut_ptr(), weight.as_ptr());
    let mut i = 0;
    while i < n {
        let m = first_lanes((n - i).min(16));
        // SAFETY: masked loads and stores touch only elements i..min(i + 16, n).
        unsafe {
            let v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xp.add(i)), iv);
            let r = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, wp.add(i)));
            _mm512_mask_storeu_ps(op.add(i), m, r);
        }
        i += 16;
    }
}
