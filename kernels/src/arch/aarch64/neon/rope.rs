//! NEON RoPE rotation by a precomputed cos/sin table. Bit-identical to
//! `scalar::rope_f32` (products rounded, then added or subtracted; no FMA).

use core::arch::aarch64::*;

use crate::scalar::{check_rope, RopeLayout};

pub(super) fn rope_f32(
    x: &mut [f32],
    head_dim: usize,
    cos: &[f32],
    sin: &[f32],
    layout: RopeLayout,
) {
    let half = check_rope(x.len(), head_dim, cos, sin);
    // SAFETY: reachable only through `table(NeonToken)`; the contract checked
    // above puts every rotated pair of every head inside `x`.
    unsafe {
        match layout {
            RopeLayout::Interleaved => rope_interleaved(x, head_dim, cos, sin, half),
            RopeLayout::Half => rope_half(x, head_dim, cos, sin, half),
        }
    }
}

/// `(x_a, x_b)` rotated: `(a c - b s, a s + b c)`.
#[inline]
#[target_feature(enable = "neon")]
fn rotate(a: float32x4_t, b: float32x4_t, c: float32x4_t, s: float32x4_t) -> float32x4x2_t {
    float32x4x2_t(
        vsubq_f32(vmulq_f32(a, c), vmulq_f32(b, s)),
        vaddq_f32(vmulq_f32(a, s), vmulq_f32(b, c)),
    )
}

/// Pairs `(2i, 2i + 1)`: `ld2`/`st2` (de)interleave four pairs per step.
///
/// # Safety
/// The CPU has NEON; `check_rope` accepted the arguments, `half == cos.len()`.
#[target_feature(enable = "neon")]
unsafe fn rope_interleaved(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], half: usize) {
    let main = half / 4 * 4;
    for head in x.chunks_exact_mut(head_dim) {
        let hp = head.as_mut_ptr();
        let mut i = 0;
        while i < main {
            // SAFETY: i + 4 <= half = cos.len() = sin.len(), and
            // 2i + 8 <= 2 half <= head_dim.
            unsafe {
                let c = vld1q_f32(cos.as_ptr().add(i));
                let s = vld1q_f32(sin.as_ptr().add(i));
                let v = vld2q_f32(hp.add(2 * i));
                vst2q_f32(hp.add(2 * i), rotate(v.0, v.1, c, s));
            }
            i += 4;
        }
        for i in main..half {
            let (x0, x1) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = x0 * cos[i] - x1 * sin[i];
            head[2 * i + 1] = x0 * sin[i] + x1 * cos[i];
        }
    }
}

/// Pairs `(i, i + half)`: four pairs per step.
///
/// # Safety
/// The CPU has NEON; `check_rope` accepted the arguments, `half == cos.len()`.
#[target_feature(enable = "neon")]
unsafe fn rope_half(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], half: usize) {
    let main = half / 4 * 4;
    for head in x.chunks_exact_mut(head_dim) {
        let hp = head.as_mut_ptr();
        let mut i = 0;
        while i < main {
            // SAFETY: i + 4 <= half, and half + i + 4 <= 2 half <= head_dim.
            unsafe {
                let c = vld1q_f32(cos.as_ptr().add(i));
                let s = vld1q_f32(sin.as_ptr().add(i));
                let r = rotate(vld1q_f32(hp.add(i)), vld1q_f32(hp.add(i + half)), c, s);
                vst1q_f32(hp.add(i), r.0);
                vst1q_f32(hp.add(i + half), r.1);
            }
            i += 4;
        }
        for i in main..half {
            let (x0, x1) = (head[i], head[i + half]);
            head[i] = x0 * cos[i] - x1 * sin[i];
            head[i + half] = x0 * sin[i] + x1 * cos[i];
        }
    }
}
