//! Attention of a group of query heads (those sharing one key/value head in
//! grouped-query attention, or a single head) over an f16 or f32 key/value
//! cache: the
//! reference that the fused SIMD kernels reproduce bit for bit (given the same
//! tier's dot product, softmax and `axpy`). Widening is exact and every tier's
//! f16 dot product and `axpy` equal their f32 forms on the widened rows, so
//! `attend_f32` over widened rows equals `attend_f16` over the f16 rows.

use half::f16;

use super::{axpy_f16_f32, axpy_f32, dot_f16_f32, dot_f32, softmax_f32};

/// Most query heads one pass of a fused attention kernel serves: each key and
/// value row is loaded (and widened) once per pass for all of them. Three
/// heads' score sums for four positions fill 12 of AVX2's 16 registers (24 of
/// NEON's 32).
pub const ATTEND_GROUP_MAX: usize = 3;

/// `heads` query heads split into passes of at most `ATTEND_GROUP_MAX`, as
/// even as possible (8 = 3 + 3 + 2, 7 = 3 + 2 + 2, 4 = 2 + 2), as `(first
/// head, heads)` in order. The SIMD attention kernels serve a call's heads in
/// these passes; the runtime calls them with one pass's heads at a time.
pub fn attend_passes(heads: usize) -> impl Iterator<Item = (usize, usize)> {
    let passes = heads.div_ceil(ATTEND_GROUP_MAX);
    // The first `heads % passes` passes take one head more than the others.
    let (base, extra) = match passes {
        0 => (0, 0),
        p => (heads / p, heads % p),
    };
    (0..passes).map(move |c| (c * base + c.min(extra), base + usize::from(c < extra)))
}

/// Checks the shapes of an `attend_f16` or `attend_f32` call over `heads`
/// query heads; returns `(head_dim, positions)`.
///
/// # Panics
/// If `heads == 0`, `q.len()` or `scores.len()` is not a multiple of `heads`,
/// `out.len() != q.len()`, `stride < head_dim`, or `k` or `v` is shorter than
/// `positions` rows of `stride` elements (the last row needs only `head_dim`;
/// a size that overflows `usize` is never available).
#[inline]
pub fn check_attend<T>(
    heads: usize,
    q: &[f32],
    (k, v, stride): (&[T], &[T], usize),
    scores: &[f32],
    out: &[f32],
) -> (usize, usize) {
    assert!(
        heads >= 1 && q.len().is_multiple_of(heads) && scores.len().is_multiple_of(heads),
        "attend: q ({}) and scores ({}) are not {heads} heads",
        q.len(),
        scores.len()
    );
    let (hd, n) = (q.len() / heads, scores.len() / heads);
    assert_eq!(out.len(), q.len(), "attend: out length");
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

/// Attention of `heads` query heads that share one key/value head (a
/// grouped-query attention group; `heads = 1` for one head). Head `h` is
/// `q[h * head_dim..][..head_dim]` (`head_dim = q.len() / heads`); its `n =
/// scores.len() / heads` positions' keys and values are rows `j * stride ..
/// j * stride + head_dim` of `k` and `v`. Per head:
/// `scores_h[j] = dot_f16_f32(K_j, q_h) * scale` (`scores_h` is
/// `scores[h * n..][..n]`), then `softmax_f32(scores_h)`, then `out_h = sum_j
/// scores_h[j] * V_j`, accumulated from zero in `j` order with `axpy_f16_f32`
/// (`out_h` is `out[h * head_dim..][..head_dim]`). `out` is overwritten;
/// `scores` is left holding the probabilities. `n = 0` leaves `out` zero.
/// Shapes: [`check_attend`].
#[allow(clippy::too_many_arguments)] // the slot's signature (`arch::AttendF16`)
pub fn attend_f16(
    heads: usize,
    q: &[f32],
    k: &[f16],
    v: &[f16],
    stride: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    attend_with(
        (dot_f16_f32, softmax_f32, axpy_f16_f32),
        heads,
        (q, k, v, stride, scale),
        scores,
        out,
    );
}

/// `attend_f16` over f32 keys and values: `dot_f32` and `axpy_f32` in place of
/// the f16 forms.
#[allow(clippy::too_many_arguments)] // the slot's signature (`arch::AttendF32`)
pub fn attend_f32(
    heads: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    stride: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    attend_with(
        (dot_f32, softmax_f32, axpy_f32),
        heads,
        (q, k, v, stride, scale),
        scores,
        out,
    );
}

/// A tier's dot product, softmax and `axpy` for one row type: what
/// `attend_with` composes.
pub type AttendParts<T> = (
    fn(&[T], &[f32]) -> f32,
    fn(&mut [f32]),
    fn(&mut [f32], f32, &[T]),
);

/// `attend_f16` (f16 rows) or `attend_f32` (f32 rows) composed from a tier's
/// dot product, softmax and `axpy`, one head after another: the definition a
/// fused kernel of that tier must equal bit for bit.
pub fn attend_with<T>(
    (dot, softmax, axpy): AttendParts<T>,
    heads: usize,
    (q, k, v, stride, scale): (&[f32], &[T], &[T], usize, f32),
    scores: &mut [f32],
    out: &mut [f32],
) {
    let (hd, n) = check_attend(heads, q, (k, v, stride), scores, out);
    for h in 0..heads {
        let (q, scores) = (&q[h * hd..][..hd], &mut scores[h * n..][..n]);
        let out = &mut out[h * hd..][..hd];
        for (j, s) in scores.iter_mut().enumerate() {
            *s = dot(&k[j * stride..][..hd], q) * scale;
        }
        softmax(scores);
        out.fill(0.0);
        for (j, &p) in scores.iter().enumerate() {
            axpy(out, p, &v[j * stride..][..hd]);
        }
    }
}
