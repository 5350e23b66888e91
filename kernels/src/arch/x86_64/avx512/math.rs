//! Vectorised `exp` for the AVX-512 tier (algorithm and accuracy:
//! `arch::vexp`; the scaling by `2^n` is one `vscalefps`, which rounds once and
//! overflows / underflows like an exact product), and the tail mask helper.

use core::arch::x86_64::*;

use crate::arch::vexp::{EXP_HI, EXP_LO, LN2_HI, LN2_LO, LOG2E, P};

/// `exp` of sixteen lanes.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn exp_ps(x: __m512) -> __m512 {
    // `min/max(c, x)` return `x` when it is NaN (the second operand).
    let x = _mm512_max_ps(
        _mm512_set1_ps(EXP_LO),
        _mm512_min_ps(_mm512_set1_ps(EXP_HI), x),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(P[0]);
    for &c in &P[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let y = _mm512_add_ps(
        _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r),
        _mm512_set1_ps(1.0),
    );
    _mm512_scalef_ps(y, n)
}

/// The mask of the first `n` (<= 16) lanes.
#[inline]
pub(super) fn first_lanes(n: usize) -> __mmask16 {
    debug_assert!(n <= 16);
    ((1u32 << n) - 1) as __mmask16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::exp_check::check_exp;
    use crate::arch::x86_64::Avx512Token;

    #[test]
    fn exp_accuracy_and_edges() {
        if Avx512Token::new().is_none() {
            std::eprintln!("skipped: this CPU has no AVX-512 tier");
            return;
        }
        #[target_feature(enable = "avx512f")]
        unsafe fn run(x: [f32; 16]) -> [f32; 16] {
            let mut out = [0.0f32; 16];
            // SAFETY: both arrays hold 16 f32.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), exp_ps(_mm512_loadu_ps(x.as_ptr()))) };
            out
        }
        // SAFETY: the CPU has AVX-512F (checked above).
        check_exp("avx512", |x| unsafe { run(x) });
    }
}
