//! AVX-512 RoPE rotation by a precomputed cos/sin table. Bit-identical to
//! `scalar::rope_f32` (products rounded, then added or subtracted; no FMA).

use core::arch::x86_64::*;

use super::math::first_lanes;
use crate::scalar::{check_rope, RopeLayout};

pub(super) fn rope_f32(
    x: &mut [f32],
    head_dim: usize,
    cos: &[f32],
    sin: &[f32],
    layout: RopeLayout,
) {
    let half = check_rope(x.len(), head_dim, cos, sin);
    // SAFETY: reachable only through `table(Avx512Token)`; the contract checked
    // above puts every rotated pair of every head inside `x`.
    unsafe {
        match layout {
            RopeLayout::Interleaved => rope_interleaved(x, head_dim, cos, sin, half),
            RopeLayout::Half => rope_half(x, head_dim, cos, sin, half),
        }
    }
}

/// Pairs `(2i, 2i + 1)`: eight pairs per register; cos/sin duplicated per pair
/// with a permute, the partner of every lane by an in-lane swap, then even
/// lanes subtract and odd lanes add.
///
/// # Safety
/// The CPU has AVX-512F; `check_rope` accepted the arguments, `half == cos.len()`.
#[target_feature(enable = "avx512f")]
unsafe fn rope_interleaved(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], half: usize) {
    let main = half / 8 * 8;
    let dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    const EVEN: __mmask16 = 0x5555;
    for head in x.chunks_exact_mut(head_dim) {
        let hp = head.as_mut_ptr();
        let mut i = 0;
        while i < main {
            // SAFETY: i + 8 <= half = cos.len() = sin.len(), and
            // 2i + 16 <= 2 half <= head_dim.
            unsafe {
                let c = _mm512_castps256_ps512(_mm256_loadu_ps(cos.as_ptr().add(i)));
                let s = _mm512_castps256_ps512(_mm256_loadu_ps(sin.as_ptr().add(i)));
                let cc = _mm512_permutexvar_ps(dup, c);
                let ss = _mm512_permutexvar_ps(dup, s);
                let v = _mm512_loadu_ps(hp.add(2 * i));
                let sw = _mm512_permute_ps::<0b10_11_00_01>(v);
                let (a, b) = (_mm512_mul_ps(v, cc), _mm512_mul_ps(sw, ss));
                // even: x0 c - x1 s; odd: x1 c + x0 s (= x0 s + x1 c).
                let r = _mm512_mask_sub_ps(_mm512_add_ps(a, b), EVEN, a, b);
                _mm512_storeu_ps(hp.add(2 * i), r);
            }
            i += 8;
        }
        for i in main..half {
            let (x0, x1) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = x0 * cos[i] - x1 * sin[i];
            head[2 * i + 1] = x0 * sin[i] + x1 * cos[i];
        }
    }
}

/// Pairs `(i, i + half)`: sixteen pairs per step, the tail masked.
///
/// # Safety
/// The CPU has AVX-512F; `check_rope` accepted the arguments, `half == cos.len()`.
#[target_feature(enable = "avx512f")]
unsafe fn rope_half(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], half: usize) {
    for head in x.chunks_exact_mut(head_dim) {
        let hp = head.as_mut_ptr();
        let mut i = 0;
        while i < half {
            let k = first_lanes((half - i).min(16));
            // SAFETY: the mask covers pairs i..min(i + 16, half): elements
            // below half of cos/sin, below 2 half <= head_dim of the head.
            unsafe {
                let c = _mm512_maskz_loadu_ps(k, cos.as_ptr().add(i));
                let s = _mm512_maskz_loadu_ps(k, sin.as_ptr().add(i));
                let a = _mm512_maskz_loadu_ps(k, hp.add(i));
                let b = _mm512_maskz_loadu_ps(k, hp.add(i + half));
                let na = _mm512_sub_ps(_mm512_mul_ps(a, c), _mm512_mul_ps(b, s));
                let nb = _mm512_add_ps(_mm512_mul_ps(a, s), _mm512_mul_ps(b, c));
                _mm512_mask_storeu_ps(hp.add(i), k, na);
                _mm512_mask_storeu_ps(hp.add(i + half), k, nb);
            }
            i += 16;
        }
    }
}
