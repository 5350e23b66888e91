//! AVX2 products over plain row-major f16 matrices: the matrix-vector product
//! (decode) and the matrix-matrix product (batched prefill).
//!
//! Both run the same register tile (`tile`): every (row, token) pair owns one
//! 8-lane accumulator that takes the row's 8-element chunks in order (element
//! `i` in lane `i % 8`, the lane assignment of `scalar::dot_f16_f32`; a ragged
//! tail is one zero-padded chunk) and is reduced in the order of
//! `scalar::reduce_dot_lanes`. A (row, token) result therefore does not depend
//! on which rows or tokens share its tile: `matmul_f16_f32` equals
//! `matvec_f16_f32` per token bit for bit, and both differ from the scalar
//! kernel only by the rounding the fused multiply-adds save.
//!
//! Each 8-wide weight chunk is widened (`vcvtph2ps`) once per tile and used for
//! every token of the tile. The safe wrappers assert the scalar kernels' shape
//! contracts and are reachable only through `table(Avx2Token)`.

use core::arch::x86_64::*;

use half::f16;

use crate::scalar::check_matmul_f16_shape;

/// f32 lanes per accumulator (and f16 elements per widened chunk).
const LANES: usize = 8;
/// Elements per 64-byte cache line of a row: the next tile's prefetches are
/// issued once per this many columns, one line per row.
const LINE_CHUNK: usize = 32;
/// Bytes per prefetched cache line.
const LINE: usize = 64;
/// Rows per tile of the matrix-vector product. Two independent accumulators
/// cover enough of the FMA latency for memory speed, and two row streams per
/// thread (plus the prefetched next tile) are followed better by the memory
/// system than four: a stand-alone 2-thread f16 matvec read more GB/s with
/// them than with 4-row tiles (`benches/RESULTS.md`, "f16 matrix-vector
/// product: 2-row tiles").
const MATVEC_ROWS: usize = 2;
/// Weight bytes per row panel of the matrix-matrix product: a panel is read
/// from memory once (by the first token tile) and stays in L2 for the others.
const PANEL_BYTES: usize = 64 << 10;

/// Sum of the 8 lanes in the order of `scalar::reduce_dot_lanes`:
/// `((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7))`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn reduce(v: __m256) -> f32 {
    // s = [a0 + a4, a1 + a5, a2 + a6, a3 + a7]
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    // h = [s0 + s1, s2 + s3, ..]
    let h = _mm_hadd_ps(s, s);
    _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)))
}

/// The `< LANES` f16 of `w`, widened and zero-padded to a full chunk.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn widen_tail(w: &[f16]) -> __m256 {
    let mut b = [0u16; LANES];
    for (d, s) in b.iter_mut().zip(w) {
        *d = s.to_bits();
    }
    // SAFETY: `b` is 8 u16 = 16 bytes; unaligned load.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(b.as_ptr() as *const __m128i) })
}

/// The `< LANES` f32 of `x`, zero-padded to a full chunk.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load_tail(x: &[f32]) -> __m256 {
    let mut b = [0.0f32; LANES];
    b[..x.len()].copy_from_slice(x);
    // SAFETY: `b` is 8 f32; unaligned load.
    unsafe { _mm256_loadu_ps(b.as_ptr()) }
}

/// One 8-element chunk at column `i` of `R` rows times `T` tokens.
///
/// # Safety
/// As `tile`, and `i + LANES <= cols`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn chunk<const R: usize, const T: usize>(
    w: *const f16,
    x: *const f32,
    cols: usize,
    i: usize,
    acc: &mut [[__m256; R]; T],
) {
    // SAFETY (both blocks): the caller guarantees rows `j < R` and tokens
    // `t < T` hold `cols` elements each and `i + 8 <= cols`; 8 f16 are one
    // unaligned 128-bit load.
    let wv: [__m256; R] = core::array::from_fn(|j| {
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(w.add(j * cols + i) as *const __m128i) })
    });
    for (t, acc) in acc.iter_mut().enumerate() {
        let xv = unsafe { _mm256_loadu_ps(x.add(t * cols + i)) };
        for (a, wv) in acc.iter_mut().zip(&wv) {
            *a = _mm256_fmadd_ps(*wv, xv, *a);
        }
    }
}

/// Dot products of `R` consecutive rows (`w`: `R * cols` f16, row-major) with
/// `T` tokens (`x`: `T * cols` f32, token-major): `result[t][j]`.
///
/// `PF` (for rows read from memory rather than cache) prefetches the next
/// tile's `R` rows in address order, so they are requested in full by the
/// time this tile ends: the `R` interleaved row streams of a tile alone are
/// followed poorly by the hardware prefetcher (`benches/RESULTS.md`, "f16
/// batched prefill kernel and prefetching f16 matvec").
/// Prefetches never fault, so addresses past the matrix are harmless; the
/// pointers are only formed, never dereferenced.
///
/// Tiles of more than 8 accumulators (3 x 4, 3 x 3) prefetch one address per
/// chunk, `R * 16` bytes apart, with no branch. The other form (`R` lines
/// every 32 columns, behind an `i % 32` test, kept for the smaller tiles and
/// the matrix-vector product) made the compiler keep one accumulator of the
/// 3 x 4 tile on the stack: a store and reload per chunk on the FMA chain of
/// the first token tile of every panel (`perf annotate`; the speed-up was
/// within the host's noise: `benches/RESULTS.md`, "f16 prefill: a spilled
/// accumulator in the first token tile").
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `w` is valid for `R * cols` reads and `x`
/// for `T * cols` reads; `cols >= 1`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const R: usize, const T: usize, const PF: bool>(
    w: *const f16,
    x: *const f32,
    cols: usize,
) -> [[f32; R]; T] {
    let mut acc = [[_mm256_setzero_ps(); R]; T];
    let mut i = 0;
    // One chunk per iteration: unrolling lets the compiler hoist the next
    // chunk's loads, which spills accumulators of the 3 x 4 tile.
    while i + LANES <= cols {
        if PF && R * T > 8 {
            let next = w.wrapping_add(R * cols) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(i * R * 2));
        } else if PF && i % LINE_CHUNK == 0 {
            let next = w.wrapping_add(R * cols) as *const i8;
            let line = i / LINE_CHUNK * R;
            for j in 0..R {
                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add((line + j) * LINE));
            }
        }
        // SAFETY: i + 8 <= cols; the rest is the caller's.
        unsafe { chunk::<R, T>(w, x, cols, i, &mut acc) };
        i += LANES;
    }
    if i < cols {
        let rem = cols - i;
        // SAFETY: rows j < R and tokens t < T hold `cols` elements (caller).
        let wv: [__m256; R] = core::array::from_fn(|j| {
            widen_tail(unsafe { core::slice::from_raw_parts(w.add(j * cols + i), rem) })
        });
        for (t, acc) in acc.iter_mut().enumerate() {
            // SAFETY: as above.
            let xv = load_tail(unsafe { core::slice::from_raw_parts(x.add(t * cols + i), rem) });
            for (a, wv) in acc.iter_mut().zip(&wv) {
                *a = _mm256_fmadd_ps(*wv, xv, *a);
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
    // SAFETY: reachable only through `table(Avx2Token)`, so AVX2/FMA/F16C
    // exist; the shape was checked above and `cols >= 1`.
    unsafe { matvec_impl(w, x, out) }
}

/// # Safety
/// The CPU has AVX2, FMA and F16C; `w.len() == out.len() * x.len()`,
/// `x.len() >= 1`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matvec_impl(w: &[f16], x: &[f32], out: &mut [f32]) {
    let (cols, rows) = (x.len(), out.len());
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut r = 0;
    while r + MATVEC_ROWS <= rows {
        // SAFETY: rows r..r + 4 are in `w` (shape contract).
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
    // SAFETY: reachable only through `table(Avx2Token)`; shape checked above
    // and `cols >= 1`.
    unsafe { matmul_impl(w, x, n, cols, rows, out) }
}

/// Row panels of `PANEL_BYTES`; within a panel, tiles of up to 4 tokens, and
/// within a token tile, the panel's rows in order (each weight row stays in
/// L2 for every token tile, each token tile's inputs in L1 for every row).
///
/// Register tiles: 3 rows x 4 tokens (12 accumulators, 3 widened weight
/// chunks and one input chunk: all 16 ymm registers), 3 x 3 for a 3-token
/// tail, 4 x 2 and 4 x 1 for shorter ones. 3 x 4 widens each weight chunk once
/// per 4 tokens like 2 x 4 but loads each input chunk once per 3 rows instead
/// of 2, and was the fastest tile at 32 tokens per call; 4 x 3 and 6 x 2
/// spill (`benches/RESULTS.md`, "f16 matrix-matrix product: 3 x 4 register
/// tile without spills").
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `w: [rows, cols]`, `x: [n, cols]`,
/// `out: [n, rows]`, `cols >= 1`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matmul_impl(w: &[f16], x: &[f32], n: usize, cols: usize, rows: usize, out: &mut [f32]) {
    // A multiple of 12 rows so that every token tile's row blocking (3 or 4
    // rows) fits.
    let panel = (PANEL_BYTES / (cols * 2)).div_ceil(12).max(1) * 12;
    let mut p0 = 0;
    while p0 < rows {
        let p1 = (p0 + panel).min(rows);
        let mut t = 0;
        while t < n {
            let nt = (n - t).min(4);
            // The first token tile streams the panel in from memory.
            // SAFETY (all arms): tokens t..t + nt, rows p0..p1 are in bounds.
            unsafe {
                match (nt, t == 0) {
                    (4, true) => panel_tile::<3, 4, true>(w, x, cols, rows, p0, p1, t, out),
                    (4, false) => panel_tile::<3, 4, false>(w, x, cols, rows, p0, p1, t, out),
                    (3, true) => panel_tile::<3, 3, true>(w, x, cols, rows, p0, p1, t, out),
                    (3, false) => panel_tile::<3, 3, false>(w, x, cols, rows, p0, p1, t, out),
                    (2, true) => panel_tile::<4, 2, true>(w, x, cols, rows, p0, p1, t, out),
                    (2, false) => panel_tile::<4, 2, false>(w, x, cols, rows, p0, p1, t, out),
                    (_, true) => panel_tile::<4, 1, true>(w, x, cols, rows, p0, p1, t, out),
                    (_, false) => panel_tile::<4, 1, false>(w, x, cols, rows, p0, p1, t, out),
                }
            }
            t += nt;
        }
        p0 = p1;
    }
}

/// Rows `p0..p1` times tokens `t0..t0 + T`, `R` rows per tile (the rest one
/// at a time), written to `out: [n, rows]`.
///
/// # Safety
/// As `matmul_impl`; `p0 <= p1 <= rows`, `t0 + T <= n`.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
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
