//! AVX2 products of IQ4_NL weights with Q8_0 activations (contracts:
//! `scalar::iq4_nl`). The 4-bit indices are turned into codebook values with
//! one `_mm256_shuffle_epi8` table lookup, then multiplied like Q8_0 quants
//! (sign + maddubs). The safe wrappers assert the scalar shape contracts and
//! are reachable only through `table(Avx2Token)`. The row-interleaved
//! (`iq4_nlx4`) products share the tile driver of `matmul.rs`.

use core::arch::x86_64::*;

use crate::blocks::{BlockIq4Nl, BlockQ8_0, IQ4_NL_VALUES, QK};

const _: () = assert!(QK == 32, "one block per 256-bit register");

/// Horizontal sum of 8 f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// f16 bits (little-endian bytes) to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_le(d: [u8; 2]) -> f32 {
    let v = _mm_cvtsi32_si128(u16::from_le_bytes(d) as i32);
    _mm_cvtss_f32(_mm_cvtph_ps(v))
}

/// The codebook in both 128-bit lanes (`_mm256_shuffle_epi8` looks up per lane).
#[inline]
#[target_feature(enable = "avx2")]
fn codebook() -> __m256i {
    // SAFETY: `IQ4_NL_VALUES` is 16 bytes; unaligned load.
    let t = unsafe { _mm_loadu_si128(IQ4_NL_VALUES.as_ptr() as *const __m128i) };
    _mm256_broadcastsi128_si256(t)
}

/// The 32 codebook values of a block, in element order (-127..=113).
#[inline]
#[target_feature(enable = "avx2")]
fn unpack(b: &BlockIq4Nl, table: __m256i) -> __m256i {
    // SAFETY: `qs` is 16 bytes; unaligned load.
    let q = unsafe { _mm_loadu_si128(b.qs.as_ptr() as *const __m128i) };
    let m = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(q, m);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), m);
    _mm256_shuffle_epi8(table, _mm256_set_m128i(hi, lo))
}

/// The 32 quants of a Q8_0 block.
#[inline]
#[target_feature(enable = "avx2")]
fn load_q8(b: &BlockQ8_0) -> __m256i {
    // SAFETY: `qs` is 32 bytes; unaligned load.
    unsafe { _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i) }
}

/// Eight i32 lanes summing to the exact dot product of one block pair:
/// `maddubs(|w|, sign(a, w))`. Exact because the codebook values are in
/// -127..=113 and activation quants in -127..=127 (pair sums at most 32258,
/// below the i16 saturation of maddubs).
#[inline]
#[target_feature(enable = "avx2")]
fn block_dot(w: __m256i, a: __m256i) -> __m256i {
    let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
    _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
}

/// `acc + d_w d_a * dot(w, a)` for one block pair.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn step(acc: __m256, w: __m256i, dw: f32, a: &BlockQ8_0, av: __m256i) -> __m256 {
    let p = _mm256_cvtepi32_ps(block_dot(w, av));
    _mm256_fmadd_ps(_mm256_set1_ps(dw * f16_le(a.d)), p, acc)
}

pub(super) fn matvec_iq4_nl_q8_0(w: &[BlockIq4Nl], a: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(
        w.len(),
        out.len() * a.len(),
        "matvec_iq4_nl_q8_0: shape mismatch"
    );
    // SAFETY: reachable only through `table(Avx2Token)`; shape checked above.
    unsafe { matvec_impl(w, a, out) }
}

/// # Safety
/// The CPU has AVX2, FMA and F16C; `w.len() == out.len() * a.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matvec_impl(w: &[BlockIq4Nl], a: &[BlockQ8_0], out: &mut [f32]) {
    let nb = a.len();
    let table = codebook();
    let rows4 = out.len() / 4 * 4;
    // Four rows at a time: each activation block is loaded once for four rows.
    for r in (0..rows4).step_by(4) {
        let rows: [&[BlockIq4Nl]; 4] = core::array::from_fn(|j| &w[(r + j) * nb..(r + j + 1) * nb]);
        let mut acc = [_mm256_setzero_ps(); 4];
        for (k, ba) in a.iter().enumerate() {
            let av = load_q8(ba);
            for j in 0..4 {
                let bw = &rows[j][k];
                acc[j] = step(acc[j], unpack(bw, table), f16_le(bw.d), ba, av);
            }
        }
        for j in 0..4 {
            out[r + j] = hsum_ps(acc[j]);
        }
    }
    for (r, o) in out.iter_mut().enumerate().skip(rows4) {
        let row = &w[r * nb..(r + 1) * nb];
        // Two accumulators alternate blocks.
        let mut acc = [_mm256_setzero_ps(); 2];
        for (k, (bw, ba)) in row.iter().zip(a).enumerate() {
            acc[k % 2] = step(acc[k % 2], unpack(bw, table), f16_le(bw.d), ba, load_q8(ba));
        }
        *o = hsum_ps(_mm256_add_ps(acc[0], acc[1]));
    }
}
