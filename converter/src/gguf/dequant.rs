//! Decoding of ggml tensor storage types to f32.
//!
//! The block layouts are ggml's (`ggml-common.h`); each is declared below as a
//! byte-only `#[repr(C)]` struct (alignment 1, so any byte slice of the right
//! length can be viewed as blocks) with one comment per field and a size assert.
//! Multi-byte fields are little-endian. The arithmetic follows ggml's reference
//! `dequantize_row_*` operation for operation (same products, same order, no fused
//! multiply-add), so results are bit-identical to ggml and gguf-py; the golden
//! test `converter/tests/gguf_dequant.rs` checks exactly that.

use bytemuck::{Pod, Zeroable};

use super::types::{GgmlType, QK_K};
use crate::error::{ConvertError, Result};

/// Elements per block of the 32-element types (Q4_0 … Q8_0).
pub const QK32: usize = 32;

#[inline]
fn f16_le(b: [u8; 2]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes(b)).to_f32()
}

/// Q4_0: 32 weights, `w = d * (q - 8)` with 4-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct BlockQ4_0 {
    /// Scale, f16.
    d: [u8; 2],
    /// Byte `j` holds weight `j` in its low nibble and weight `j + 16` in its high nibble.
    qs: [u8; QK32 / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ4_0>() == 18);

/// Q4_1: 32 weights, `w = d * q + m` with 4-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct BlockQ4_1 {
    /// Scale, f16.
    d: [u8; 2],
    /// Minimum (offset), f16.
    m: [u8; 2],
    /// Nibbles as in Q4_0.
    qs: [u8; QK32 / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ4_1>() == 20);

/// Q5_0: 32 weights, `w = d * (q - 16)` with 5-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct BlockQ5_0 {
    /// Scale, f16.
    d: [u8; 2],
    /// u32 (LE): bit `j` is the fifth (high) bit of weight `j`.
    qh: [u8; 4],
    /// Low four bits, nibbles as in Q4_0.
    qs: [u8; QK32 / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ5_0>() == 22);

/// Q5_1: 32 weights, `w = d * q + m` with 5-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct BlockQ5_1 {
    /// Scale, f16.
    d: [u8; 2],
    /// Minimum (offset), f16.
    m: [u8; 2],
    /// u32 (LE): bit `j` is the fifth (high) bit of weight `j`.
    qh: [u8; 4],
    /// Low four bits, nibbles as in Q4_0.
    qs: [u8; QK32 / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ5_1>() == 24);

/// Q8_0: 32 weights, `w = d * q` with signed 8-bit `q` (full i8 range, -128 included).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct BlockQ8_0 {
    /// Scale, f16.
    d: [u8; 2],
    /// Quants, i8, in element order.
    qs: [u8; QK32],
}
const _: () = assert!(core::mem::size_of::<BlockQ8_0>() == 34);

/// Q2_K: 256 weights in 16 groups of 16; `w = d * sc * q - dmin * m`, 2-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct BlockQ2K {
    /// Per group: low nibble = scale `sc` (4 bits), high nibble = min `m` (4 bits).
    scales: [u8; QK_K / 16],
    /// 2-bit quants. Each half of 128 weights uses 32 bytes; weight `32 * s + l` of
    /// the half is bits `2s..2s+2` of byte `l`.
    qs: [u8; QK_K / 4],
    /// Super-block scale for the scales, f16.
    d: [u8; 2],
    /// Super-block scale for the mins, f16.
    dmin: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ2K>() == 84);

/// Q3_K: 256 weights in 16 groups of 16; `w = d * (sc - 32) * (q - 4 * !hbit)`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct BlockQ3K {
    /// High bits: weight `32 * i + l` has its high bit at bit `i` of byte `l`; a
    /// clear bit subtracts 4 from the 2-bit low part.
    hmask: [u8; QK_K / 8],
    /// Low 2 bits, arranged as in Q2_K.
    qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales (stored +32): scale `k` has its low nibble in byte
    /// `k % 8` (low nibble for k < 8, high nibble otherwise) and its high two bits at
    /// bits `2 * (k / 4)` of byte `8 + k % 4`.
    scales: [u8; 12],
    /// Super-block scale, f16.
    d: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ3K>() == 110);

/// Q4_K: 256 weights in 8 groups of 32; `w = d * sc * q - dmin * m`, 4-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct BlockQ4K {
    /// Super-block scale for the scales, f16.
    d: [u8; 2],
    /// Super-block scale for the mins, f16.
    dmin: [u8; 2],
    /// Eight 6-bit scales and eight 6-bit mins, packed; see `k_scale_min`.
    scales: [u8; 12],
    /// 4-bit quants: groups `2c` and `2c + 1` share bytes `32c..32c+32`, low and
    /// high nibbles respectively.
    qs: [u8; QK_K / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ4K>() == 144);

/// Q5_K: 256 weights in 8 groups of 32; `w = d * sc * q - dmin * m`, 5-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct BlockQ5K {
    /// Super-block scale for the scales, f16.
    d: [u8; 2],
    /// Super-block scale for the mins, f16.
    dmin: [u8; 2],
    /// Scales and mins packed as in Q4_K.
    scales: [u8; 12],
    /// Fifth bits: weight `l` of group `i` has its high bit at bit `i` of byte `l`.
    qh: [u8; QK_K / 8],
    /// Low four bits, arranged as in Q4_K.
    qs: [u8; QK_K / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ5K>() == 176);

/// Q6_K: 256 weights in 16 groups of 16; `w = d * sc * (q - 32)`, 6-bit `q`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct BlockQ6K {
    /// Low four bits. Each half of 128 weights uses 64 bytes: weight `e < 64` of the
    /// half is the low nibble of byte `e`, weight `e >= 64` the high nibble of byte
    /// `e - 64`.
    ql: [u8; QK_K / 2],
    /// High two bits. Each half uses 32 bytes: weight `e` of the half is bits
    /// `2 * (e / 32)..+2` of byte `e % 32`.
    qh: [u8; QK_K / 4],
    /// Per group scale, i8.
    scales: [u8; QK_K / 16],
    /// Super-block scale, f16.
    d: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ6K>() == 210);

/// Q8_K: 256 weights, `w = d * q` (ggml's activation format for K-quant dots).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct BlockQ8K {
    /// Scale, f32 (not f16).
    d: [u8; 4],
    /// Quants, i8, in element order.
    qs: [u8; QK_K],
    /// Sums of each group of 16 quants, i16; redundant, ignored when decoding.
    bsums: [u8; QK_K / 8],
}
const _: () = assert!(core::mem::size_of::<BlockQ8K>() == 292);

/// Decodes `n` elements of type `ty` from `bytes` into a new vector.
///
/// `n` must be a multiple of the type's block size and `bytes` exactly the storage
/// of `n` elements; otherwise `ConvertError::Gguf`. Types without a decoder
/// (I-quants, integer types, …) give `ConvertError::Unsupported`.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    check_len(ty, bytes.len(), n)?;
    let mut out = vec![0.0f32; n];
    dequantize_into(ty, bytes, &mut out)?;
    Ok(out)
}

fn check_len(ty: GgmlType, n_bytes: usize, n: usize) -> Result<()> {
    let bs = ty.block_size();
    if !n.is_multiple_of(bs) {
        return Err(ConvertError::Gguf(format!(
            "{n} elements of {} is not a multiple of the block size {bs}",
            ty.name()
        )));
    }
    let want = (n / bs).checked_mul(ty.block_bytes());
    if want != Some(n_bytes) {
        return Err(ConvertError::Gguf(format!(
            "{n} elements of {} need {} bytes, got {n_bytes}",
            ty.name(),
            want.map_or_else(|| "an overflowing number of".to_string(), |w| w.to_string())
        )));
    }
    Ok(())
}

/// Decodes `out.len()` elements of type `ty` from `bytes` into `out`; same contract
/// as [`dequantize`].
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    check_len(ty, bytes.len(), out.len())?;
    match ty {
        GgmlType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16_le([b[0], b[1]]);
            }
        }
        GgmlType::BF16 => {
            // bf16 is the upper half of an f32: widening is exact (NaNs keep their payload).
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
            }
        }
        GgmlType::Q4_0 => blocks(bytes, out, q4_0),
        GgmlType::Q4_1 => blocks(bytes, out, q4_1),
        GgmlType::Q5_0 => blocks(bytes, out, q5_0),
        GgmlType::Q5_1 => blocks(bytes, out, q5_1),
        GgmlType::Q8_0 => blocks(bytes, out, q8_0),
        GgmlType::Iq4Nl => blocks(bytes, out, iq4_nl),
        GgmlType::Q2K => blocks(bytes, out, q2_k),
        GgmlType::Q3K => blocks(bytes, out, q3_k),
        GgmlType::Q4K => blocks(bytes, out, q4_k),
        GgmlType::Q5K => blocks(bytes, out, q5_k),
        GgmlType::Q6K => blocks(bytes, out, q6_k),
        GgmlType::Q8K => blocks(bytes, out, q8_k),
        other => {
            return Err(ConvertError::Unsupported(format!(
                "dequantizing ggml type {} is not implemented",
                other.name()
            )))
        }
    }
    Ok(())
}

/// Views `bytes` as blocks of `B` and decodes each into its slice of `out`.
/// Caller checked that the lengths agree (`check_len`).
fn blocks<B: Pod, const N: usize>(bytes: &[u8], out: &mut [f32], f: fn(&B, &mut [f32; N])) {
    let bl: &[B] = bytemuck::cast_slice(bytes);
    for (b, o) in bl.iter().zip(out.chunks_exact_mut(N)) {
        // chunks_exact_mut yields exactly N elements.
        if let Ok(o) = <&mut [f32; N]>::try_from(o) {
            f(b, o);
        }
    }
}

fn q4_0(b: &BlockQ4_0, y: &mut [f32; QK32]) {
    let d = f16_le(b.d);
    for (j, &q) in b.qs.iter().enumerate() {
        y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
        y[j + QK32 / 2] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// IQ4_NL: `w = d * codebook[q]` (the block struct and codebook are Ember's
/// own `iq4_nl` dtype's, which is ggml's layout).
fn iq4_nl(b: &ember_kernels::blocks::BlockIq4Nl, y: &mut [f32; QK32]) {
    ember_kernels::scalar::dequantize_row_iq4_nl(core::slice::from_ref(b), y);
}

fn q4_1(b: &BlockQ4_1, y: &mut [f32; QK32]) {
    let d = f16_le(b.d);
    let m = f16_le(b.m);
    for (j, &q) in b.qs.iter().enumerate() {
        y[j] = (q & 0x0F) as f32 * d + m;
        y[j + QK32 / 2] = (q >> 4) as f32 * d + m;
    }
}

fn q5_0(b: &BlockQ5_0, y: &mut [f32; QK32]) {
    let d = f16_le(b.d);
    let qh = u32::from_le_bytes(b.qh);
    for (j, &q) in b.qs.iter().enumerate() {
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        y[j] = (((q & 0x0F) as u32 | h0) as i32 - 16) as f32 * d;
        y[j + QK32 / 2] = (((q >> 4) as u32 | h1) as i32 - 16) as f32 * d;
    }
}

fn q5_1(b: &BlockQ5_1, y: &mut [f32; QK32]) {
    let d = f16_le(b.d);
    let m = f16_le(b.m);
    let qh = u32::from_le_bytes(b.qh);
    for (j, &q) in b.qs.iter().enumerate() {
        let h0 = ((qh >> j) & 1) << 4;
        let h1 = ((qh >> (j + 16)) & 1) << 4;
        y[j] = ((q & 0x0F) as u32 | h0) as f32 * d + m;
        y[j + QK32 / 2] = ((q >> 4) as u32 | h1) as f32 * d + m;
    }
}

fn q8_0(b: &BlockQ8_0, y: &mut [f32; QK32]) {
    let d = f16_le(b.d);
    for (o, &q) in y.iter_mut().zip(b.qs.iter()) {
        *o = (q as i8) as f32 * d;
    }
}

fn q2_k(b: &BlockQ2K, y: &mut [f32; QK_K]) {
    let d = f16_le(b.d);
    let dmin = f16_le(b.dmin);
    for (e, o) in y.iter_mut().enumerate() {
        let (half, within) = (e / 128, e % 128);
        let shift = 2 * (within / 32);
        let q = (b.qs[half * 32 + within % 32] >> shift) & 3;
        let sc = b.scales[e / 16];
        let dl = d * (sc & 0x0F) as f32;
        let ml = dmin * (sc >> 4) as f32;
        *o = dl * q as f32 - ml;
    }
}

/// The `k`-th 6-bit scale of a Q3_K block, minus its +32 bias.
fn q3_k_scale(s: &[u8; 12], k: usize) -> i32 {
    let low = if k < 8 { s[k] & 0x0F } else { s[k - 8] >> 4 };
    let high = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
    (low | (high << 4)) as i32 - 32
}

fn q3_k(b: &BlockQ3K, y: &mut [f32; QK_K]) {
    let d = f16_le(b.d);
    for (e, o) in y.iter_mut().enumerate() {
        let (half, within) = (e / 128, e % 128);
        let low = ((b.qs[half * 32 + within % 32] >> (2 * (within / 32))) & 3) as i32;
        let hbit = (b.hmask[e % 32] >> (e / 32)) & 1;
        let q = low - if hbit == 1 { 0 } else { 4 };
        let dl = d * q3_k_scale(&b.scales, e / 16) as f32;
        *o = dl * q as f32;
    }
}

/// Scale and min of group `j` (0..8) of a Q4_K / Q5_K block. Bytes 0..4 hold the
/// low six bits of scales 0..4, bytes 4..8 those of mins 0..4; for groups 4..8 the
/// low nibbles of bytes 8..12 are the scales' low bits, their high nibbles the mins'
/// low bits, and the top two bits of bytes 0..4 / 4..8 give the scales' / mins' high
/// bits.
fn k_scale_min(s: &[u8; 12], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

fn q4_k(b: &BlockQ4K, y: &mut [f32; QK_K]) {
    let d = f16_le(b.d);
    let dmin = f16_le(b.dmin);
    for (g, yg) in y.chunks_exact_mut(32).enumerate() {
        let (sc, m) = k_scale_min(&b.scales, g);
        let d1 = d * sc as f32;
        let m1 = dmin * m as f32;
        let bytes = &b.qs[32 * (g / 2)..32 * (g / 2) + 32];
        let shift = 4 * (g % 2);
        for (o, &q) in yg.iter_mut().zip(bytes) {
            *o = d1 * ((q >> shift) & 0x0F) as f32 - m1;
        }
    }
}

fn q5_k(b: &BlockQ5K, y: &mut [f32; QK_K]) {
    let d = f16_le(b.d);
    let dmin = f16_le(b.dmin);
    for (g, yg) in y.chunks_exact_mut(32).enumerate() {
        let (sc, m) = k_scale_min(&b.scales, g);
        let d1 = d * sc as f32;
        let m1 = dmin * m as f32;
        let bytes = &b.qs[32 * (g / 2)..32 * (g / 2) + 32];
        let shift = 4 * (g % 2);
        for (l, o) in yg.iter_mut().enumerate() {
            let q = ((bytes[l] >> shift) & 0x0F) | (((b.qh[l] >> g) & 1) << 4);
            *o = d1 * q as f32 - m1;
        }
    }
}

fn q6_k(b: &BlockQ6K, y: &mut [f32; QK_K]) {
    let d = f16_le(b.d);
    for (e, o) in y.iter_mut().enumerate() {
        let (half, within) = (e / 128, e % 128);
        let low = (b.ql[half * 64 + within % 64] >> (4 * (within / 64))) & 0x0F;
        let high = (b.qh[half * 32 + within % 32] >> (2 * (within / 32))) & 3;
        let q = (low | (high << 4)) as i32 - 32;
        let sc = b.scales[e / 16] as i8;
        *o = d * sc as f32 * q as f32;
    }
}

fn q8_k(b: &BlockQ8K, y: &mut [f32; QK_K]) {
    let d = f32::from_le_bytes(b.d);
    for (o, &q) in y.iter_mut().zip(b.qs.iter()) {
        *o = d * (q as i8) as f32;
    }
}
