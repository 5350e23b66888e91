//! GGUF (v2/v3) reader: header, metadata, tensor infos, dequantization, and the
//! mapping of `llama`-family GGUF files onto the converter's `ModelIr`.

use std::collections::BTreeMap;

/// A GGUF metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

/// All metadata key/value pairs of a GGUF file.
pub type GgufMetadata = BTreeMap<String, GgufValue>;

use std::path::Path;

use crate::error::Result;
use crate::ir::ModelIr;

/// Reads a GGUF checkpoint of a supported architecture into a `ModelIr`.
pub fn load(_path: &Path) -> Result<ModelIr> {
    todo!("gguf helper")
}
