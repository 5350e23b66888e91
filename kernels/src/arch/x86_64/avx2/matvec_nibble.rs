//! AVX2 matrix-vector products (decode) of the row-interleaved 4-bit matrices
//! (`q4_0x4`, `iq4_nlx4`) with one Q8_0 activation vector, two tile groups
//! (eight rows, two weight streams) at a time.
//!
//! The batched kernel of `matmul.rs` reduces each tile's four row sums across
//! lanes for every block, then scales a 4-lane vector; with one token that
//! per-block work (nibble unpacking of each row, a 16-bit horizontal-add tree,
//! building the scales) is most of the instructions, and the product stayed
//! well under the memory bandwidth. Here each 256-bit vector holds the same
//! row of two groups (`[group g row r | group g+1 row r]`, 16 nibble bytes
//! each), so the low and high nibbles are split for two rows with three
//! instructions and multiplied with the activation's two halves broadcast to
//! both lanes; one 32-bit horizontal-add tree per eight rows leaves
//! `[g rows 0..4 | g+1 rows 0..4]`, the output order, and the scales of eight
//! rows convert in one instruction.
//!
//! Results are bit-identical to the scalar tier and to `matmul.rs` with one
//! token: the integer block sums are exact in any order, and each row's f32
//! terms are formed and summed as the scalar kernel does (`acc += (d_w * d_a)
//! * isum`, block by block). A trailing odd group goes through `matmul.rs`.
//!
//! Value domains: activation quants in -127..=127 (`scalar::quantize_row_q8_0`).

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::matmul::{act_terms, matmul_x4};
use crate::blocks::{BlockIq4Nl, BlockQ4_0, BlockQ8_0, IQ4_NL_VALUES, QK, TILE_ROWS};

const _: () = assert!(QK == 32, "a block's nibbles are one 128-bit lane");
const _: () = assert!(TILE_ROWS == 4, "the reduction tree spells out four rows");

/// Rows per step: two tile groups.
const PAIR_ROWS: usize = 2 * TILE_ROWS;
/// Blocks of precomputed activation terms per pass over the matrix (16,384
/// columns; wider matrices take several passes, resuming from `out`, an exact
/// f32 store and reload).
const TERM_BLOCKS: usize = 512;
/// How far ahead (bytes) each weight stream is prefetched. Much further than
/// `matmul.rs`'s 1 KiB: on this kernel's two streams of 72-byte tiles a 1 KiB
/// lead left loads waiting on memory (`perf annotate`); 16 KiB sped up
/// 1.1B-shape q4_0 decode and 32 or 64 KiB gained nothing more
/// (`benches/RESULTS.md`, "q4_0 / iq4_nl matrix-vector product"). Why so far
/// is not measured; a plausible reason is that a lead of several 4 KiB pages
/// also starts each page's address translation early.
const PREFETCH_AHEAD: usize = 16 * 1024;

/// Prefetches the two cache lines `PREFETCH_AHEAD` bytes past `p` (a tile is
/// 72 bytes, so two lines cover it wherever it starts) into L2
/// (`_MM_HINT_T1`): a T0 prefetch holds one of the core's few L1 miss buffers
/// until its line arrives, which capped decode reads well below the memory
/// bandwidth on AMD hosts; T1 was faster on Zen 3 and Zen 5 and no slower on
/// Intel (`benches/RESULTS.md`, "Decode kernels: loop state in registers, L2
/// prefetch"). Prefetches never fault, so addresses past the end of the matrix
/// are harmless; the pointer is only formed, never dereferenced.
#[inline]
#[target_feature(enable = "avx2")]
fn prefetch_far<T>(p: *const T) {
    let p = (p as *const i8).wrapping_add(PREFETCH_AHEAD);
    _mm_prefetch::<_MM_HINT_T1>(p);
    _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(64));
}

/// A 4-bit block type of `d` (f16 scale) + 16 bytes of nibbles, byte `j`
/// holding element `j` (low nibble) and `j + 16` (high nibble).
trait NibbleBlock: Sized {
    /// Constants the dot product needs (IQ4_NL's codebook).
    type Ctx: Copy;
    /// Whether the integer dot product is `sum(q * a) - 8 * sum(a)`.
    const OFFSET8: bool;

    /// # Safety
    /// The CPU has AVX2.
    unsafe fn ctx() -> Self::Ctx;

    /// Eight i32 lanes: the low four sum to the block dot product of the row
    /// in the low 128-bit lane of `lo`/`hi`, the high four to that of the row
    /// in the high lane (before the `OFFSET8` correction). `lo`/`hi` hold the
    /// low/high nibbles (0..=15) of two rows' blocks; `a_lo`/`a_hi` the
    /// activation quants 0..16 / 16..32, in both lanes.
    ///
    /// # Safety
    /// The CPU has AVX2.
    unsafe fn dot(
        ctx: Self::Ctx,
        lo: __m256i,
        hi: __m256i,
        a_lo: __m256i,
        a_hi: __m256i,
    ) -> __m256i;

    fn scale_bits(&self) -> i16;
    fn nibbles(&self) -> *const u8;
}

impl NibbleBlock for BlockQ4_0 {
    type Ctx = ();
    const OFFSET8: bool = true;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn ctx() {}

    /// `maddubs(q, a)` with unsigned nibbles: a pair sum is at most
    /// 2 * 15 * 127 = 3810, so the low and high halves add exactly in i16
    /// (at most 7620) before one widening `madd`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn dot(_: (), lo: __m256i, hi: __m256i, a_lo: __m256i, a_hi: __m256i) -> __m256i {
        let s = _mm256_add_epi16(
            _mm256_maddubs_epi16(lo, a_lo),
            _mm256_maddubs_epi16(hi, a_hi),
        );
        _mm256_madd_epi16(s, _mm256_set1_epi16(1))
    }

    fn scale_bits(&self) -> i16 {
        i16::from_le_bytes(self.d)
    }

    fn nibbles(&self) -> *const u8 {
        self.qs.as_ptr()
    }
}

impl NibbleBlock for BlockIq4Nl {
    /// The codebook in both 128-bit lanes.
    type Ctx = __m256i;
    const OFFSET8: bool = false;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn ctx() -> __m256i {
        // SAFETY: `IQ4_NL_VALUES` is 16 bytes; unaligned load.
        _mm256_broadcastsi128_si256(unsafe {
            _mm_loadu_si128(IQ4_NL_VALUES.as_ptr() as *const __m128i)
        })
    }

    /// The codebook values (-127..=113) by `shuffle_epi8`, then
    /// `maddubs(|v|, sign(a, v))` per half: a pair sum is at most
    /// 2 * 127 * 127 = 32258, below the i16 saturation, so each half widens
    /// with its own `madd` before the halves add in i32.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn dot(
        table: __m256i,
        lo: __m256i,
        hi: __m256i,
        a_lo: __m256i,
        a_hi: __m256i,
    ) -> __m256i {
        let ones = _mm256_set1_epi16(1);
        let half = |idx: __m256i, a: __m256i| {
            let v = _mm256_shuffle_epi8(table, idx);
            _mm256_madd_epi16(
                _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(a, v)),
                ones,
            )
        };
        _mm256_add_epi32(half(lo, a_lo), half(hi, a_hi))
    }

    fn scale_bits(&self) -> i16 {
        i16::from_le_bytes(self.d)
    }

    fn nibbles(&self) -> *const u8 {
        self.qs.as_ptr()
    }
}

pub(super) fn matvec_q4_0x4_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0], out: &mut [f32]) {
    crate::scalar::check_tiled_shape(w.len(), a.len(), out.len(), "matvec_q4_0x4_q8_0");
    // SAFETY: reachable only through `table(Avx2Token)`; shape checked above.
    unsafe { matvec(w, a, out) }
}

pub(super) fn matvec_iq4_nlx4_q8_0(w: &[BlockIq4Nl], a: &[BlockQ8_0], out: &mut [f32]) {
    crate::scalar::check_tiled_shape(w.len(), a.len(), out.len(), "matvec_iq4_nlx4_q8_0");
    // SAFETY: reachable only through `table(Avx2Token)`; shape checked above.
    unsafe { matvec(w, a, out) }
}

/// Pairs of groups here, a trailing odd group through `matmul_x4`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `w.len() == out.len() * a.len()` with
/// `out.len()` a multiple of `TILE_ROWS`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matvec<K: NibbleBlock + super::matmul::TileKind>(
    w: &[K],
    a: &[BlockQ8_0],
    out: &mut [f32],
) {
    let nb = a.len();
    let paired = out.len() / PAIR_ROWS * PAIR_ROWS;
    let (out_pairs, out_rest) = out.split_at_mut(paired);
    let (w_pairs, w_rest) = w.split_at(paired * nb);
    // SAFETY: the CPU features are enabled here; shapes follow from the caller's.
    unsafe {
        if paired > 0 {
            matvec_pairs(w_pairs, a, out_pairs);
        }
        if !out_rest.is_empty() {
            matmul_x4(w_rest, a, 1, out_rest);
        }
    }
}

/// # Safety
/// The CPU has AVX2, FMA and F16C; `w.len() == out.len() * a.len()` with
/// `out.len()` a multiple of `PAIR_ROWS`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matvec_pairs<K: NibbleBlock>(w: &[K], a: &[BlockQ8_0], out: &mut [f32]) {
    let nb = a.len();
    if nb == 0 {
        out.fill(0.0);
        return;
    }
    // Entry `k` of both is written for every `k < kc` of a pass before any is read.
    let mut da = [MaybeUninit::<f32>::uninit(); TERM_BLOCKS];
    let mut s8 = [MaybeUninit::<i32>::uninit(); TERM_BLOCKS];
    // SAFETY: AVX2 is enabled here.
    let ctx = unsafe { K::ctx() };
    let m = _mm256_set1_epi8(0x0F);
    let group = nb * TILE_ROWS;
    for k0 in (0..nb).step_by(TERM_BLOCKS) {
        let kc = TERM_BLOCKS.min(nb - k0);
        for (k, b) in a[k0..k0 + kc].iter().enumerate() {
            let (d, s) = act_terms(b, K::OFFSET8);
            da[k].write(d);
            s8[k].write(s);
        }
        let acts = &a[k0..k0 + kc];
        for (pair, dst) in out.chunks_exact_mut(PAIR_ROWS).enumerate() {
            let g0 = &w[2 * pair * group + k0 * TILE_ROWS..][..kc * TILE_ROWS];
            let g1 = &w[(2 * pair + 1) * group + k0 * TILE_ROWS..][..kc * TILE_ROWS];
            let mut acc = if k0 > 0 {
                // SAFETY: `dst` is 8 f32; unaligned load.
                unsafe { _mm256_loadu_ps(dst.as_ptr()) }
            } else {
                _mm256_setzero_ps()
            };
            // Tiles as arrays and equal lengths checked once: the loop below then
            // indexes without bounds checks and keeps its state in registers
            // (the iterator chain it replaces spilled to the stack).
            let (t0, _) = g0.as_chunks::<TILE_ROWS>();
            let (t1, _) = g1.as_chunks::<TILE_ROWS>();
            assert!(t0.len() == kc && t1.len() == kc && acts.len() == kc);
            for k in 0..kc {
                let (x0, x1, act) = (&t0[k], &t1[k], &acts[k]);
                prefetch_far(x0.as_ptr());
                prefetch_far(x1.as_ptr());
                // SAFETY: `qs` is 32 bytes; two unaligned 16-byte loads.
                let (a_lo, a_hi) = unsafe {
                    let q = act.qs.as_ptr() as *const __m128i;
                    (
                        _mm256_broadcastsi128_si256(_mm_loadu_si128(q)),
                        _mm256_broadcastsi128_si256(_mm_loadu_si128(q.add(1))),
                    )
                };
                let s: [__m256i; TILE_ROWS] = core::array::from_fn(|r| {
                    // SAFETY: each block's nibbles are 16 bytes; unaligned loads.
                    let v = unsafe {
                        _mm256_loadu2_m128i(
                            x1[r].nibbles() as *const __m128i,
                            x0[r].nibbles() as *const __m128i,
                        )
                    };
                    let (lo, hi) = (
                        _mm256_and_si256(v, m),
                        _mm256_and_si256(_mm256_srli_epi16::<4>(v), m),
                    );
                    // SAFETY: AVX2 is enabled here.
                    unsafe { K::dot(ctx, lo, hi, a_lo, a_hi) }
                });
                let mut isum =
                    _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
                if K::OFFSET8 {
                    // SAFETY: entry `k < kc` was written above.
                    isum =
                        _mm256_sub_epi32(isum, _mm256_set1_epi32(unsafe { s8[k].assume_init() }));
                }
                let dw = _mm256_cvtph_ps(_mm_setr_epi16(
                    x0[0].scale_bits(),
                    x0[1].scale_bits(),
                    x0[2].scale_bits(),
                    x0[3].scale_bits(),
                    x1[0].scale_bits(),
                    x1[1].scale_bits(),
                    x1[2].scale_bits(),
                    x1[3].scale_bits(),
                ));
                // SAFETY: entry `k < kc` was written above.
                let d = _mm256_mul_ps(dw, _mm256_set1_ps(unsafe { da[k].assume_init() }));
                acc = _mm256_add_ps(acc, _mm256_mul_ps(d, _mm256_cvtepi32_ps(isum)));
            }
            // SAFETY: `dst` is 8 f32; unaligned store.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), acc) };
        }
    }
}
