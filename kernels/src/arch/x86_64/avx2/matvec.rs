//! AVX2 matrix-vector products. The safe wrappers assert the scalar kernels'
//! shape contracts and are reachable only through `table(Avx2Token)`, so the
//! `#[target_feature]` code runs only on CPUs that have the features.

use core::arch::x86_64::*;

use crate::blocks::{BlockQ4_0, BlockQ8_0, QK};

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

pub(super) fn matvec_f32_f32(w: &[f32], x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    assert_eq!(w.len(), out.len() * cols, "matvec_f32_f32: shape mismatch");
    // SAFETY: reachable only through `table(Avx2Token)`, so AVX2/FMA/F16C exist;
    // the shape was checked above.
    unsafe { matvec_f32_f32_impl(w, x, out) }
}

/// # Safety
/// The CPU has AVX2 and FMA; `w.len() == out.len() * x.len()`.
#[target_feature(enable = "avx2,fma")]
unsafe fn matvec_f32_f32_impl(w: &[f32], x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    let main = cols / 32 * 32;
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * cols..(r + 1) * cols];
        let (rp, xp) = (row.as_ptr(), x.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < main {
            for (u, a) in acc.iter_mut().enumerate() {
                // SAFETY: i + 8u + 8 <= main <= cols, in bounds of both rows.
                let (wv, xv) = unsafe {
                    (
                        _mm256_loadu_ps(rp.add(i + 8 * u)),
                        _mm256_loadu_ps(xp.add(i + 8 * u)),
                    )
                };
                *a = _mm256_fmadd_ps(wv, xv, *a);
            }
            i += 32;
        }
        while i + 8 <= cols {
            // SAFETY: i + 8 <= cols.
            let (wv, xv) = unsafe { (_mm256_loadu_ps(rp.add(i)), _mm256_loadu_ps(xp.add(i))) };
            acc[0] = _mm256_fmadd_ps(wv, xv, acc[0]);
            i += 8;
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut s = hsum_ps(v);
        for j in i..cols {
            s += row[j] * x[j];
        }
        *o = s;
    }
}

/// Eight i32 lanes holding the quants' dot product of one block pair:
/// `maddubs(|w|, sign(a, w))` forms `|w| * (a * sign(w)) = w * a` per byte pair.
/// Exact for weight quants in -128..=127 and activation quants in -127..=127:
/// `|w| <= 128` as u8 and `|a| <= 127`, so a pair sum is at most 32512 and the
/// i16 saturation of maddubs never triggers.
#[inline]
#[target_feature(enable = "avx2")]
fn block_dot_i8(w: __m256i, a: __m256i) -> __m256i {
    let aw = _mm256_sign_epi8(w, w);
    let sa = _mm256_sign_epi8(a, w);
    let p16 = _mm256_maddubs_epi16(aw, sa);
    _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
}

pub(super) fn matvec_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(
        w.len(),
        out.len() * a.len(),
        "matvec_q8_0_q8_0: shape mismatch"
    );
    // SAFETY: reachable only through `table(Avx2Token)`; shape checked above.
    unsafe { matvec_q8_0_q8_0_impl(w, a, out) }
}

/// # Safety
/// The CPU has AVX2, FMA and F16C; `w.len() == out.len() * a.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matvec_q8_0_q8_0_impl(w: &[BlockQ8_0], a: &[BlockQ8_0], out: &mut [f32]) {
    let nb = a.len();
    let rows4 = out.len() / 4 * 4;
    // Four rows at a time: each activation block is loaded once for four weight
    // rows, and four independent accumulators keep four weight streams in flight.
    for r in (0..rows4).step_by(4) {
        let rows: [&[BlockQ8_0]; 4] = core::array::from_fn(|j| &w[(r + j) * nb..(r + j + 1) * nb]);
        let mut acc = [_mm256_setzero_ps(); 4];
        for (k, ba) in a.iter().enumerate() {
            // SAFETY: `qs` is 32 bytes; unaligned load.
            let av = unsafe { _mm256_loadu_si256(ba.qs.as_ptr() as *const __m256i) };
            let da = f16_le(ba.d);
            for j in 0..4 {
                let bw = &rows[j][k];
                // SAFETY: `qs` is 32 bytes; unaligned load.
                let wv = unsafe { _mm256_loadu_si256(bw.qs.as_ptr() as *const __m256i) };
                let p = _mm256_cvtepi32_ps(block_dot_i8(wv, av));
                let d = _mm256_set1_ps(f16_le(bw.d) * da);
                acc[j] = _mm256_fmadd_ps(d, p, acc[j]);
            }
        }
        for j in 0..4 {
            out[r + j] = hsum_ps(acc[j]);
        }
    }
    for (r, o) in out.iter_mut().enumerate().skip(rows4) {
        let row = &w[r * nb..(r + 1) * nb];
        // Two accumulators in registers (see the AVX-512 tier).
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let step = |k: usize, acc: __m256| {
            let (bw, ba) = (&row[k], &a[k]);
            // SAFETY: `qs` is 32 bytes; unaligned loads.
            let (wv, av) = unsafe {
                (
                    _mm256_loadu_si256(bw.qs.as_ptr() as *const __m256i),
                    _mm256_loadu_si256(ba.qs.as_ptr() as *const __m256i),
                )
            };
            let p = _mm256_cvtepi32_ps(block_dot_i8(wv, av));
            let d = _mm256_set1_ps(f16_le(bw.d) * f16_le(ba.d));
            _mm256_fmadd_ps(d, p, acc)
        };
        let mut k = 0;
        while k + 2 <= nb {
            acc0 = step(k, acc0);
            acc1 = step(k + 1, acc1);
            k += 2;
        }
        if k < nb {
            acc0 = step(k, acc0);
        }
        *o = hsum_ps(_mm256_add_ps(acc0, acc1));
    }
}

/// The 32 centred quants `q - 8` of a Q4_0 block, in element order.
#[inline]
#[target_feature(enable = "avx2")]
fn unpack_q4_0(b: &BlockQ4_0) -> __m256i {
    // SAFETY: `qs` is 16 bytes; unaligned load.
    let q = unsafe { _mm_loadu_si128(b.qs.as_ptr() as *const __m128i) };
    let m = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(q, m);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), m);
    _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8))
}

pub(super) fn matvec_q4_0_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(
        w.len(),
        out.len() * a.len(),
        "matvec_q4_0_q8_0: shape mismatch"
    );
    // SAFETY: reachable only through `table(Avx2Token)`; shape checked above.
    unsafe { matvec_q4_0_q8_0_impl(w, a, out) }
}

/// # Safety
/// The CPU has AVX2, FMA and F16C; `w.len() == out.len() * a.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matvec_q4_0_q8_0_impl(w: &[BlockQ4_0], a: &[BlockQ8_0], out: &mut [f32]) {
    let nb = a.len();
    let rows4 = out.len() / 4 * 4;
    // Four rows at a time: each activation block is loaded once for four weight
    // rows, and four independent accumulators keep four weight streams in flight.
    for r in (0..rows4).step_by(4) {
        let rows: [&[BlockQ4_0]; 4] = core::array::from_fn(|j| &w[(r + j) * nb..(r + j + 1) * nb]);
        let mut acc = [_mm256_setzero_ps(); 4];
        for (k, ba) in a.iter().enumerate() {
            // SAFETY: `qs` is 32 bytes; unaligned load.
            let av = unsafe { _mm256_loadu_si256(ba.qs.as_ptr() as *const __m256i) };
            let da = f16_le(ba.d);
            for j in 0..4 {
                let bw = &rows[j][k];
                let wv = unpack_q4_0(bw);
                let p = _mm256_cvtepi32_ps(block_dot_i8(wv, av));
                let d = _mm256_set1_ps(f16_le(bw.d) * da);
                acc[j] = _mm256_fmadd_ps(d, p, acc[j]);
            }
        }
        for j in 0..4 {
            out[r + j] = hsum_ps(acc[j]);
        }
    }
    for (r, o) in out.iter_mut().enumerate().skip(rows4) {
        let row = &w[r * nb..(r + 1) * nb];
        // Two accumulators in registers (see the AVX-512 tier).
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let step = |k: usize, acc: __m256| {
            let (bw, ba) = (&row[k], &a[k]);
            // SAFETY: `qs` is 32 bytes; unaligned load.
            let av = unsafe { _mm256_loadu_si256(ba.qs.as_ptr() as *const __m256i) };
            let p = _mm256_cvtepi32_ps(block_dot_i8(unpack_q4_0(bw), av));
            let d = _mm256_set1_ps(f16_le(bw.d) * f16_le(ba.d));
            _mm256_fmadd_ps(d, p, acc)
        };
        let mut k = 0;
        while k + 2 <= nb {
            acc0 = step(k, acc0);
            acc1 = step(k + 1, acc1);
            k += 2;
        }
        if k < nb {
            acc0 = step(k, acc0);
        }
        *o = hsum_ps(_mm256_add_ps(acc0, acc1));
    }
}

const _: () = assert!(QK == 32, "one block per 256-bit register");
