//! Vectorised `exp` for the AVX2 tier (algorithm and accuracy: `arch::vexp`),
//! and the tail helper the elementwise kernels share.

use core::arch::x86_64::*;

use crate::arch::vexp::{EXP_HI, EXP_LO, LN2_HI, LN2_LO, LOG2E, P};

/// `exp` of eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn exp_ps(x: __m256) -> __m256 {
    // `min/max(c, x)` return `x` when it is NaN (the second operand), so NaN
    // survives the clamp.
    let x = _mm256_max_ps(
        _mm256_set1_ps(EXP_LO),
        _mm256_min_ps(_mm256_set1_ps(EXP_HI), x),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(LOG2E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(P[0]);
    for &c in &P[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let y = _mm256_add_ps(
        _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
        _mm256_set1_ps(1.0),
    );
    // 2^n as 2^n1 * 2^n2 with n1 = floor(n / 2): both exponents stay in the
    // normal range for n in -150..=128, so y * 2^n1 is exact and the second
    // product rounds once (overflow to +inf, gradual underflow).
    let ni = _mm256_cvtps_epi32(n);
    let n1 = _mm256_srai_epi32::<1>(ni);
    let n2 = _mm256_sub_epi32(ni, n1);
    let bias = _mm256_set1_epi32(127);
    let s1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
    let s2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
    _mm256_mul_ps(_mm256_mul_ps(y, s1), s2)
}

/// Horizontal sum of 8 f32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Horizontal maximum of 8 f32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn hmax_ps(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_max_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Up to 7 trailing elements in a register: `src` followed by `pad`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn load_tail(src: &[f32], pad: f32) -> __m256 {
    debug_assert!(src.len() < 8);
    let mut buf = [pad; 8];
    buf[..src.len()].copy_from_slice(src);
    // SAFETY: `buf` holds 8 f32.
    unsafe { _mm256_loadu_ps(buf.as_ptr()) }
}

/// Stores the first `dst.len()` (< 8) lanes of `v`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn store_tail(dst: &mut [f32], v: __m256) {
    let mut buf = [0.0f32; 8];
    // SAFETY: `buf` holds 8 f32.
    unsafe { _mm256_storeu_ps(buf.as_mut_ptr(), v) };
    let n = dst.len();
    dst.copy_from_slice(&buf[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::exp_check::check_exp;
    use crate::arch::x86_64::Avx2Token;

    #[test]
    fn exp_accuracy_and_edges() {
        if Avx2Token::new().is_none() {
            std::eprintln!("skipped: this CPU has no AVX2 tier");
            return;
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run(x: [f32; 8]) -> [f32; 8] {
            let mut out = [0.0f32; 8];
            // SAFETY: both arrays hold 8 f32.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), exp_ps(_mm256_loadu_ps(x.as_ptr()))) };
            out
        }
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        check_exp("avx2", |x| unsafe { run(x) });
    }
}
