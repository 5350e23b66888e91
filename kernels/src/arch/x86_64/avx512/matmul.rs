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
//! per (token, block); it is computed once per call.
//!
//! Register block: one tile (4 rows) x 4 tokens in one 512-bit accumulator,
//! lane `4 * row + token`, and all token quads of a 32-token chunk at once
//! (up to 8 accumulators), so each tile is prepared once per chunk. The
//! block's eight four-byte groups go through `vpdpbusd` one at a time: row
//! `r`'s group `j` spread over the row's 128-bit lane (one permute per tile
//! and group) times the four tokens' group `j` (a 16-byte broadcast load from
//! the chunk's transposed activation terms), so the sums build up in their
//! lanes with no horizontal reduction: 8 `vpdpbusd` per tile, quad and block.
//! A first version (two rows per register, each activation block broadcast
//! to both halves, a shuffle tree per block) was slower (`benches/RESULTS.md`,
//! "AVX-512 tier on an AVX-512 host"). A last quad of fewer than 4 tokens
//! repeats its last token in the unused lanes (each lane is independent) and
//! stores only the real ones.
//!
//! Value domains: weight quants may use the full i8 range; activation quants
//! must be in -127..=127 (`scalar::quantize_row_q8_0`), as for every tier.
//! Per i32 lane the products stay far inside i32 (4 * 255 * 127).

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::super::avx2::matmul::prefetch_ahead;
use crate::blocks::{BlockIq4Nl, BlockQ4_0, BlockQ8_0, IQ4_NL_VALUES, QK, TILE_ROWS};

const _: () = assert!(QK == 32, "one block per 256-bit half");
const _: () = assert!(TILE_ROWS == 4, "two rows per 512-bit register");

/// How far ahead (bytes) the weight stream is prefetched when there is no
/// next tile group to request (the last group of a column chunk).
const PREFETCH_AHEAD: usize = 1024;
/// Tokens per accumulator (lane `4 * row + token`).
const TOKENS: usize = 4;
/// Tokens and blocks per chunk of precomputed activation terms. 8 token
/// quads x 32 blocks x 160 bytes = 40 KiB of stack, read once per tile group
/// from L1. A matrix wider than `CHUNK_BLOCKS` blocks is swept in column
/// chunks; the running sums are kept in `out` between chunks (an exact f32
/// store and reload, so the summation order does not change).
const CHUNK_TOKENS: usize = 32;
const QUADS: usize = CHUNK_TOKENS / TOKENS;
const CHUNK_BLOCKS: usize = 32;
/// Four-byte groups per 32-element block (one `vpdpbusd` step each).
const GROUPS: usize = QK / 4;

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

/// One token quad's terms of one activation block, each a 128-bit pattern
/// `[token 0, 1, 2, 3]` that is broadcast to the four 128-bit lanes (one per
/// tile row) of an accumulator.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct QuadTerms {
    /// Four-byte group `j` of the four tokens' quants, for `j` in `0..8`.
    groups: [[i32; TOKENS]; GROUPS],
    /// The blocks' scales as f32.
    d: [f32; TOKENS],
    /// `OFFSET * sum(quants)` (at most 128 * 32 * 127).
    off: [i32; TOKENS],
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
    // Entry `k * quads + q`: block `k` of the chunk, token quad `q`. Left
    // uninitialised; every entry of the chunk is written before any is read.
    let mut terms = [MaybeUninit::<QuadTerms>::uninit(); QUADS * CHUNK_BLOCKS];
    for t0 in (0..n).step_by(CHUNK_TOKENS) {
        let nt = CHUNK_TOKENS.min(n - t0);
        let quads = nt.div_ceil(TOKENS);
        for k0 in (0..nb).step_by(CHUNK_BLOCKS) {
            let kc = CHUNK_BLOCKS.min(nb - k0);
            for k in 0..kc {
                for q in 0..quads {
                    // Tokens past the chunk repeat its last one.
                    let blk = |u: usize| &a[(t0 + (TOKENS * q + u).min(nt - 1)) * nb + k0 + k];
                    let b: [&BlockQ8_0; TOKENS] = core::array::from_fn(blk);
                    let mut e = QuadTerms {
                        groups: [[0; TOKENS]; GROUPS],
                        d: [0.0; TOKENS],
                        off: [0; TOKENS],
                    };
                    for (u, b) in b.iter().enumerate() {
                        for (j, g) in e.groups.iter_mut().enumerate() {
                            g[u] = i32::from_le_bytes(core::array::from_fn(|i| b.qs[4 * j + i]));
                        }
                        let (d, sum) = act_terms(b);
                        e.d[u] = d;
                        e.off[u] = K::OFFSET * sum;
                    }
                    terms[k * quads + q].write(e);
                }
            }
            let groups = rows / TILE_ROWS;
            for g in 0..groups {
                let tiles = &w[(g * nb + k0) * TILE_ROWS..(g * nb + k0 + kc) * TILE_ROWS];
                // The next group's tiles of this chunk (a whole group's work
                // ahead), or the stream itself past the last group.
                let next = (g + 1 < groups).then(|| tiles.as_ptr().wrapping_add(nb * TILE_ROWS));
                let dst =
                    |q: usize, u: usize| (t0 + (TOKENS * q + u).min(nt - 1)) * rows + g * TILE_ROWS;
                let real = |q: usize| (nt - TOKENS * q).min(TOKENS);
                macro_rules! run {
                    ($($q:literal)*) => {
                        match quads {
                            $($q => {
                                // SAFETY: the terms of `quads` quads and `kc`
                                // blocks were written above; AVX-512 enabled.
                                unsafe {
                                    group::<K, $q>(tiles, &terms, kc, next, k0 > 0, &dst, &real, out)
                                }
                            })*
                            _ => unreachable!("1..=8 token quads"),
                        }
                    };
                }
                run!(1 2 3 4 5 6 7 8);
            }
        }
    }
}

/// An activation block's scale (f16 to f32 exactly) and quant sum.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn act_terms(b: &BlockQ8_0) -> (f32, i32) {
    let bits = _mm_cvtsi32_si128(u16::from_le_bytes(b.d) as i32);
    let d = _mm_cvtss_f32(_mm_cvtph_ps(bits));
    (d, b.qs.iter().map(|&q| q as i8 as i32).sum())
}

/// One tile group (4 rows) times `Q` token quads over one column chunk (`kc`
/// tiles of `tiles`, terms `terms[k * Q + q]`). Accumulator lane `4 * r + u`
/// holds row `r` and token `u` of its quad: per four-byte group `j` of a
/// block, `vpdpbusd` multiplies row `r`'s group `j` (spread to the row's
/// 128-bit lane by one permute per tile) with the four tokens' group `j`
/// (one broadcast load), so the block's integer sums build up lane by lane
/// with no horizontal reduction. Adds to the running sums at
/// `out[dst(q, u)..][..4]` when `resume`; stores the first `real(q)` tokens of
/// each quad.
///
/// # Safety
/// The CPU has the AVX-512 tier's features; `tiles.len() >= kc * TILE_ROWS`;
/// the terms of `Q` quads and blocks `0..kc` are written.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn group<K: TileKind, const Q: usize>(
    tiles: &[K],
    terms: &[MaybeUninit<QuadTerms>],
    kc: usize,
    next: Option<*const K>,
    resume: bool,
    dst: &dyn Fn(usize, usize) -> usize,
    real: &dyn Fn(usize) -> usize,
    out: &mut [f32],
) {
    let mut acc = [_mm512_setzero_ps(); Q];
    if resume {
        for (q, acc) in acc.iter_mut().enumerate() {
            let mut lanes = [0.0f32; 16];
            for (i, l) in lanes.iter_mut().enumerate() {
                *l = out[dst(q, i % TOKENS) + i / TOKENS];
            }
            // SAFETY: `lanes` is 16 f32; unaligned load.
            *acc = unsafe { _mm512_loadu_ps(lanes.as_ptr()) };
        }
    }
    // Row `r`'s four-byte group `j` in 128-bit lane `r`: dword `8 r + j` of
    // `[rows 0, 1 | rows 2, 3]`.
    let idx: [__m512i; GROUPS] = core::array::from_fn(|j| {
        let j = j as i32;
        _mm512_set_epi32(
            24 + j,
            24 + j,
            24 + j,
            24 + j,
            16 + j,
            16 + j,
            16 + j,
            16 + j,
            8 + j,
            8 + j,
            8 + j,
            8 + j,
            j,
            j,
            j,
            j,
        )
    });
    let zero = _mm512_setzero_si512();
    for (k, tile) in tiles.chunks_exact(TILE_ROWS).enumerate().take(kc) {
        match next {
            Some(p) => prefetch_lines(p.wrapping_add(k * TILE_ROWS), K::TILE_BYTES),
            None => prefetch_ahead(tile.as_ptr(), PREFETCH_AHEAD, K::TILE_BYTES / 64 * 64),
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
        // Lane `4 r + u`: row `r`'s scale.
        let dw = _mm512_permutexvar_ps(
            _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0),
            _mm512_castps128_ps512(dw),
        );
        // SAFETY: the caller's features; `tile` has `TILE_ROWS` blocks.
        let [w01, w23] = unsafe { K::prep(tile) };
        let wj: [__m512i; GROUPS] =
            core::array::from_fn(|j| _mm512_permutex2var_epi32(w01, idx[j], w23));
        for (q, acc) in acc.iter_mut().enumerate() {
            // SAFETY: written by the chunk's prologue (caller's contract).
            let e = unsafe { terms[k * Q + q].assume_init_ref() };
            let bc = |v: &[i32; TOKENS]| {
                // SAFETY: 16 bytes; unaligned load.
                _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(v.as_ptr().cast()) })
            };
            // Two chains of four steps (exact integer sums in any order).
            let mut s0 = _mm512_dpbusd_epi32(zero, wj[0], bc(&e.groups[0]));
            let mut s1 = _mm512_dpbusd_epi32(zero, wj[1], bc(&e.groups[1]));
            for j in (2..GROUPS).step_by(2) {
                s0 = _mm512_dpbusd_epi32(s0, wj[j], bc(&e.groups[j]));
                s1 = _mm512_dpbusd_epi32(s1, wj[j + 1], bc(&e.groups[j + 1]));
            }
            let isum = _mm512_sub_epi32(_mm512_add_epi32(s0, s1), bc(&e.off));
            // SAFETY: 16 bytes; unaligned load.
            let da = _mm512_broadcast_f32x4(unsafe { _mm_loadu_ps(e.d.as_ptr()) });
            let d = _mm512_mul_ps(dw, da);
            *acc = _mm512_add_ps(*acc, _mm512_mul_ps(d, _mm512_cvtepi32_ps(isum)));
        }
    }
    for (q, acc) in acc.iter().enumerate() {
        let mut lanes = [0.0f32; 16];
        // SAFETY: `lanes` is 16 f32; unaligned store.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *acc) };
        for (i, &l) in lanes.iter().enumerate() {
            if i % TOKENS < real(q) {
                out[dst(q, i % TOKENS) + i / TOKENS] = l;
            }
        }
    }
}
