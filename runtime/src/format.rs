//! The `.ember` file format, version 1: the single definition of the on-disk
//! structures. FORMAT.md is the normative prose; this module is its code.
//! The converter writes files from these structs, the loader reads them.
//!
//! Layout (all integers and floats little-endian, always):
//! ```text
//! [0, 512)               Header (fixed size, see `Header`)
//! directory              tensor_count x DirEntry (128 bytes each)
//! tokenizer              postcard(TokenizerSpec)
//! chat_template          UTF-8 text (may be empty)
//! metadata               postcard(Vec<(String, String)>)
//! zero padding           up to data.offset (a multiple of DATA_ALIGNMENT)
//! data                   tensor bytes, each tensor at a multiple of tensor_alignment
//! ```
//! `header_checksum` is the CRC-32 (IEEE) of every byte in `[0, data.offset)` with
//! the checksum field itself taken as zero. Each directory entry carries the CRC-32
//! of its tensor's bytes, checked by `ember verify`.

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::tokenizer::TokenizerSpec;

/// Magic bytes at offset 0. Like PNG's: a non-ASCII first byte, then the name,
/// then CR LF, ^Z, LF so that text-mode transfers are detected.
pub const MAGIC: [u8; 8] = [0x89, b'E', b'M', b'B', b'\r', b'\n', 0x1A, b'\n'];
/// Structural version. Readers refuse any other major version.
pub const VERSION_MAJOR: u16 = 1;
/// Additive version: new dtype ids, new metadata keys, new optional fields that old
/// readers may ignore. Readers accept any minor of their major.
pub const VERSION_MINOR: u16 = 5;
/// Size in bytes of `Header`.
pub const HEADER_SIZE: usize = 512;
/// Size in bytes of one `DirEntry`.
pub const DIR_ENTRY_SIZE: usize = 128;
/// Smallest permitted tensor alignment (a cache line, and enough for any SIMD load).
pub const MIN_TENSOR_ALIGNMENT: u64 = 64;
/// The data section starts at a multiple of this (a page), so the mapped tensors
/// sit on page boundaries and can be advised / locked per region.
pub const DATA_ALIGNMENT: u64 = 4096;
/// Maximum tensor rank.
pub const MAX_DIMS: usize = 4;
/// Length of the NUL-padded tensor name field.
pub const NAME_LEN: usize = 64;
/// Upper bound on the number of tensors, so a corrupt count cannot make a reader
/// allocate unboundedly.
pub const MAX_TENSORS: u64 = 1 << 20;

/// Byte offset of `Header::header_checksum`, zeroed while checksumming.
pub const CHECKSUM_FIELD_OFFSET: usize = 24;

/// A byte range of the file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Section {
    /// Absolute byte offset from the start of the file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Section {
    /// One past the last byte; `None` on overflow.
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.len)
    }
}

/// Model architecture ids (`HyperParams::architecture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Architecture {
    /// Decoder-only Llama family (Llama, Mistral, Qwen2, SmolLM, llama2.c): RMSNorm,
    /// RoPE, grouped-query attention, gated FFN.
    Llama = 1,
}

impl Architecture {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Llama),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
        }
    }
}

/// FFN activation ids (`HyperParams::activation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Activation {
    /// SiLU-gated (SwiGLU): `down(silu(gate(x)) * up(x))`.
    Silu = 1,
    /// GELU, tanh approximation (`gelu_pytorch_tanh`: Gemma).
    GeluTanh = 2,
    /// GELU with the exact error function (transformers' `gelu`; format 1.5).
    GeluErf = 3,
}

impl Activation {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Silu),
            2 => Some(Self::GeluTanh),
            3 => Some(Self::GeluErf),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Silu => "silu",
            Self::GeluTanh => "gelu_tanh",
            Self::GeluErf => "gelu_erf",
        }
    }
}

/// How RoPE pairs the elements of a head vector (`HyperParams::rope_pairing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum RopePairing {
    /// Rotate adjacent pairs `(2i, 2i+1)`: llama2.c, Meta's original code, and GGUF
    /// (whose converter permutes Q/K rows into this order).
    Interleaved = 1,
    /// Rotate `(i, i + rot_dim/2)` ("rotate_half"): Hugging Face transformers layout.
    Half = 2,
}

impl RopePairing {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Interleaved),
            2 => Some(Self::Half),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Interleaved => "interleaved",
            Self::Half => "half",
        }
    }
}

/// RoPE frequency scaling (`HyperParams::rope_scaling`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum RopeScaling {
    None = 0,
    /// Positions divided by `rope_scaling_factor` (linear interpolation).
    Linear = 1,
    /// Llama 3.1 frequency-dependent scaling (factor, low/high frequency factors,
    /// original context).
    Llama3 = 2,
    /// YaRN (format 1.5): frequencies blended between interpolated (divided by
    /// the factor) and original along a linear ramp over the rotary pairs from
    /// `rope_low_freq_factor` to `rope_high_freq_factor` (the correction range,
    /// in pair indices), and cos/sin multiplied by `rope_attn_factor`.
    Yarn = 3,
}

impl RopeScaling {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::None),
            1 => Some(Self::Linear),
            2 => Some(Self::Llama3),
            3 => Some(Self::Yarn),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Linear => "linear",
            Self::Llama3 => "llama3",
            Self::Yarn => "yarn",
        }
    }
}

/// Normalization ids (`HyperParams::norm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum NormKind {
    /// `x / sqrt(mean(x^2) + eps) * weight`.
    RmsNorm = 1,
    /// `(x - mean(x)) / sqrt(var(x) + eps) * weight + bias` (format 1.5): every
    /// norm has a `<name>_b` bias vector beside its weight.
    LayerNorm = 2,
}

impl NormKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::RmsNorm),
            2 => Some(Self::LayerNorm),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::RmsNorm => "rmsnorm",
            Self::LayerNorm => "layernorm",
        }
    }
}

/// `HyperParams::flags` bits.
pub mod flags {
    /// The output projection reuses `tok_embeddings` (no `output` tensor).
    pub const TIED_OUTPUT: u32 = 1 << 0;
    /// `layers.N.bq/bk/bv` exist (Qwen2).
    pub const QKV_BIAS: u32 = 1 << 1;
    /// `layers.N.bo` exists.
    pub const ATTN_OUT_BIAS: u32 = 1 << 2;
    /// `layers.N.b_gate/b_up/b_down` exist (`b_up/b_down` with `PLAIN_MLP`).
    pub const MLP_BIAS: u32 = 1 << 3;
    /// `layers.N.post_attn_norm` normalises the attention block's output before
    /// the residual add (Gemma 2/3). Format 1.5.
    pub const POST_ATTN_NORM: u32 = 1 << 4;
    /// `layers.N.post_ffn_norm` normalises the feed-forward block's output before
    /// the residual add (Gemma 2/3). Format 1.5.
    pub const POST_FFN_NORM: u32 = 1 << 5;
    /// `layers.N.q_norm/k_norm [head_dim]` normalise every query and key head
    /// before RoPE (Qwen3, Gemma 3). Format 1.5.
    pub const QK_NORM: u32 = 1 << 6;
    /// The feed-forward block is `down(act(up(x)))` without a gate (no
    /// `w_gate` / `b_gate`). Format 1.5.
    pub const PLAIN_MLP: u32 = 1 << 7;
    /// `rope_freqs [rope_dim / 2]` divides each RoPE inverse frequency
    /// (llama.cpp's per-pair frequency factors, e.g. Llama 3.1 GGUF files).
    /// Format 1.5.
    pub const ROPE_FREQ_FACTORS: u32 = 1 << 8;
    /// Set exactly when one of the format-1.5 fields (`attn_scale`,
    /// `embed_scale`, `logit_softcap`, `swa_period`, `rope_theta_local`,
    /// `rope_attn_factor`) is non-zero, so that a reader that predates them
    /// refuses the file instead of ignoring them.
    pub const EXTENDED: u32 = 1 << 9;
    /// All bits this reader understands; others must be zero.
    pub const KNOWN: u32 = TIED_OUTPUT
        | QKV_BIAS
        | ATTN_OUT_BIAS
        | MLP_BIAS
        | POST_ATTN_NORM
        | POST_FFN_NORM
        | QK_NORM
        | PLAIN_MLP
        | ROPE_FREQ_FACTORS
        | EXTENDED;
}

/// Model hyperparameters, stored inside the header. 128 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct HyperParams {
    /// `Architecture` id.
    pub architecture: u32,
    /// `Activation` id.
    pub activation: u32,
    /// Model width (residual stream size).
    pub dim: u32,
    pub n_layers: u32,
    /// Query heads.
    pub n_heads: u32,
    /// Key/value heads; divides `n_heads` (grouped-query attention).
    pub n_kv_heads: u32,
    /// Per-head size; `n_heads * head_dim` need not equal `dim`.
    pub head_dim: u32,
    /// Hidden size of the feed-forward block.
    pub ffn_dim: u32,
    pub vocab_size: u32,
    /// Longest context the model was trained for.
    pub max_context: u32,
    /// Attention window in tokens (Mistral, Gemma); 0 = full causal attention.
    /// Which layers use it: `swa_period`.
    pub sliding_window: u32,
    /// `RopePairing` id.
    pub rope_pairing: u32,
    /// Number of leading head dimensions that RoPE rotates (= head_dim for full rotary).
    pub rope_dim: u32,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// `RopeScaling` id.
    pub rope_scaling: u32,
    pub rope_scaling_factor: f32,
    pub rope_low_freq_factor: f32,
    pub rope_high_freq_factor: f32,
    /// Context length before scaling (Llama 3 scaling).
    pub rope_original_context: u32,
    /// `NormKind` id.
    pub norm: u32,
    pub norm_eps: f32,
    /// `flags::*` bits.
    pub flags: u32,
    /// Attention score scale; 0 = `1 / sqrt(head_dim)` (Gemma:
    /// `query_pre_attn_scalar^-0.5`). Format 1.5, as are the five below.
    pub attn_scale: f32,
    /// Factor applied to the embedding row; 0 = none (Gemma: `sqrt(dim)`).
    pub embed_scale: f32,
    /// Final-logit soft-capping `c * tanh(logits / c)`; 0 = none.
    pub logit_softcap: f32,
    /// Which layers use `sliding_window`: 0 = every layer; `P` > 0 = every
    /// layer except those with `(layer + 1) % P == 0`, which attend globally
    /// (Gemma 3: 6, Gemma 2: 2).
    pub swa_period: u32,
    /// RoPE base of the sliding-window layers, unscaled (Gemma 3: 10000); 0 =
    /// they use the global RoPE (`rope_theta` and its scaling).
    pub rope_theta_local: f32,
    /// YaRN: factor on cos and sin (the attention temperature); 0 = 1.
    pub rope_attn_factor: f32,
    /// Zero.
    pub reserved: [u32; 4],
}

const _: () = assert!(core::mem::size_of::<HyperParams>() == 128);

impl HyperParams {
    pub fn tied_output(&self) -> bool {
        self.flags & flags::TIED_OUTPUT != 0
    }
    pub fn qkv_bias(&self) -> bool {
        self.flags & flags::QKV_BIAS != 0
    }
    pub fn attn_out_bias(&self) -> bool {
        self.flags & flags::ATTN_OUT_BIAS != 0
    }
    pub fn mlp_bias(&self) -> bool {
        self.flags & flags::MLP_BIAS != 0
    }
    /// Width of the concatenated query heads.
    pub fn q_dim(&self) -> usize {
        self.n_heads as usize * self.head_dim as usize
    }
    /// Width of the concatenated key (or value) heads.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads as usize * self.head_dim as usize
    }

    /// Whether any format-1.5 field is non-zero (then `flags::EXTENDED` must
    /// be set, and without it they must all be zero).
    pub fn uses_extended_fields(&self) -> bool {
        self.attn_scale != 0.0
            || self.embed_scale != 0.0
            || self.logit_softcap != 0.0
            || self.swa_period != 0
            || self.rope_theta_local != 0.0
            || self.rope_attn_factor != 0.0
    }

    /// Sets `flags::EXTENDED` exactly when a format-1.5 field is in use (the
    /// writer calls this before validating).
    pub fn with_extended_flag(mut self) -> Self {
        if self.uses_extended_fields() {
            self.flags |= flags::EXTENDED;
        } else {
            self.flags &= !flags::EXTENDED;
        }
        self
    }

    /// Checks internal consistency: every id known, sizes positive and
    /// compatible, reserved words zero. This is [`ModelConfig::decode`]
    /// without keeping the result.
    ///
    /// [`ModelConfig::decode`]: crate::config::ModelConfig::decode
    pub fn validate(&self) -> Result<()> {
        crate::config::ModelConfig::decode(self).map(|_| ())
    }
}

/// The fixed-size file header at offset 0. 512 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct Header {
    /// `MAGIC`.
    pub magic: [u8; 8],
    pub version_major: u16,
    pub version_minor: u16,
    /// `HEADER_SIZE`.
    pub header_size: u32,
    /// Total file length in bytes: a shorter file is truncated.
    pub file_size: u64,
    /// CRC-32 of `[0, data.offset)` with this field read as zero.
    pub header_checksum: u32,
    /// Reserved, zero.
    pub flags: u32,
    /// Every tensor offset is a multiple of this; power of two >= 64.
    pub tensor_alignment: u64,
    pub tensor_count: u64,
    /// `tensor_count * DIR_ENTRY_SIZE` bytes of `DirEntry`.
    pub directory: Section,
    /// postcard-encoded `TokenizerSpec`.
    pub tokenizer: Section,
    /// UTF-8 Jinja chat template; empty if the model has none.
    pub chat_template: Section,
    /// postcard-encoded `Vec<(String, String)>`.
    pub metadata: Section,
    /// Tensor data; offset is a multiple of `DATA_ALIGNMENT`.
    pub data: Section,
    pub hparams: HyperParams,
    pub reserved: [u8; 256],
}

const _: () = assert!(core::mem::size_of::<Header>() == HEADER_SIZE);
const _: () = assert!(core::mem::offset_of!(Header, header_checksum) == CHECKSUM_FIELD_OFFSET);

/// Tensor element types (`DirEntry::dtype`). Ids are never reused.
///
/// Block types (`Q8_0`, `Q4_0`) store a matrix row by row, each row as
/// `cols / 32` blocks (`ember_kernels::blocks`); the innermost dimension MUST be a
/// multiple of `block_elems()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DType {
    F32 = 0,
    F16 = 1,
    BF16 = 2,
    /// Blocks of 32: f16 scale + 32 i8 quants (34 bytes), `v = d * q`.
    Q8_0 = 16,
    /// Blocks of 32: f16 scale + 16 bytes of nibbles (18 bytes), `v = d * (q - 8)`.
    Q4_0 = 17,
    /// Q8_0 blocks of a matrix in the row-interleaved layout
    /// (`ember_kernels::blocks::TILE_ROWS`): 2-D, rows a multiple of 4 (format 1.2).
    Q8_0X4 = 18,
    /// Q4_0 blocks in the row-interleaved layout (format 1.2).
    Q4_0X4 = 19,
    /// Blocks of 32: f16 scale + 16 bytes of 4-bit indices into the fixed
    /// codebook `ember_kernels::blocks::IQ4_NL_VALUES` (18 bytes),
    /// `v = d * c[q]` (format 1.3).
    Iq4Nl = 20,
    /// IQ4_NL blocks in the row-interleaved layout (format 1.3).
    Iq4NlX4 = 21,
}

/// Dtype ids reserved for quantized block types. 16 (q8_0) and 17 (q4_0) are
/// assigned in format 1.1, 18 (q8_0x4) and 19 (q4_0x4) in 1.2, 20 (iq4_nl) and
/// 21 (iq4_nlx4) in 1.3; the rest are
/// reserved for later minor versions.
pub const RESERVED_QUANT_DTYPE_IDS: core::ops::RangeInclusive<u32> = 16..=31;

impl DType {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::F32),
            1 => Some(Self::F16),
            2 => Some(Self::BF16),
            16 => Some(Self::Q8_0),
            17 => Some(Self::Q4_0),
            18 => Some(Self::Q8_0X4),
            19 => Some(Self::Q4_0X4),
            20 => Some(Self::Iq4Nl),
            21 => Some(Self::Iq4NlX4),
            _ => None,
        }
    }
    /// Elements per storage unit: 1 for float types, 32 for block types.
    pub fn block_elems(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q8_0 | Self::Q4_0 | Self::Q8_0X4 | Self::Q4_0X4 | Self::Iq4Nl | Self::Iq4NlX4 => {
                ember_kernels::blocks::QK
            }
        }
    }
    /// Bytes per storage unit (element or block).
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q8_0 | Self::Q8_0X4 => core::mem::size_of::<ember_kernels::blocks::BlockQ8_0>(),
            Self::Q4_0 | Self::Q4_0X4 => core::mem::size_of::<ember_kernels::blocks::BlockQ4_0>(),
            Self::Iq4Nl | Self::Iq4NlX4 => {
                core::mem::size_of::<ember_kernels::blocks::BlockIq4Nl>()
            }
        }
    }
    /// Whether this is a row-interleaved block type (2-D, rows a multiple of
    /// `ember_kernels::blocks::TILE_ROWS`).
    pub fn is_tiled(self) -> bool {
        matches!(self, Self::Q8_0X4 | Self::Q4_0X4 | Self::Iq4NlX4)
    }
    /// The block type with the plain row-major layout (itself for the others).
    pub fn untiled(self) -> Self {
        match self {
            Self::Q8_0X4 => Self::Q8_0,
            Self::Q4_0X4 => Self::Q4_0,
            Self::Iq4NlX4 => Self::Iq4Nl,
            d => d,
        }
    }
    /// The row-interleaved variant of a block type (itself for the others).
    pub fn tiled(self) -> Self {
        match self {
            Self::Q8_0 => Self::Q8_0X4,
            Self::Q4_0 => Self::Q4_0X4,
            Self::Iq4Nl => Self::Iq4NlX4,
            d => d,
        }
    }
    /// Whether this is a quantized block type.
    pub fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
            Self::Q8_0 => "q8_0",
            Self::Q4_0 => "q4_0",
            Self::Q8_0X4 => "q8_0x4",
            Self::Q4_0X4 => "q4_0x4",
            Self::Iq4Nl => "iq4_nl",
            Self::Iq4NlX4 => "iq4_nlx4",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(Self::F32),
            "f16" => Some(Self::F16),
            "bf16" => Some(Self::BF16),
            "q8_0" => Some(Self::Q8_0),
            "q4_0" => Some(Self::Q4_0),
            "q8_0x4" => Some(Self::Q8_0X4),
            "q4_0x4" => Some(Self::Q4_0X4),
            "iq4_nl" => Some(Self::Iq4Nl),
            "iq4_nlx4" => Some(Self::Iq4NlX4),
            _ => None,
        }
    }
    /// Bytes needed for `n` elements; `None` on overflow or if `n` is not a
    /// multiple of `block_elems()`.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let be = self.block_elems() as u64;
        if !n.is_multiple_of(be) {
            return None;
        }
        (n / be).checked_mul(self.block_bytes() as u64)
    }
}

/// One tensor directory entry. 128 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct DirEntry {
    /// UTF-8 name, NUL-padded; see `names` for the canonical names.
    pub name: [u8; NAME_LEN],
    /// `DType` id.
    pub dtype: u32,
    /// Rank, 1..=MAX_DIMS.
    pub n_dims: u32,
    /// Shape, outermost first (row-major; a matrix is `[rows = out, cols = in]`).
    /// Entries past `n_dims` are zero.
    pub shape: [u64; MAX_DIMS],
    /// Absolute file offset of the first byte.
    pub offset: u64,
    /// Byte length, = `DType::bytes_for(element count)`.
    pub nbytes: u64,
    /// CRC-32 (IEEE) of the tensor's bytes.
    pub checksum: u32,
    /// `tensor_flags` bits; unknown bits are refused.
    pub flags: u32,
}

/// Bits of `DirEntry::flags` (minor version 4; zero in earlier files).
pub mod tensor_flags {
    /// The matrix is stored with every run of 32 values of each row rotated by
    /// the orthonormal 32-point Walsh-Hadamard transform
    /// (`ember_kernels::scalar::hadamard32`); its input must be rotated the
    /// same way before the product, and a dequantized row must be rotated back.
    /// Only on 2-D tensors of a quantized block type.
    pub const ROTATED: u32 = 1;
    /// Every bit this version defines.
    pub const KNOWN: u32 = ROTATED;
}

const _: () = assert!(core::mem::size_of::<DirEntry>() == DIR_ENTRY_SIZE);

impl DirEntry {
    /// The name as text (without padding), or an error if it is not valid UTF-8.
    /// The padding after the first NUL must be NUL too (FORMAT.md).
    pub fn name_str(&self) -> Result<&str> {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        if self.name[end..].iter().any(|&b| b != 0) {
            return Err(Error::BadTensorName);
        }
        core::str::from_utf8(&self.name[..end]).map_err(|_| Error::BadTensorName)
    }
    /// Shape as a slice of its `n_dims` leading entries (caller checked n_dims).
    pub fn dims(&self) -> &[u64] {
        &self.shape[..(self.n_dims as usize).min(MAX_DIMS)]
    }
    /// Encodes `name` into the fixed field; errors if too long or containing NUL.
    pub fn encode_name(name: &str) -> Result<[u8; NAME_LEN]> {
        let b = name.as_bytes();
        if b.is_empty() || b.len() > NAME_LEN || b.contains(&0) {
            return Err(Error::BadTensorName);
        }
        let mut out = [0u8; NAME_LEN];
        out[..b.len()].copy_from_slice(b);
        Ok(out)
    }
}

/// Canonical tensor names. Matrices are `[out, in]`; vectors `[n]`.
pub mod names {
    /// `[vocab, dim]` token embeddings.
    pub const TOK_EMBEDDINGS: &str = "tok_embeddings";
    /// `[dim]` final norm weight.
    pub const NORM: &str = "norm";
    /// `[vocab, dim]` output projection (absent when tied).
    pub const OUTPUT: &str = "output";
    /// Per-layer tensor name: `layers.{layer}.{suffix}`.
    pub fn layer(layer: usize, suffix: &str) -> String {
        format!("layers.{layer}.{suffix}")
    }
    /// `[rope_dim / 2]` RoPE frequency factors (`flags::ROPE_FREQ_FACTORS`).
    pub const ROPE_FREQS: &str = "rope_freqs";
    /// Per-layer suffixes and their shapes:
    /// `attn_norm [dim]`, `wq [q_dim, dim]`, `wk [kv_dim, dim]`, `wv [kv_dim, dim]`,
    /// `wo [dim, q_dim]`, `bq [q_dim]`, `bk [kv_dim]`, `bv [kv_dim]`, `bo [dim]`,
    /// `q_norm [head_dim]`, `k_norm [head_dim]`, `post_attn_norm [dim]`,
    /// `ffn_norm [dim]`, `w_gate [ffn, dim]`, `w_up [ffn, dim]`, `w_down [dim, ffn]`,
    /// `b_gate [ffn]`, `b_up [ffn]`, `b_down [dim]`, `post_ffn_norm [dim]`.
    /// With LayerNorm every norm `N` also has a bias `N_b` of its shape.
    pub const ATTN_NORM: &str = "attn_norm";
    pub const WQ: &str = "wq";
    pub const WK: &str = "wk";
    pub const WV: &str = "wv";
    pub const WO: &str = "wo";
    pub const BQ: &str = "bq";
    pub const BK: &str = "bk";
    pub const BV: &str = "bv";
    pub const BO: &str = "bo";
    pub const Q_NORM: &str = "q_norm";
    pub const K_NORM: &str = "k_norm";
    pub const POST_ATTN_NORM: &str = "post_attn_norm";
    pub const FFN_NORM: &str = "ffn_norm";
    pub const W_GATE: &str = "w_gate";
    pub const W_UP: &str = "w_up";
    pub const W_DOWN: &str = "w_down";
    pub const B_GATE: &str = "b_gate";
    pub const B_UP: &str = "b_up";
    pub const B_DOWN: &str = "b_down";
    pub const POST_FFN_NORM: &str = "post_ffn_norm";
    /// The bias of a LayerNorm weight `norm` (`attn_norm` -> `attn_norm_b`).
    pub fn norm_bias(norm: &str) -> String {
        format!("{norm}_b")
    }
}

/// The tensors a model with these hyperparameters must contain, with their shapes,
/// in canonical file order. The loader requires exactly this set; the converter
/// writes exactly this set.
pub fn expected_tensors(hp: &HyperParams) -> Vec<(String, Vec<u64>)> {
    let dim = hp.dim as u64;
    let q = hp.q_dim() as u64;
    let kv = hp.kv_dim() as u64;
    let ffn = hp.ffn_dim as u64;
    let head = hp.head_dim as u64;
    let vocab = hp.vocab_size as u64;
    let has = |f: u32| hp.flags & f != 0;
    let layer_norm = hp.norm == NormKind::LayerNorm as u32;
    let mut out = vec![(names::TOK_EMBEDDINGS.to_string(), vec![vocab, dim])];
    if has(flags::ROPE_FREQ_FACTORS) {
        out.push((names::ROPE_FREQS.to_string(), vec![hp.rope_dim as u64 / 2]));
    }
    let norm = |out: &mut Vec<(String, Vec<u64>)>, name: String, n: u64| {
        let bias = names::norm_bias(&name);
        out.push((name, vec![n]));
        if layer_norm {
            out.push((bias, vec![n]));
        }
    };
    for l in 0..hp.n_layers as usize {
        let n = |s: &str| names::layer(l, s);
        norm(&mut out, n(names::ATTN_NORM), dim);
        out.push((n(names::WQ), vec![q, dim]));
        out.push((n(names::WK), vec![kv, dim]));
        out.push((n(names::WV), vec![kv, dim]));
        out.push((n(names::WO), vec![dim, q]));
        if hp.qkv_bias() {
            out.push((n(names::BQ), vec![q]));
            out.push((n(names::BK), vec![kv]));
            out.push((n(names::BV), vec![kv]));
        }
        if hp.attn_out_bias() {
            out.push((n(names::BO), vec![dim]));
        }
        if has(flags::QK_NORM) {
            norm(&mut out, n(names::Q_NORM), head);
            norm(&mut out, n(names::K_NORM), head);
        }
        if has(flags::POST_ATTN_NORM) {
            norm(&mut out, n(names::POST_ATTN_NORM), dim);
        }
        norm(&mut out, n(names::FFN_NORM), dim);
        let gated = !has(flags::PLAIN_MLP);
        if gated {
            out.push((n(names::W_GATE), vec![ffn, dim]));
        }
        out.push((n(names::W_UP), vec![ffn, dim]));
        out.push((n(names::W_DOWN), vec![dim, ffn]));
        if hp.mlp_bias() {
            if gated {
                out.push((n(names::B_GATE), vec![ffn]));
            }
            out.push((n(names::B_UP), vec![ffn]));
            out.push((n(names::B_DOWN), vec![dim]));
        }
        if has(flags::POST_FFN_NORM) {
            norm(&mut out, n(names::POST_FFN_NORM), dim);
        }
    }
    norm(&mut out, names::NORM.to_string(), dim);
    if !hp.tied_output() {
        out.push((names::OUTPUT.to_string(), vec![vocab, dim]));
    }
    out
}

/// Free-form metadata: ordered string key/value pairs (postcard-encoded).
/// Well-known keys: `source.kind`, `source.file`, `converter.version`, `model.name`,
/// `license`.
pub type Metadata = Vec<(String, String)>;

/// CRC-32 of the header and every section before the data, with the checksum
/// field taken as zero. `prefix` is the file's `[0, data.offset)`.
pub fn header_checksum(prefix: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let split = CHECKSUM_FIELD_OFFSET.min(prefix.len());
    h.update(&prefix[..split]);
    let after = (CHECKSUM_FIELD_OFFSET + 4).min(prefix.len());
    if prefix.len() > CHECKSUM_FIELD_OFFSET {
        h.update(&[0u8; 4][..after - split]);
    }
    h.update(&prefix[after..]);
    h.finalize()
}

/// CRC-32 of a tensor's bytes.
pub fn tensor_checksum(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Rounds `v` up to a multiple of `align` (a power of two); `None` on overflow.
pub fn align_up(v: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    v.checked_add(align - 1).map(|x| x & !(align - 1))
}

/// Encodes the tokenizer section.
pub fn encode_tokenizer(spec: &TokenizerSpec) -> Vec<u8> {
    postcard::to_stdvec(spec).expect("serializing to a Vec cannot fail")
}

/// Decodes the tokenizer section.
pub fn decode_tokenizer(bytes: &[u8]) -> Result<TokenizerSpec> {
    postcard::from_bytes(bytes).map_err(|e| Error::BadSection {
        section: "tokenizer",
        reason: e.to_string(),
    })
}

/// Encodes the metadata section.
pub fn encode_metadata(meta: &Metadata) -> Vec<u8> {
    postcard::to_stdvec(meta).expect("serializing to a Vec cannot fail")
}

/// Decodes the metadata section.
pub fn decode_metadata(bytes: &[u8]) -> Result<Metadata> {
    postcard::from_bytes(bytes).map_err(|e| Error::BadSection {
        section: "metadata",
        reason: e.to_string(),
    })
}
