//! AVX2 matrix-vector product (decode) of the row-interleaved `q8_0x4` matrix
//! with one Q8_0 activation vector, two tile groups (eight rows, two weight
//! streams) at a time, as the 4-bit kernels of `matvec_nibble.rs`.
//!
//! `matmul.rs` with one token reduces each tile's four row sums across lanes
//! for every block and scales a 4-lane vector; this kernel reduces eight rows
//! with one 32-bit horizontal-add tree to `[g rows 0..4 | g+1 rows 0..4]` (the
//! output order), converts the eight rows' scales in one instruction and
//! keeps one 8-lane accumulator. With one weight stream the 1.1B-shape q8_0
//! decode stayed well under the memory bandwidth that the two-stream 4-bit
//! kernels reach (`benches/RESULTS.md`, "q8_0x4 decode: two tile groups per
//! step").
//!
//! Results are bit-identical to the scalar tier and to `matmul.rs` with one
//! token: the integer block sums are exact in any order, and each row's f32
//! terms are formed and summed as the scalar kernel does (`acc += (d_w * d_a)
//! * isum`, block by block). A trailing odd group goes through `matmul.rs`.
//!
//! Value domains: weight quants may use the full i8 range; activation quants
//! must be in -127..=127 (`scalar::quantize_row_q8_0`), as the product uses the
//! sign + maddubs idiom (see `matmul.rs`).

use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use super::matmul::matmul_x4;
use crate::blocks::{BlockQ8_0, QK, TILE_ROWS};

const _: () = assert!(QK == 32, "one block per 256-bit register");
const _: () = assert!(TILE_ROWS == 4, "the reduction tree spells out four rows");

/// Rows per step: two tile groups.
const PAIR_ROWS: usize = 2 * TILE_ROWS;
/// Blocks of precomputed activation scales per pass over the matrix (16,384
/// columns; wider matrices take several passes, resuming from `out`, an exact
/// f32 store and reload).
const TERM_BLOCKS: usize = 512;
/// How far ahead (bytes) each weight stream is prefetched, and into L2: as
/// the 4-bit kernels (`matvec_nibble.rs`).
const PREFETCH_AHEAD: usize = 16 * 1024;
/// Bytes of one tile (four 34-byte blocks).
const TILE_BYTES: usize = TILE_ROWS * core::mem::size_of::<BlockQ8_0>();

/// Prefetches the lines of the tile `PREFETCH_AHEAD` bytes past `p`: its
/// first, middle and last byte, which lie in the (at most three) lines a
/// 136-byte tile touches when it starts on a multiple of 8 bytes, as every
/// tile of a 64-byte-aligned tensor does (136 = 8 * 17); elsewhere a line may
/// be missed, which costs only speed. Prefetches never fault, so
/// addresses past the end of the matrix are harmless; the pointer is only
/// formed, never dereferenced.
#[inline]
#[target_feature(enable = "avx2")]
fn prefetch_tile(p: *const BlockQ8_0) {
    let p = (p as *const i8).wrapping_add(PREFETCH_AHEAD);
    _mm_prefetch::<_MM_HINT_T1>(p);
    _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(TILE_BYTES / 2));
    _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(TILE_BYTES - 1));
}

pub(super) fn matvec_q8_0x4_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0], out: &mut [f32]) {
    crate::scalar::check_tiled_shape(w.len(), a.len(), out.len(), "matvec_q8_0x4_q8_0");
    let nb = a.len();
    let paired = out.len() / PAIR_ROWS * PAIR_ROWS;
    let (out_pairs, out_rest) = out.split_at_mut(paired);
    let (w_pairs, w_rest) = w.split_at(paired * nb);
    // Reachable only through the AVX2 and AVX-512 tables, whose CPUs have
    // AVX2, FMA and F16C; both parts keep the shape checked above.
    if paired > 0 {
        // SAFETY: CPU features and shape as stated above.
        unsafe { matvec_pairs(w_pairs, a, out_pairs) };
    }
    if !out_rest.is_empty() {
        // SAFETY: CPU features and shape as stated above.
        unsafe { matmul_x4(w_rest, a, 1, out_rest) };
    }
}

/// Eight i32 lanes summing to the exact block dot product of weight block
/// `w` with the activation quants `a`: `maddubs(|w|, sign(a, w))` forms
/// `w * a` per byte pair (at most 2 * 128 * 127 = 32512, below the i16
/// saturation), `madd` widens.
#[inline]
#[target_feature(enable = "avx2")]
fn dot_block(w: &BlockQ8_0, a: __m256i) -> __m256i {
    // SAFETY: `qs` is 32 bytes; unaligned load.
    let v = unsafe { _mm256_loadu_si256(w.qs.as_ptr() as *const __m256i) };
    _mm256_madd_epi16(
        _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(a, v)),
        _mm256_set1_epi16(1),
    )
}

/// `[r0, r1, r2, r3]` of one tile in each 128-bit half (the halves sum to the
/// rows' block dot products) from its rows' eight lanes each.
#[inline]
#[target_feature(enable = "avx2")]
fn tile_sums(tile: &[BlockQ8_0], a: __m256i) -> __m256i {
    let s: [__m256i; TILE_ROWS] = core::array::from_fn(|r| dot_block(&tile[r], a));
    _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]))
}

/// # Safety
/// The CPU has AVX2, FMA and F16C; `w.len() == out.len() * a.len()` with
/// `out.len()` a multiple of `PAIR_ROWS`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matvec_pairs(w: &[BlockQ8_0], a: &[BlockQ8_0], out: &mut [f32]) {
    let nb = a.len();
    if nb == 0 {
        out.fill(0.0);
        return;
    }
    // Entry `k` is written for every `k < kc` of a pass before any is read.
    let mut da = [MaybeUninit::<f32>::uninit(); TERM_BLOCKS];
    let group = nb * TILE_ROWS;
    for k0 in (0..nb).step_by(TERM_BLOCKS) {
        let kc = TERM_BLOCKS.min(nb - k0);
        for (k, b) in a[k0..k0 + kc].iter().enumerate() {
            let bits = _mm_cvtsi32_si128(u16::from_le_bytes(b.d) as i32);
            da[k].write(_mm_cvtss_f32(_mm_cvtph_ps(bits)));
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
                prefetch_tile(x0.as_ptr());
                prefetch_tile(x1.as_ptr());
                // SAFETY: `qs` is 32 bytes; unaligned load.
                let av = unsafe { _mm256_loadu_si256(act.qs.as_ptr() as *const __m256i) };
                let (s0, s1) = (tile_sums(x0, av), tile_sums(x1, av));
                let isum = _mm256_add_epi32(
                    _mm256_permute2x128_si256::<0x20>(s0, s1),
                    _mm256_permute2x128_si256::<0x31>(s0, s1),
                );
                let bits = |b: &BlockQ8_0| i16::from_le_bytes(b.d);
                let dw = _mm256_cvtph_ps(_mm_setr_epi16(
                    bits(&x0[0]),
                    bits(&x0[1]),
                    bits(&x0[2]),
                    bits(&x0[3]),
                    bits(&x1[0]),
                    bits(&x1[1]),
                    bits(&x1[2]),
                    bits(&x1[3]),
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
