//! AVX-512 `axpy` (weighted sum of values) and f16 widening, bit-identical to
//! the scalar kernels (the product is rounded before the add; widening is
//! exact). The dot products stay the AVX2 ones: the reference's eight partial
//! sums fill exactly one 256-bit register.

use core::arch::x86_64::*;

use half::f16;

use super::math::first_lanes;

pub(super) fn axpy_f32(acc: &mut [f32], scale: f32, x: &[f32]) {
    assert_eq!(acc.len(), x.len(), "axpy_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx512Token)`; lengths checked.
    unsafe { axpy_f32_impl(acc, scale, x) }
}

/// # Safety
/// The CPU has AVX-512F; `acc.len() == x.len()`.
#[target_feature(enable = "avx512f")]
unsafe fn axpy_f32_impl(acc: &mut [f32], scale: f32, x: &[f32]) {
    let n = acc.len();
    let s = _mm512_set1_ps(scale);
    let (ap, xp) = (acc.as_mut_ptr(), x.as_ptr());
    let mut i = 0;
    while i < n {
        let k = first_lanes((n - i).min(16));
        // SAFETY: masked loads and stores touch only elements i..min(i + 16, n).
        unsafe {
            let xv = _mm512_maskz_loadu_ps(k, xp.add(i));
            let r = _mm512_add_ps(_mm512_maskz_loadu_ps(k, ap.add(i)), _mm512_mul_ps(s, xv));
            _mm512_mask_storeu_ps(ap.add(i), k, r);
        }
        i += 16;
    }
}

pub(super) fn axpy_f16_f32(acc: &mut [f32], scale: f32, x: &[f16]) {
    assert_eq!(acc.len(), x.len(), "axpy_f16_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx512Token)`; lengths checked.
    unsafe { axpy_f16_f32_impl(acc, scale, x) }
}

/// # Safety
/// The CPU has AVX-512F/BW/VL; `acc.len() == x.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn axpy_f16_f32_impl(acc: &mut [f32], scale: f32, x: &[f16]) {
    let n = acc.len();
    let s = _mm512_set1_ps(scale);
    let (ap, xp) = (acc.as_mut_ptr(), x.as_ptr() as *const i16);
    let mut i = 0;
    while i < n {
        let k = first_lanes((n - i).min(16));
        // SAFETY: masked loads and stores touch only elements i..min(i + 16, n)
        // (f16 is a 2-byte value: 16 of them are one 256-bit masked load).
        unsafe {
            let xv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, xp.add(i)));
            let r = _mm512_add_ps(_mm512_maskz_loadu_ps(k, ap.add(i)), _mm512_mul_ps(s, xv));
            _mm512_mask_storeu_ps(ap.add(i), k, r);
        }
        i += 16;
    }
}

pub(super) fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "f16_to_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx512Token)`; lengths checked.
    unsafe { f16_to_f32_impl(src, dst) }
}

/// # Safety
/// The CPU has AVX-512F/BW/VL; `src.len() == dst.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn f16_to_f32_impl(src: &[f16], dst: &mut [f32]) {
    let n = src.len();
    let (sp, dp) = (src.as_ptr() as *const i16, dst.as_mut_ptr());
    let mut i = 0;
    while i < n {
        let k = first_lanes((n - i).min(16));
        // SAFETY: masked loads and stores touch only elements i..min(i + 16, n).
        unsafe {
            let v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, sp.add(i)));
            _mm512_mask_storeu_ps(dp.add(i), k, v);
        }
        i += 16;
    }
}
