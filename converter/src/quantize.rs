//! Importance-weighted quantizers for calibrated conversion (`--calibrate`).
//!
//! The reference quantizers (`ember_kernels::scalar::quantize_row_*`) pick each
//! block's scale from its largest element. These choose, per block of 32, the
//! scale that minimises the importance-weighted squared error
//! `sum_j w_j (x_j - d q_j)^2`, where `w_j` is the mean square of the
//! activation that multiplies column `j` (so the error is weighted by how much
//! it moves the product). They write the same block formats, so every kernel
//! reads them unchanged, and they respect the same value domains (Q8_0 quants
//! in -127..=127, Q4_0 nibbles in 0..=15).
//!
//! Search: for a few candidate inverse scales around the reference one, round
//! every element, then take the weighted least-squares scale for those quants
//! (`d = sum w q x / sum w q^2`); keep the candidate with the least error
//! (largest `(sum w q x)^2 / sum w q^2`). The chosen scale is rounded to f16 and
//! every element re-rounded under the stored scale.

use ember_kernels::blocks::{BlockQ4_0, BlockQ8_0, QK};
use half::f16;

/// Candidate inverse scales tried per block: `(top - STEP * t) / amax` for
/// `t` in `-SEARCH_BELOW..=SEARCH_ABOVE`.
const SEARCH_BELOW: i32 = 4;
const SEARCH_ABOVE: i32 = 12;

/// The weight of element `j` of a block starting at `start`.
fn weight(importance: Option<&[f32]>, start: usize, j: usize) -> f32 {
    importance.map_or(1.0, |w| w[start + j])
}

/// The element of largest magnitude among those with non-zero importance (all
/// elements if none has any), with its sign.
fn signed_max(xs: &[f32], w: impl Fn(usize) -> f32) -> f32 {
    let any = (0..xs.len()).any(|j| w(j) > 0.0);
    let mut max = 0.0f32;
    for (j, &v) in xs.iter().enumerate() {
        if v.abs() > max.abs() && (!any || w(j) > 0.0) {
            max = v;
        }
    }
    max
}

/// Searches the scale of one block whose quants are `quant(x * id)` (a signed
/// integer value) for candidate inverse scales `id`; returns the best weighted
/// least-squares scale, or `fallback` when no candidate has weight.
fn search_scale(
    xs: &[f32],
    w: impl Fn(usize) -> f32,
    ids: impl Iterator<Item = f32>,
    quant: impl Fn(f32) -> f32,
    fallback: f32,
) -> f32 {
    let (mut d, mut best) = (fallback, 0.0f32);
    for id in ids {
        let (mut sqx, mut sq2) = (0.0f32, 0.0f32);
        for (j, &v) in xs.iter().enumerate() {
            let q = quant(v * id);
            sqx += w(j) * q * v;
            sq2 += w(j) * q * q;
        }
        if sq2 > 0.0 && sqx * sqx > best * sq2 {
            d = sqx / sq2;
            best = d * sqx;
        }
    }
    d
}

/// Quantizes `x` (`x.len() == out.len() * QK`) to Q8_0 minimising the
/// importance-weighted error; `importance` has one non-negative weight per
/// element of `x` (`None`: all equal). Quants stay in -127..=127.
pub fn quantize_row_q8_0_weighted(x: &[f32], importance: Option<&[f32]>, out: &mut [BlockQ8_0]) {
    assert_eq!(x.len(), out.len() * QK, "quantize_row_q8_0_weighted: shape");
    if let Some(im) = importance {
        assert_eq!(im.len(), x.len(), "quantize_row_q8_0_weighted: importance");
    }
    let q8 = |v: f32| v.round().clamp(-127.0, 127.0);
    for (bi, (xs, b)) in x.chunks_exact(QK).zip(out.iter_mut()).enumerate() {
        let w = |j: usize| weight(importance, bi * QK, j);
        let amax = signed_max(xs, w).abs();
        let mut d = amax / 127.0;
        if amax > 0.0 {
            let ids = (-SEARCH_BELOW..=SEARCH_ABOVE).map(|t| (127.0 - 0.25 * t as f32) / amax);
            d = search_scale(xs, w, ids, q8, d);
        }
        let dh = f16::from_f32(d);
        let d = dh.to_f32();
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = dh.to_bits().to_le_bytes();
        for (q, &v) in b.qs.iter_mut().zip(xs) {
            *q = q8(v * id) as i8 as u8;
        }
    }
}

/// Quantizes `x` (`x.len() == out.len() * QK`) to Q4_0 minimising the
/// importance-weighted error (see `quantize_row_q8_0_weighted`). Stored nibbles
/// are `q + 8` in 0..=15 (value `d * q`, `q` in -8..=7), as ggml's Q4_0.
pub fn quantize_row_q4_0_weighted(x: &[f32], importance: Option<&[f32]>, out: &mut [BlockQ4_0]) {
    assert_eq!(x.len(), out.len() * QK, "quantize_row_q4_0_weighted: shape");
    if let Some(im) = importance {
        assert_eq!(im.len(), x.len(), "quantize_row_q4_0_weighted: importance");
    }
    let q4 = |v: f32| v.round().clamp(-8.0, 7.0);
    for (bi, (xs, b)) in x.chunks_exact(QK).zip(out.iter_mut()).enumerate() {
        let w = |j: usize| weight(importance, bi * QK, j);
        let max = signed_max(xs, w);
        // The reference maps the signed maximum to -8 (its full range).
        let mut d = max / -8.0;
        if max != 0.0 {
            let ids = (-SEARCH_BELOW..=SEARCH_ABOVE).map(|t| (-8.0 + 0.125 * t as f32) / max);
            d = search_scale(xs, w, ids, q4, d);
        }
        let dh = f16::from_f32(d);
        let d = dh.to_f32();
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = dh.to_bits().to_le_bytes();
        for j in 0..QK / 2 {
            let lo = (q4(xs[j] * id) + 8.0) as u8;
            let hi = (q4(xs[j + QK / 2] * id) + 8.0) as u8;
            b.qs[j] = lo | (hi << 4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;
    use ember_kernels::scalar;

    fn weighted_error(x: &[f32], y: &[f32], w: &[f32]) -> f64 {
        x.iter()
            .zip(y)
            .zip(w)
            .map(|((a, b), w)| *w as f64 * ((a - b) as f64).powi(2))
            .sum()
    }

    fn sample(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                // Heavy-ish tails: a few large values per block.
                u * u * u * 8.0 + u * 0.1
            })
            .collect()
    }

    fn importance(n: usize) -> Vec<f32> {
        (0..n)
            .map(|j| {
                if j % 7 == 0 {
                    25.0
                } else {
                    0.5 + (j % 3) as f32
                }
            })
            .collect()
    }

    #[test]
    fn q8_0_weighted_never_worse_than_reference_and_in_domain() {
        let n = QK * 64;
        let (x, w) = (sample(n, 1), importance(n));
        let mut r = vec![BlockQ8_0::zeroed(); n / QK];
        let mut b = r.clone();
        scalar::quantize_row_q8_0(&x, &mut r);
        quantize_row_q8_0_weighted(&x, Some(&w), &mut b);
        let (mut yr, mut yb) = (vec![0.0; n], vec![0.0; n]);
        scalar::dequantize_row_q8_0(&r, &mut yr);
        scalar::dequantize_row_q8_0(&b, &mut yb);
        let (er, eb) = (weighted_error(&x, &yr, &w), weighted_error(&x, &yb, &w));
        assert!(eb < er, "weighted {eb} vs reference {er}");
        assert!(b.iter().all(|b| b.qs.iter().all(|&q| q as i8 != i8::MIN)));
    }

    #[test]
    fn q4_0_weighted_never_worse_than_reference() {
        let n = QK * 64;
        let (x, w) = (sample(n, 2), importance(n));
        let mut r = vec![BlockQ4_0::zeroed(); n / QK];
        let mut b = r.clone();
        scalar::quantize_row_q4_0(&x, &mut r);
        quantize_row_q4_0_weighted(&x, Some(&w), &mut b);
        let (mut yr, mut yb) = (vec![0.0; n], vec![0.0; n]);
        scalar::dequantize_row_q4_0(&r, &mut yr);
        scalar::dequantize_row_q4_0(&b, &mut yb);
        let (er, eb) = (weighted_error(&x, &yr, &w), weighted_error(&x, &yb, &w));
        assert!(eb < er * 0.95, "weighted {eb} vs reference {er}");
    }

    #[test]
    fn zero_blocks_and_zero_importance_are_handled() {
        let mut x = vec![0.0f32; QK * 2];
        x[QK + 3] = 5.0;
        x[QK + 4] = -0.25;
        let mut w = vec![1.0f32; QK * 2];
        w[QK + 3] = 0.0; // the outlier carries no weight: the scale follows -0.25
        let mut b = vec![BlockQ8_0::zeroed(); 2];
        quantize_row_q8_0_weighted(&x, Some(&w), &mut b);
        assert_eq!(b[0].scale(), 0.0);
        assert!(b[0].qs.iter().all(|&q| q == 0));
        let mut y = vec![0.0; QK * 2];
        scalar::dequantize_row_q8_0(&b, &mut y);
        assert!((y[QK + 4] + 0.25).abs() < 0.25 / 100.0);
        assert_eq!(b[1].qs[3], 127, "the unweighted outlier saturates");
        let mut b4 = vec![BlockQ4_0::zeroed(); 2];
        quantize_row_q4_0_weighted(&x, None, &mut b4);
        assert_eq!(b4[0].scale(), 0.0);
    }
}
