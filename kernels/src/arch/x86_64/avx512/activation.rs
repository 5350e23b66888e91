//! AVX-512 gated activations with the vectorised `exp` of `math.rs`; the
//! formulas and rounding steps of the AVX2 tier (see its `activation.rs`: GELU
//! as `v / (1 + exp(-2 z))`).

use core::arch::x86_64::*;

use super::math::{exp_ps, first_lanes};

/// `sqrt(2 / pi)`, as in `scalar::gelu_tanh`.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh approximation.
const GELU_CUBIC: f32 = 0.044_715;

#[inline]
#[target_feature(enable = "avx512f")]
fn silu_ps(g: __m512, u: __m512) -> __m512 {
    let e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g));
    _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0), e)), u)
}

#[inline]
#[target_feature(enable = "avx512f")]
fn gelu_ps(v: __m512, u: __m512) -> __m512 {
    let c3 = _mm512_mul_ps(
        _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(GELU_CUBIC), v), v),
        v,
    );
    let z = _mm512_mul_ps(_mm512_set1_ps(SQRT_2_OVER_PI), _mm512_add_ps(v, c3));
    let e = exp_ps(_mm512_mul_ps(_mm512_set1_ps(-2.0), z));
    _mm512_mul_ps(_mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0), e)), u)
}

/// Applies `f(gate, up)` to every lane, the tail with masked loads and stores.
#[inline]
#[target_feature(enable = "avx512f")]
fn gate_map(gate: &mut [f32], up: &[f32], f: impl Fn(__m512, __m512) -> __m512) {
    let n = gate.len();
    let (gp, upp) = (gate.as_mut_ptr(), up.as_ptr());
    let mut i = 0;
    while i < n {
        let k = first_lanes((n - i).min(16));
        // SAFETY: masked loads and stores touch only elements
        // i..min(i + 16, n) of both slices (equal lengths, checked by callers).
        unsafe {
            let r = f(
                _mm512_maskz_loadu_ps(k, gp.add(i)),
                _mm512_maskz_loadu_ps(k, upp.add(i)),
            );
            _mm512_mask_storeu_ps(gp.add(i), k, r);
        }
        i += 16;
    }
}

pub(super) fn silu_gate_f32(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_gate_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx512Token)`; lengths checked.
    unsafe { silu_impl(gate, up) }
}

/// # Safety
/// The CPU has AVX-512F; equal lengths.
#[target_feature(enable = "avx512f")]
unsafe fn silu_impl(gate: &mut [f32], up: &[f32]) {
    gate_map(gate, up, |g, u| silu_ps(g, u));
}

pub(super) fn gelu_gate_f32(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "gelu_gate_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx512Token)`; lengths checked.
    unsafe { gelu_impl(gate, up) }
}

/// # Safety
/// The CPU has AVX-512F; equal lengths.
#[target_feature(enable = "avx512f")]
unsafe fn gelu_impl(gate: &mut [f32], up: &[f32]) {
    gate_map(gate, up, |v, u| gelu_ps(v, u));
}
