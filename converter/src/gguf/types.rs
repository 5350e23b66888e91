//! ggml tensor element types as stored in GGUF tensor infos: ids, block sizes and
//! block byte sizes (ggml's `ggml_type` enum and type traits).
//!
//! Ids are fixed by ggml and never reused; ids that ggml retired (4, 5: Q4_2/Q4_3;
//! 31..=33 and 36..=38: repacked CPU layouts that never belong in a file) are
//! reported as retired rather than unknown.

use crate::error::{ConvertError, Result};

/// A ggml element type that this reader knows the storage size of.
///
/// Knowing the size is enough to validate a file and to locate tensor data;
/// [`GgmlType::can_dequantize`] says whether `dequant` can decode it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2K = 10,
    Q3K = 11,
    Q4K = 12,
    Q5K = 13,
    Q6K = 14,
    Q8K = 15,
    Iq2Xxs = 16,
    Iq2Xs = 17,
    Iq3Xxs = 18,
    Iq1S = 19,
    Iq4Nl = 20,
    Iq3S = 21,
    Iq2S = 22,
    Iq4Xs = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    Iq1M = 29,
    BF16 = 30,
    Tq1_0 = 34,
    Tq2_0 = 35,
    Mxfp4 = 39,
}

/// Elements per super-block of the K-quant types.
pub const QK_K: usize = 256;

/// Every known type, for iteration in tests and tables.
pub const ALL_TYPES: [GgmlType; 32] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q8K,
    GgmlType::Iq2Xxs,
    GgmlType::Iq2Xs,
    GgmlType::Iq3Xxs,
    GgmlType::Iq1S,
    GgmlType::Iq4Nl,
    GgmlType::Iq3S,
    GgmlType::Iq2S,
    GgmlType::Iq4Xs,
    GgmlType::I8,
    GgmlType::I16,
    GgmlType::I32,
    GgmlType::I64,
    GgmlType::F64,
    GgmlType::Iq1M,
    GgmlType::BF16,
    GgmlType::Tq1_0,
    GgmlType::Tq2_0,
    GgmlType::Mxfp4,
];

impl GgmlType {
    /// The type with ggml id `id`. Unknown ids are `ConvertError::Gguf`; ids ggml
    /// retired, or types newer than this table, are `ConvertError::Unsupported`.
    pub fn from_id(id: u32) -> Result<Self> {
        if let Some(t) = ALL_TYPES.iter().copied().find(|t| *t as u32 == id) {
            return Ok(t);
        }
        match id {
            4 | 5 | 31..=33 | 36..=38 => Err(ConvertError::Unsupported(format!(
                "ggml type id {id} is a retired type that does not appear in valid GGUF files"
            ))),
            _ => Err(ConvertError::Gguf(format!("unknown ggml type id {id}"))),
        }
    }

    /// ggml's id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Lower-case name as ggml prints it (`"q4_1"`, `"q6_k"`, `"bf16"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q4_0 => "q4_0",
            Self::Q4_1 => "q4_1",
            Self::Q5_0 => "q5_0",
            Self::Q5_1 => "q5_1",
            Self::Q8_0 => "q8_0",
            Self::Q8_1 => "q8_1",
            Self::Q2K => "q2_k",
            Self::Q3K => "q3_k",
            Self::Q4K => "q4_k",
            Self::Q5K => "q5_k",
            Self::Q6K => "q6_k",
            Self::Q8K => "q8_k",
            Self::Iq2Xxs => "iq2_xxs",
            Self::Iq2Xs => "iq2_xs",
            Self::Iq3Xxs => "iq3_xxs",
            Self::Iq1S => "iq1_s",
            Self::Iq4Nl => "iq4_nl",
            Self::Iq3S => "iq3_s",
            Self::Iq2S => "iq2_s",
            Self::Iq4Xs => "iq4_xs",
            Self::I8 => "i8",
            Self::I16 => "i16",
            Self::I32 => "i32",
            Self::I64 => "i64",
            Self::F64 => "f64",
            Self::Iq1M => "iq1_m",
            Self::BF16 => "bf16",
            Self::Tq1_0 => "tq1_0",
            Self::Tq2_0 => "tq2_0",
            Self::Mxfp4 => "mxfp4",
        }
    }

    /// Elements per block (1 for plain scalar types).
    pub fn block_size(self) -> usize {
        match self {
            Self::F32
            | Self::F16
            | Self::BF16
            | Self::I8
            | Self::I16
            | Self::I32
            | Self::I64
            | Self::F64 => 1,
            Self::Q4_0
            | Self::Q4_1
            | Self::Q5_0
            | Self::Q5_1
            | Self::Q8_0
            | Self::Q8_1
            | Self::Iq4Nl
            | Self::Mxfp4 => 32,
            Self::Q2K
            | Self::Q3K
            | Self::Q4K
            | Self::Q5K
            | Self::Q6K
            | Self::Q8K
            | Self::Iq2Xxs
            | Self::Iq2Xs
            | Self::Iq3Xxs
            | Self::Iq1S
            | Self::Iq3S
            | Self::Iq2S
            | Self::Iq4Xs
            | Self::Iq1M
            | Self::Tq1_0
            | Self::Tq2_0 => QK_K,
        }
    }

    /// Bytes per block (ggml's `type_size`).
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 => 1,
            Self::I64 | Self::F64 => 8,
            Self::Q4_0 => 2 + 16,
            Self::Q4_1 => 2 + 2 + 16,
            Self::Q5_0 => 2 + 4 + 16,
            Self::Q5_1 => 2 + 2 + 4 + 16,
            Self::Q8_0 => 2 + 32,
            Self::Q8_1 => 4 + 4 + 32,
            Self::Q2K => 2 + 2 + QK_K / 16 + QK_K / 4,
            Self::Q3K => 2 + QK_K / 4 + QK_K / 8 + 12,
            Self::Q4K => 2 + 2 + QK_K / 2 + 12,
            Self::Q5K => 2 + 2 + QK_K / 2 + QK_K / 8 + 12,
            Self::Q6K => 2 + QK_K / 2 + QK_K / 4 + QK_K / 16,
            Self::Q8K => 4 + QK_K + QK_K / 8,
            Self::Iq2Xxs => 2 + QK_K / 4,
            Self::Iq2Xs => 2 + QK_K / 4 + QK_K / 32,
            Self::Iq3Xxs => 2 + QK_K / 4 + QK_K / 8,
            Self::Iq1S => 2 + QK_K / 8 + QK_K / 16,
            Self::Iq4Nl => 2 + 16,
            Self::Iq3S => 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4,
            Self::Iq2S => 2 + QK_K / 4 + QK_K / 16,
            Self::Iq4Xs => 2 + 2 + QK_K / 2 + QK_K / 64,
            Self::Iq1M => QK_K / 8 + QK_K / 16 + QK_K / 32,
            Self::Tq1_0 => 2 + 4 * 13,
            Self::Tq2_0 => 2 + 64,
            Self::Mxfp4 => 1 + 16,
        }
    }

    /// Whether `dequant::dequantize` decodes this type.
    pub fn can_dequantize(self) -> bool {
        matches!(
            self,
            Self::F32
                | Self::F16
                | Self::BF16
                | Self::Q4_0
                | Self::Q4_1
                | Self::Q5_0
                | Self::Q5_1
                | Self::Q8_0
                | Self::Iq4Nl
                | Self::Q2K
                | Self::Q3K
                | Self::Q4K
                | Self::Q5K
                | Self::Q6K
                | Self::Q8K
        )
    }

    /// Bytes needed for a row of `n` elements; `None` if `n` is not a multiple of
    /// the block size or on overflow.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.block_bytes() as u64)
    }
}
