//! AVX2 RoPE rotation by a precomputed cos/sin table. Bit-identical to
//! `scalar::rope_f32`: products are rounded, then added or subtracted (no FMA).

use core::arch::x86_64::*;

use crate::scalar::{check_rope, RopeLayout};

pub(super) fn rope_f32(
    x: &mut [f32],
    head_dim: usize,
    cos: &[f32],
    sin: &[f32],
    layout: RopeLayout,
) {
    let half = check_rope(x.len(), head_dim, cos, sin);
    // SAFETY: reachable only through `table(Avx2Token)`; the contract checked
    // above puts every rotated pair of every head inside `x`.
    unsafe {
        match layout {
            RopeLayout::Interleaved => rope_interleaved(x, head_dim, cos, sin, half),
            RopeLayout::Half => rope_half(x, head_dim, cos, sin, half),
        }
    }
}

/// Pairs `(2i, 2i + 1)`: four pairs per register, the partner of every lane by
/// an in-lane swap, and `addsub` (even lanes subtract, odd lanes add).
///
/// # Safety
/// The CPU has AVX2; `check_rope` accepted the arguments and `half == cos.len()`.
#[target_feature(enable = "avx2")]
unsafe fn rope_interleaved(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], half: usize) {
    let main = half / 4 * 4;
    for head in x.chunks_exact_mut(head_dim) {
        let hp = head.as_mut_ptr();
        let mut i = 0;
        while i < main {
            // SAFETY: i + 4 <= half = cos.len() = sin.len(), and
            // 2i + 8 <= 2 half <= head_dim.
            unsafe {
                let c = _mm_loadu_ps(cos.as_ptr().add(i));
                let s = _mm_loadu_ps(sin.as_ptr().add(i));
                let cc = _mm256_set_m128(_mm_unpackhi_ps(c, c), _mm_unpacklo_ps(c, c));
                let ss = _mm256_set_m128(_mm_unpackhi_ps(s, s), _mm_unpacklo_ps(s, s));
                let v = _mm256_loadu_ps(hp.add(2 * i));
                let sw = _mm256_permute_ps::<0b10_11_00_01>(v);
                // even: x0 c - x1 s; odd: x1 c + x0 s (= x0 s + x1 c).
                let r = _mm256_addsub_ps(_mm256_mul_ps(v, cc), _mm256_mul_ps(sw, ss));
                _mm256_storeu_ps(hp.add(2 * i), r);
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

/// Pairs `(i, i + half)`: eight pairs per step, both halves loaded as is.
///
/// # Safety
/// The CPU has AVX2; `check_rope` accepted the arguments and `half == cos.len()`.
#[target_feature(enable = "avx2")]
unsafe fn rope_half(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], half: usize) {
    let main = half / 8 * 8;
    for head in x.chunks_exact_mut(head_dim) {
        let hp = head.as_mut_ptr();
        let mut i = 0;
        while i < main {
            // SAFETY: i + 8 <= half, and half + i + 8 <= 2 half <= head_dim.
            unsafe {
                let c = _mm256_loadu_ps(cos.as_ptr().add(i));
                let s = _mm256_loadu_ps(sin.as_ptr().add(i));
                let a = _mm256_loadu_ps(hp.add(i));
                let b = _mm256_loadu_ps(hp.add(i + half));
                let na = _mm256_sub_ps(_mm256_mul_ps(a, c), _mm256_mul_ps(b, s));
                let nb = _mm256_add_ps(_mm256_mul_ps(a, s), _mm256_mul_ps(b, c));
                _mm256_storeu_ps(hp.add(i), na);
                _mm256_storeu_ps(hp.add(i + half), nb);
            }
            i += 8;
        }
        for i in main..half {
            let (x0, x1) = (head[i], head[i + half]);
            head[i] = x0 * cos[i] - x1 * sin[i];
            head[i + half] = x0 * sin[i] + x1 * cos[i];
        }
    }
}
