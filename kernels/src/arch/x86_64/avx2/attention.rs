//! AVX2 attention helpers over f32 and f16 rows: dot products (scores), `axpy`
//! (weighted sum of values) and f16 widening. All bit-identical to the scalar
//! kernels: the dot products keep the reference's eight partial sums in one
//! register (element `i` in lane `i % 8`, multiply then add, no FMA) and its
//! final reduction order; `axpy` rounds the product before adding.

use core::arch::x86_64::*;

use half::f16;

use crate::scalar::{reduce_dot_lanes, DOT_LANES};

const _: () = assert!(DOT_LANES == 8, "one partial sum per AVX2 lane");

/// The element type of the key and value rows the fused attention reads: f16
/// (widened exactly on load) or f32. The f32 form of every step is the same,
/// so both give the same bits on the same (widened) values.
pub(in crate::arch::x86_64) trait RowElem: Copy {
    /// Eight elements from `p`, as f32.
    ///
    /// # Safety
    /// The CPU has AVX2 and F16C; `p` is valid for eight reads.
    unsafe fn load8(p: *const Self) -> __m256;
    /// One element as f32 (exact), for the scalar tails.
    fn to_f32(self) -> f32;
}

impl RowElem for f16 {
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8(p: *const Self) -> __m256 {
        // SAFETY: eight f16 are one unaligned 128-bit load (caller's bounds).
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p as *const __m128i) })
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl RowElem for f32 {
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8(p: *const Self) -> __m256 {
        // SAFETY: caller's bounds; unaligned load.
        unsafe { _mm256_loadu_ps(p) }
    }
    fn to_f32(self) -> f32 {
        self
    }
}

/// `sum(row[i] * x[i])` in the reference's order (eight partial sums, multiply
/// then add, `reduce_dot_lanes`).
///
/// # Safety
/// The CPU has AVX2 and F16C; `row.len() == x.len()`.
#[target_feature(enable = "avx2,f16c")]
unsafe fn dot_row<T: RowElem>(row: &[T], x: &[f32]) -> f32 {
    let n = row.len();
    let main = n / 8 * 8;
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= main <= n for both rows.
        let (rv, xv) = unsafe {
            (
                T::load8(row.as_ptr().add(i)),
                _mm256_loadu_ps(x.as_ptr().add(i)),
            )
        };
        acc = _mm256_add_ps(acc, _mm256_mul_ps(rv, xv));
        i += 8;
    }
    let mut lanes = [0.0f32; DOT_LANES];
    // SAFETY: `lanes` holds 8 f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
    for j in main..n {
        lanes[j % DOT_LANES] += row[j].to_f32() * x[j];
    }
    reduce_dot_lanes(lanes)
}

pub(super) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx2Token)`; lengths checked.
    unsafe { dot_row(a, b) }
}

pub(super) fn dot_f16_f32(w: &[f16], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len(), "dot_f16_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx2Token)`; lengths checked.
    unsafe { dot_row(w, x) }
}

pub(super) fn axpy_f32(acc: &mut [f32], scale: f32, x: &[f32]) {
    assert_eq!(acc.len(), x.len(), "axpy_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx2Token)`; lengths checked.
    unsafe { axpy_f32_impl(acc, scale, x) }
}

/// # Safety
/// The CPU has AVX2; `acc.len() == x.len()`.
#[target_feature(enable = "avx2")]
unsafe fn axpy_f32_impl(acc: &mut [f32], scale: f32, x: &[f32]) {
    let n = acc.len();
    let main = n / 8 * 8;
    let s = _mm256_set1_ps(scale);
    let (ap, xp) = (acc.as_mut_ptr(), x.as_ptr());
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= main <= n for both rows.
        unsafe {
            let r = _mm256_add_ps(
                _mm256_loadu_ps(ap.add(i)),
                _mm256_mul_ps(s, _mm256_loadu_ps(xp.add(i))),
            );
            _mm256_storeu_ps(ap.add(i), r);
        }
        i += 8;
    }
    for j in main..n {
        acc[j] += scale * x[j];
    }
}

pub(super) fn axpy_f16_f32(acc: &mut [f32], scale: f32, x: &[f16]) {
    assert_eq!(acc.len(), x.len(), "axpy_f16_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx2Token)`; lengths checked.
    unsafe { axpy_f16_f32_impl(acc, scale, x) }
}

/// # Safety
/// The CPU has AVX2 and F16C; `acc.len() == x.len()`.
#[target_feature(enable = "avx2,f16c")]
unsafe fn axpy_f16_f32_impl(acc: &mut [f32], scale: f32, x: &[f16]) {
    let n = acc.len();
    let main = n / 8 * 8;
    let s = _mm256_set1_ps(scale);
    let (ap, xp) = (acc.as_mut_ptr(), x.as_ptr());
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= main <= n; 8 f16 are one unaligned 128-bit load.
        unsafe {
            let xv = _mm256_cvtph_ps(_mm_loadu_si128(xp.add(i) as *const __m128i));
            let r = _mm256_add_ps(_mm256_loadu_ps(ap.add(i)), _mm256_mul_ps(s, xv));
            _mm256_storeu_ps(ap.add(i), r);
        }
        i += 8;
    }
    for j in main..n {
        acc[j] += scale * x[j].to_f32();
    }
}

/// Positions whose scores one pass computes together (one accumulator per
/// position and head, sharing the loads of the keys and queries).
const SCORE_ROWS: usize = 4;
const _: () = assert!(SCORE_ROWS == 4, "the in-register reduction sums 4 rows");
/// Output registers (8 columns each, over all heads of a pass) one pass over
/// the values keeps: 64 columns of one head, 32 of two, 16 of three.
const OUT_REGS: usize = 8;

/// A tier's weighted sum of values for the passes of `attend_around`:
/// `out_h = sum_j p_h[j] * V_j` for `H` heads, accumulated from zero in `j`
/// order, each step `out + p * v` with the product rounded (as every tier's
/// `axpy` rounds it), so any two implementations give the same bits.
pub(in crate::arch::x86_64) trait ValuePass<T: RowElem> {
    /// # Safety
    /// The CPU has the tier's features; shapes as `check_attend` accepts for
    /// `H` heads, with `p` holding `H` rows of probabilities (`scores`).
    unsafe fn values<const H: usize>(v: &[T], stride: usize, p: &[f32], out: &mut [f32]);
}

/// AVX2's value pass: `OUT_REGS` 8-column registers over the heads of a pass.
pub(in crate::arch::x86_64) struct Avx2Values;

impl<T: RowElem> ValuePass<T> for Avx2Values {
    unsafe fn values<const H: usize>(v: &[T], stride: usize, p: &[f32], out: &mut [f32]) {
        // SAFETY: the caller's; AVX2 tables only reach this on AVX2 CPUs.
        unsafe {
            match H {
                1 => attend_values::<T, H, OUT_REGS>(v, stride, p, 0, out),
                2 => attend_values::<T, H, { OUT_REGS / 2 }>(v, stride, p, 0, out),
                _ => attend_values::<T, H, { OUT_REGS / 3 }>(v, stride, p, 0, out),
            }
        }
    }
}

/// Fused attention over an f16 (`scalar::attend_f16`) or f32
/// (`scalar::attend_f32`) cache: bit-identical to `scalar::attend_with` over
/// this tier's dot product, `softmax::softmax_f32` and `axpy` for that row
/// type (`attend_around`). The table takes `attend::<f16>` and
/// `attend::<f32>`.
#[allow(clippy::too_many_arguments)] // the slot's signature (`arch::AttendF16`)
pub(super) fn attend<T: RowElem>(
    heads: usize,
    q: &[f32],
    k: &[T],
    v: &[T],
    stride: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    attend_around::<T, Avx2Values>(
        super::softmax::softmax_f32,
        heads,
        (q, k, v, stride, scale),
        scores,
        out,
    );
}

/// The fused attention of the x86 tiers around a tier's `softmax`, over f16 or
/// f32 rows: checks the shapes, then serves the heads of the group in passes of
/// up to three (`scalar::attend_passes`), so each key and value row is loaded
/// (and widened) once per pass for all of them. A pass computes the scores of
/// four positions per head together, applies `softmax` to each head's scores,
/// then adds the values in with the outputs held in registers instead of
/// loading and storing them once per position. Equals `scalar::attend_with(dot,
/// softmax, axpy)` bit for bit for this module's dot product (the reference's
/// order) and any `axpy` (one rounded product, one add per element): each
/// head's arithmetic is the same, in the same order, however many share a pass.
/// `V` is the tier's value pass.
pub(in crate::arch::x86_64) fn attend_around<T: RowElem, V: ValuePass<T>>(
    softmax: fn(&mut [f32]),
    heads: usize,
    (q, k, v, stride, scale): (&[f32], &[T], &[T], usize, f32),
    scores: &mut [f32],
    out: &mut [f32],
) {
    let (hd, n) = crate::scalar::check_attend(heads, q, (k, v, stride), scores, out);
    for (h, g) in crate::scalar::attend_passes(heads) {
        let (q, k) = (&q[h * hd..][..g * hd], (k, v, stride));
        let (scores, out) = (&mut scores[h * n..][..g * n], &mut out[h * hd..][..g * hd]);
        // SAFETY: reachable only through the x86 tier tables, whose CPUs all
        // have AVX2 and F16C, with a `V` whose features that tier's CPUs have
        // (`Avx512Values` is private to the AVX-512 table's `attend`); shapes
        // checked (a slice of whole heads of a checked call is a checked
        // call).
        unsafe {
            match g {
                1 => attend_pass::<T, V, 1>(softmax, q, k, scale, scores, out),
                2 => attend_pass::<T, V, 2>(softmax, q, k, scale, scores, out),
                _ => attend_pass::<T, V, 3>(softmax, q, k, scale, scores, out),
            }
        }
    }
}

/// One pass of `attend_around` over `H` heads.
///
/// # Safety
/// The CPU has AVX2 and F16C and what `V` needs; the shapes are those
/// `check_attend` accepts for `H` heads.
#[target_feature(enable = "avx2,f16c")]
unsafe fn attend_pass<T: RowElem, V: ValuePass<T>, const H: usize>(
    softmax: fn(&mut [f32]),
    q: &[f32],
    (k, v, stride): (&[T], &[T], usize),
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let n = scores.len() / H;
    // SAFETY: the caller's.
    unsafe { attend_scores::<T, H>(q, k, stride, scale, scores) };
    for s in scores.chunks_exact_mut(n.max(1)) {
        softmax(s);
    }
    // SAFETY: the caller's.
    unsafe { V::values::<H>(v, stride, scores, out) };
}

/// `scores[h * n + j] = dot(K_j, q_h) * scale` for every position `j` and
/// head `h < H`.
///
/// # Safety
/// The CPU has AVX2 and F16C; shapes as `check_attend` accepts for `H` heads.
#[target_feature(enable = "avx2,f16c")]
unsafe fn attend_scores<T: RowElem, const H: usize>(
    q: &[f32],
    k: &[T],
    stride: usize,
    scale: f32,
    scores: &mut [f32],
) {
    let (hd, n) = (q.len() / H, scores.len() / H);
    let main = hd / 8 * 8;
    let (qp, kp) = (q.as_ptr(), k.as_ptr());
    let mut j = 0;
    while j + SCORE_ROWS <= n {
        let mut acc = [[_mm256_setzero_ps(); SCORE_ROWS]; H];
        let mut i = 0;
        while i < main {
            for r in 0..SCORE_ROWS {
                // SAFETY: i + 8 <= main <= hd; row j + r < n starts at
                // (j + r) * stride and has hd elements in `k` (checked);
                // head h's query is q[h * hd..][..hd].
                unsafe {
                    let kv = T::load8(kp.add((j + r) * stride + i));
                    for (h, a) in acc.iter_mut().enumerate() {
                        let qv = _mm256_loadu_ps(qp.add(h * hd + i));
                        a[r] = _mm256_add_ps(a[r], _mm256_mul_ps(kv, qv));
                    }
                }
            }
            i += 8;
        }
        for (h, a) in acc.iter().enumerate() {
            let out = &mut scores[h * n + j..][..SCORE_ROWS];
            if main == hd {
                // The reference order `((a0 + a4) + (a1 + a5)) + ((a2 + a6) +
                // (a3 + a7))` for four rows at once: halves added, then two
                // rounds of pairwise `hadd` (whose pairs are exactly the
                // reference's).
                // SAFETY: `out` holds 4 f32.
                unsafe {
                    let half = |a: __m256| {
                        _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1))
                    };
                    let h01 = _mm_hadd_ps(half(a[0]), half(a[1]));
                    let h23 = _mm_hadd_ps(half(a[2]), half(a[3]));
                    let s4 = _mm_mul_ps(_mm_hadd_ps(h01, h23), _mm_set1_ps(scale));
                    _mm_storeu_ps(out.as_mut_ptr(), s4);
                }
                continue;
            }
            let qh = &q[h * hd..][..hd];
            for (r, (a, o)) in a.iter().zip(out).enumerate() {
                let mut lanes = [0.0f32; DOT_LANES];
                // SAFETY: `lanes` holds 8 f32.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *a) };
                let row = &k[(j + r) * stride..][..hd];
                for c in main..hd {
                    lanes[c % DOT_LANES] += row[c].to_f32() * qh[c];
                }
                *o = reduce_dot_lanes(lanes) * scale;
            }
        }
        j += SCORE_ROWS;
    }
    for h in 0..H {
        let qh = &q[h * hd..][..hd];
        for jj in j..n {
            // SAFETY: same CPU features; the row has hd elements.
            scores[h * n + jj] = unsafe { dot_row(&k[jj * stride..][..hd], qh) } * scale;
        }
    }
}

/// Columns `c0..` of `out_h = sum_j p_h[j] * V_j` for each head `h < H`
/// (`p_h` is `p[h * n..]`, `out_h` is `out[h * hd..]`), accumulated from zero
/// in `j` order (each step `out + p * v`, rounded as `axpy_f16_f32` and
/// `axpy_f32` round it), `R` registers per head at a time.
///
/// # Safety
/// The CPU has AVX2 and F16C; shapes as `check_attend` accepts for `H` heads;
/// `c0 <= head_dim` (any column: the registers cover whole groups of 8 from
/// `c0` that fit, the rest is scalar).
#[target_feature(enable = "avx2,f16c")]
pub(in crate::arch::x86_64) unsafe fn attend_values<T: RowElem, const H: usize, const R: usize>(
    v: &[T],
    stride: usize,
    p: &[f32],
    c0: usize,
    out: &mut [f32],
) {
    let (hd, n) = (out.len() / H, p.len() / H);
    let mut c = c0;
    while c + 8 * R <= hd {
        // SAFETY: c + 8 * R <= head_dim; same features.
        unsafe { attend_values_cols::<T, H, R>(v, stride, p, c, out) };
        c += 8 * R;
    }
    while c + 8 <= hd {
        // SAFETY: c + 8 <= head_dim; same features.
        unsafe { attend_values_cols::<T, H, 1>(v, stride, p, c, out) };
        c += 8;
    }
    for h in 0..H {
        let ph = &p[h * n..][..n];
        for col in c..hd {
            let o = &mut out[h * hd + col];
            *o = 0.0;
            for (j, &pj) in ph.iter().enumerate() {
                *o += pj * v[j * stride + col].to_f32();
            }
        }
    }
}

/// Columns `c..c + 8 * R` of every head of `attend_values`, held in `H * R`
/// registers.
///
/// # Safety
/// The CPU has AVX2 and F16C; `c + 8 * R <= head_dim`; shapes as
/// `check_attend` accepts for `H` heads.
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn attend_values_cols<T: RowElem, const H: usize, const R: usize>(
    v: &[T],
    stride: usize,
    p: &[f32],
    c: usize,
    out: &mut [f32],
) {
    let (hd, n) = (out.len() / H, p.len() / H);
    let (vp, pp) = (v.as_ptr(), p.as_ptr());
    let mut acc = [[_mm256_setzero_ps(); R]; H];
    for j in 0..n {
        let row = j * stride + c;
        // SAFETY: h * n + j < H * n = p.len().
        let s: [__m256; H] =
            core::array::from_fn(|h| _mm256_set1_ps(unsafe { *pp.add(h * n + j) }));
        for g in 0..R {
            // SAFETY: c + 8 * g + 8 <= head_dim; row j < n has head_dim
            // elements from j * stride.
            let x = unsafe { T::load8(vp.add(row + 8 * g)) };
            for (a, sh) in acc.iter_mut().zip(&s) {
                a[g] = _mm256_add_ps(a[g], _mm256_mul_ps(*sh, x));
            }
        }
    }
    for (h, a) in acc.iter().enumerate() {
        for (g, ag) in a.iter().enumerate() {
            // SAFETY: h * hd + c + 8 * g + 8 <= H * hd = out.len().
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(h * hd + c + 8 * g), *ag) };
        }
    }
}

pub(super) fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "f16_to_f32: length mismatch");
    // SAFETY: reachable only through `table(Avx2Token)`; lengths checked.
    unsafe { f16_to_f32_impl(src, dst) }
}

/// # Safety
/// The CPU has AVX2 and F16C; `src.len() == dst.len()`.
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16_to_f32_impl(src: &[f16], dst: &mut [f32]) {
    let n = src.len();
    let main = n / 8 * 8;
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i < main {
        // SAFETY: i + 8 <= main <= n for both slices.
        unsafe {
            let v = _mm256_cvtph_ps(_mm_loadu_si128(sp.add(i) as *const __m128i));
            _mm256_storeu_ps(dp.add(i), v);
        }
        i += 8;
    }
    for j in main..n {
        dst[j] = src[j].to_f32();
    }
}
