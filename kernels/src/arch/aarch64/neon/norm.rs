//! NEON RMSNorm. Same contract and formula as `scalar::rmsnorm_f32`: the mean of
//! squares accumulated in f64 (2 + 2 lanes; only the summation order differs
//! from the reference), then `x * inv * w` with the reference's two roundings.

use core::arch::aarch64::*;

pub(super) fn rmsnorm_f32(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    assert!(!x.is_empty(), "rmsnorm_f32: empty input");
    assert!(
        out.len() == x.len() && weight.len() == x.len(),
        "rmsnorm_f32: length mismatch"
    );
    // SAFETY: reachable only through `table(NeonToken)`; lengths checked above.
    unsafe { rmsnorm_f32_impl(out, x, weight, eps) }
}

/// # Safety
/// The CPU has NEON; `out`, `x`, `weight` have the same length.
#[target_feature(enable = "neon")]
unsafe fn rmsnorm_f32_impl(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let n = x.len();
    let main = n / 4 * 4;
    let xp = x.as_ptr();
    let (mut a0, mut a1) = (vdupq_n_f64(0.0), vdupq_n_f64(0.0));
    let mut i = 0;
    while i < main {
        // SAFETY: i + 4 <= main <= n.
        let v = unsafe { vld1q_f32(xp.add(i)) };
        let lo = vcvt_f64_f32(vget_low_f32(v));
        let hi = vcvt_high_f64_f32(v);
        // A square of an f32 is exact in f64: fused = multiply-then-add.
        a0 = vfmaq_f64(a0, lo, lo);
        a1 = vfmaq_f64(a1, hi, hi);
        i += 4;
    }
    let mut ss = vaddvq_f64(vaddq_f64(a0, a1));
    for &v in &x[main..] {
        ss += v as f64 * v as f64;
    }
    let ss = ss / n as f64;
    let inv = (1.0 / libm::sqrt(ss + eps as f64)) as f32;
    let (op, wp) = (out.as_mut_ptr(), weight.as_ptr());
    let mut i = 0;
    while i < main {
        // SAFETY: i + 4 <= main <= n for all three slices.
        unsafe {
            let v = vmulq_n_f32(vld1q_f32(xp.add(i)), inv);
            vst1q_f32(op.add(i), vmulq_f32(v, vld1q_f32(wp.add(i))));
        }
        i += 4;
    }
    for j in main..n {
        out[j] = x[j] * inv * weight[j];
    }
}
