//! AVX2 attention helpers over f32 and f16 rows: dot products (scores), `axpy`
//! (weighted sum of values) and f16 widening. All bit-identical to the scalar
//! kernels: the dot products keep the reference's eight partial sums in one
//! register (element `i` in lane `i % 8`, multiply then add, no FMA) and its
//! final reduction order; `axpy` rounds the product before adding.

use core::arch::x86_64::*;

use half::f16;

use crate::scalar::{reduce_dot_lanes, DOT_LANES};

const _: () = assert!(DOT_LANES == 8, "one partial sum per AVX2 lane");

pub(super) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx2Token)`; lengths checked.
    unsafe { dot_f32_impl(a, b) }
}

/// # Safety
/// The CPU has AVX2; `a.len() == b.len()`.
#[target_feature(enable = "avx2")]
unsafe fn dot_f32_impl(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let main = n / 8 * 8;
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= main <= n for both rows.
        let (av, bv) = unsafe {
            (
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
            )
        };
        acc = _mm256_add_ps(acc, _mm256_mul_ps(av, bv));
        i += 8;
    }
    let mut lanes = [0.0f32; DOT_LANES];
    // SAFETY: `lanes` holds 8 f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
    for j in main..n {
        lanes[j % DOT_LANES] += a[j] * b[j];
    }
    reduce_dot_lanes(lanes)
}

pub(super) fn dot_f16_f32(w: &[f16], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len(), "dot_f16_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx2Token)`; lengths checked.
    unsafe { dot_f16_f32_impl(w, x) }
}

/// # Safety
/// The CPU has AVX2 and F16C; `w.len() == x.len()`.
#[target_feature(enable = "avx2,f16c")]
unsafe fn dot_f16_f32_impl(w: &[f16], x: &[f32]) -> f32 {
    let n = w.len();
    let main = n / 8 * 8;
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= main <= n; 8 f16 are one unaligned 128-bit load.
        let (wv, xv) = unsafe {
            (
                _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(i) as *const __m128i)),
                _mm256_loadu_ps(x.as_ptr().add(i)),
            )
        };
        acc = _mm256_add_ps(acc, _mm256_mul_ps(wv, xv));
        i += 8;
    }
    let mut lanes = [0.0f32; DOT_LANES];
    // SAFETY: `lanes` holds 8 f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
    for j in main..n {
        lanes[j % DOT_LANES] += w[j].to_f32() * x[j];
    }
    reduce_dot_lanes(lanes)
}

pub(super) fn axpy_f32(acc: &mut [f32], scale: f32, x: &[f32]) {
    assert_eq!(acc.len(), x.len(), "axpy_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx2Token)`; lengths checked.
    unsafe { axpy_f32_impl(acc, scale, x) }
}

/// # Safety
/// The CPU has AVX2; `acc.len() == x.len()`.
#[target_feature(enable = "avx2")]
unsafe fn axpy_f32_impl(acc: &mut [f32], scale: f32, x: &[f32]) {
    let n = acc.len();
    let main = n / 8 * 8;
    let s = _mm256_set1_ps(scale);
    let (ap, xp) = (acc.as_mut_ptr(), x.as_ptr());
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= main <= n for both rows.
        unsafe {
            let r = _mm256_add_ps(
                _mm256_loadu_ps(ap.add(i)),
                _mm256_mul_ps(s, _mm256_loadu_ps(xp.add(i))),
            );
            _mm256_storeu_ps(ap.add(i), r);
        }
        i += 8;
    }
    for j in main..n {
        acc[j] += scale * x[j];
    }
}

pub(super) fn axpy_f16_f32(acc: &mut [f32], scale: f32, x: &[f16]) {
    assert_eq!(acc.len(), x.len(), "axpy_f16_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx2Token)`; lengths checked.
    unsafe { axpy_f16_f32_impl(acc, scale, x) }
}

/// # Safety
/// The CPU has AVX2 and F16C; `acc.len() == x.len()`.
#[target_feature(enable = "avx2,f16c")]
unsafe fn axpy_f16_f32_impl(acc: &mut [f32], scale: f32, x: &[f16]) {
    let n = acc.len();
    let main = n / 8 * 8;
    let s = _mm256_set1_ps(scale);
    let (ap, xp) = (acc.as_mut_ptr(), x.as_ptr());
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= main <= n; 8 f16 are one unaligned 128-bit load.
        unsafe {
            let xv = _mm256_cvtph_ps(_mm_loadu_si128(xp.add(i) as *const __m128i));
            let r = _mm256_add_ps(_mm256_loadu_ps(ap.add(i)), _mm256_mul_ps(s, xv));
            _mm256_storeu_ps(ap.add(i), r);
        }
        i += 8;
    }
    for j in main..n {
        acc[j] += scale * x[j].to_f32();
    }
}

pub(super) fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "f16_to_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx2Token)`; lengths checked.
    unsafe { f16_to_f32_impl(src, dst) }
}

/// # Safety
/// The CPU has AVX2 and F16C; `src.len() == dst.len()`.
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16_to_f32_impl(src: &[f16], dst: &mut [f32]) {
    let n = src.len();
    let main = n / 8 * 8;
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= main <= n for both slices.
        unsafe {
            let v = _mm256_cvtph_ps(_mm_loadu_si128(sp.add(i) as *const __m128i));
            _mm256_storeu_ps(dp.add(i), v);
        }
        i += 8;
    }
    for j in main..n {
        dst[j] = src[j].to_f32();
    }
}
