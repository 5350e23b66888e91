//! AVX2 products of the row-interleaved matrices (`q8_0x4`, `q4_0x4`: tiles of
//! `TILE_ROWS` rows, see `crate::blocks::TILE_ROWS`) with Q8_0 activations.
//! With one token it computes an odd last tile group of decode (the
//! matrix-vector products, `matvec_q8.rs` and `matvec_nibble.rs`, take two
//! groups at a time); every token's results are bit-identical to decode's and
//! to the scalar tier's.
//!
//! Per tile and token the four rows' integer block dot products are reduced
//! exactly to one vector `[r0, r1, r2, r3]` of i32, then scaled and summed in
//! f32 as the scalar kernels do (`acc += (d_w * d_a) * isum`, a multiply, a
//! multiply and an add, block by block): the results equal the scalar tier's
//! bit for bit. The register block is `TILE_ROWS` rows x up to `TOKENS`
//! tokens: the per-weight-block work (absolute values of Q8_0 quants, Q4_0
//! nibble unpacking, the four f16 scales) is done once per tile, not once per
//! token. Per-(token, block) activation terms (the f32 scale and, for Q4_0,
//! `8 * sum(quants)`) are computed once per call into stack buffers, already
//! spread to the lanes of a token pair's accumulator (`ActTerms`).
//!
//! Value domains: weight quants may use the full i8 range; activation quants
//! must be in -127..=127 (`scalar::quantize_row_q8_0`), as the Q8_0 path uses
//! the sign + maddubs idiom (see `dot_q8_0x4`).

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use crate::blocks::{BlockIq4Nl, BlockQ4_0, BlockQ8_0, IQ4_NL_VALUES, QK, TILE_ROWS};

const _: () = assert!(QK == 32, "one block per 256-bit register");
const _: () = assert!(TILE_ROWS == 4, "one tile's rows per 128-bit vector");

/// How far ahead (bytes) the kernels prefetch their one weight stream. The
/// tiles are read strictly sequentially, so a software prefetch a few hundred
/// bytes ahead hides memory latency on CPUs whose hardware prefetcher does not
/// keep up (`benches/RESULTS.md`, "Row-interleaved weights, software
/// prefetch and batched prefill").
const PREFETCH_AHEAD: usize = 1024;
/// The same with one token (`n == 1`: the odd last tile group of decode),
/// whose stream is read at memory speed: 16 KiB ahead, as the decode kernels
/// (`matvec_q8.rs`, `matvec_nibble.rs`).
const DECODE_PREFETCH_AHEAD: usize = 16 * 1024;

/// Tokens per register block (four rows x `TOKENS` tokens of accumulators).
const TOKENS: usize = 4;
const _: () = assert!(TOKENS == 4, "`matmul_x4` spells out the token blocks");
/// Tokens and blocks per chunk of precomputed activation terms. A matrix
/// wider than `CHUNK_BLOCKS` blocks (with more than one token block; see
/// `matmul_x4`) is swept in column chunks; the running sums are kept in `out`
/// between chunks (an exact f32 store and reload, so the summation order does
/// not change).
const CHUNK_TOKENS: usize = 32;
const CHUNK_BLOCKS: usize = 64;
/// Token pairs x blocks of one chunk's activation terms.
const PAIRS: usize = CHUNK_TOKENS / 2 * CHUNK_BLOCKS;

/// Prefetches the cache lines of `[p + lead, p + lead + span]`
/// (`span` a multiple of 64). Prefetches never fault, so addresses past the end
/// of the matrix are harmless; the pointer is only formed, never dereferenced.
#[inline]
#[target_feature(enable = "avx2")]
pub(in crate::arch::x86_64) fn prefetch_ahead<T>(p: *const T, lead: usize, span: usize) {
    let p = (p as *const i8).wrapping_add(lead);
    let mut off = 0;
    while off <= span {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off));
        off += 64;
    }
}

/// Adds the two 128-bit halves of eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn add_halves(v: __m256i) -> __m128i {
    _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v))
}

/// `[r0, r1, r2, r3]` per 128-bit half from four rows' eight i32 lanes each:
/// interleave-and-add (two shuffle rounds), cheaper than `hadd` on some CPUs.
#[inline]
#[target_feature(enable = "avx2")]
fn reduce_rows(s: [__m256i; TILE_ROWS]) -> __m256i {
    let t01 = _mm256_add_epi32(
        _mm256_unpacklo_epi32(s[0], s[1]),
        _mm256_unpackhi_epi32(s[0], s[1]),
    );
    let t23 = _mm256_add_epi32(
        _mm256_unpacklo_epi32(s[2], s[3]),
        _mm256_unpackhi_epi32(s[2], s[3]),
    );
    _mm256_add_epi32(
        _mm256_unpacklo_epi64(t01, t23),
        _mm256_unpackhi_epi64(t01, t23),
    )
}

/// One activation block's terms: its scale as f32 and, when `offset8`,
/// `8 * sum(quants)` (the correction of the unsigned-nibble dot products; at
/// most 8 * 32 * 127), else 0. Shared with `matvec_nibble.rs`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) fn act_terms(b: &BlockQ8_0, offset8: bool) -> (f32, i32) {
    let bits = _mm_cvtsi32_si128(u16::from_le_bytes(b.d) as i32);
    let d = _mm_cvtss_f32(_mm_cvtph_ps(bits));
    if !offset8 {
        return (d, 0);
    }
    // SAFETY: `qs` is 32 bytes; unaligned load.
    let q = unsafe { _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i) };
    let s = _mm256_madd_epi16(
        _mm256_maddubs_epi16(_mm256_set1_epi8(1), q),
        _mm256_set1_epi16(1),
    );
    let s = add_halves(s);
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    (d, 8 * _mm_cvtsi128_si32(s))
}

/// A row-interleaved weight block type: how one tile is prepared once and then
/// multiplied with each token's activation block.
pub(super) trait TileKind: Sized {
    /// The tile prepared for all tokens (one 256-bit vector per row).
    type Prep: Copy;
    /// Whether the integer dot product is `sum(q * a) - 8 * sum(a)` (weights
    /// stored as unsigned nibbles), so the activation sums are needed.
    const OFFSET8: bool;
    /// Bytes of one tile, for the prefetch span.
    const TILE_BYTES: usize;

    /// # Safety
    /// The CPU has AVX2; `tile.len() == TILE_ROWS`.
    unsafe fn prep(tile: &[Self]) -> Self::Prep;

    /// `[r0, r1, r2, r3]` in each 128-bit half: the halves sum to each row's
    /// exact block dot product with `a` (minus `8 * sum(a)` when `OFFSET8`).
    ///
    /// # Safety
    /// The CPU has AVX2; `p` was prepared from `tile`.
    unsafe fn dot(p: &Self::Prep, tile: &[Self], a: __m256i) -> __m256i;

    /// The tile's four f16 scale bits, in row order.
    fn scale_bits(tile: &[Self]) -> [u16; TILE_ROWS];
}

impl TileKind for BlockQ8_0 {
    /// `|q|` per row (as u8: `|-128| = 128`).
    type Prep = [__m256i; TILE_ROWS];
    const OFFSET8: bool = false;
    const TILE_BYTES: usize = TILE_ROWS * 34;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn prep(tile: &[Self]) -> Self::Prep {
        core::array::from_fn(|r| {
            // SAFETY: `qs` is 32 bytes; unaligned load.
            let w = unsafe { _mm256_loadu_si256(tile[r].qs.as_ptr() as *const __m256i) };
            _mm256_sign_epi8(w, w)
        })
    }

    /// `maddubs(|w|, sign(a, w))` forms `|w| * (a * sign(w)) = w * a` per byte
    /// pair. Exact for weight quants in -128..=127 and activation quants in
    /// -127..=127: a pair sum is at most 2 * 128 * 127 = 32512, below the i16
    /// saturation of maddubs.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn dot(p: &Self::Prep, tile: &[Self], a: __m256i) -> __m256i {
        let ones = _mm256_set1_epi16(1);
        let s: [__m256i; TILE_ROWS] = core::array::from_fn(|r| {
            // SAFETY: `qs` is 32 bytes; unaligned load.
            let w = unsafe { _mm256_loadu_si256(tile[r].qs.as_ptr() as *const __m256i) };
            _mm256_madd_epi16(_mm256_maddubs_epi16(p[r], _mm256_sign_epi8(a, w)), ones)
        });
        reduce_rows(s)
    }

    fn scale_bits(tile: &[Self]) -> [u16; TILE_ROWS] {
        core::array::from_fn(|r| u16::from_le_bytes(tile[r].d))
    }
}

impl TileKind for BlockQ4_0 {
    /// The unsigned nibbles 0..=15 per row, in element order.
    type Prep = [__m256i; TILE_ROWS];
    const OFFSET8: bool = true;
    const TILE_BYTES: usize = TILE_ROWS * 18;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn prep(tile: &[Self]) -> Self::Prep {
        // Byte j holds element j (low nibble) and j + 16 (high nibble): the
        // 16 bytes in both halves, the upper half shifted right by 4.
        let shift = _mm256_set_epi64x(4, 4, 0, 0);
        let m = _mm256_set1_epi8(0x0F);
        core::array::from_fn(|r| {
            // SAFETY: `qs` is 16 bytes; unaligned load.
            let q = unsafe { _mm_loadu_si128(tile[r].qs.as_ptr() as *const __m128i) };
            _mm256_and_si256(_mm256_srlv_epi64(_mm256_broadcastsi128_si256(q), shift), m)
        })
    }

    /// `maddubs(q, a)` with the unsigned nibbles needs no sign fix-up: a pair
    /// sum is at most 2 * 15 * 127 = 3810, so two rounds of i16 pairwise adds
    /// (sums of 8 products, at most 15240) stay exact before one widening
    /// `madd`. The caller subtracts `8 * sum(a)`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn dot(p: &Self::Prep, _tile: &[Self], a: __m256i) -> __m256i {
        let s: [__m256i; TILE_ROWS] = core::array::from_fn(|r| _mm256_maddubs_epi16(p[r], a));
        let h = _mm256_hadd_epi16(_mm256_hadd_epi16(s[0], s[1]), _mm256_hadd_epi16(s[2], s[3]));
        _mm256_madd_epi16(h, _mm256_set1_epi16(1))
    }

    fn scale_bits(tile: &[Self]) -> [u16; TILE_ROWS] {
        core::array::from_fn(|r| u16::from_le_bytes(tile[r].d))
    }
}

impl TileKind for BlockIq4Nl {
    /// Per row, in element order: the codebook values' magnitudes, then the
    /// values themselves (-127..=113, looked up once per tile).
    type Prep = [[__m256i; TILE_ROWS]; 2];
    const OFFSET8: bool = false;
    const TILE_BYTES: usize = TILE_ROWS * 18;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn prep(tile: &[Self]) -> Self::Prep {
        // Nibble layout as Q4_0's; `_mm256_shuffle_epi8` maps each index to
        // its codebook value (the table is in both 128-bit lanes).
        let shift = _mm256_set_epi64x(4, 4, 0, 0);
        let m = _mm256_set1_epi8(0x0F);
        // SAFETY: `IQ4_NL_VALUES` is 16 bytes; unaligned load.
        let table = unsafe { _mm_loadu_si128(IQ4_NL_VALUES.as_ptr() as *const __m128i) };
        let table = _mm256_broadcastsi128_si256(table);
        let v: [__m256i; TILE_ROWS] = core::array::from_fn(|r| {
            // SAFETY: `qs` is 16 bytes; unaligned load.
            let q = unsafe { _mm_loadu_si128(tile[r].qs.as_ptr() as *const __m128i) };
            let idx = _mm256_and_si256(_mm256_srlv_epi64(_mm256_broadcastsi128_si256(q), shift), m);
            _mm256_shuffle_epi8(table, idx)
        });
        [core::array::from_fn(|r| _mm256_sign_epi8(v[r], v[r])), v]
    }

    /// `maddubs(|v|, sign(a, v))` as for Q8_0: exact because the codebook
    /// values are in -127..=113 and activation quants in -127..=127 (pair sums
    /// at most 32258, below the i16 saturation of maddubs).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn dot(p: &Self::Prep, _tile: &[Self], a: __m256i) -> __m256i {
        let ones = _mm256_set1_epi16(1);
        let s: [__m256i; TILE_ROWS] = core::array::from_fn(|r| {
            _mm256_madd_epi16(
                _mm256_maddubs_epi16(p[0][r], _mm256_sign_epi8(a, p[1][r])),
                ones,
            )
        });
        reduce_rows(s)
    }

    fn scale_bits(tile: &[Self]) -> [u16; TILE_ROWS] {
        core::array::from_fn(|r| u16::from_le_bytes(tile[r].d))
    }
}

pub(super) fn matmul_iq4_nlx4_q8_0(w: &[BlockIq4Nl], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    crate::scalar::check_matmul_shape(w.len(), a.len(), n, out.len(), "matmul_iq4_nlx4_q8_0");
    // SAFETY: reachable only through `table(Avx2Token)`; shape checked above.
    unsafe { matmul_x4(w, a, n, out) }
}

pub(super) fn matmul_q8_0x4_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    crate::scalar::check_matmul_shape(w.len(), a.len(), n, out.len(), "matmul_q8_0x4_q8_0");
    // SAFETY: reachable only through `table(Avx2Token)`; shape checked above.
    unsafe { matmul_x4(w, a, n, out) }
}

pub(super) fn matmul_q4_0x4_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    crate::scalar::check_matmul_shape(w.len(), a.len(), n, out.len(), "matmul_q4_0x4_q8_0");
    // SAFETY: reachable only through `table(Avx2Token)`; shape checked above.
    unsafe { matmul_x4(w, a, n, out) }
}

/// Per-(token pair, block) activation terms of one chunk, indexed
/// `k * nt.div_ceil(2) + t / 2`, each a vector in the lane order of a token
/// pair's accumulator: `[token 2p x4 | token 2p + 1 x4]` (zero for a missing
/// odd last token; its half-width path uses the low half). Precomputed so the
/// inner loop loads them instead of spreading two scalars per pair.
/// Left uninitialised (a matrix-vector product uses a few entries of these
/// 64 KiB of stack); the entries of every pair and block of the chunk are
/// written before any is read.
struct ActTerms {
    /// The blocks' scales as f32.
    d: [MaybeUninit<__m256>; PAIRS],
    /// `8 * sum(quants)` (only for `OFFSET8` kinds; at most 8 * 32 * 127).
    s8: [MaybeUninit<__m256i>; PAIRS],
}

/// # Safety
/// The CPU has AVX2, FMA and F16C; `w.len() == rows * nb`, `a.len() == n * nb`,
/// `out.len() == n * rows` with rows a multiple of `TILE_ROWS` and `n >= 1`
/// (`n == 1` is the matrix-vector product).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn matmul_x4<K: TileKind>(w: &[K], a: &[BlockQ8_0], n: usize, out: &mut [f32]) {
    let (nb, rows) = (a.len() / n, out.len() / n);
    if nb == 0 {
        out.fill(0.0);
        return;
    }
    let lead = if n == 1 {
        DECODE_PREFETCH_AHEAD
    } else {
        PREFETCH_AHEAD
    };
    let mut terms = ActTerms {
        d: [MaybeUninit::uninit(); PAIRS],
        s8: [MaybeUninit::uninit(); PAIRS],
    };
    for t0 in (0..n).step_by(CHUNK_TOKENS) {
        let nt = CHUNK_TOKENS.min(n - t0);
        let np = nt.div_ceil(2);
        // One token block reads each tile once, so its chunk is as wide as
        // the terms allow (decode: 1024 blocks, every row in one sweep, read
        // in address order); several token blocks re-read a group's tiles of
        // the chunk, which `CHUNK_BLOCKS` keeps in L1.
        let chunk_blocks = if nt <= TOKENS {
            PAIRS / np
        } else {
            CHUNK_BLOCKS
        };
        for k0 in (0..nb).step_by(chunk_blocks) {
            let kc = chunk_blocks.min(nb - k0);
            // Token t's terms of block k (zero past the chunk's last token).
            let term = |t: usize, k: usize| -> (f32, i32) {
                if t >= nt {
                    return (0.0, 0);
                }
                act_terms(&a[(t0 + t) * nb + k0 + k], K::OFFSET8)
            };
            for k in 0..kc {
                for p in 0..np {
                    let ((d0, s0), (d1, s1)) = (term(2 * p, k), term(2 * p + 1, k));
                    terms.d[k * np + p].write(_mm256_set_m128(_mm_set1_ps(d1), _mm_set1_ps(d0)));
                    terms.s8[k * np + p]
                        .write(_mm256_set_m128i(_mm_set1_epi32(s1), _mm_set1_epi32(s0)));
                }
            }
            // Group-major: a group's tiles stay in L1 while every token block
            // of the chunk reads them.
            for g in 0..rows / TILE_ROWS {
                let tiles = &w[(g * nb + k0) * TILE_ROWS..(g * nb + k0 + kc) * TILE_ROWS];
                let at = |t: usize| &a[(t0 + t) * nb + k0..(t0 + t) * nb + k0 + kc];
                let dst = |t: usize| (t0 + t) * rows + g * TILE_ROWS;
                let mut t = 0;
                // One token block of `$n` tokens from `t`; only the group's
                // first block prefetches (the others find its tiles in L1).
                macro_rules! run {
                    ($n:literal; $($u:literal)*) => {{
                        let acts = [$(at(t + $u)),*];
                        let o = [$(dst(t + $u)),*];
                        let fetch = (t == 0).then_some(lead);
                        block::<K, $n>(tiles, acts, &terms, (t, nt, kc), k0 > 0, fetch, o, out);
                    }};
                }
                while t + TOKENS <= nt {
                    run!(4; 0 1 2 3);
                    t += TOKENS;
                }
                match nt - t {
                    3 => run!(3; 0 1 2),
                    2 => run!(2; 0 1),
                    1 => run!(1; 0),
                    _ => {}
                }
            }
        }
    }
}

/// One tile group (4 rows) times `T` tokens over one column chunk (`kc` tiles
/// of `tiles`, `acts[u]` the chunk's blocks of token `u`, whose terms are at
/// `terms[k * nt + t + u]`). Adds to the running sums at `out[o[u]..][..4]`
/// when `resume`, else starts from zero; `prefetch` on the first token block
/// of a group only (the others find the tiles in L1). Tokens go in pairs, one
/// pair per 256-bit vector `[t r0..r3 | t+1 r0..r3]`, an odd last token in a
/// 128-bit vector; every lane sees the same operations either way.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block<K: TileKind, const T: usize>(
    tiles: &[K],
    acts: [&[BlockQ8_0]; T],
    terms: &ActTerms,
    (t, nt, kc): (usize, usize, usize),
    resume: bool,
    prefetch: Option<usize>,
    o: [usize; T],
    out: &mut [f32],
) {
    let pairs = T / 2;
    let mut acc2 = [_mm256_setzero_ps(); TOKENS / 2];
    let mut acc1 = _mm_setzero_ps();
    if resume {
        for (j, acc) in acc2.iter_mut().enumerate().take(pairs) {
            let (s0, s1) = (
                &out[o[2 * j]..][..TILE_ROWS],
                &out[o[2 * j + 1]..][..TILE_ROWS],
            );
            // SAFETY: `s0` and `s1` are 4 f32 each; unaligned loads.
            *acc = unsafe { _mm256_loadu2_m128(s1.as_ptr(), s0.as_ptr()) };
        }
        if T % 2 == 1 {
            let s = &out[o[T - 1]..][..TILE_ROWS];
            // SAFETY: `s` is 4 f32; unaligned load.
            acc1 = unsafe { _mm_loadu_ps(s.as_ptr()) };
        }
    }
    let np = nt.div_ceil(2);
    for (k, tile) in tiles.chunks_exact(TILE_ROWS).enumerate().take(kc) {
        if let Some(lead) = prefetch {
            prefetch_ahead(tile.as_ptr(), lead, K::TILE_BYTES / 64 * 64);
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
        let dw2 = _mm256_set_m128(dw, dw);
        // SAFETY: AVX2 is enabled here; `tile` has `TILE_ROWS` blocks.
        let p = unsafe { K::prep(tile) };
        let load = |u: usize| {
            // SAFETY: `qs` is 32 bytes; unaligned load.
            unsafe { _mm256_loadu_si256(acts[u][k].qs.as_ptr() as *const __m256i) }
        };
        for (j, acc) in acc2.iter_mut().enumerate().take(pairs) {
            // SAFETY: AVX2 is enabled here; `p` was prepared from `tile`.
            let (i0, i1) = unsafe {
                (
                    K::dot(&p, tile, load(2 * j)),
                    K::dot(&p, tile, load(2 * j + 1)),
                )
            };
            let mut isum = _mm256_add_epi32(
                _mm256_permute2x128_si256::<0x20>(i0, i1),
                _mm256_permute2x128_si256::<0x31>(i0, i1),
            );
            let at = k * np + (t + 2 * j) / 2;
            if K::OFFSET8 {
                // SAFETY: the entry of tokens `t + 2j`, `t + 2j + 1` (`t` is
                // even) and block `k` was written by the chunk's prologue.
                isum = _mm256_sub_epi32(isum, unsafe { terms.s8[at].assume_init() });
            }
            // SAFETY: as for `s8`.
            let d = _mm256_mul_ps(dw2, unsafe { terms.d[at].assume_init() });
            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(d, _mm256_cvtepi32_ps(isum)));
        }
        if T % 2 == 1 {
            // SAFETY: AVX2 is enabled here; `p` was prepared from `tile`.
            let mut isum = add_halves(unsafe { K::dot(&p, tile, load(T - 1)) });
            // Token `t + T - 1` is even (`t` is a multiple of 4, `T` is 1 or
            // 3): the low half of its pair entry.
            let at = k * np + (t + T - 1) / 2;
            if K::OFFSET8 {
                // SAFETY: written by the chunk's prologue.
                let s8 = unsafe { terms.s8[at].assume_init() };
                isum = _mm_sub_epi32(isum, _mm256_castsi256_si128(s8));
            }
            // SAFETY: as for `s8`.
            let da = _mm256_castps256_ps128(unsafe { terms.d[at].assume_init() });
            let d = _mm_mul_ps(dw, da);
            acc1 = _mm_add_ps(acc1, _mm_mul_ps(d, _mm_cvtepi32_ps(isum)));
        }
    }
    for (j, acc) in acc2.iter().enumerate().take(pairs) {
        let (lo, hi) = (o[2 * j], o[2 * j + 1]);
        // SAFETY: each destination is 4 f32 in bounds (checked by the slices).
        unsafe {
            _mm_storeu_ps(
                out[lo..lo + TILE_ROWS].as_mut_ptr(),
                _mm256_castps256_ps128(*acc),
            );
            _mm_storeu_ps(
                out[hi..hi + TILE_ROWS].as_mut_ptr(),
                _mm256_extractf128_ps::<1>(*acc),
            );
        }
    }
    if T % 2 == 1 {
        let s = &mut out[o[T - 1]..o[T - 1] + TILE_ROWS];
        // SAFETY: `s` is 4 f32; unaligned store.
        unsafe { _mm_storeu_ps(s.as_mut_ptr(), acc1) };
    }
}
