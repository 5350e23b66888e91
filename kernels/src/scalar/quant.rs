//! Block quantization (the reference quantizers, also used for activations) and
//! the quantized dot products and matrix-vector products.
//!
//! A quantized matrix `[rows, cols]` is stored row-major as `rows x cols / QK`
//! blocks; `cols` is a multiple of `QK`. Activations are quantized to Q8_0 blocks
//! once per input vector; a dot product then sums exact `i32` products per block
//! and scales each block sum by `d_w * d_a` in f32.

use crate::blocks::{tiled_index, BlockQ4_0, BlockQ8_0, QK, TILE_ROWS};
use half::f16;

/// Quantizes `x` (`x.len() == out.len() * QK`) to Q8_0: per block
/// `d = max|x| / 127`, `q = round(x / d)` (ties away from zero) clamped to
/// -127..=127. All-zero blocks get `d = 0`, `q = 0`. This is ggml's reference
/// quantizer; the clamp guarantees the activation domain every int8 kernel
/// relies on (-128 never occurs), even for NaN input (which quantizes to 0).
pub fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(x.len(), out.len() * QK, "quantize_row_q8_0: shape mismatch");
    for (xs, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d).to_bits().to_le_bytes();
        for (q, &v) in b.qs.iter_mut().zip(xs) {
            // `as` saturates and maps NaN to 0; the clamp keeps -128 out.
            *q = (libm::roundf(v * id) as i32).clamp(-127, 127) as i8 as u8;
        }
    }
}

/// `out[i] = d * q[i]` for Q8_0 blocks (`out.len() == blocks.len() * QK`).
pub fn dequantize_row_q8_0(blocks: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(
        out.len(),
        blocks.len() * QK,
        "dequantize_row_q8_0: shape mismatch"
    );
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.scale();
        for (j, v) in o.iter_mut().enumerate() {
            *v = b.q(j) as f32 * d;
        }
    }
}

/// Quantizes `x` (`x.len() == out.len() * QK`) to Q4_0 with ggml's reference
/// rule: `m` = the element of largest magnitude (with its sign), `d = m / -8`,
/// `q = min(15, trunc(x / d + 8.5))`, so `m` itself maps to -8 and the full
/// range -8..=7 is used.
pub fn quantize_row_q4_0(x: &[f32], out: &mut [BlockQ4_0]) {
    assert_eq!(x.len(), out.len() * QK, "quantize_row_q4_0: shape mismatch");
    for (xs, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in xs {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d).to_bits().to_le_bytes();
        let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
        for j in 0..QK / 2 {
            b.qs[j] = q(xs[j]) | (q(xs[j + QK / 2]) << 4);
        }
    }
}

/// `out[i] = d * (q[i] - 8)` for Q4_0 blocks (`out.len() == blocks.len() * QK`).
pub fn dequantize_row_q4_0(blocks: &[BlockQ4_0], out: &mut [f32]) {
    assert_eq!(
        out.len(),
        blocks.len() * QK,
        "dequantize_row_q4_0: shape mismatch"
    );
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.scale();
        for (j, v) in o.iter_mut().enumerate() {
            *v = b.q(j) as f32 * d;
        }
    }
}

/// Exact integer dot product of two Q8_0 blocks' quants.
#[inline]
pub fn block_isum_q8_0_q8_0(w: &BlockQ8_0, a: &BlockQ8_0) -> i32 {
    (0..QK).map(|j| w.q(j) as i32 * a.q(j) as i32).sum()
}

/// Exact integer dot product of a Q4_0 block's centred quants with a Q8_0 block's.
#[inline]
pub fn block_isum_q4_0_q8_0(w: &BlockQ4_0, a: &BlockQ8_0) -> i32 {
    let mut s = 0;
    // Byte j holds elements j (low nibble) and j + 16 (high nibble).
    for (j, &b) in w.qs.iter().enumerate() {
        s += ((b & 0x0F) as i32 - 8) * a.q(j) as i32;
        s += ((b >> 4) as i32 - 8) * a.q(j + QK / 2) as i32;
    }
    s
}

/// `sum_b d_w[b] * d_a[b] * isum[b]`, accumulated in f32 in block order.
///
/// Contract: equal block counts; activation quants in -127..=127 (weight quants
/// may use the full i8 range).
#[inline]
pub fn dot_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), a.len(), "dot_q8_0_q8_0: length mismatch");
    let mut sum = 0.0f32;
    for (bw, ba) in w.iter().zip(a) {
        sum += bw.scale() * ba.scale() * block_isum_q8_0_q8_0(bw, ba) as f32;
    }
    sum
}

/// Like `dot_q8_0_q8_0` for Q4_0 weights.
#[inline]
pub fn dot_q4_0_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), a.len(), "dot_q4_0_q8_0: length mismatch");
    let mut sum = 0.0f32;
    for (bw, ba) in w.iter().zip(a) {
        sum += bw.scale() * ba.scale() * block_isum_q4_0_q8_0(bw, ba) as f32;
    }
    sum
}

/// `out[r] = dot(w[r, :], a)` for a Q8_0 matrix `w: [out.len(), a.len() * QK]`
/// (row `r` is blocks `r * a.len() .. (r + 1) * a.len()`) and Q8_0 activations.
pub fn matvec_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(
        w.len(),
        out.len() * a.len(),
        "matvec_q8_0_q8_0: shape mismatch"
    );
    if a.is_empty() {
        out.fill(0.0);
        return;
    }
    for (o, row) in out.iter_mut().zip(w.chunks_exact(a.len())) {
        *o = dot_q8_0_q8_0(row, a);
    }
}

/// `out[r] = dot(w[r, :], a)` for a Q4_0 matrix `w: [out.len(), a.len() * QK]`.
pub fn matvec_q4_0_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(
        w.len(),
        out.len() * a.len(),
        "matvec_q4_0_q8_0: shape mismatch"
    );
    if a.is_empty() {
        out.fill(0.0);
        return;
    }
    for (o, row) in out.iter_mut().zip(w.chunks_exact(a.len())) {
        *o = dot_q4_0_q8_0(row, a);
    }
}

/// `out[r] = dot(row r, a)` for a Q8_0 matrix in the row-interleaved layout
/// (`crate::blocks::TILE_ROWS`): `w: [out.len(), a.len() * QK]` with
/// `out.len()` a multiple of 4. Each row is summed exactly as
/// `matvec_q8_0_q8_0` sums it, so the results are bit-identical to the plain
/// layout's.
pub fn matvec_q8_0x4_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0], out: &mut [f32]) {
    check_tiled_shape(w.len(), a.len(), out.len(), "matvec_q8_0x4_q8_0");
    tiled_rows(w, a, out, |bw, ba| {
        bw.scale() * ba.scale() * block_isum_q8_0_q8_0(bw, ba) as f32
    })
}

/// Like `matvec_q8_0x4_q8_0` for Q4_0 weights (bit-identical to
/// `matvec_q4_0_q8_0` on the plain layout).
pub fn matvec_q4_0x4_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0], out: &mut [f32]) {
    check_tiled_shape(w.len(), a.len(), out.len(), "matvec_q4_0x4_q8_0");
    tiled_rows(w, a, out, |bw, ba| {
        bw.scale() * ba.scale() * block_isum_q4_0_q8_0(bw, ba) as f32
    })
}

/// Matrix-matrix product for batched prefill: `out[t * rows + r] = dot(row r,
/// token t)` for `n` activation vectors `a: [n, nb]` (token-major) and a
/// row-interleaved Q8_0 matrix `w: [rows, nb * QK]`. Each token's results are
/// exactly `matvec_q8_0x4_q8_0`'s for that token (every tier keeps this).
pub fn matmul_q8_0x4_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    check_matmul_shape(w.len(), a.len(), n, out.len(), "matmul_q8_0x4_q8_0");
    let (nb, rows) = (a.len() / n.max(1), out.len() / n.max(1));
    for (at, ot) in a
        .chunks_exact(nb.max(1))
        .zip(out.chunks_exact_mut(rows.max(1)))
    {
        matvec_q8_0x4_q8_0(w, at, ot);
    }
}

/// Like `matmul_q8_0x4_q8_0` for Q4_0 weights.
pub fn matmul_q4_0x4_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    check_matmul_shape(w.len(), a.len(), n, out.len(), "matmul_q4_0x4_q8_0");
    let (nb, rows) = (a.len() / n.max(1), out.len() / n.max(1));
    for (at, ot) in a
        .chunks_exact(nb.max(1))
        .zip(out.chunks_exact_mut(rows.max(1)))
    {
        matvec_q4_0x4_q8_0(w, at, ot);
    }
}

/// Asserts the matrix-matrix contract: `n >= 1` tokens, `a_len = n * nb`,
/// `out_len = n * rows`, `w_len = rows * nb`, rows a multiple of `TILE_ROWS`,
/// `nb >= 1`.
#[inline]
pub fn check_matmul_shape(w_len: usize, a_len: usize, n: usize, out_len: usize, what: &str) {
    assert!(
        n >= 1 && a_len.is_multiple_of(n) && out_len.is_multiple_of(n) && a_len >= n,
        "{what}: activations or outputs are not n = {n} whole rows"
    );
    check_tiled_shape(w_len, a_len / n, out_len / n, what);
}

/// Asserts the row-interleaved shape contract: `w_len == rows * nb`, rows a
/// multiple of `TILE_ROWS`.
#[inline]
pub fn check_tiled_shape(w_len: usize, nb: usize, rows: usize, what: &str) {
    assert!(
        w_len == rows * nb && rows.is_multiple_of(TILE_ROWS),
        "{what}: shape mismatch or rows not a multiple of {TILE_ROWS}"
    );
}

fn tiled_rows<B>(w: &[B], a: &[BlockQ8_0], out: &mut [f32], term: impl Fn(&B, &BlockQ8_0) -> f32) {
    let nb = a.len();
    for (r, o) in out.iter_mut().enumerate() {
        let mut sum = 0.0f32;
        for (k, ba) in a.iter().enumerate() {
            sum += term(&w[tiled_index(r, k, nb)], ba);
        }
        *o = sum;
    }
}

/// Dequantizes row `r` of a row-interleaved Q8_0 matrix (`out.len()` columns).
pub fn dequantize_tiled_row_q8_0(w: &[BlockQ8_0], r: usize, out: &mut [f32]) {
    let nb = out.len() / QK;
    for (k, chunk) in out.chunks_exact_mut(QK).enumerate() {
        dequantize_row_q8_0(core::slice::from_ref(&w[tiled_index(r, k, nb)]), chunk);
    }
}

/// Dequantizes row `r` of a row-interleaved Q4_0 matrix (`out.len()` columns).
pub fn dequantize_tiled_row_q4_0(w: &[BlockQ4_0], r: usize, out: &mut [f32]) {
    let nb = out.len() / QK;
    for (k, chunk) in out.chunks_exact_mut(QK).enumerate() {
        dequantize_row_q4_0(core::slice::from_ref(&w[tiled_index(r, k, nb)]), chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;

    #[test]
    fn q8_0_round_trip_and_domain() {
        let x: [f32; 32] = core::array::from_fn(|i| (i as f32 - 16.0) * 0.37);
        let mut b = [BlockQ8_0::zeroed()];
        quantize_row_q8_0(&x, &mut b);
        assert!((0..QK).all(|j| (-127..=127).contains(&b[0].q(j))));
        assert_eq!(b[0].q(0), -127, "largest magnitude maps to -127");
        let mut y = [0.0f32; 32];
        dequantize_row_q8_0(&b, &mut y);
        let d = b[0].scale();
        // Half a step of rounding, plus the f16 rounding of the scale (relative
        // 2^-11) times the largest quant.
        let tol = d * 0.5 + 127.0 * d / 2048.0;
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= tol, "{a} vs {b}");
        }
    }

    #[test]
    fn q4_0_round_trip() {
        let x: [f32; 32] = core::array::from_fn(|i| (i as f32 - 12.0) * 0.5);
        let mut b = [BlockQ4_0::zeroed()];
        quantize_row_q4_0(&x, &mut b);
        assert_eq!(b[0].q(31), -8, "the extreme element maps to -8");
        let mut y = [0.0f32; 32];
        dequantize_row_q4_0(&b, &mut y);
        let d = b[0].scale().abs();
        let tol = d * 0.5 + 8.0 * d / 2048.0;
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= tol, "{a} vs {b}");
        }
    }
}
