//! NEON gated activations with the vectorised `exp` of `math.rs`; the formulas
//! and rounding steps of the x86 tiers: SiLU `g / (1 + exp(-g)) * u`, GELU
//! (tanh approximation) as the equal `v / (1 + exp(-2 z))`,
//! `z = sqrt(2/pi) (v + 0.044715 v^3)` (no cancellation for negative `z`).

use core::arch::aarch64::*;

use super::math::{exp_f32x4, load_tail, store_tail};

/// `sqrt(2 / pi)`, as in `scalar::gelu_tanh`.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh approximation.
const GELU_CUBIC: f32 = 0.044_715;

#[inline]
#[target_feature(enable = "neon")]
fn silu_f32x4(g: float32x4_t, u: float32x4_t) -> float32x4_t {
    let e = exp_f32x4(vnegq_f32(g));
    vmulq_f32(vdivq_f32(g, vaddq_f32(vdupq_n_f32(1.0), e)), u)
}

#[inline]
#[target_feature(enable = "neon")]
fn gelu_f32x4(v: float32x4_t, u: float32x4_t) -> float32x4_t {
    let c3 = vmulq_f32(vmulq_f32(vmulq_n_f32(v, GELU_CUBIC), v), v);
    let z = vmulq_n_f32(vaddq_f32(v, c3), SQRT_2_OVER_PI);
    let e = exp_f32x4(vmulq_n_f32(z, -2.0));
    vmulq_f32(vdivq_f32(v, vaddq_f32(vdupq_n_f32(1.0), e)), u)
}

/// Applies `f(gate, up)` to every lane (the tail through a padded register).
#[inline]
#[target_feature(enable = "neon")]
fn gate_map(gate: &mut [f32], up: &[f32], f: impl Fn(float32x4_t, float32x4_t) -> float32x4_t) {
    let n = gate.len();
    let main = n / 4 * 4;
    let (gp, upp) = (gate.as_mut_ptr(), up.as_ptr());
    let mut i = 0;
    while i < main {
        // SAFETY: i + 4 <= main <= n = up.len() (checked by the callers).
        unsafe { vst1q_f32(gp.add(i), f(vld1q_f32(gp.add(i)), vld1q_f32(upp.add(i)))) };
        i += 4;
    }
    if main < n {
        let r = f(load_tail(&gate[main..], 0.0), load_tail(&up[main..], 0.0));
        store_tail(&mut gate[main..], r);
    }
}

pub(super) fn silu_gate_f32(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_gate_f32: length mismatch");
    // SAFETY: reachable only through `table(NeonToken)`; lengths checked.
    unsafe { silu_impl(gate, up) }
}

/// # Safety
/// The CPU has NEON; equal lengths.
#[target_feature(enable = "neon")]
unsafe fn silu_impl(gate: &mut [f32], up: &[f32]) {
    gate_map(gate, up, |g, u| silu_f32x4(g, u));
}

pub(super) fn gelu_gate_f32(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "gelu_gate_f32: length mismatch");
    // SAFETY: reachable only through `table(NeonToken)`; lengths checked.
    unsafe { gelu_impl(gate, up) }
}

/// # Safety
/// The CPU has NEON; equal lengths.
#[target_feature(enable = "neon")]
unsafe fn gelu_impl(gate: &mut [f32], up: &[f32]) {
    gate_map(gate, up, |v, u| gelu_f32x4(v, u));
}
