//! Quantized block types shared by the file format, the quantizers and the
//! kernels. Each is a byte-only `#[repr(C)]` struct (alignment 1, so any byte
//! slice of the right length can be viewed as blocks), with one comment per field
//! and a size assert. Multi-byte fields are little-endian. The layouts are
//! ggml's, so GGUF tensors of the same type are copied bit for bit.

use bytemuck::{Pod, Zeroable};
use half::f16;

/// Elements per block of the 32-element types.
pub const QK: usize = 32;

/// Q8_0: 32 values `v[j] = d * qs[j]`.
///
/// Value domain: Ember's quantizers write quants in -127..=127 (symmetric, so the
/// sign trick of the int8 dot idioms never meets -128 on the activation side).
/// Weight blocks imported from GGUF may contain -128; every matrix kernel is
/// correct for weight quants in the full i8 range as long as the *activation*
/// quants are in -127..=127 (see `scalar::quantize_row_q8_0`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ8_0 {
    /// Scale, f16 bits (little-endian).
    pub d: [u8; 2],
    /// Quants, i8 bit patterns, in element order.
    pub qs: [u8; QK],
}
const _: () = assert!(core::mem::size_of::<BlockQ8_0>() == 34);
const _: () = assert!(core::mem::align_of::<BlockQ8_0>() == 1);

/// Q4_0: 32 values `v[j] = d * (q[j] - 8)` with 4-bit `q` (so -8..=7 times `d`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockQ4_0 {
    /// Scale, f16 bits (little-endian).
    pub d: [u8; 2],
    /// Byte `j` holds `q[j]` in its low nibble and `q[j + 16]` in its high nibble.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ4_0>() == 18);
const _: () = assert!(core::mem::align_of::<BlockQ4_0>() == 1);

impl BlockQ8_0 {
    /// The scale as f32 (exact).
    #[inline]
    pub fn scale(&self) -> f32 {
        f16::from_bits(u16::from_le_bytes(self.d)).to_f32()
    }
    /// Quant `j` as a signed integer.
    #[inline]
    pub fn q(&self, j: usize) -> i8 {
        self.qs[j] as i8
    }
}

impl BlockQ4_0 {
    /// The scale as f32 (exact).
    #[inline]
    pub fn scale(&self) -> f32 {
        f16::from_bits(u16::from_le_bytes(self.d)).to_f32()
    }
    /// Centred quant `j`, `q[j] - 8`, in -8..=7.
    #[inline]
    pub fn q(&self, j: usize) -> i8 {
        let b = self.qs[j % 16];
        let nib = if j < 16 { b & 0x0F } else { b >> 4 };
        nib as i8 - 8
    }
}
