//! Vectorised `exp` for the NEON tier (algorithm and accuracy: `arch::vexp`),
//! and the tail helpers the elementwise kernels share.

use core::arch::aarch64::*;

use crate::arch::vexp::{EXP_HI, EXP_LO, LN2_HI, LN2_LO, LOG2E, P};

/// `exp` of four lanes.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn exp_f32x4(x: float32x4_t) -> float32x4_t {
    // FMIN/FMAX return NaN when either operand is NaN: NaN survives the clamp.
    let x = vmaxq_f32(vdupq_n_f32(EXP_LO), vminq_f32(vdupq_n_f32(EXP_HI), x));
    let n = vrndnq_f32(vmulq_n_f32(x, LOG2E));
    let r = vfmsq_f32(x, n, vdupq_n_f32(LN2_HI));
    let r = vfmsq_f32(r, n, vdupq_n_f32(LN2_LO));
    let mut p = vdupq_n_f32(P[0]);
    for &c in &P[1..] {
        p = vfmaq_f32(vdupq_n_f32(c), p, r);
    }
    let y = vaddq_f32(vfmaq_f32(r, p, vmulq_f32(r, r)), vdupq_n_f32(1.0));
    // 2^n as 2^n1 * 2^n2 with n1 = floor(n / 2): both exponents stay in the
    // normal range for n in -150..=128, so y * 2^n1 is exact and the second
    // product rounds once (overflow to +inf, gradual underflow).
    let ni = vcvtq_s32_f32(n);
    let n1 = vshrq_n_s32::<1>(ni);
    let n2 = vsubq_s32(ni, n1);
    let bias = vdupq_n_s32(127);
    let s1 = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(n1, bias)));
    let s2 = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(n2, bias)));
    vmulq_f32(vmulq_f32(y, s1), s2)
}

/// Up to 3 trailing elements in a register: `src` followed by `pad`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn load_tail(src: &[f32], pad: f32) -> float32x4_t {
    debug_assert!(src.len() < 4);
    let mut buf = [pad; 4];
    buf[..src.len()].copy_from_slice(src);
    // SAFETY: `buf` holds 4 f32.
    unsafe { vld1q_f32(buf.as_ptr()) }
}

/// Stores the first `dst.len()` (< 4) lanes of `v`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn store_tail(dst: &mut [f32], v: float32x4_t) {
    let mut buf = [0.0f32; 4];
    // SAFETY: `buf` holds 4 f32.
    unsafe { vst1q_f32(buf.as_mut_ptr(), v) };
    let n = dst.len();
    dst.copy_from_slice(&buf[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::aarch64::NeonToken;
    use crate::arch::vexp::VEXP_MAX_REL_ERR;

    fn exp4(x: [f32; 4]) -> [f32; 4] {
        #[target_feature(enable = "neon")]
        unsafe fn run(x: [f32; 4]) -> [f32; 4] {
            let mut out = [0.0f32; 4];
            // SAFETY: both arrays hold 4 f32.
            unsafe { vst1q_f32(out.as_mut_ptr(), exp_f32x4(vld1q_f32(x.as_ptr()))) };
            out
        }
        // SAFETY: the callers checked `NeonToken::new()`.
        unsafe { run(x) }
    }

    #[test]
    fn exp_accuracy_and_edges() {
        if NeonToken::new().is_none() {
            return;
        }
        let (lo, hi) = (-87.3f32, 88.7f32);
        // Fewer points than on x86: this runs under qemu in CI.
        let steps = 1 << 18;
        let mut worst = 0.0f64;
        for c in 0..steps / 4 {
            let x: [f32; 4] =
                core::array::from_fn(|j| lo + (hi - lo) * ((c * 4 + j) as f32 / steps as f32));
            let y = exp4(x);
            for j in 0..4 {
                let want = (x[j] as f64).exp();
                worst = worst.max(((y[j] as f64 - want) / want).abs());
            }
        }
        std::eprintln!("neon exp: worst relative error {worst:e}");
        assert!(worst <= VEXP_MAX_REL_ERR, "{worst:e}");
        let e = exp4([f32::NEG_INFINITY, -200.0, f32::INFINITY, 100.0]);
        assert_eq!(e, [0.0, 0.0, f32::INFINITY, f32::INFINITY]);
        let e = exp4([f32::NAN, 0.0, -100.0, 88.72]);
        assert!(e[0].is_nan());
        assert_eq!(e[1], 1.0);
        let sub = (-100.0f64).exp();
        assert!(
            (e[2] as f64 - sub).abs() <= f32::from_bits(1) as f64,
            "{}",
            e[2]
        );
        let big = (88.72f32 as f64).exp();
        assert!(e[3].is_finite() && (e[3] as f64 / big - 1.0).abs() <= VEXP_MAX_REL_ERR);
    }
}
