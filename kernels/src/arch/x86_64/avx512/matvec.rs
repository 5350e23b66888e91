//! AVX-512 matrix-vector products. The safe wrappers assert the scalar kernels'
//! shape contracts and are reachable only through `table(Avx512Token)`, so the
//! `#[target_feature]` code runs only on CPUs that have the features.
//!
//! The quantized kernels take two blocks per 512-bit register (blocks are 34 or
//! 18 bytes, so their quants are gathered with two 256-bit loads) and use VNNI's
//! `vpdpbusd` (u8 x i8, four products summed into each i32 lane, no saturation).

use core::arch::x86_64::*;

use crate::blocks::{BlockQ4_0, BlockQ8_0};

/// f16 bits (little-endian bytes) to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_le(d: [u8; 2]) -> f32 {
    let v = _mm_cvtsi32_si128(u16::from_le_bytes(d) as i32);
    _mm_cvtss_f32(_mm_cvtph_ps(v))
}

pub(super) fn matvec_f32_f32(w: &[f32], x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    assert_eq!(w.len(), out.len() * cols, "matvec_f32_f32: shape mismatch");
    // SAFETY: reachable only through `table(Avx512Token)`; shape checked above.
    unsafe { matvec_f32_f32_impl(w, x, out) }
}

/// # Safety
/// The CPU has AVX-512F; `w.len() == out.len() * x.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn matvec_f32_f32_impl(w: &[f32], x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    let main = cols / 64 * 64;
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY: row `r` is in bounds by the shape contract.
        let rp = unsafe { w.as_ptr().add(r * cols) };
        let xp = x.as_ptr();
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i < main {
            for (u, a) in acc.iter_mut().enumerate() {
                // SAFETY: i + 16u + 16 <= main <= cols.
                let (wv, xv) = unsafe {
                    (
                        _mm512_loadu_ps(rp.add(i + 16 * u)),
                        _mm512_loadu_ps(xp.add(i + 16 * u)),
                    )
                };
                *a = _mm512_fmadd_ps(wv, xv, *a);
            }
            i += 64;
        }
        while i < cols {
            let n = (cols - i).min(16);
            let m: __mmask16 = ((1u32 << n) - 1) as u16;
            // SAFETY: masked loads touch only the first n <= cols - i lanes.
            let (wv, xv) = unsafe {
                (
                    _mm512_maskz_loadu_ps(m, rp.add(i)),
                    _mm512_maskz_loadu_ps(m, xp.add(i)),
                )
            };
            acc[0] = _mm512_fmadd_ps(wv, xv, acc[0]);
            i += n;
        }
        let v = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        *o = _mm512_reduce_add_ps(v);
    }
}

/// Loads two 32-byte quant arrays into one register (first in the low half).
///
/// # Safety
/// Both pointers are valid for 32 bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load2(p0: *const u8, p1: *const u8) -> __m512i {
    // SAFETY: the caller guarantees 32 readable bytes at each pointer.
    unsafe {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_loadu_si256(p0 as *const __m256i)),
            _mm256_loadu_si256(p1 as *const __m256i),
        )
    }
}

/// Sixteen i32 lanes holding `w . a` per group of four bytes:
/// `vpdpbusd(|w|, a * sign(w))`. Exact for weight quants in -128..=127 (|w| as u8
/// is at most 128) and activation quants in -127..=127 (negating one stays in
/// i8); each i32 lane sums four products of magnitude <= 16256.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn dot_i8(w: __m512i, a: __m512i) -> __m512i {
    let neg = _mm512_movepi8_mask(w);
    let sa = _mm512_mask_sub_epi8(a, neg, _mm512_setzero_si512(), a);
    _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(w), sa)
}

/// Scale vector `[s0; 8] ++ [s1; 8]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn scales2(s0: f32, s1: f32) -> __m512 {
    _mm512_castpd_ps(_mm512_insertf64x4::<1>(
        _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_set1_ps(s0))),
        _mm256_castps_pd(_mm256_set1_ps(s1)),
    ))
}

pub(super) fn matvec_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(
        w.len(),
        out.len() * a.len(),
        "matvec_q8_0_q8_0: shape mismatch"
    );
    // SAFETY: reachable only through `table(Avx512Token)`; shape checked above.
    unsafe { matvec_q8_0_q8_0_impl(w, a, out) }
}

/// # Safety
/// The CPU has the AVX-512 tier's features; `w.len() == out.len() * a.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
unsafe fn matvec_q8_0_q8_0_impl(w: &[BlockQ8_0], a: &[BlockQ8_0], out: &mut [f32]) {
    let nb = a.len();
    let pairs = nb / 2;
    let rows4 = out.len() / 4 * 4;
    // Four rows at a time: each activation pair is loaded once for four weight
    // rows, and four independent accumulators keep four weight streams in flight.
    for r in (0..rows4).step_by(4) {
        let rows: [&[BlockQ8_0]; 4] = core::array::from_fn(|j| &w[(r + j) * nb..(r + j + 1) * nb]);
        let mut acc = [_mm512_setzero_ps(); 4];
        for k in 0..pairs {
            let (a0, a1) = (&a[2 * k], &a[2 * k + 1]);
            // SAFETY: every `qs` is 32 bytes.
            let av = unsafe { load2(a0.qs.as_ptr(), a1.qs.as_ptr()) };
            let (da0, da1) = (f16_le(a0.d), f16_le(a1.d));
            for j in 0..4 {
                let (w0, w1) = (&rows[j][2 * k], &rows[j][2 * k + 1]);
                // SAFETY: every `qs` is 32 bytes.
                let wv = unsafe { load2(w0.qs.as_ptr(), w1.qs.as_ptr()) };
                let p = _mm512_cvtepi32_ps(dot_i8(wv, av));
                let d = scales2(f16_le(w0.d) * da0, f16_le(w1.d) * da1);
                acc[j] = _mm512_fmadd_ps(d, p, acc[j]);
            }
        }
        if nb % 2 == 1 {
            let a0 = &a[nb - 1];
            // SAFETY: `qs` is 32 bytes.
            let av = _mm512_zextsi256_si512(unsafe {
                _mm256_loadu_si256(a0.qs.as_ptr() as *const __m256i)
            });
            let da0 = f16_le(a0.d);
            for j in 0..4 {
                let w0 = &rows[j][nb - 1];
                // SAFETY: `qs` is 32 bytes.
                let wv = _mm512_zextsi256_si512(unsafe {
                    _mm256_loadu_si256(w0.qs.as_ptr() as *const __m256i)
                });
                let p = _mm512_cvtepi32_ps(dot_i8(wv, av));
                acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(f16_le(w0.d) * da0), p, acc[j]);
            }
        }
        for j in 0..4 {
            out[r + j] = _mm512_reduce_add_ps(acc[j]);
        }
    }
    for (r, o) in out.iter_mut().enumerate().skip(rows4) {
        let row = &w[r * nb..(r + 1) * nb];
        // Two accumulators in registers (an indexed array would live on the
        // stack and serialise the loop through store-to-load forwarding).
        let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let q8_pair = |k: usize, acc: __m512| {
            let (w0, w1, a0, a1) = (&row[2 * k], &row[2 * k + 1], &a[2 * k], &a[2 * k + 1]);
            // SAFETY: every `qs` is 32 bytes.
            let (wv, av) = unsafe {
                (
                    load2(w0.qs.as_ptr(), w1.qs.as_ptr()),
                    load2(a0.qs.as_ptr(), a1.qs.as_ptr()),
                )
            };
            let p = _mm512_cvtepi32_ps(dot_i8(wv, av));
            let d = scales2(f16_le(w0.d) * f16_le(a0.d), f16_le(w1.d) * f16_le(a1.d));
            _mm512_fmadd_ps(d, p, acc)
        };
        let mut k = 0;
        while k + 2 <= pairs {
            acc0 = q8_pair(k, acc0);
            acc1 = q8_pair(k + 1, acc1);
            k += 2;
        }
        if k < pairs {
            acc0 = q8_pair(k, acc0);
        }
        if nb % 2 == 1 {
            let (w0, a0) = (&row[nb - 1], &a[nb - 1]);
            // SAFETY: every `qs` is 32 bytes.
            let (wv, av) = unsafe {
                (
                    _mm512_zextsi256_si512(_mm256_loadu_si256(w0.qs.as_ptr() as *const __m256i)),
                    _mm512_zextsi256_si512(_mm256_loadu_si256(a0.qs.as_ptr() as *const __m256i)),
                )
            };
            // Zero-extended upper halves contribute zero products.
            let p = _mm512_cvtepi32_ps(dot_i8(wv, av));
            let d = _mm512_set1_ps(f16_le(w0.d) * f16_le(a0.d));
            acc0 = _mm512_fmadd_ps(d, p, acc0);
        }
        *o = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    }
}

/// The 32 uncentred nibbles `q` (0..=15) of a Q4_0 block, in element order.
#[inline]
#[target_feature(enable = "avx2")]
fn nibbles(b: &BlockQ4_0) -> __m256i {
    // SAFETY: `qs` is 16 bytes; unaligned load.
    let q = unsafe { _mm_loadu_si128(b.qs.as_ptr() as *const __m128i) };
    let m = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(q, m);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), m);
    _mm256_set_m128i(hi, lo)
}

pub(super) fn matvec_q4_0_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(
        w.len(),
        out.len() * a.len(),
        "matvec_q4_0_q8_0: shape mismatch"
    );
    // SAFETY: reachable only through `table(Avx512Token)`; shape checked above.
    unsafe { matvec_q4_0_q8_0_impl(w, a, out) }
}

/// `(q - 8) . a = q . a - 8 * sum(a)`, both by `vpdpbusd` with `q` (0..=15) and
/// the constant 8 as the unsigned operand: exact for activations in -128..=127.
///
/// # Safety
/// The CPU has the AVX-512 tier's features; `w.len() == out.len() * a.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
unsafe fn matvec_q4_0_q8_0_impl(w: &[BlockQ4_0], a: &[BlockQ8_0], out: &mut [f32]) {
    let nb = a.len();
    let pairs = nb / 2;
    let eights = _mm512_set1_epi8(8);
    let zero = _mm512_setzero_si512();
    let rows4 = out.len() / 4 * 4;
    // Four rows at a time, as for Q8_0.
    for r in (0..rows4).step_by(4) {
        let rows: [&[BlockQ4_0]; 4] = core::array::from_fn(|j| &w[(r + j) * nb..(r + j + 1) * nb]);
        let mut acc = [_mm512_setzero_ps(); 4];
        for k in 0..pairs {
            let (a0, a1) = (&a[2 * k], &a[2 * k + 1]);
            // SAFETY: every `qs` is 32 bytes.
            let av = unsafe { load2(a0.qs.as_ptr(), a1.qs.as_ptr()) };
            let corr = _mm512_dpbusd_epi32(zero, eights, av);
            let (da0, da1) = (f16_le(a0.d), f16_le(a1.d));
            for j in 0..4 {
                let (w0, w1) = (&rows[j][2 * k], &rows[j][2 * k + 1]);
                let wv = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(nibbles(w0)), nibbles(w1));
                let i = _mm512_sub_epi32(_mm512_dpbusd_epi32(zero, wv, av), corr);
                let d = scales2(f16_le(w0.d) * da0, f16_le(w1.d) * da1);
                acc[j] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(i), acc[j]);
            }
        }
        if nb % 2 == 1 {
            let a0 = &a[nb - 1];
            // SAFETY: `qs` is 32 bytes.
            let av = _mm512_zextsi256_si512(unsafe {
                _mm256_loadu_si256(a0.qs.as_ptr() as *const __m256i)
            });
            let corr = _mm512_dpbusd_epi32(zero, eights, av);
            let da0 = f16_le(a0.d);
            for j in 0..4 {
                let w0 = &rows[j][nb - 1];
                let wv = _mm512_zextsi256_si512(nibbles(w0));
                let i = _mm512_sub_epi32(_mm512_dpbusd_epi32(zero, wv, av), corr);
                let d = _mm512_set1_ps(f16_le(w0.d) * da0);
                acc[j] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(i), acc[j]);
            }
        }
        for j in 0..4 {
            out[r + j] = _mm512_reduce_add_ps(acc[j]);
        }
    }
    for (r, o) in out.iter_mut().enumerate().skip(rows4) {
        let row = &w[r * nb..(r + 1) * nb];
        let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let q4_pair = |k: usize, acc: __m512| {
            let (w0, w1, a0, a1) = (&row[2 * k], &row[2 * k + 1], &a[2 * k], &a[2 * k + 1]);
            let wv = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(nibbles(w0)), nibbles(w1));
            // SAFETY: every `qs` is 32 bytes.
            let av = unsafe { load2(a0.qs.as_ptr(), a1.qs.as_ptr()) };
            let i = _mm512_sub_epi32(
                _mm512_dpbusd_epi32(zero, wv, av),
                _mm512_dpbusd_epi32(zero, eights, av),
            );
            let d = scales2(f16_le(w0.d) * f16_le(a0.d), f16_le(w1.d) * f16_le(a1.d));
            _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(i), acc)
        };
        let mut k = 0;
        while k + 2 <= pairs {
            acc0 = q4_pair(k, acc0);
            acc1 = q4_pair(k + 1, acc1);
            k += 2;
        }
        if k < pairs {
            acc0 = q4_pair(k, acc0);
        }
        if nb % 2 == 1 {
            let (w0, a0) = (&row[nb - 1], &a[nb - 1]);
            let wv = _mm512_zextsi256_si512(nibbles(w0));
            // SAFETY: `qs` is 32 bytes.
            let av = _mm512_zextsi256_si512(unsafe {
                _mm256_loadu_si256(a0.qs.as_ptr() as *const __m256i)
            });
            let i = _mm512_sub_epi32(
                _mm512_dpbusd_epi32(zero, wv, av),
                _mm512_dpbusd_epi32(zero, eights, av),
            );
            let d = _mm512_set1_ps(f16_le(w0.d) * f16_le(a0.d));
            acc0 = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(i), acc0);
        }
        *o = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    }
}
