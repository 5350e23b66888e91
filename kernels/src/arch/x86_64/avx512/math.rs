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
    use crate::arch::vexp::VEXP_MAX_REL_ERR;
    use crate::arch::x86_64::Avx512Token;

    fn exp16(x: [f32; 16]) -> [f32; 16] {
        #[target_feature(enable = "avx512f")]
        unsafe fn run(x: [f32; 16]) -> [f32; 16] {
            let mut out = [0.0f32; 16];
            // SAFETY: both arrays hold 16 f32.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), exp_ps(_mm512_loadu_ps(x.as_ptr()))) };
            out
        }
        // SAFETY: the callers checked `Avx512Token::new()`.
        unsafe { run(x) }
    }

    #[test]
    fn exp_accuracy_and_edges() {
        if Avx512Token::new().is_none() {
            std::eprintln!("skipped: this CPU has no AVX-512 tier");
            return;
        }
        let (lo, hi) = (-87.3f32, 88.7f32);
        let steps = 1 << 20;
        let mut worst = 0.0f64;
        for c in 0..steps / 16 {
            let x: [f32; 16] =
                core::array::from_fn(|j| lo + (hi - lo) * ((c * 16 + j) as f32 / steps as f32));
            let y = exp16(x);
            for j in 0..16 {
                let want = (x[j] as f64).exp();
                worst = worst.max(((y[j] as f64 - want) / want).abs());
            }
        }
        std::eprintln!("avx512 exp: worst relative error {worst:e}");
        assert!(worst <= VEXP_MAX_REL_ERR, "{worst:e}");
        let mut edges = [0.0f32; 16];
        edges[..8].copy_from_slice(&[
            f32::NEG_INFINITY,
            -200.0,
            f32::INFINITY,
            100.0,
            f32::NAN,
            0.0,
            -100.0,
            88.72,
        ]);
        let e = exp16(edges);
        assert_eq!(&e[..4], &[0.0, 0.0, f32::INFINITY, f32::INFINITY]);
        assert!(e[4].is_nan());
        assert_eq!(e[5], 1.0);
        let sub = (-100.0f64).exp();
        assert!(
            (e[6] as f64 - sub).abs() <= f32::from_bits(1) as f64,
            "{}",
            e[6]
        );
        assert!(
            e[7].is_finite()
                && ((e[7] as f64 / (88.72f32 as f64).exp()) - 1.0).abs() <= VEXP_MAX_REL_ERR
        );
    }
}
