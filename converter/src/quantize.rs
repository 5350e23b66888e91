//! Importance-weighted quantizers: calibrated conversion (`--calibrate`) and,
//! with equal weights, every rotated block-type matrix (the default).
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

/// Number of candidate inverse scales per block.
const CANDIDATES: usize = (SEARCH_BELOW + 1 + SEARCH_ABOVE) as usize;

/// `x.round()` (halves away from zero) for `x` in -128..=128, without a libm
/// call or a float-to-integer conversion, so the per-candidate lanes of
/// `search_scale` vectorize on every target (SSE2 included). Adding and
/// subtracting 1.5 * 2^23 rounds to the nearest integer, ties to even (exact
/// for |x| < 2^22); `x - r` is then exact, and an exact tie (+-0.5) is moved
/// away from zero instead, which is again exact. The result equals
/// `x.round()` except that it may be +0 where `round` gives -0 (the search's
/// sums and the stored quants do not see the sign of zero); NaN stays NaN.
#[inline(always)]
fn round_small(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23
    let r = (x + SHIFT) - SHIFT;
    if (x - r).abs() == 0.5 {
        x + 0.5f32.copysign(x)
    } else {
        r
    }
}

/// `v.round().clamp(lo, hi)` for any `v` (`-128 <= lo <= hi <= 128`), as the
/// stored quant of `v`: clamping to +-128 first changes nothing after the
/// final clamp and keeps `round_small` in its domain.
#[inline(always)]
fn quant(v: f32, lo: f32, hi: f32) -> f32 {
    round_small(v.clamp(-128.0, 128.0)).clamp(lo, hi)
}

/// Searches the scale of one block whose quants are `quant(x * id, lo, hi)`
/// for the candidate inverse scales `ids`; returns the best weighted
/// least-squares scale, or `fallback` when no candidate has weight.
///
/// Every candidate's sums run over the block in element order, as a plain
/// loop per candidate would, and the candidates are compared in order, so the
/// choice is the same bits as that loop's; the candidates are only computed
/// side by side (one lane each), which the compiler vectorizes.
fn search_scale(
    xs: &[f32],
    w: &[f32],
    ids: &[f32; CANDIDATES],
    (lo, hi): (f32, f32),
    fallback: f32,
) -> f32 {
    let (mut sqx, mut sq2) = ([0.0f32; CANDIDATES], [0.0f32; CANDIDATES]);
    for (&v, &wj) in xs.iter().zip(w) {
        for c in 0..CANDIDATES {
            let q = quant(v * ids[c], lo, hi);
            sqx[c] += wj * q * v;
            sq2[c] += wj * q * q;
        }
    }
    let (mut d, mut best) = (fallback, 0.0f32);
    for (&sqx, &sq2) in sqx.iter().zip(&sq2) {
        if sq2 > 0.0 && sqx * sqx > best * sq2 {
            d = sqx / sq2;
            best = d * sqx;
        }
    }
    d
}

/// One block's element weights: `importance[start..start + QK]`, or all 1.
fn block_weights(importance: Option<&[f32]>, start: usize) -> [f32; QK] {
    match importance {
        Some(im) => im[start..start + QK].try_into().expect("QK weights"),
        None => [1.0; QK],
    }
}

/// Quantizes `x` (`x.len() == out.len() * QK`) to Q8_0 minimising the
/// importance-weighted error; `importance` has one non-negative weight per
/// element of `x` (`None`: all equal). Quants stay in -127..=127.
pub fn quantize_row_q8_0_weighted(x: &[f32], importance: Option<&[f32]>, out: &mut [BlockQ8_0]) {
    assert_eq!(x.len(), out.len() * QK, "quantize_row_q8_0_weighted: shape");
    if let Some(im) = importance {
        assert_eq!(im.len(), x.len(), "quantize_row_q8_0_weighted: importance");
    }
    const RANGE: (f32, f32) = (-127.0, 127.0);
    let q8 = |v: f32| quant(v, RANGE.0, RANGE.1);
    for (bi, (xs, b)) in x.chunks_exact(QK).zip(out.iter_mut()).enumerate() {
        let w = block_weights(importance, bi * QK);
        let amax = signed_max(xs, |j| w[j]).abs();
        let mut d = amax / 127.0;
        if amax > 0.0 {
            let ids =
                core::array::from_fn(|c| (127.0 - 0.25 * (c as i32 - SEARCH_BELOW) as f32) / amax);
            d = search_scale(xs, &w, &ids, RANGE, d);
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
    const RANGE: (f32, f32) = (-8.0, 7.0);
    let q4 = |v: f32| quant(v, RANGE.0, RANGE.1);
    for (bi, (xs, b)) in x.chunks_exact(QK).zip(out.iter_mut()).enumerate() {
        let w = block_weights(importance, bi * QK);
        let max = signed_max(xs, |j| w[j]);
        // The reference maps the signed maximum to -8 (its full range).
        let mut d = max / -8.0;
        if max != 0.0 {
            let ids =
                core::array::from_fn(|c| (-8.0 + 0.125 * (c as i32 - SEARCH_BELOW) as f32) / max);
            d = search_scale(xs, &w, &ids, RANGE, d);
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

    /// The search as first written: one plain loop per candidate, `f32::round`.
    /// The lane-parallel search must choose the same bits.
    fn reference_q8_0(x: &[f32], importance: Option<&[f32]>, out: &mut [BlockQ8_0]) {
        reference_search(
            x,
            importance,
            127.0,
            0.25,
            (-127.0, 127.0),
            |xs, id, d, b| {
                let b: &mut BlockQ8_0 = b;
                b.d = d;
                for (q, &v) in b.qs.iter_mut().zip(xs) {
                    *q = (v * id).round().clamp(-127.0, 127.0) as i8 as u8;
                }
            },
            out,
            true,
        );
    }

    fn reference_q4_0(x: &[f32], importance: Option<&[f32]>, out: &mut [BlockQ4_0]) {
        reference_search(
            x,
            importance,
            -8.0,
            -0.125,
            (-8.0, 7.0),
            |xs, id, d, b| {
                let b: &mut BlockQ4_0 = b;
                b.d = d;
                let q4 = |v: f32| (v * id).round().clamp(-8.0, 7.0);
                for j in 0..QK / 2 {
                    b.qs[j] = (q4(xs[j]) + 8.0) as u8 | (((q4(xs[j + QK / 2]) + 8.0) as u8) << 4);
                }
            },
            out,
            false,
        );
    }

    /// Candidate `t`'s inverse scale is `(top - step * t) / max`, `max` the
    /// signed maximum (its magnitude if `abs_max`).
    #[allow(clippy::too_many_arguments)]
    fn reference_search<B>(
        x: &[f32],
        importance: Option<&[f32]>,
        top: f32,
        step: f32,
        (lo, hi): (f32, f32),
        store: impl Fn(&[f32], f32, [u8; 2], &mut B),
        out: &mut [B],
        abs_max: bool,
    ) {
        for (bi, (xs, b)) in x.chunks_exact(QK).zip(out.iter_mut()).enumerate() {
            let w = |j: usize| importance.map_or(1.0, |im| im[bi * QK + j]);
            let m = signed_max(xs, w);
            let max = if abs_max { m.abs() } else { m };
            let mut d = max / top;
            if max != 0.0 {
                let (mut dd, mut best) = (d, 0.0f32);
                for t in -SEARCH_BELOW..=SEARCH_ABOVE {
                    let id = (top - step * t as f32) / max;
                    let (mut sqx, mut sq2) = (0.0f32, 0.0f32);
                    for (j, &v) in xs.iter().enumerate() {
                        let q = (v * id).round().clamp(lo, hi);
                        sqx += w(j) * q * v;
                        sq2 += w(j) * q * q;
                    }
                    if sq2 > 0.0 && sqx * sqx > best * sq2 {
                        dd = sqx / sq2;
                        best = dd * sqx;
                    }
                }
                d = dd;
            }
            let dh = f16::from_f32(d);
            let d = dh.to_f32();
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            store(xs, id, dh.to_bits().to_le_bytes(), b);
        }
    }

    #[test]
    fn round_small_is_round_on_its_domain() {
        // Every f32 in -128..=128 whose low 8 mantissa bits are 0, 1 or 255
        // (all halves, integers and their neighbours included), plus NaN.
        let mut checked = 0u32;
        let bits = (0..=0x4300_0000u32 >> 8).flat_map(|hi| [0, 1, 0xFF].map(|lo| hi << 8 | lo));
        for bits in bits.filter(|&b| b <= 0x4300_0000) {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                let (got, want) = (round_small(x), x.round());
                assert!(got == want, "{x:e}: {got} vs {want}");
                checked += 1;
            }
        }
        assert!(checked > 20_000_000);
        assert!(round_small(f32::NAN).is_nan());
        for v in [f32::INFINITY, 1e30, 300.5, 127.5, 126.5] {
            assert_eq!(quant(v, -127.0, 127.0), 127.0);
            assert_eq!(quant(-v, -127.0, 127.0), -127.0);
        }
        assert!(quant(f32::NAN, -8.0, 7.0).is_nan());
    }

    #[test]
    fn lane_search_chooses_the_plain_loops_bits() {
        let n = QK * 512;
        let mut x = sample(n, 3);
        // Ties: blocks of multiples of 1/4 and 1/8 put many products exactly
        // on halves; one block all zero, one with a single value.
        for (j, v) in x[..QK * 8].iter_mut().enumerate() {
            *v = ((j * 37 % 29) as f32 - 14.0) * if j < QK * 4 { 0.25 } else { 0.125 };
        }
        x[QK * 8..QK * 9].fill(0.0);
        x[QK * 9..QK * 10].fill(0.0);
        x[QK * 9 + 5] = -3.0;
        let mut w = importance(n);
        w[QK * 10..QK * 11].fill(0.0);
        w[QK * 11..QK * 12]
            .iter_mut()
            .step_by(2)
            .for_each(|v| *v = 0.0);
        for imp in [None, Some(&w[..])] {
            let (mut a, mut b) = (
                vec![BlockQ8_0::zeroed(); n / QK],
                vec![BlockQ8_0::zeroed(); n / QK],
            );
            quantize_row_q8_0_weighted(&x, imp, &mut a);
            reference_q8_0(&x, imp, &mut b);
            assert!(
                bytemuck::cast_slice::<_, u8>(&a) == bytemuck::cast_slice::<_, u8>(&b),
                "q8_0"
            );
            let (mut a, mut b) = (
                vec![BlockQ4_0::zeroed(); n / QK],
                vec![BlockQ4_0::zeroed(); n / QK],
            );
            quantize_row_q4_0_weighted(&x, imp, &mut a);
            reference_q4_0(&x, imp, &mut b);
            assert!(
                bytemuck::cast_slice::<_, u8>(&a) == bytemuck::cast_slice::<_, u8>(&b),
                "q4_0"
            );
        }
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
