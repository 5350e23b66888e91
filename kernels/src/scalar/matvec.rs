use half::{bf16, f16};

/// Number of independent partial sums in the reference dot products. Fixing it
/// fixes the summation order, so results are reproducible across builds.
pub const DOT_LANES: usize = 8;

/// `sum_i a[i] * b[i]`, accumulated in `DOT_LANES` interleaved f32 partial sums
/// (element `i` goes to sum `i % DOT_LANES`), then summed pairwise.
///
/// Contract: `a.len() == b.len()`.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: length mismatch");
    let mut acc = [0.0f32; DOT_LANES];
    let chunks = a.len() / DOT_LANES;
    for c in 0..chunks {
        let (ac, bc) = (
            &a[c * DOT_LANES..][..DOT_LANES],
            &b[c * DOT_LANES..][..DOT_LANES],
        );
        for l in 0..DOT_LANES {
            acc[l] += ac[l] * bc[l];
        }
    }
    for i in chunks * DOT_LANES..a.len() {
        acc[i % DOT_LANES] += a[i] * b[i];
    }
    reduce_dot_lanes(acc)
}

/// Sums the `DOT_LANES` partial sums of the reference dot products in their
/// fixed order `((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7))`. Public so
/// that SIMD tiers reproduce the reference order exactly.
#[inline]
pub fn reduce_dot_lanes(acc: [f32; DOT_LANES]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Elements widened per step by the half-precision dot products.
const WIDEN_CHUNK: usize = 64;

/// Dot product of an f16 row with f32 activations: each weight is widened exactly
/// to f32 (in chunks, through `half`'s slice conversion, which uses the CPU's
/// conversion instructions when the `std` feature can detect them), then the
/// chunk is accumulated like `dot_f32`. The result equals
/// `dot_f32(widened(w), x)` bit for bit.
#[inline]
pub fn dot_f16_f32(w: &[f16], x: &[f32]) -> f32 {
    use half::slice::HalfFloatSliceExt;
    assert_eq!(w.len(), x.len(), "dot_f16_f32: length mismatch");
    widened_dot(w.len(), x, |start, buf| {
        w[start..start + buf.len()].convert_to_f32_slice(buf)
    })
}

/// Accumulates `x . widened` chunk by chunk with the lane assignment of `dot_f32`
/// (element `i` goes to partial sum `i % DOT_LANES`; `WIDEN_CHUNK` is a multiple
/// of `DOT_LANES`, so chunking does not change which sum an element joins).
#[inline]
fn widened_dot(n: usize, x: &[f32], mut widen: impl FnMut(usize, &mut [f32])) -> f32 {
    const _: () = assert!(WIDEN_CHUNK.is_multiple_of(DOT_LANES));
    let mut acc = [0.0f32; DOT_LANES];
    let mut buf = [0.0f32; WIDEN_CHUNK];
    let mut start = 0;
    while start < n {
        let len = WIDEN_CHUNK.min(n - start);
        let b = &mut buf[..len];
        widen(start, b);
        let xs = &x[start..start + len];
        let full = len / DOT_LANES;
        for c in 0..full {
            let (bc, xc) = (
                &b[c * DOT_LANES..][..DOT_LANES],
                &xs[c * DOT_LANES..][..DOT_LANES],
            );
            for l in 0..DOT_LANES {
                acc[l] += bc[l] * xc[l];
            }
        }
        for i in full * DOT_LANES..len {
            acc[i % DOT_LANES] += b[i] * xs[i];
        }
        start += len;
    }
    reduce_dot_lanes(acc)
}

/// Dot product of a bf16 row with f32 activations (each weight widened exactly
/// to f32); equals `dot_f32(widened(w), x)` bit for bit.
#[inline]
pub fn dot_bf16_f32(w: &[bf16], x: &[f32]) -> f32 {
    use half::slice::HalfFloatSliceExt;
    assert_eq!(w.len(), x.len(), "dot_bf16_f32: length mismatch");
    widened_dot(w.len(), x, |start, buf| {
        w[start..start + buf.len()].convert_to_f32_slice(buf)
    })
}

/// `out[r] = dot(w[r, :], x)` for an f32 matrix `w: [out.len(), x.len()]`.
pub fn matvec_f32_f32(w: &[f32], x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    assert_eq!(w.len(), out.len() * cols, "matvec_f32_f32: shape mismatch");
    if cols == 0 {
        out.fill(0.0);
        return;
    }
    for (o, row) in out.iter_mut().zip(w.chunks_exact(cols)) {
        *o = dot_f32(row, x);
    }
}

/// `out[r] = dot(w[r, :], x)` for an f16 matrix `w: [out.len(), x.len()]`.
pub fn matvec_f16_f32(w: &[f16], x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    assert_eq!(w.len(), out.len() * cols, "matvec_f16_f32: shape mismatch");
    if cols == 0 {
        out.fill(0.0);
        return;
    }
    for (o, row) in out.iter_mut().zip(w.chunks_exact(cols)) {
        *o = dot_f16_f32(row, x);
    }
}

/// Matrix-matrix product for batched prefill over a plain row-major f16 matrix
/// `w: [rows, cols]` and `n` f32 activation vectors `x: [n, cols]` (token-major):
/// `out[t * rows + r] = dot_f16_f32(w[r, :], x[t, :])`, `out: [n, rows]`
/// (token-major). Each token's results are exactly `matvec_f16_f32`'s for that
/// token; every tier keeps this (its `matmul_f16_f32` against its own
/// `matvec_f16_f32`), so batched prefill and token-by-token decode agree bit for bit.
pub fn matmul_f16_f32(w: &[f16], x: &[f32], n: usize, out: &mut [f32]) {
    let (cols, rows) = check_matmul_f16_shape(w.len(), x.len(), n, out.len(), "matmul_f16_f32");
    if cols == 0 {
        out.fill(0.0);
        return;
    }
    for (xt, ot) in x.chunks_exact(cols).zip(out.chunks_exact_mut(rows.max(1))) {
        matvec_f16_f32(w, xt, ot);
    }
}

/// Asserts the plain-layout matrix-matrix contract and returns `(cols, rows)`:
/// `n >= 1` tokens, `x_len = n * cols`, `out_len = n * rows`,
/// `w_len = rows * cols` (`cols == 0` is allowed: the products are 0).
#[inline]
pub fn check_matmul_f16_shape(
    w_len: usize,
    x_len: usize,
    n: usize,
    out_len: usize,
    what: &str,
) -> (usize, usize) {
    assert!(
        n >= 1 && x_len.is_multiple_of(n) && out_len.is_multiple_of(n),
        "{what}: activations or outputs are not n = {n} whole rows"
    );
    let (cols, rows) = (x_len / n, out_len / n);
    assert_eq!(w_len, rows * cols, "{what}: shape mismatch");
    (cols, rows)
}

/// `out[r] = dot(w[r, :], x)` for a bf16 matrix `w: [out.len(), x.len()]`.
pub fn matvec_bf16_f32(w: &[bf16], x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    assert_eq!(w.len(), out.len() * cols, "matvec_bf16_f32: shape mismatch");
    if cols == 0 {
        out.fill(0.0);
        return;
    }
    for (o, row) in out.iter_mut().zip(w.chunks_exact(cols)) {
        *o = dot_bf16_f32(row, x);
    }
}

/// `acc[i] += x[i]`. Contract: equal lengths.
pub fn add_f32(acc: &mut [f32], x: &[f32]) {
    assert_eq!(acc.len(), x.len(), "add_f32: length mismatch");
    for (a, b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

/// `acc[i] += scale * x[i]` (attention's weighted sum of values). Equal lengths.
pub fn axpy_f32(acc: &mut [f32], scale: f32, x: &[f32]) {
    assert_eq!(acc.len(), x.len(), "axpy_f32: length mismatch");
    for (a, b) in acc.iter_mut().zip(x) {
        *a += scale * b;
    }
}

/// `acc[i] += scale * widened(x[i])` for an f16 row (attention's weighted sum
/// over an f16 value cache): each value is widened exactly, the product rounded
/// to f32, then added (no fused multiply-add), so it equals `axpy_f32` on the
/// widened row bit for bit. Contract: equal lengths.
pub fn axpy_f16_f32(acc: &mut [f32], scale: f32, x: &[f16]) {
    assert_eq!(acc.len(), x.len(), "axpy_f16_f32: length mismatch");
    for (a, b) in acc.iter_mut().zip(x) {
        *a += scale * b.to_f32();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_f64_on_awkward_lengths() {
        for n in [
            0usize, 1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 33, 63, 67, 127, 129, 193, 255, 1023,
        ] {
            let a: std::vec::Vec<f32> =
                (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.25).collect();
            let b: std::vec::Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.5).collect();
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            // Inputs are small multiples of 1/8, so every partial sum is exact in f32.
            assert_eq!(dot_f32(&a, &b) as f64, exact, "n = {n}");
            let w16: std::vec::Vec<f16> = a.iter().map(|&v| f16::from_f32(v)).collect();
            let wb16: std::vec::Vec<bf16> = a.iter().map(|&v| bf16::from_f32(v)).collect();
            assert_eq!(dot_f16_f32(&w16, &b) as f64, exact, "f16 n = {n}");
            assert_eq!(dot_bf16_f32(&wb16, &b) as f64, exact, "bf16 n = {n}");
            // Chunked widening must not change the summation order.
            assert_eq!(
                dot_f16_f32(&w16, &b).to_bits(),
                dot_f32(&a, &b).to_bits(),
                "n = {n}"
            );
        }
    }

    #[test]
    fn matvec_rows() {
        let w = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let x = [1.0f32, 0.5, -1.0];
        let mut out = [0.0f32; 2];
        matvec_f32_f32(&w, &x, &mut out);
        assert_eq!(out, [1.0 + 1.0 - 3.0, 4.0 + 2.5 - 6.0]);
    }
}
