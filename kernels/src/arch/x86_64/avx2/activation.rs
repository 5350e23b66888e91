//! AVX2 gated activations with the vectorised `exp` of `math.rs`.
//!
//! SiLU: `g / (1 + exp(-g)) * u`, the reference's formula and rounding steps.
//! GELU (tanh approximation): `0.5 v (1 + tanh z)` is computed as the equal
//! `v / (1 + exp(-2 z))` (= `v sigmoid(2 z)`), `z = sqrt(2/pi) (v + 0.044715 v^3)`
//! with the reference's rounding steps; the sigmoid form has no cancellation
//! for negative `z`, where `1 + tanh z` loses the reference's relative accuracy.

use core::arch::x86_64::*;

use super::math::{exp_ps, load_tail, store_tail};

/// `sqrt(2 / pi)`, as in `scalar::gelu_tanh`.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh approximation.
const GELU_CUBIC: f32 = 0.044_715;

#[inline]
#[target_feature(enable = "avx2,fma")]
fn silu_ps(g: __m256, u: __m256) -> __m256 {
    let one = _mm256_set1_ps(1.0);
    let e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), g));
    _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), u)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn gelu_ps(v: __m256, u: __m256) -> __m256 {
    let c3 = _mm256_mul_ps(
        _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(GELU_CUBIC), v), v),
        v,
    );
    let z = _mm256_mul_ps(_mm256_set1_ps(SQRT_2_OVER_PI), _mm256_add_ps(v, c3));
    let e = exp_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0), z));
    _mm256_mul_ps(_mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0), e)), u)
}

/// Applies `f(gate, up)` to every lane (the tail through a padded register).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn gate_map(gate: &mut [f32], up: &[f32], f: impl Fn(__m256, __m256) -> __m256) {
    let n = gate.len();
    let main = n / 8 * 8;
    let (gp, upp) = (gate.as_mut_ptr(), up.as_ptr());
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= main <= n = up.len() (checked by the callers).
        unsafe {
            let r = f(_mm256_loadu_ps(gp.add(i)), _mm256_loadu_ps(upp.add(i)));
            _mm256_storeu_ps(gp.add(i), r);
        }
        i += 8;
    }
    if main < n {
        let r = f(load_tail(&gate[main..], 0.0), load_tail(&up[main..], 0.0));
        store_tail(&mut gate[main..], r);
    }
}

pub(super) fn silu_gate_f32(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_gate_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx2Token)`; lengths checked.
    unsafe { silu_impl(gate, up) }
}

/// # Safety
/// The CPU has AVX2 and FMA; equal lengths.
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_impl(gate: &mut [f32], up: &[f32]) {
    gate_map(gate, up, |g, u| silu_ps(g, u));
}

pub(super) fn gelu_gate_f32(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "gelu_gate_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx2Token)`; lengths checked.
    unsafe { gelu_impl(gate, up) }
}

/// # Safety
/// The CPU has AVX2 and FMA; equal lengths.
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_impl(gate: &mut [f32], up: &[f32]) {
    gate_map(gate, up, |v, u| gelu_ps(v, u));
}
