//! AVX-512 products over plain row-major f16 matrices: the matrix-vector
//! product (decode) and the matrix-matrix product (batched prefill).
//!
//! Both run the same register tile (`tile`): every (row, token) pair owns one
//! 16-lane accumulator that takes the row's 16-element chunks in order
//! (element `i` in lane `i % 16`; a ragged tail is one zero-padded chunk,
//! read with masked loads) and is reduced in one fixed order (`reduce`). A
//! (row, token) result therefore does not depend on which rows or tokens share
//! its tile: `matmul_f16_f32` equals `matvec_f16_f32` per token bit for bit.
//! Against the scalar kernel (8 lanes) the summation order differs, as between
//! any two tiers.
//!
//! Each 16-wide weight chunk is widened from memory (`vcvtph2ps zmm, m256`, no
//! shuffle) once per tile and used for every token of the tile. The matrix-
//! matrix tiles are 3 rows x 8 tokens or 6 x 4 (24 accumulators, the weight
//! chunks and one input chunk of the 32 registers; see `NARROW`). The safe
//! wrappers assert the scalar kernels' shape contracts and are reachable only
//! through `table(Avx512Token)`.

use core::arch::x86_64::*;

use half::f16;

use crate::scalar::check_matmul_f16_shape;

/// f32 lanes per accumulator (and f16 elements per widened chunk).
const LANES: usize = 16;
/// Rows per tile of the matrix-vector product (two row streams per thread
/// plus the prefetched next tile, as the AVX2 kernel: `benches/RESULTS.md`,
/// "f16 matrix-vector product: 2-row tiles").
const MATVEC_ROWS: usize = 2;
/// Weight bytes per row panel of the matrix-matrix product: a panel is read
/// from memory once (by the first token tile) and stays in L2 for the others.
const PANEL_BYTES: usize = 64 << 10;
/// Register tiles of the matrix-matrix product (rows x tokens, 24
/// accumulators each): 3 x 8 when a token tile's inputs fit in L1
/// (`8 * cols * 4 <= NARROW_INPUT_BYTES`), else 6 x 4, which streams half the
/// input bytes per FMA from L2. 6 x 4 was faster on 1.1B f16 prefill (2048
/// and 5632 columns), 3 x 8 on 135M (576 and 1536 columns) at one thread
/// (`benches/RESULTS.md`, "AVX-512 tier on an AVX-512 host").
const NARROW: (usize, usize) = (3, 8);
const WIDE: (usize, usize) = (6, 4);
/// Input bytes of one token tile that still leave L1 room for the weights.
const NARROW_INPUT_BYTES: usize = 32 << 10;

/// Sum of the 16 lanes: the two 256-bit halves added lane by lane, then
/// `((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7))`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn reduce(v: __m512) -> f32 {
    let h = _mm256_add_ps(
        _mm512_castps512_ps256(v),
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
    );
    let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
    let h = _mm_hadd_ps(s, s);
    _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)))
}

/// Dot products of `R` consecutive rows (`w`: `R * cols` f16, row-major) with
/// `T` tokens (`x`: `T * cols` f32, token-major): `result[t][j]`.
///
/// `PF` (for rows read from memory rather than cache) prefetches the next
/// tile's `R` rows in address order, one line per chunk (`R * 32` bytes
/// apart), so they are requested in full by the time this tile ends.
/// Prefetches never fault, so addresses past the matrix are harmless; the
/// pointers are only formed, never dereferenced.
///
/// # Safety
/// The CPU has AVX-512 F/BW/VL, FMA and F16C; `w` is valid for `R * cols`
/// reads and `x` for `T * cols` reads; `cols >= 1`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn tile<const R: usize, const T: usize, const PF: bool>(
    w: *const f16,
    x: *const f32,
    cols: usize,
) -> [[f32; R]; T] {
    let mut acc = [[_mm512_setzero_ps(); R]; T];
    let mut i = 0;
    while i + LANES <= cols {
        if PF {
            let next = w.wrapping_add(R * cols) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(i * R * 2));
        }
        // SAFETY (both blocks): rows `j < R` and tokens `t < T` hold `cols`
        // elements each and `i + 16 <= cols`; unaligned loads.
        let wv: [__m512; R] = core::array::from_fn(|j| {
            _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(w.add(j * cols + i) as *const __m256i) })
        });
        for (t, acc) in acc.iter_mut().enumerate() {
            let xv = unsafe { _mm512_loadu_ps(x.add(t * cols + i)) };
            for (a, wv) in acc.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(*wv, xv, *a);
            }
        }
        i += LANES;
    }
    if i < cols {
        let m: __mmask16 = ((1u32 << (cols - i)) - 1) as u16;
        // SAFETY (both blocks): masked loads touch only the `cols - i`
        // elements left in each row and token (caller's bounds).
        let wv: [__m512; R] = core::array::from_fn(|j| {
            _mm512_cvtph_ps(unsafe { _mm256_maskz_loadu_epi16(m, w.add(j * cols + i).cast()) })
        });
        for (t, acc) in acc.iter_mut().enumerate() {
            let xv = unsafe { _mm512_maskz_loadu_ps(m, x.add(t * cols + i)) };
            for (a, wv) in acc.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(*wv, xv, *a);
            }
        }
    }
    // Plain loops: `map` closures would not inherit the target features, so
    // `reduce` would not be inlined.
    let mut out = [[0.0f32; R]; T];
    for (o, a) in out.iter_mut().zip(&acc) {
        for (o, a) in o.iter_mut().zip(a) {
            *o = reduce(*a);
        }
    }
    out
}

pub(super) fn matvec_f16_f32(w: &[f16], x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    assert_eq!(w.len(), out.len() * cols, "matvec_f16_f32: shape mismatch");
    if cols == 0 {
        out.fill(0.0);
        return;
    }
    // SAFETY: reachable only through `table(Avx512Token)`; the shape was
    // checked above and `cols >= 1`.
    unsafe { matvec_impl(w, x, out) }
}

/// # Safety
/// The CPU has the AVX-512 tier's features; `w.len() == out.len() * x.len()`,
/// `x.len() >= 1`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn matvec_impl(w: &[f16], x: &[f32], out: &mut [f32]) {
    let (cols, rows) = (x.len(), out.len());
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut r = 0;
    while r + MATVEC_ROWS <= rows {
        // SAFETY: rows r..r + MATVEC_ROWS are in `w` (shape contract).
        let [o] = unsafe { tile::<MATVEC_ROWS, 1, true>(wp.add(r * cols), xp, cols) };
        out[r..r + MATVEC_ROWS].copy_from_slice(&o);
        r += MATVEC_ROWS;
    }
    while r < rows {
        // SAFETY: row r is in `w`.
        let [[o]] = unsafe { tile::<1, 1, true>(wp.add(r * cols), xp, cols) };
        out[r] = o;
        r += 1;
    }
}

pub(super) fn matmul_f16_f32(w: &[f16], x: &[f32], n: usize, out: &mut [f32]) {
    let (cols, rows) = check_matmul_f16_shape(w.len(), x.len(), n, out.len(), "matmul_f16_f32");
    if cols == 0 {
        out.fill(0.0);
        return;
    }
    // SAFETY: reachable only through `table(Avx512Token)`; shape checked
    // above and `cols >= 1`.
    unsafe { matmul_impl(w, x, n, cols, rows, out) }
}

/// Row panels of `PANEL_BYTES`; within a panel, token tiles (`NARROW` or
/// `WIDE`), and within a token tile, the panel's rows in order (each weight
/// row stays in L2 for every token tile, each token tile's inputs in L1 or
/// L2 for every row). The first token tile of a panel streams it in from
/// memory.
///
/// # Safety
/// The CPU has the AVX-512 tier's features; `w: [rows, cols]`, `x: [n, cols]`,
/// `out: [n, rows]`, `cols >= 1`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn matmul_impl(w: &[f16], x: &[f32], n: usize, cols: usize, rows: usize, out: &mut [f32]) {
    let wide = NARROW.1 * cols * 4 > NARROW_INPUT_BYTES;
    // A multiple of 6 rows, so that both tiles' row blocking fits.
    let panel = (PANEL_BYTES / (cols * 2)).div_ceil(6).max(1) * 6;
    let tokens = if wide { WIDE.1 } else { NARROW.1 };
    let mut p0 = 0;
    while p0 < rows {
        let p1 = (p0 + panel).min(rows);
        let mut t = 0;
        while t < n {
            let nt = (n - t).min(tokens);
            macro_rules! run {
                ($r:expr; $($k:literal)*) => {
                    match (nt, t == 0) {
                        $(
                            ($k, true) => panel_tile::<{ $r }, $k, true>(w, x, cols, rows, p0, p1, t, out),
                            ($k, false) => panel_tile::<{ $r }, $k, false>(w, x, cols, rows, p0, p1, t, out),
                        )*
                        _ => unreachable!("token tile of 1..=8"),
                    }
                };
            }
            // SAFETY (all arms): tokens t..t + nt, rows p0..p1 are in bounds.
            unsafe {
                if wide {
                    run!(WIDE.0; 4 3 2 1)
                } else {
                    run!(NARROW.0; 8 7 6 5 4 3 2 1)
                }
            };
            t += nt;
        }
        p0 = p1;
    }
}

/// Rows `p0..p1` times tokens `t0..t0 + T`, `R` rows per tile (the rest
/// one at a time), written to `out: [n, rows]`.
///
/// # Safety
/// As `matmul_impl`; `p0 <= p1 <= rows`, `t0 + T <= n`.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn panel_tile<const R: usize, const T: usize, const PF: bool>(
    w: &[f16],
    x: &[f32],
    cols: usize,
    rows: usize,
    p0: usize,
    p1: usize,
    t0: usize,
    out: &mut [f32],
) {
    // SAFETY: token t0 starts inside `x` (t0 < n).
    let xp = unsafe { x.as_ptr().add(t0 * cols) };
    let mut r = p0;
    while r + R <= p1 {
        // SAFETY: rows r..r + R < rows and tokens t0..t0 + T <= n are in bounds.
        let o = unsafe { tile::<R, T, PF>(w.as_ptr().add(r * cols), xp, cols) };
        for (t, o) in o.iter().enumerate() {
            out[(t0 + t) * rows + r..][..R].copy_from_slice(o);
        }
        r += R;
    }
    while r < p1 {
        // SAFETY: row r < rows and tokens t0..t0 + T <= n are in bounds.
        let o = unsafe { tile::<1, T, PF>(w.as_ptr().add(r * cols), xp, cols) };
        for (t, [o]) in o.iter().enumerate() {
            out[(t0 + t) * rows + r] = *o;
        }
        r += 1;
    }
}
