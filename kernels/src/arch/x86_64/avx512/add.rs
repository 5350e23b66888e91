//! AVX-512 residual add (exact: one rounding per element, like the reference).

use core::arch::x86_64::*;

use super::math::first_lanes;

pub(super) fn add_f32(acc: &mut [f32], x: &[f32]) {
    assert_eq!(acc.len(), x.len(), "add_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx512Token)`; lengths checked.
    unsafe { add_f32_impl(acc, x) }
}

/// # Safety
/// The CPU has AVX-512F; `acc.len() == x.len()`.
#[target_feature(enable = "avx512f")]
unsafe fn add_f32_impl(acc: &mut [f32], x: &[f32]) {
    let n = acc.len();
    let (ap, xp) = (acc.as_mut_ptr(), x.as_ptr());
    let mut i = 0;
    while i < n {
        let k = first_lanes((n - i).min(16));
        // SAFETY: masked loads and stores touch only elements i..min(i + 16, n).
        unsafe {
            let r = _mm512_add_ps(
                _mm512_maskz_loadu_ps(k, ap.add(i)),
                _mm512_maskz_loadu_ps(k, xp.add(i)),
            );
            _mm512_mask_storeu_ps(ap.add(i), k, r);
        }
        i += 16;
    }
}
