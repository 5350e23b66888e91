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

/// IQ4_NL: 32 values `v[j] = d * IQ4_NL_VALUES[q[j]]` with 4-bit indices `q`
/// into a fixed non-uniform codebook (ggml's `block_iq4_nl`, bit for bit).
///
/// Value domain: the codebook entries are -127..=113, so the int8 dot idioms
/// (sign+maddubs on AVX2, `sdot` / widening multiply on AArch64) are exact
/// against activation quants in -127..=127.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct BlockIq4Nl {
    /// Scale, f16 bits (little-endian); may be negative.
    pub d: [u8; 2],
    /// Byte `j` holds `q[j]` in its low nibble and `q[j + 16]` in its high nibble.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(core::mem::size_of::<BlockIq4Nl>() == 18);
const _: () = assert!(core::mem::align_of::<BlockIq4Nl>() == 1);

/// The IQ4_NL codebook (ggml's `kvalues_iq4nl`): index `q` in 0..=15 stands for
/// `IQ4_NL_VALUES[q]`. Sorted ascending, denser near zero, where trained
/// weights are dense; every entry is in -127..=127.
pub const IQ4_NL_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

impl BlockIq4Nl {
    /// The scale as f32 (exact).
    #[inline]
    pub fn scale(&self) -> f32 {
        f16::from_bits(u16::from_le_bytes(self.d)).to_f32()
    }
    /// Codebook value of element `j`, in -127..=113.
    #[inline]
    pub fn q(&self, j: usize) -> i8 {
        let b = self.qs[j % 16];
        let nib = if j < 16 { b & 0x0F } else { b >> 4 };
        IQ4_NL_VALUES[nib as usize]
    }
}

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

/// Rows per tile of the row-interleaved ("x4") matrix layouts.
///
/// A `[rows, cols]` matrix of 32-element blocks (`nb = cols / QK` blocks per row,
/// `rows` a multiple of `TILE_ROWS`) is stored in tiles: group `g` covers rows
/// `4g..4g + 4`, and tile `(g, k)` holds block `k` of each of those four rows,
/// in row order. So block `k` of row `r` is at index
/// `tiled_index(r, k, nb) = (r / 4) * nb * 4 + k * 4 + r % 4`. The blocks are
/// the plain `BlockQ8_0` / `BlockQ4_0` structs, unchanged: interleaving only
/// permutes them, so GGUF tensors stay bit-exact, and a matrix-vector kernel
/// reads one sequential stream instead of four strided ones while each
/// activation block serves four rows.
pub const TILE_ROWS: usize = 4;

/// Index of block `k` of row `r` in the row-interleaved layout (see `TILE_ROWS`).
#[inline]
pub const fn tiled_index(r: usize, k: usize, nb: usize) -> usize {
    (r / TILE_ROWS) * nb * TILE_ROWS + k * TILE_ROWS + r % TILE_ROWS
}

/// Permutes a row-major matrix of blocks (`nb` blocks per row) into the
/// row-interleaved layout. Contract: `src.len() == dst.len()`, a multiple of
/// `nb * TILE_ROWS` (`nb > 0`).
pub fn interleave_rows<B: Copy>(src: &[B], nb: usize, dst: &mut [B]) {
    assert_eq!(src.len(), dst.len(), "interleave_rows: length mismatch");
    assert!(
        nb > 0 && src.len().is_multiple_of(nb * TILE_ROWS),
        "interleave_rows: rows must be a multiple of {TILE_ROWS}"
    );
    for (i, b) in src.iter().enumerate() {
        dst[tiled_index(i / nb, i % nb, nb)] = *b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiled_index_is_a_permutation() {
        let nb = 3;
        let src: [u32; 24] = core::array::from_fn(|i| i as u32);
        let mut dst = [0u32; 24];
        interleave_rows(&src, nb, &mut dst);
        // Tile (0, 0) = block 0 of rows 0..4 = elements 0, 3, 6, 9.
        assert_eq!(dst[..4], [0, 3, 6, 9]);
        assert_eq!(dst[4..8], [1, 4, 7, 10]);
        assert_eq!(dst[12..16], [12, 15, 18, 21]);
        let mut seen = dst;
        seen.sort_unstable();
        assert_eq!(seen, src);
    }
}
