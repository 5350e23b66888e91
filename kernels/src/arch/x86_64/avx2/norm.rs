//! AVX2 RMSNorm. Same contract and formula as `scalar::rmsnorm_f32`: the mean of
//! squares accumulated in f64 (4 + 4 lanes; only the summation order differs
//! from the reference), then `x * inv * w` with the reference's two roundings.

use core::arch::x86_64::*;

pub(super) fn rmsnorm_f32(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    assert!(!x.is_empty(), "rmsnorm_f32: empty input");
    assert!(
        out.len() == x.len() && weight.len() == x.len(),
        "rmsnorm_f32: length mismatch"
    );
    // SAFETY: reachable only through `table(Avx2Token)`; lengths checked above.
    unsafe { rmsnorm_f32_impl(out, x, weight, eps) }
}

/// # Safety
/// The CPU has AVX2 and FMA; `out`, `x`, `weight` have the same length.
#[target_feature(enable = "avx2,fma")]
unsafe fn rmsnorm_f32_impl(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let n = x.len();
    let main = n / 8 * 8;
    let xp = x.as_ptr();
    let (mut a0, mut a1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= main <= n.
        let v = unsafe { _mm256_loadu_ps(xp.add(i)) };
        let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
        // A square of an f32 is exact in f64, so the fused form rounds like the
        // reference's multiply-then-add.
        a0 = _mm256_fmadd_pd(lo, lo, a0);
        a1 = _mm256_fmadd_pd(hi, hi, a1);
        i += 8;
    }
    let a = _mm256_add_pd(a0, a1);
    let s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd::<1>(a));
    let mut ss = _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
    for &v in &x[main..] {
        ss += v as f64 * v as f64;
    }
    let ss = ss / n as f64;
    let inv = (1.0 / libm::sqrt(ss + eps as f64)) as f32;
    let iv = _mm256_set1_ps(inv);
    let (op, wp) = (out.as_mut_ptr(), weight.as_ptr());
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= main <= n for all three slices.
        unsafe {
            let v = _mm256_mul_ps(_mm256_loadu_ps(xp.add(i)), iv);
            _mm256_storeu_ps(op.add(i), _mm256_mul_ps(v, _mm256_loadu_ps(wp.add(i))));
        }
        i += 8;
    }
    for j in main..n {
        out[j] = x[j] * inv * weight[j];
    }
}
