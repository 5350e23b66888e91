//! AVX2 softmax: the reference's three passes (max, `exp(x - max)` and its sum,
//! scale by `1 / sum`) with the vectorised `exp` of `math.rs`.

use core::arch::x86_64::*;

use super::math::{exp_ps, hmax_ps, hsum_ps, load_tail, store_tail};

pub(super) fn softmax_f32(x: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    // SAFETY: reachable only through `table(Avx2Token)`.
    unsafe { softmax_f32_impl(x) }
}

/// # Safety
/// The CPU has AVX2 and FMA; `x` is not empty.
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_f32_impl(x: &mut [f32]) {
    let n = x.len();
    let main = n / 8 * 8;
    let p = x.as_mut_ptr();
    let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= main <= n.
        m = _mm256_max_ps(m, unsafe { _mm256_loadu_ps(p.add(i)) });
        i += 8;
    }
    let max = x[main..].iter().fold(hmax_ps(m), |a, &b| a.max(b));
    let mv = _mm256_set1_ps(max);
    let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= main <= n.
        unsafe {
            let e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), mv));
            _mm256_storeu_ps(p.add(i), e);
            if i & 8 == 0 {
                s0 = _mm256_add_ps(s0, e);
            } else {
                s1 = _mm256_add_ps(s1, e);
            }
        }
        i += 8;
    }
    let mut sum = hsum_ps(_mm256_add_ps(s0, s1));
    if main < n {
        // -inf padding: exp(-inf - max) = 0 adds nothing (a non-finite max
        // makes every output NaN anyway, as in the reference).
        let e = exp_ps(_mm256_sub_ps(load_tail(&x[main..], f32::NEG_INFINITY), mv));
        store_tail(&mut x[main..], e);
        sum += x[main..].iter().sum::<f32>();
    }
    let inv = 1.0 / sum;
    let iv = _mm256_set1_ps(inv);
    let p = x.as_mut_ptr();
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= main <= n.
        unsafe { _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), iv)) };
        i += 8;
    }
    for v in &mut x[main..] {
        *v *= inv;
    }
}
