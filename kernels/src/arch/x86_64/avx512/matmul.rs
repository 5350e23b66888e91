//! AVX-512 VNNI batched (prefill) products of the row-interleaved matrices
//! (`q8_0x4`, `q4_0x4`, `iq4_nlx4`: tiles of `TILE_ROWS` rows, see
//! `crate::blocks::TILE_ROWS`) with Q8_0 activations.
//!
//! Same contract and arithmetic as the AVX2 and scalar kernels: per (row,
//! token, block) the integer dot product is formed exactly, then scaled and
//! summed in f32 block by block (`acc += (d_w * d_a) * isum`, a multiply, a
//! multiply and an add; no fused multiply-add), so every token's results are
//! bit-identical to the scalar tier's and to decode's matrix-vector product
//! (which stays AVX2's: it is bound by memory bandwidth, not by arithmetic).
//!
//! Integer part: `vpdpbusd` multiplies unsigned bytes by signed bytes. Every
//! weight type is made unsigned once per tile by an offset (`Q8_0` and the
//! `IQ4_NL` codebook values + 128, `Q4_0` nibbles as stored, i.e. value + 8),
//! and the offset's share, `OFFSET * sum(activation quants)`, is subtracted
//! per (token, block); it is computed once per call. Two rows fill one 512-bit
//! register; each activation block is broadcast to both halves.
//!
//! Register block: one tile (4 rows) x 4 tokens, the 16 dot products in one
//! 512-bit accumulator whose lanes are in the order the reduction tree leaves
//! them (`ROW_OF_LANE`, `TOKEN_OF_LANE`); the per-block scales are spread to
//! the same order, and the sums are reordered only when stored. A last quad of
//! fewer than 4 tokens repeats its last token in the unused lanes (each lane is
//! independent) and stores only the real ones.
//!
//! Value domains: weight quants may use the full i8 range; activation quants
//! must be in -127..=127 (`scalar::quantize_row_q8_0`), as for every tier.
//! Per i32 lane the products stay far inside i32 (4 * 255 * 127).

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use crate::blocks::{BlockIq4Nl, BlockQ4_0, BlockQ8_0, IQ4_NL_VALUES, QK, TILE_ROWS};

const _: () = assert!(QK == 32, "one block per 256-bit half");
const _: () = assert!(TILE_ROWS == 4, "two rows per 512-bit register");

/// How far ahead (bytes) the first token quad of a tile group prefetches the
/// weight stream (as the AVX2 kernel).
const PREFETCH_AHEAD: usize = 1024;
/// Tokens per accumulator.
const TOKENS: usize = 4;
/// Tokens and blocks per chunk of precomputed activation terms (as AVX2's).
const CHUNK_TOKENS: usize = 32;
const CHUNK_BLOCKS: usize = 64;
/// Token quads x blocks of one chunk's activation terms: 512 entries of two
/// 64-byte vectors, 64 KiB of stack like the AVX2 kernel's.
const QUADS: usize = CHUNK_TOKENS / TOKENS * CHUNK_BLOCKS;

/// Tile row of accumulator lane `i`: the reduction tree (`reduce`) leaves
/// rows `[0, 2, 0, 2]` in 128-bit lanes 0 and 2, `[1, 3, 1, 3]` in 1 and 3.
const ROW_OF_LANE: [usize; 16] = {
    let mut m = [0; 16];
    let mut i = 0;
    while i < 16 {
        m[i] = (i / 4) % 2 + 2 * (i % 2);
        i += 1;
    }
    m
};
/// Token (within the quad) of accumulator lane `i`: tokens `[0, 0, 1, 1]`
/// in 128-bit lanes 0 and 1, `[2, 2, 3, 3]` in 2 and 3.
const TOKEN_OF_LANE: [usize; 16] = {
    let mut m = [0; 16];
    let mut i = 0;
    while i < 16 {
        m[i] = 2 * (i / 8) + (i % 4) / 2;
        i += 1;
    }
    m
};

/// Prefetches the cache lines of `[p + PREFETCH_AHEAD, p + PREFETCH_AHEAD + span]`.
/// Prefetches never fault; the pointer is only formed, never dereferenced.
#[inline]
#[target_feature(enable = "avx2")]
fn prefetch_ahead<T>(p: *const T, span: usize) {
    let p = (p as *const i8).wrapping_add(PREFETCH_AHEAD);
    let mut off = 0;
    while off <= span {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off));
        off += 64;
    }
}

/// Prefetches the cache lines of `[p, p + bytes)`. Prefetches never fault;
/// the pointer is only formed, never dereferenced.
#[inline]
#[target_feature(enable = "avx2")]
fn prefetch_lines<T>(p: *const T, bytes: usize) {
    let p = p as *const i8;
    let mut off = 0;
    while off < bytes {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off));
        off += 64;
    }
    // The last line when `p` is not line-aligned.
    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(bytes - 1));
}

/// A row-interleaved weight block type, made unsigned for `vpdpbusd`.
pub(super) trait TileKind: Sized {
    /// What was added to every weight value to make it a u8.
    const OFFSET: i32;
    /// Bytes of one tile, for the prefetch span.
    const TILE_BYTES: usize;

    /// The tile's unsigned values: `[row 0 | row 1]` and `[row 2 | row 3]`,
    /// 32 bytes per row in element order.
    ///
    /// # Safety
    /// The CPU has the AVX-512 tier's features; `tile.len() == TILE_ROWS`.
    unsafe fn prep(tile: &[Self]) -> [__m512i; 2];

    /// The tile's four f16 scale bits, in row order.
    fn scale_bits(tile: &[Self]) -> [u16; TILE_ROWS];
}

/// `[r0 | r0 | r1 | r1]` of two rows' 16 nibble bytes, then each byte's low
/// nibble in the first copy and high nibble in the second: elements 0..32 of
/// row 0, then of row 1, as unsigned 0..=15.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn nibbles(r0: &[u8; 16], r1: &[u8; 16]) -> __m512i {
    // SAFETY: both arrays are 16 bytes; unaligned loads.
    let y = unsafe {
        _mm256_loadu2_m128i(r1.as_ptr() as *const __m128i, r0.as_ptr() as *const __m128i)
    };
    let z = _mm512_permutexvar_epi64(
        _mm512_set_epi64(3, 2, 3, 2, 1, 0, 1, 0),
        _mm512_castsi256_si512(y),
    );
    let shifted = _mm512_srlv_epi64(z, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0));
    _mm512_and_si512(shifted, _mm512_set1_epi8(0x0F))
}

impl TileKind for BlockQ8_0 {
    const OFFSET: i32 = 128;
    const TILE_BYTES: usize = TILE_ROWS * 34;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn prep(tile: &[Self]) -> [__m512i; 2] {
        let flip = _mm512_set1_epi8(i8::MIN);
        core::array::from_fn(|h| {
            let (a, b) = (&tile[2 * h].qs, &tile[2 * h + 1].qs);
            // SAFETY: `qs` is 32 bytes; unaligned loads.
            let v = unsafe {
                _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_loadu_si256(a.as_ptr() as *const __m256i)),
                    _mm256_loadu_si256(b.as_ptr() as *const __m256i),
                )
            };
            // q + 128 as u8: flipping the sign bit.
            _mm512_xor_si512(v, flip)
        })
    }

    fn scale_bits(tile: &[Self]) -> [u16; TILE_ROWS] {
        core::array::from_fn(|r| u16::from_le_bytes(tile[r].d))
    }
}

impl TileKind for BlockQ4_0 {
    /// Stored nibbles are value + 8.
    const OFFSET: i32 = 8;
    const TILE_BYTES: usize = TILE_ROWS * 18;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn prep(tile: &[Self]) -> [__m512i; 2] {
        core::array::from_fn(|h| nibbles(&tile[2 * h].qs, &tile[2 * h + 1].qs))
    }

    fn scale_bits(tile: &[Self]) -> [u16; TILE_ROWS] {
        core::array::from_fn(|r| u16::from_le_bytes(tile[r].d))
    }
}

impl TileKind for BlockIq4Nl {
    /// Codebook values (-127..=113) + 128.
    const OFFSET: i32 = 128;
    const TILE_BYTES: usize = TILE_ROWS * 18;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn prep(tile: &[Self]) -> [__m512i; 2] {
        // SAFETY: `IQ4_NL_VALUES` is 16 bytes; unaligned load.
        let table = unsafe { _mm_loadu_si128(IQ4_NL_VALUES.as_ptr() as *const __m128i) };
        let table = _mm512_xor_si512(_mm512_broadcast_i32x4(table), _mm512_set1_epi8(i8::MIN));
        core::array::from_fn(|h| {
            _mm512_shuffle_epi8(table, nibbles(&tile[2 * h].qs, &tile[2 * h + 1].qs))
        })
    }

    fn scale_bits(tile: &[Self]) -> [u16; TILE_ROWS] {
        core::array::from_fn(|r| u16::from_le_bytes(tile[r].d))
    }
}

pub(super) fn matmul_q8_0x4_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    crate::scalar::check_matmul_shape(w.len(), a.len(), n, out.len(), "matmul_q8_0x4_q8_0");
    // SAFETY: reachable only through `table(Avx512Token)`; shape checked above.
    unsafe { matmul_x4(w, a, n, out) }
}

pub(super) fn matmul_q4_0x4_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    crate::scalar::check_matmul_shape(w.len(), a.len(), n, out.len(), "matmul_q4_0x4_q8_0");
    // SAFETY: reachable only through `table(Avx512Token)`; shape checked above.
    unsafe { matmul_x4(w, a, n, out) }
}

pub(super) fn matmul_iq4_nlx4_q8_0(w: &[BlockIq4Nl], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    crate::scalar::check_matmul_shape(w.len(), a.len(), n, out.len(), "matmul_iq4_nlx4_q8_0");
    // SAFETY: reachable only through `table(Avx512Token)`; shape checked above.
    unsafe { matmul_x4(w, a, n, out) }
}

/// Per-(token quad, block) activation terms of one chunk, indexed
/// `k * quads + q`, spread to the accumulator's lane order
/// (`TOKEN_OF_LANE`). Left uninitialised; the entries of every quad and
/// block of the chunk are written before any is read.
struct ActTerms {
    /// The blocks' scales as f32.
    d: [MaybeUninit<__m512>; QUADS],
    /// `OFFSET * sum(quants)` (at most 128 * 32 * 127).
    off: [MaybeUninit<__m512i>; QUADS],
}

/// An activation block's scale (f16 to f32 exactly) and quant sum.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn act_terms(b: &BlockQ8_0) -> (f32, i32) {
    let bits = _mm_cvtsi32_si128(u16::from_le_bytes(b.d) as i32);
    let d = _mm_cvtss_f32(_mm_cvtph_ps(bits));
    (d, b.qs.iter().map(|&q| q as i8 as i32).sum())
}

/// # Safety
/// The CPU has the AVX-512 tier's features; `w.len() == rows * nb`,
/// `a.len() == n * nb`, `out.len() == n * rows` with rows a multiple of
/// `TILE_ROWS` and `n >= 1`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn matmul_x4<K: TileKind>(w: &[K], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    let (nb, rows) = (a.len() / n, out.len() / n);
    if nb == 0 {
        out.fill(0.0);
        return;
    }
    let mut terms = ActTerms {
        d: [MaybeUninit::uninit(); QUADS],
        off: [MaybeUninit::uninit(); QUADS],
    };
    for t0 in (0..n).step_by(CHUNK_TOKENS) {
        let nt = CHUNK_TOKENS.min(n - t0);
        let quads = nt.div_ceil(TOKENS);
        for k0 in (0..nb).step_by(CHUNK_BLOCKS) {
            let kc = CHUNK_BLOCKS.min(nb - k0);
            for k in 0..kc {
                for q in 0..quads {
                    // Tokens past the chunk repeat its last one.
                    let tok = |u: usize| (TOKENS * q + u).min(nt - 1);
                    let per: [(f32, i32); TOKENS] =
                        core::array::from_fn(|u| act_terms(&a[(t0 + tok(u)) * nb + k0 + k]));
                    let d: [f32; 16] = core::array::from_fn(|i| per[TOKEN_OF_LANE[i]].0);
                    let off: [i32; 16] =
                        core::array::from_fn(|i| K::OFFSET * per[TOKEN_OF_LANE[i]].1);
                    // SAFETY: both arrays are 16 lanes; unaligned loads.
                    unsafe {
                        terms.d[k * quads + q].write(_mm512_loadu_ps(d.as_ptr()));
                        terms.off[k * quads + q].write(_mm512_loadu_si512(off.as_ptr().cast()));
                    }
                }
            }
            // Group-major: a group's tiles stay in L1 while every token quad
            // of the chunk reads them.
            for g in 0..rows / TILE_ROWS {
                let tiles = &w[(g * nb + k0) * TILE_ROWS..(g * nb + k0 + kc) * TILE_ROWS];
                for q in 0..quads {
                    let tok = |u: usize| (TOKENS * q + u).min(nt - 1);
                    let acts: [&[BlockQ8_0]; TOKENS] = core::array::from_fn(|u| {
                        let s = (t0 + tok(u)) * nb + k0;
                        &a[s..s + kc]
                    });
                    let real = (nt - TOKENS * q).min(TOKENS);
                    let dst: [usize; TOKENS] =
                        core::array::from_fn(|u| (t0 + tok(u)) * rows + g * TILE_ROWS);
                    // Quad 0 streams the group's tiles in; quad 1 requests
                    // the next group's, a whole quad ahead of their use.
                    let fetch = match q {
                        0 => Fetch::Ahead,
                        1 if g + 1 < rows / TILE_ROWS => {
                            Fetch::Next(tiles.as_ptr().wrapping_add(nb * TILE_ROWS))
                        }
                        _ => Fetch::None,
                    };
                    // SAFETY: AVX-512 tier enabled here; shapes as documented.
                    unsafe {
                        quad::<K>(
                            tiles,
                            acts,
                            &terms,
                            (q, quads, kc),
                            k0 > 0,
                            fetch,
                            dst,
                            real,
                            out,
                        )
                    };
                }
            }
        }
    }
}

/// Which weights a token quad prefetches while it runs.
#[derive(Clone, Copy)]
enum Fetch<K> {
    /// Nothing (its tiles are in L1).
    None,
    /// Its own stream, `PREFETCH_AHEAD` bytes ahead (the first quad of a group).
    Ahead,
    /// The next group's tiles of the same column chunk, starting here (the
    /// second quad): latency on this stream is what limited two threads,
    /// which each read the whole matrix once per call (`benches/RESULTS.md`,
    /// session 9). Only formed into prefetch addresses, never dereferenced.
    Next(*const K),
}

/// Sum of the eight i32 lanes per row of four tokens' block products into
/// the accumulator lane order: `x[u]` holds rows 0 and 1 of token `u` (eight
/// lanes each), `y[u]` rows 2 and 3.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn reduce(x: [__m512i; TOKENS], y: [__m512i; TOKENS]) -> __m512i {
    // Per token: [r0 r2 r0 r2 | ...] partial sums, four per row.
    let s: [__m512i; TOKENS] = core::array::from_fn(|u| {
        _mm512_add_epi32(
            _mm512_unpacklo_epi32(x[u], y[u]),
            _mm512_unpackhi_epi32(x[u], y[u]),
        )
    });
    // Per token pair: two partial sums per (row, token).
    let pair = |a: __m512i, b: __m512i| {
        _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
    };
    let (t01, t23) = (pair(s[0], s[1]), pair(s[2], s[3]));
    _mm512_add_epi32(
        _mm512_shuffle_i32x4::<0b10_00_10_00>(t01, t23),
        _mm512_shuffle_i32x4::<0b11_01_11_01>(t01, t23),
    )
}

/// One tile group (4 rows) times one token quad over one column chunk (`kc`
/// tiles of `tiles`; `acts[u]` the chunk's blocks of token `u`, whose terms
/// are at `terms[k * quads + q]`). Adds to the running sums at
/// `out[dst[u]..][..4]` when `resume`, else starts from zero; stores the first
/// `real` tokens; prefetches as `fetch` says.
///
/// # Safety
/// The CPU has the AVX-512 tier's features; `tiles.len() >= kc * TILE_ROWS`,
/// every `acts[u].len() >= kc`, and the terms of quad `q` and blocks `0..kc`
/// are written.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn quad<K: TileKind>(
    tiles: &[K],
    acts: [&[BlockQ8_0]; TOKENS],
    terms: &ActTerms,
    (q, quads, kc): (usize, usize, usize),
    resume: bool,
    fetch: Fetch<K>,
    dst: [usize; TOKENS],
    real: usize,
    out: &mut [f32],
) {
    let mut lanes = [0.0f32; 16];
    if resume {
        for (i, l) in lanes.iter_mut().enumerate() {
            *l = out[dst[TOKEN_OF_LANE[i]] + ROW_OF_LANE[i]];
        }
    }
    // SAFETY: `lanes` is 16 f32; unaligned load.
    let mut acc = unsafe { _mm512_loadu_ps(lanes.as_ptr()) };
    let row_idx = _mm512_set_epi32(3, 1, 3, 1, 2, 0, 2, 0, 3, 1, 3, 1, 2, 0, 2, 0);
    for (k, tile) in tiles.chunks_exact(TILE_ROWS).enumerate().take(kc) {
        match fetch {
            Fetch::None => {}
            Fetch::Ahead => prefetch_ahead(tile.as_ptr(), K::TILE_BYTES / 64 * 64),
            Fetch::Next(p) => prefetch_lines(p.wrapping_add(k * TILE_ROWS), K::TILE_BYTES),
        }
        let b = K::scale_bits(tile);
        let dw = _mm_cvtph_ps(_mm_set_epi16(
            0,
            0,
            0,
            0,
            b[3] as i16,
            b[2] as i16,
            b[1] as i16,
            b[0] as i16,
        ));
        let dw = _mm512_permutexvar_ps(row_idx, _mm512_castps128_ps512(dw));
        // SAFETY: the caller's features; `tile` has `TILE_ROWS` blocks.
        let [w01, w23] = unsafe { K::prep(tile) };
        let av: [__m512i; TOKENS] = core::array::from_fn(|u| {
            // SAFETY: `qs` is 32 bytes; unaligned load.
            let v = unsafe { _mm256_loadu_si256(acts[u][k].qs.as_ptr() as *const __m256i) };
            _mm512_broadcast_i64x4(v)
        });
        let zero = _mm512_setzero_si512();
        let x = av.map(|v| _mm512_dpbusd_epi32(zero, w01, v));
        let y = av.map(|v| _mm512_dpbusd_epi32(zero, w23, v));
        let at = k * quads + q;
        // SAFETY: written by the chunk's prologue (caller's contract).
        let (off, da) = unsafe { (terms.off[at].assume_init(), terms.d[at].assume_init()) };
        let isum = _mm512_sub_epi32(reduce(x, y), off);
        let d = _mm512_mul_ps(dw, da);
        acc = _mm512_add_ps(acc, _mm512_mul_ps(d, _mm512_cvtepi32_ps(isum)));
    }
    // SAFETY: `lanes` is 16 f32; unaligned store.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc) };
    for (i, &l) in lanes.iter().enumerate() {
        if TOKEN_OF_LANE[i] < real {
            out[dst[TOKEN_OF_LANE[i]] + ROW_OF_LANE[i]] = l;
        }
    }
}
