//! The block rotation of rotated matrices (`.ember` tensor flag `ROTATED`,
//! FORMAT.md): each run of 32 values is multiplied by `H = W32 / sqrt(32)`,
//! where `W32` is the 32 x 32 Walsh-Hadamard (Sylvester) matrix. `H` is
//! orthonormal and symmetric, so it is its own inverse and
//! `dot(H w, H x) = dot(w, x)`: a matrix stored with rotated rows gives the
//! same product when its input is rotated the same way.
//!
//! Why: the 8-bit quantization of activations sets each block's scale from its
//! largest element, and a few input channels of a transformer carry values far
//! above the rest. Rotation spreads such a value over its whole block, so the
//! other 31 elements keep their precision (benches/RESULTS.md, "Rotated
//! quantization").
//!
//! The transform is the fast one (5 butterfly stages, then one scale), written
//! so that every compiler vectorisation computes the same operations in the same
//! order: results are the same bits on every CPU.

use crate::blocks::QK;

/// `1 / sqrt(32)`, the scale that makes the transform orthonormal.
const SCALE: f32 = 0.176_776_7;

/// Rotates each block of 32 values of `x` in place (`x.len()` a multiple of
/// `QK`). Applying it twice gives back `x` up to f32 rounding.
pub fn hadamard32(x: &mut [f32]) {
    assert_eq!(x.len() % QK, 0, "hadamard32: length is not whole blocks");
    for block in x.chunks_exact_mut(QK) {
        let b: &mut [f32; QK] = block.try_into().expect("a whole block");
        hadamard32_block(b);
    }
}

/// Rotates one block in place (`hadamard32`).
#[inline]
pub fn hadamard32_block(b: &mut [f32; QK]) {
    let mut h = 1;
    while h < QK {
        let mut i = 0;
        while i < QK {
            for j in i..i + h {
                let (a, c) = (b[j], b[j + h]);
                b[j] = a + c;
                b[j + h] = a - c;
            }
            i += 2 * h;
        }
        h *= 2;
    }
    for v in b.iter_mut() {
        *v *= SCALE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entry (i, j) of the Sylvester matrix: (-1)^popcount(i & j).
    fn walsh(i: usize, j: usize) -> f64 {
        if (i & j).count_ones().is_multiple_of(2) {
            1.0
        } else {
            -1.0
        }
    }

    fn sample(n: usize, seed: u32) -> [f32; 64] {
        let mut s = seed;
        let mut out = [0.0f32; 64];
        for v in out.iter_mut().take(n) {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *v = (s >> 8) as f32 / (1u32 << 24) as f32 * 8.0 - 4.0;
        }
        out
    }

    #[test]
    fn matches_the_dense_orthonormal_matrix() {
        let x = sample(64, 7);
        let mut y = x;
        hadamard32(&mut y);
        for blk in 0..2 {
            for i in 0..QK {
                let want: f64 = (0..QK)
                    .map(|j| walsh(i, j) * x[blk * QK + j] as f64)
                    .sum::<f64>()
                    / (QK as f64).sqrt();
                let got = y[blk * QK + i] as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{i}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn is_its_own_inverse_and_keeps_dot_products() {
        let x = sample(64, 3);
        let w = sample(64, 11);
        let (mut xr, mut wr) = (x, w);
        hadamard32(&mut xr);
        hadamard32(&mut wr);
        let dot = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(p, q)| *p as f64 * *q as f64)
                .sum::<f64>()
        };
        assert!((dot(&x, &w) - dot(&xr, &wr)).abs() < 1e-4);
        hadamard32(&mut xr);
        for (a, b) in x.iter().zip(&xr) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + a.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn spreads_a_single_outlier_over_the_block() {
        let mut b = [0.0f32; QK];
        b[5] = 32.0;
        hadamard32_block(&mut b);
        for v in b {
            assert!((v.abs() - 32.0 * SCALE).abs() < 1e-5);
        }
    }

    #[test]
    #[should_panic(expected = "whole blocks")]
    fn refuses_partial_blocks() {
        hadamard32(&mut [0.0; 33]);
    }
}
