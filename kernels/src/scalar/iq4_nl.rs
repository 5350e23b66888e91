//! IQ4_NL weights (`blocks::BlockIq4Nl`): the reference quantizer with its scale
//! search, dequantization, and the products with Q8_0 activations (plain and
//! row-interleaved layouts). Same contracts and summation order as the Q4_0
//! kernels in `quant.rs`: per block an exact `i32` sum of codebook value x
//! activation quant, scaled by `d_w * d_a` in f32, accumulated in block order.

use crate::blocks::{tiled_index, BlockIq4Nl, BlockQ8_0, IQ4_NL_VALUES, QK};
use half::f16;

use super::{check_matmul_shape, check_tiled_shape};

/// Candidate scales tried per block on each side of the max-maps-to-`-127`
/// scale (see `quantize_row_iq4_nl_weighted`): 2 x 7 + 1 = 15 candidates.
const IQ4_NL_SEARCH_STEPS: i32 = 7;

/// Midpoints between neighbouring codebook entries (exact in f32).
const IQ4_NL_MIDPOINTS: [f32; 15] = {
    let mut m = [0.0f32; 15];
    let mut i = 0;
    while i < 15 {
        m[i] = (IQ4_NL_VALUES[i] as f32 + IQ4_NL_VALUES[i + 1] as f32) * 0.5;
        i += 1;
    }
    m
};

/// Index of the codebook entry nearest to `v`: the number of midpoints below
/// `v` (ties to the lower entry; NaN gives 0), by binary search.
#[inline]
fn nearest_iq4_nl(v: f32) -> u8 {
    let mut i = 0;
    for step in [8, 4, 2, 1] {
        if v > IQ4_NL_MIDPOINTS[i + step - 1] {
            i += step;
        }
    }
    i as u8
}

/// Quantizes `x` (`x.len() == out.len() * QK`) to IQ4_NL with unit importance:
/// `quantize_row_iq4_nl_weighted(x, None, out)`.
pub fn quantize_row_iq4_nl(x: &[f32], out: &mut [BlockIq4Nl]) {
    quantize_row_iq4_nl_weighted(x, None, out);
}

/// Quantizes `x` (`x.len() == out.len() * QK`) to IQ4_NL, minimising the
/// importance-weighted squared error `sum_j w_j (x_j - d * c[q_j])^2` per block
/// (`w_j = importance[j]`, non-negative, one per element of `x`; `None` = all 1).
///
/// Per block, with `m` the element of largest magnitude (with its sign; only
/// elements with non-zero importance count, unless none has any): for
/// each of the candidate inverse scales `(-127 + t) / m`, `t` in -7..=7, map
/// every element to its nearest codebook entry, then take the weighted
/// least-squares scale for those indices, `d = sum w c x / sum w c^2`; keep the
/// candidate with the least weighted error. The chosen `d` is rounded to f16
/// and every element re-mapped to its nearest entry under that stored scale.
/// All-zero blocks (and blocks whose importance is all zero) fall back to
/// `d = m / -127`. Indices are always valid, so every kernel's value domain
/// (codebook values -127..=113) holds for any input, NaN included.
pub fn quantize_row_iq4_nl_weighted(x: &[f32], importance: Option<&[f32]>, out: &mut [BlockIq4Nl]) {
    assert_eq!(
        x.len(),
        out.len() * QK,
        "quantize_row_iq4_nl: shape mismatch"
    );
    if let Some(im) = importance {
        assert_eq!(im.len(), x.len(), "quantize_row_iq4_nl: importance length");
    }
    let c0 = IQ4_NL_VALUES[0] as f32;
    for (bi, (xs, b)) in x.chunks_exact(QK).zip(out.iter_mut()).enumerate() {
        let w = |j: usize| importance.map_or(1.0, |im| im[bi * QK + j]);
        // The largest-magnitude element among those that carry importance
        // (all elements if none does): zero-importance outliers do not set
        // the candidate scales.
        let any = (0..QK).any(|j| w(j) > 0.0);
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for (j, &v) in xs.iter().enumerate() {
            if v.abs() > amax && (!any || w(j) > 0.0) {
                amax = v.abs();
                max = v;
            }
        }
        let mut d = max / c0;
        if amax > 0.0 {
            let mut best = 0.0f32;
            for t in -IQ4_NL_SEARCH_STEPS..=IQ4_NL_SEARCH_STEPS {
                let id = (t as f32 + c0) / max;
                let (mut sqx, mut sq2) = (0.0f32, 0.0f32);
                for (j, &v) in xs.iter().enumerate() {
                    let c = IQ4_NL_VALUES[nearest_iq4_nl(v * id) as usize] as f32;
                    sqx += w(j) * c * v;
                    sq2 += w(j) * c * c;
                }
                // The error at the least-squares scale is sum w x^2 - sqx^2 / sq2:
                // maximise sqx^2 / sq2.
                if sq2 > 0.0 && sqx * sqx > best * sq2 {
                    d = sqx / sq2;
                    best = d * sqx;
                }
            }
        }
        let dh = f16::from_f32(d);
        b.d = dh.to_bits().to_le_bytes();
        let d = dh.to_f32();
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for j in 0..QK / 2 {
            b.qs[j] = nearest_iq4_nl(xs[j] * id) | (nearest_iq4_nl(xs[j + QK / 2] * id) << 4);
        }
    }
}

/// `out[i] = d * IQ4_NL_VALUES[q[i]]` (`out.len() == blocks.len() * QK`).
pub fn dequantize_row_iq4_nl(blocks: &[BlockIq4Nl], out: &mut [f32]) {
    assert_eq!(
        out.len(),
        blocks.len() * QK,
        "dequantize_row_iq4_nl: shape mismatch"
    );
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.scale();
        for (j, v) in o.iter_mut().enumerate() {
            *v = b.q(j) as f32 * d;
        }
    }
}

/// Dequantizes row `r` of a row-interleaved IQ4_NL matrix (`out.len()` columns).
pub fn dequantize_tiled_row_iq4_nl(w: &[BlockIq4Nl], r: usize, out: &mut [f32]) {
    let nb = out.len() / QK;
    for (k, chunk) in out.chunks_exact_mut(QK).enumerate() {
        dequantize_row_iq4_nl(core::slice::from_ref(&w[tiled_index(r, k, nb)]), chunk);
    }
}

/// Exact integer dot product of an IQ4_NL block's codebook values with a Q8_0
/// block's quants (at most 32 x 127 x 127 in magnitude).
#[inline]
pub fn block_isum_iq4_nl_q8_0(w: &BlockIq4Nl, a: &BlockQ8_0) -> i32 {
    (0..QK).map(|j| w.q(j) as i32 * a.q(j) as i32).sum()
}

/// One block's term `d_w * d_a * isum`, the unit every IQ4_NL product sums.
#[inline]
fn term(w: &BlockIq4Nl, a: &BlockQ8_0) -> f32 {
    w.scale() * a.scale() * block_isum_iq4_nl_q8_0(w, a) as f32
}

/// `sum_b d_w[b] * d_a[b] * isum[b]`, accumulated in f32 in block order.
/// Contract: equal block counts; activation quants in -127..=127.
#[inline]
pub fn dot_iq4_nl_q8_0(w: &[BlockIq4Nl], a: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), a.len(), "dot_iq4_nl_q8_0: length mismatch");
    w.iter().zip(a).fold(0.0f32, |s, (bw, ba)| s + term(bw, ba))
}

/// `out[r] = dot(w[r, :], a)` for an IQ4_NL matrix `w: [out.len(), a.len() * QK]`
/// (row `r` is blocks `r * a.len() .. (r + 1) * a.len()`) and Q8_0 activations.
pub fn matvec_iq4_nl_q8_0(w: &[BlockIq4Nl], a: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(
        w.len(),
        out.len() * a.len(),
        "matvec_iq4_nl_q8_0: shape mismatch"
    );
    if a.is_empty() {
        out.fill(0.0);
        return;
    }
    for (o, row) in out.iter_mut().zip(w.chunks_exact(a.len())) {
        *o = dot_iq4_nl_q8_0(row, a);
    }
}

/// Like `matvec_iq4_nl_q8_0` over the row-interleaved layout
/// (`crate::blocks::TILE_ROWS`; `out.len()` a multiple of 4); bit-identical to
/// the plain layout's results.
pub fn matvec_iq4_nlx4_q8_0(w: &[BlockIq4Nl], a: &[BlockQ8_0], out: &mut [f32]) {
    check_tiled_shape(w.len(), a.len(), out.len(), "matvec_iq4_nlx4_q8_0");
    let nb = a.len();
    for (r, o) in out.iter_mut().enumerate() {
        let mut sum = 0.0f32;
        for (k, ba) in a.iter().enumerate() {
            sum += term(&w[tiled_index(r, k, nb)], ba);
        }
        *o = sum;
    }
}

/// Matrix-matrix product for batched prefill over a row-interleaved IQ4_NL
/// matrix: `out[t * rows + r] = dot(row r, token t)` for `n` activation vectors
/// `a: [n, nb]` (token-major). Each token's results are exactly
/// `matvec_iq4_nlx4_q8_0`'s for that token (every tier keeps this).
pub fn matmul_iq4_nlx4_q8_0(w: &[BlockIq4Nl], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    check_matmul_shape(w.len(), a.len(), n, out.len(), "matmul_iq4_nlx4_q8_0");
    let (nb, rows) = (a.len() / n, out.len() / n);
    for (at, ot) in a.chunks_exact(nb).zip(out.chunks_exact_mut(rows.max(1))) {
        matvec_iq4_nlx4_q8_0(w, at, ot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;

    #[test]
    fn nearest_entry_and_round_trip() {
        for (i, &c) in IQ4_NL_VALUES.iter().enumerate() {
            assert_eq!(nearest_iq4_nl(c as f32) as usize, i);
        }
        assert_eq!(nearest_iq4_nl(-1e9), 0);
        assert_eq!(nearest_iq4_nl(1e9), 15);
        assert_eq!(nearest_iq4_nl(f32::NAN), 0);
        // Ties between neighbours go to the lower entry.
        assert_eq!(nearest_iq4_nl(-115.5), 0);
        assert_eq!(nearest_iq4_nl(-115.4), 1);
        // Values on the codebook grid come back exactly (up to the f16 scale).
        let x: [f32; 32] = core::array::from_fn(|j| IQ4_NL_VALUES[j % 16] as f32 * 0.25);
        let mut b = [BlockIq4Nl::zeroed()];
        quantize_row_iq4_nl(&x, &mut b);
        let mut y = [0.0f32; 32];
        dequantize_row_iq4_nl(&b, &mut y);
        assert_eq!(x, y);
    }

    #[test]
    fn importance_steers_the_error() {
        // Zero importance on the outlier: the scale fits the other elements.
        let mut x: [f32; 32] = core::array::from_fn(|j| (j as f32 - 15.5) * 0.01);
        x[0] = 5.0;
        let mut im = [1.0f32; 32];
        im[0] = 0.0;
        let (mut plain, mut weighted) = ([BlockIq4Nl::zeroed()], [BlockIq4Nl::zeroed()]);
        quantize_row_iq4_nl(&x, &mut plain);
        quantize_row_iq4_nl_weighted(&x, Some(&im), &mut weighted);
        let err = |b: &[BlockIq4Nl]| {
            let mut y = [0.0f32; 32];
            dequantize_row_iq4_nl(b, &mut y);
            (1..32).map(|j| (x[j] - y[j]).powi(2)).sum::<f32>()
        };
        assert!(err(&weighted) < err(&plain) * 0.1);
    }
}
