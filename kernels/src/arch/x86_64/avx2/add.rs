//! AVX2 residual add (exact: one rounding per element, like the reference).

use core::arch::x86_64::*;

pub(super) fn add_f32(acc: &mut [f32], x: &[f32]) {
    assert_eq!(acc.len(), x.len(), "add_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx2Token)`; lengths checked.
    unsafe { add_f32_impl(acc, x) }
}

/// # Safety
/// The CPU has AVX2; `acc.len() == x.len()`.
#[target_feature(enable = "avx2")]
unsafe fn add_f32_impl(acc: &mut [f32], x: &[f32]) {
    let n = acc.len();
    let main = n / 8 * 8;
    let (ap, xp) = (acc.as_mut_ptr(), x.as_ptr());
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= main <= n for both slices.
        unsafe {
            let r = _mm256_add_ps(_mm256_loadu_ps(ap.add(i)), _mm256_loadu_ps(xp.add(i)));
            _mm256_storeu_ps(ap.add(i), r);
        }
        i += 8;
    }
    for j in main..n {
        acc[j] += x[j];
    }
}
