//! Attention of one query head over an f16 or f32 key/value cache: the
//! reference that the fused SIMD kernels reproduce bit for bit (given the same
//! tier's dot product, softmax and `axpy`). Widening is exact and every tier's
//! f16 dot product and `axpy` equal their f32 forms on the widened rows, so
//! `attend_f32` over widened rows equals `attend_f16` over the f16 rows.

use half::f16;

use super::{axpy_f16_f32, axpy_f32, dot_f16_f32, dot_f32, softmax_f32};

/// Checks the shapes of an `attend_f16` or `attend_f32` call; returns
/// `(head_dim, positions)`.
///
/// # Panics
/// If `out.len() != q.len()`, `stride < q.len()`, or `k` or `v` is shorter
/// than `n` rows of `stride` elements (the last row needs only `q.len()`;
/// a size that overflows `usize` is never available).
#[inline]
pub fn check_attend<T>(
    q: &[f32],
    k: &[T],
    v: &[T],
    stride: usize,
    scores: &[f32],
    out: &[f32],
) -> (usize, usize) {
    let (hd, n) = (q.len(), scores.len());
    assert_eq!(out.len(), hd, "attend: out length");
    assert!(stride >= hd, "attend: stride {stride} < head_dim {hd}");
    let need = match n {
        0 => Some(0),
        n => (n - 1).checked_mul(stride).and_then(|e| e.checked_add(hd)),
    };
    assert!(
        need.is_some_and(|need| k.len() >= need && v.len() >= need),
        "attend: {n} rows of stride {stride} do not fit in {} / {} elements",
        k.len(),
        v.len()
    );
    (hd, n)
}

/// Attention of the query head `q` (`head_dim` elements) over the `n =
/// scores.len()` positions whose keys and values are rows `j * stride ..
/// j * stride + head_dim` of `k` and `v`:
/// `scores[j] = dot_f16_f32(K_j, q) * scale`, then `softmax_f32(scores)`,
/// then `out = sum_j scores[j] * V_j`, accumulated from zero in `j` order with
/// `axpy_f16_f32`. `out` is overwritten; `scores` is left holding the
/// probabilities. `n = 0` leaves `out` zero. Shapes: [`check_attend`].
pub fn attend_f16(
    q: &[f32],
    k: &[f16],
    v: &[f16],
    stride: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    attend_with(
        dot_f16_f32,
        softmax_f32,
        axpy_f16_f32,
        (q, k, v, stride, scale),
        scores,
        out,
    );
}

/// `attend_f16` over f32 keys and values: `dot_f32` and `axpy_f32` in place of
/// the f16 forms.
pub fn attend_f32(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    stride: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    attend_with(
        dot_f32,
        softmax_f32,
        axpy_f32,
        (q, k, v, stride, scale),
        scores,
        out,
    );
}

/// `attend_f16` (f16 rows) or `attend_f32` (f32 rows) composed from a tier's
/// dot product, softmax and `axpy`: the definition a fused kernel of that tier
/// must equal bit for bit.
pub fn attend_with<T>(
    dot: fn(&[T], &[f32]) -> f32,
    softmax: fn(&mut [f32]),
    axpy: fn(&mut [f32], f32, &[T]),
    (q, k, v, stride, scale): (&[f32], &[T], &[T], usize, f32),
    scores: &mut [f32],
    out: &mut [f32],
) {
    let (hd, _) = check_attend(q, k, v, stride, scores, out);
    for (j, s) in scores.iter_mut().enumerate() {
        *s = dot(&k[j * stride..][..hd], q) * scale;
    }
    softmax(scores);
    out.fill(0.0);
    for (j, &p) in scores.iter().enumerate() {
        axpy(out, p, &v[j * stride..][..hd]);
    }
}
