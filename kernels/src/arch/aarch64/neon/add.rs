//! NEON residual add (exact: one rounding per element, like the reference).

use core::arch::aarch64::*;

pub(super) fn add_f32(acc: &mut [f32], x: &[f32]) {
    assert_eq!(acc.len(), x.len(), "add_f32: length mismatch");
    // SAFETY: reachable only through `table(NeonToken)`; lengths checked.
    unsafe { add_f32_impl(acc, x) }
}

/// # Safety
/// The CPU has NEON; `acc.len() == x.len()`.
#[target_feature(enable = "neon")]
unsafe fn add_f32_impl(acc: &mut [f32], x: &[f32]) {
    let n = acc.len();
    let main = n / 4 * 4;
    let (ap, xp) = (acc.as_mut_ptr(), x.as_ptr());
    let mut i = 0;
    while i < main {
        // SAFETY: i + 4 <= main <= n for both slices.
        unsafe {
            vst1q_f32(
                ap.add(i),
                vaddq_f32(vld1q_f32(ap.add(i)), vld1q_f32(xp.add(i))),
            )
        };
        i += 4;
    }
    for j in main..n {
        acc[j] += x[j];
    }
}
