//! AVX-512 softmax: the reference's three passes (max, `exp(x - max)` and its
//! sum, scale by `1 / sum`) with the vectorised `exp` of `math.rs`; tails use
//! masked loads and stores.

use core::arch::x86_64::*;

use super::math::{exp_ps, first_lanes};

pub(super) fn softmax_f32(x: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    // SAFETY: reachable only through `table(Avx512Token)`.
    unsafe { softmax_f32_impl(x) }
}

/// # Safety
/// The CPU has AVX-512F; `x` is not empty.
#[target_feature(enable = "avx512f")]
unsafe fn softmax_f32_impl(x: &mut [f32]) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut m = ninf;
    let mut i = 0;
    while i < n {
        let k = first_lanes((n - i).min(16));
        // SAFETY: the mask covers only elements i..min(i + 16, n); the other
        // lanes are -inf, which never raises the maximum.
        m = _mm512_max_ps(m, unsafe { _mm512_mask_loadu_ps(ninf, k, p.add(i)) });
        i += 16;
    }
    let mv = _mm512_set1_ps(_mm512_reduce_max_ps(m));
    let mut s = _mm512_setzero_ps();
    let mut i = 0;
    while i < n {
        let k = first_lanes((n - i).min(16));
        // SAFETY: masked loads and stores touch only elements i..min(i + 16, n).
        unsafe {
            let e = exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, p.add(i)), mv));
            _mm512_mask_storeu_ps(p.add(i), k, e);
            s = _mm512_mask_add_ps(s, k, s, e);
        }
        i += 16;
    }
    let iv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(s));
    let mut i = 0;
    while i < n {
        let k = first_lanes((n - i).min(16));
        // SAFETY: masked loads and stores touch only elements i..min(i + 16, n).
        unsafe {
            let r = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p.add(i)), iv);
            _mm512_mask_storeu_ps(p.add(i), k, r);
        }
        i += 16;
    }
}
