//! AVX2 activation quantizer: bit-identical to `scalar::quantize_row_q8_0`
//! (same maximum, same f32 scale and reciprocal, same products, rounding half
//! away from zero, NaN to 0, clamp to -127..=127), so a model's results do not
//! depend on which tier quantized its activations.

use core::arch::x86_64::*;

use half::f16;

use crate::blocks::{BlockQ8_0, QK};

pub(super) fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(x.len(), out.len() * QK, "quantize_row_q8_0: shape mismatch");
    // SAFETY: reachable only through `table(Avx2Token)`; shape checked above.
    unsafe { quantize_row_q8_0_impl(x, out) }
}

/// # Safety
/// The CPU has AVX2; `x.len() == out.len() * QK`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_row_q8_0_impl(x: &[f32], out: &mut [BlockQ8_0]) {
    let sign_bit = _mm256_set1_ps(-0.0);
    for (xs, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        // SAFETY: `xs` has 32 elements: four unaligned 8-lane loads.
        let v: [__m256; 4] =
            core::array::from_fn(|i| unsafe { _mm256_loadu_ps(xs.as_ptr().add(8 * i)) });
        // max(|v|, m) returns m when |v| is NaN, like the scalar `m.max(|v|)`;
        // max is exact, so the lane order does not matter.
        let mut m = _mm256_setzero_ps();
        for &vi in &v {
            m = _mm256_max_ps(_mm256_andnot_ps(sign_bit, vi), m);
        }
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let m1 = _mm_max_ss(m2, _mm_movehdup_ps(m2));
        let amax = _mm_cvtss_f32(m1);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d).to_bits().to_le_bytes();
        let idv = _mm256_set1_ps(id);
        let q: [__m256i; 4] = v.map(|vi| round_clamp(_mm256_mul_ps(vi, idv)));
        // i32 -> i16 -> i8 with saturation (values are already in -127..=127),
        // then undo the 128-bit-lane interleaving of the packs.
        let p16a = _mm256_packs_epi32(q[0], q[1]);
        let p16b = _mm256_packs_epi32(q[2], q[3]);
        let p8 = _mm256_packs_epi16(p16a, p16b);
        let fixed = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: `qs` is 32 bytes; unaligned store.
        unsafe { _mm256_storeu_si256(b.qs.as_mut_ptr() as *mut __m256i, fixed) };
    }
}

/// `clamp(round_half_away(p), -127, 127)` per lane as i32, NaN to 0: exactly
/// `(libm::roundf(p) as i32).clamp(-127, 127)`.
#[inline]
#[target_feature(enable = "avx2")]
fn round_clamp(p: __m256) -> __m256i {
    // NaN lanes to 0 (the scalar `as i32` maps NaN to 0).
    let p = _mm256_and_ps(p, _mm256_cmp_ps::<_CMP_ORD_Q>(p, p));
    // Clamp first (exact, and keeps the conversion in range): rounding a value
    // in [-127, 127] stays in it, and clamping before or after rounding agrees.
    let p = _mm256_min_ps(
        _mm256_max_ps(p, _mm256_set1_ps(-127.0)),
        _mm256_set1_ps(127.0),
    );
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(p);
    // |p - t| < 1 is exact; add sign(p) where it is at least one half.
    let frac = _mm256_andnot_ps(_mm256_set1_ps(-0.0), _mm256_sub_ps(p, t));
    let up = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
    let one = _mm256_or_ps(_mm256_set1_ps(1.0), _mm256_and_ps(p, _mm256_set1_ps(-0.0)));
    let r = _mm256_add_ps(t, _mm256_and_ps(up, one));
    _mm256_cvtps_epi32(r)
}
