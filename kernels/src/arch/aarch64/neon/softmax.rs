//! NEON softmax: the reference's three passes (max, `exp(x - max)` and its sum,
//! scale by `1 / sum`) with the vectorised `exp` of `math.rs`.

use core::arch::aarch64::*;

use super::math::{exp_f32x4, load_tail, store_tail};

pub(super) fn softmax_f32(x: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    // SAFETY: reachable only through `table(NeonToken)`.
    unsafe { softmax_f32_impl(x) }
}

/// # Safety
/// The CPU has NEON; `x` is not empty.
#[target_feature(enable = "neon")]
unsafe fn softmax_f32_impl(x: &mut [f32]) {
    let n = x.len();
    let main = n / 4 * 4;
    let p = x.as_mut_ptr();
    let mut m = vdupq_n_f32(f32::NEG_INFINITY);
    let mut i = 0;
    while i < main {
        // SAFETY: i + 4 <= main <= n.
        m = vmaxq_f32(m, unsafe { vld1q_f32(p.add(i)) });
        i += 4;
    }
    let max = x[main..].iter().fold(vmaxvq_f32(m), |a, &b| a.max(b));
    let mv = vdupq_n_f32(max);
    let (mut s0, mut s1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mut i = 0;
    while i < main {
        // SAFETY: i + 4 <= main <= n.
        unsafe {
            let e = exp_f32x4(vsubq_f32(vld1q_f32(p.add(i)), mv));
            vst1q_f32(p.add(i), e);
            if i & 4 == 0 {
                s0 = vaddq_f32(s0, e);
            } else {
                s1 = vaddq_f32(s1, e);
            }
        }
        i += 4;
    }
    let mut sum = vaddvq_f32(vaddq_f32(s0, s1));
    if main < n {
        // -inf padding: exp(-inf - max) = 0 adds nothing (a non-finite max
        // makes every output NaN anyway, as in the reference).
        let e = exp_f32x4(vsubq_f32(load_tail(&x[main..], f32::NEG_INFINITY), mv));
        store_tail(&mut x[main..], e);
        sum += x[main..].iter().sum::<f32>();
    }
    let inv = 1.0 / sum;
    let p = x.as_mut_ptr();
    let mut i = 0;
    while i < main {
        // SAFETY: i + 4 <= main <= n.
        unsafe { vst1q_f32(p.add(i), vmulq_n_f32(vld1q_f32(p.add(i)), inv)) };
        i += 4;
    }
    for v in &mut x[main..] {
        *v *= inv;
    }
}
