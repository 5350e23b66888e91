//! GGUF container parsing (versions 2 and 3).
//!
//! Layout (ggml `docs/gguf.md`; every integer and float little-endian):
//! ```text
//! magic        4 bytes "GGUF" (0x47 0x47 0x55 0x46)
//! version      u32 (2 or 3; 1 used 32-bit counts and is refused)
//! tensor_count u64
//! kv_count     u64
//! kv_count x   { key: string, value_type: u32, value }
//! tensor_count x { name: string, n_dims: u32, ne: u64 x n_dims (innermost first),
//!                  type: u32, offset: u64 (relative to the data section) }
//! padding      to a multiple of `general.alignment` (default 32)
//! data         tensor bytes, each at a multiple of the alignment
//! string = u64 length + UTF-8 bytes (no NUL); array = u32 element type + u64 count
//! + elements.
//! ```
//! Nothing is trusted: every length and count is bounded by the bytes left in the
//! file before anything is allocated, every tensor range must lie inside the file,
//! and all arithmetic is checked. Only the header, metadata and tensor infos are
//! read up front; tensor bytes are read on demand by positioned reads, so memory
//! stays bounded by the largest tensor.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::dequant;
use super::types::GgmlType;
use super::{GgufMetadata, GgufValue};
use crate::error::{ConvertError, Result};

/// `"GGUF"` as bytes, at offset 0.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's maximum tensor rank.
pub const MAX_DIMS: usize = 4;
/// Deepest nesting of arrays accepted (arrays of arrays of …): a bound on recursion,
/// far above anything a real file uses.
pub const MAX_ARRAY_DEPTH: usize = 8;
/// Largest accepted `general.alignment` (a sanity bound; real files use 32).
pub const MAX_ALIGNMENT: u64 = 1 << 20;

/// Smallest encoding of one key/value pair: empty key (8) + type (4) + a u8 value (1).
const MIN_KV_BYTES: u64 = 13;
/// Smallest encoding of one tensor info: empty name (8) + n_dims (4) + one dim (8)
/// + type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 32;
/// Most metadata values (array elements included) accepted in one file. Each parsed
/// value costs about 32 bytes of memory whatever its encoded size, so this bounds
/// what a crafted file can make the reader allocate (~256 MiB); real files stay
/// far below it (a 262k-token vocabulary with scores, types and merges is ~1.3M).
pub const MAX_METADATA_VALUES: u64 = 8 << 20;
/// Elements reserved up front for one metadata array; longer arrays grow as their
/// elements are actually read.
const ARRAY_PREALLOC: u64 = 1 << 16;
/// Bytes fetched per refill of the header reader's buffer.
const READ_CHUNK: usize = 64 * 1024;

/// Random-access bytes of a GGUF file: the file itself, or an in-memory copy (tests).
pub trait ByteSource: Send + Sync {
    /// Total length in bytes.
    fn len(&self) -> u64;
    /// Whether the source is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from absolute offset `offset`; the caller keeps the range in
    /// bounds, an out-of-range read is an error, not a panic.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    /// A name for error messages.
    fn describe(&self) -> PathBuf;
}

/// A file read with positioned reads.
struct FileSource {
    file: File,
    len: u64,
    path: PathBuf,
}

impl ByteSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    #[cfg(unix)]
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }
    #[cfg(windows)]
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
        use std::os::windows::fs::FileExt;
        while !buf.is_empty() {
            let n = self.file.seek_read(buf, offset)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }
    fn describe(&self) -> PathBuf {
        self.path.clone()
    }
}

impl ByteSource for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn describe(&self) -> PathBuf {
        PathBuf::from("<memory>")
    }
}

/// One tensor's entry in the GGUF tensor-info table, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml dimensions, innermost (contiguous) first: `ne[0]` is the row length.
    pub ne: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute file offset of the first byte.
    pub offset: u64,
    /// Bytes of storage.
    pub n_bytes: u64,
}

impl GgufTensorInfo {
    /// Number of elements (checked against overflow when parsed).
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }
    /// Row-major shape, outermost first: `ne` reversed (a matrix is `[ne1, ne0]`).
    pub fn shape(&self) -> Vec<u64> {
        self.ne.iter().rev().copied().collect()
    }
}

/// A parsed GGUF file: metadata and tensor infos in memory, tensor data on demand.
#[derive(Clone)]
pub struct GgufFile {
    /// 2 or 3.
    pub version: u32,
    pub metadata: GgufMetadata,
    /// In file order.
    pub tensors: Vec<GgufTensorInfo>,
    /// `general.alignment` or `DEFAULT_ALIGNMENT`.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    source: Arc<dyn ByteSource>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("source", &self.source.describe())
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

fn gguf_err(msg: impl Into<String>) -> ConvertError {
    ConvertError::Gguf(msg.into())
}

impl GgufFile {
    /// Opens and parses `path`. I/O failures are `ConvertError::Io`; malformed
    /// content is `ConvertError::Gguf`; valid but unsupported content (version 1,
    /// retired types) is `ConvertError::Unsupported`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| ConvertError::io(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| ConvertError::io(path, e))?
            .len();
        Self::parse(Arc::new(FileSource {
            file,
            len,
            path: path.to_path_buf(),
        }))
    }

    /// Parses an in-memory copy of a GGUF file (same contract as [`GgufFile::open`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(Arc::new(bytes))
    }

    /// Parses any byte source.
    pub fn parse(source: Arc<dyn ByteSource>) -> Result<Self> {
        let mut r = Reader::new(source.as_ref());
        let (version, tensor_count, kv_count) = read_preamble(&mut r)?;
        let metadata = read_metadata(&mut r, kv_count)?;
        let alignment = alignment_of(&metadata)?;
        let infos = read_tensor_infos(&mut r, tensor_count)?;

        let data_offset = super::align_up_checked(r.pos, alignment)
            .ok_or_else(|| gguf_err("data section offset overflows"))?;
        let file_len = source.len();
        if !infos.is_empty() && data_offset > file_len {
            return Err(gguf_err(format!(
                "data section starts at {data_offset} but the file has only {file_len} bytes"
            )));
        }
        let tensors = place_tensors(infos, data_offset, alignment, file_len)?;

        Ok(Self {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            source,
        })
    }

    /// The tensor info named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A metadata string value, if present and a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.metadata.get(key) {
            Some(GgufValue::String(s)) => Some(s),
            _ => None,
        }
    }

    /// Reads the raw stored bytes of a tensor of this file.
    pub fn tensor_bytes(&self, t: &GgufTensorInfo) -> Result<Vec<u8>> {
        read_range(self.source.as_ref(), t)
    }

    /// Reads and decodes a tensor to f32 (ggml element order = row-major over
    /// [`GgufTensorInfo::shape`]).
    pub fn tensor_f32(&self, t: &GgufTensorInfo) -> Result<Vec<f32>> {
        decode(self.source.as_ref(), t)
    }

    /// The shared byte source, for lazy tensor sources.
    pub(crate) fn source(&self) -> Arc<dyn ByteSource> {
        Arc::clone(&self.source)
    }
}

/// Reads the magic, version and counts; returns `(version, tensor_count,
/// kv_count)`. Errors: `Unsupported` for version 1, `Gguf` for a bad magic,
/// an unknown version or counts that cannot fit in the rest of the file.
fn read_preamble(r: &mut Reader) -> Result<(u32, u64, u64)> {
    let magic = r.array::<4>("magic")?;
    if magic != GGUF_MAGIC {
        return Err(gguf_err(format!(
            "bad magic bytes {magic:02x?} (expected \"GGUF\" = {GGUF_MAGIC:02x?})"
        )));
    }
    let version = r.u32("version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(ConvertError::Unsupported(
                "GGUF version 1 (32-bit counts; re-convert the model with a current llama.cpp)"
                    .into(),
            ))
        }
        v => {
            return Err(gguf_err(format!(
                "unknown GGUF version {v} (this reader knows 2 and 3)"
            )))
        }
    }
    let tensor_count = r.u64("tensor count")?;
    let kv_count = r.u64("metadata key/value count")?;
    if kv_count > r.remaining() / MIN_KV_BYTES {
        return Err(gguf_err(format!(
            "metadata key/value count {kv_count} cannot fit in the {} bytes left in the file",
            r.remaining()
        )));
    }
    if tensor_count > r.remaining() / MIN_TENSOR_INFO_BYTES {
        return Err(gguf_err(format!(
            "tensor count {tensor_count} cannot fit in the {} bytes left in the file",
            r.remaining()
        )));
    }
    Ok((version, tensor_count, kv_count))
}

/// Reads `kv_count` metadata key/value pairs. Errors: `Gguf` for malformed
/// values or a repeated key.
fn read_metadata(r: &mut Reader, kv_count: u64) -> Result<GgufMetadata> {
    let mut metadata = GgufMetadata::new();
    for i in 0..kv_count {
        let key = r.string(&format!("metadata key #{i}"))?;
        let ty = r.u32(&format!("type of metadata {key:?}"))?;
        let value = r.value(ty, &key, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(gguf_err(format!("metadata key {key:?} appears twice")));
        }
    }
    Ok(metadata)
}

/// `general.alignment`, or `DEFAULT_ALIGNMENT` when absent. Errors: `Gguf`
/// unless it is a u32 power of two up to `MAX_ALIGNMENT`.
fn alignment_of(metadata: &GgufMetadata) -> Result<u64> {
    match metadata.get("general.alignment") {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(GgufValue::U32(a)) if a.is_power_of_two() && u64::from(*a) <= MAX_ALIGNMENT => {
            Ok(u64::from(*a))
        }
        Some(other) => Err(gguf_err(format!(
            "general.alignment must be a u32 power of two <= {MAX_ALIGNMENT}, got {other:?}"
        ))),
    }
}

/// A tensor-info entry as read, its offset still relative to the data section.
struct UnplacedTensor {
    name: String,
    ne: Vec<u64>,
    ggml_type: GgmlType,
    /// Offset from the start of the data section.
    rel: u64,
}

/// Reads `tensor_count` tensor-info entries. Errors: `Gguf` for a bad rank,
/// type id or repeated name; `Unsupported` for a retired type.
fn read_tensor_infos(r: &mut Reader, tensor_count: u64) -> Result<Vec<UnplacedTensor>> {
    let mut infos = Vec::new();
    let mut names = std::collections::HashSet::new();
    for i in 0..tensor_count {
        let name = r.string(&format!("name of tensor #{i}"))?;
        let n_dims = r.u32(&format!("n_dims of tensor {name:?}"))?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(gguf_err(format!(
                "tensor {name:?} has n_dims {n_dims} (must be 1..={MAX_DIMS})"
            )));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            ne.push(r.u64(&format!("dimension {d} of tensor {name:?}"))?);
        }
        let type_id = r.u32(&format!("type of tensor {name:?}"))?;
        let ggml_type = GgmlType::from_id(type_id).map_err(|e| match e {
            ConvertError::Gguf(m) => gguf_err(format!("tensor {name:?}: {m}")),
            ConvertError::Unsupported(m) => {
                ConvertError::Unsupported(format!("tensor {name:?}: {m}"))
            }
            other => other,
        })?;
        let rel = r.u64(&format!("offset of tensor {name:?}"))?;
        if !names.insert(name.clone()) {
            return Err(gguf_err(format!("tensor {name:?} appears twice")));
        }
        infos.push(UnplacedTensor {
            name,
            ne,
            ggml_type,
            rel,
        });
    }
    Ok(infos)
}

/// The tensors of `infos` at absolute offsets in a data section starting at
/// `data_offset`. Errors: `Gguf` for bad dimensions, a misaligned offset or
/// data outside the `file_len` bytes of the file.
fn place_tensors(
    infos: Vec<UnplacedTensor>,
    data_offset: u64,
    alignment: u64,
    file_len: u64,
) -> Result<Vec<GgufTensorInfo>> {
    let mut tensors = Vec::with_capacity(infos.len());
    for UnplacedTensor {
        name,
        ne,
        ggml_type,
        rel,
    } in infos
    {
        let n_bytes = tensor_bytes(&name, &ne, ggml_type)?;
        if rel % alignment != 0 {
            return Err(gguf_err(format!(
                "tensor {name:?}: offset {rel} is not a multiple of the alignment {alignment}"
            )));
        }
        let offset = data_offset.checked_add(rel);
        let end = offset.and_then(|o| o.checked_add(n_bytes));
        match (offset, end) {
            (Some(offset), Some(end)) if end <= file_len => {
                tensors.push(GgufTensorInfo { name, ne, ggml_type, offset, n_bytes });
            }
            _ => {
                return Err(gguf_err(format!(
                    "tensor {name:?}: data at relative offset {rel} ({n_bytes} bytes) lies outside the file \
                     (data section {data_offset}..{file_len})"
                )))
            }
        }
    }
    Ok(tensors)
}

/// Validates a tensor's dimensions and returns its storage size in bytes.
fn tensor_bytes(name: &str, ne: &[u64], ty: GgmlType) -> Result<u64> {
    let mut n: u64 = 1;
    for &d in ne {
        n = n
            .checked_mul(d)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| {
                gguf_err(format!(
                    "tensor {name:?}: element count of {ne:?} overflows"
                ))
            })?;
    }
    let row = ne.first().copied().unwrap_or(1);
    let bs = ty.block_size() as u64;
    if row % bs != 0 {
        return Err(gguf_err(format!(
            "tensor {name:?}: row length ne[0] = {row} is not a multiple of the {} block size {bs}",
            ty.name()
        )));
    }
    (n / bs)
        .checked_mul(ty.block_bytes() as u64)
        .ok_or_else(|| gguf_err(format!("tensor {name:?}: byte size overflows")))
}

pub(crate) fn read_range(src: &dyn ByteSource, t: &GgufTensorInfo) -> Result<Vec<u8>> {
    let n = usize::try_from(t.n_bytes).map_err(|_| {
        ConvertError::Unsupported(format!("tensor {:?} is too large for this machine", t.name))
    })?;
    let in_bounds = t
        .offset
        .checked_add(t.n_bytes)
        .is_some_and(|end| end <= src.len());
    if !in_bounds {
        return Err(gguf_err(format!(
            "tensor {:?}: data range outside the file",
            t.name
        )));
    }
    let mut buf = vec![0u8; n];
    src.read_exact_at(&mut buf, t.offset)
        .map_err(|e| ConvertError::io(src.describe(), e))?;
    Ok(buf)
}

pub(crate) fn decode(src: &dyn ByteSource, t: &GgufTensorInfo) -> Result<Vec<f32>> {
    if !t.ggml_type.can_dequantize() {
        return Err(ConvertError::Unsupported(format!(
            "tensor {:?}: decoding ggml type {} is not implemented",
            t.name,
            t.ggml_type.name()
        )));
    }
    let n = usize::try_from(t.n_elements()).map_err(|_| {
        ConvertError::Unsupported(format!("tensor {:?} is too large for this machine", t.name))
    })?;
    let bytes = read_range(src, t)?;
    dequant::dequantize(t.ggml_type, &bytes, n).map_err(|e| match e {
        ConvertError::Gguf(m) => gguf_err(format!("tensor {:?}: {m}", t.name)),
        other => other,
    })
}

/// Sequential reader over a `ByteSource` with a small read-ahead buffer.
struct Reader<'a> {
    src: &'a dyn ByteSource,
    /// Absolute position of the next byte to consume.
    pos: u64,
    /// Buffered bytes starting at `buf_start`.
    buf: Vec<u8>,
    buf_start: u64,
    /// Metadata values parsed so far (see `MAX_METADATA_VALUES`).
    n_values: u64,
}

impl<'a> Reader<'a> {
    fn new(src: &'a dyn ByteSource) -> Self {
        Self {
            src,
            pos: 0,
            buf: Vec::new(),
            buf_start: 0,
            n_values: 0,
        }
    }

    fn remaining(&self) -> u64 {
        self.src.len().saturating_sub(self.pos)
    }

    fn truncated(&self, what: &str, need: u64) -> ConvertError {
        gguf_err(format!(
            "file truncated: {what} needs {need} bytes at offset {} but only {} remain",
            self.pos,
            self.remaining()
        ))
    }

    /// Consumes `n` bytes (already checked to fit) into `out`.
    fn take(&mut self, out: &mut [u8], what: &str) -> Result<()> {
        let n = out.len() as u64;
        if n > self.remaining() {
            return Err(self.truncated(what, n));
        }
        let mut done = 0usize;
        while done < out.len() {
            let buf_end = self.buf_start + self.buf.len() as u64;
            if self.pos >= self.buf_start && self.pos < buf_end {
                let from = (self.pos - self.buf_start) as usize;
                let k = (self.buf.len() - from).min(out.len() - done);
                out[done..done + k].copy_from_slice(&self.buf[from..from + k]);
                done += k;
                self.pos += k as u64;
            } else if out.len() - done >= READ_CHUNK {
                // Large reads (long strings) bypass the buffer.
                self.src
                    .read_exact_at(&mut out[done..], self.pos)
                    .map_err(|e| ConvertError::io(self.src.describe(), e))?;
                self.pos += (out.len() - done) as u64;
                done = out.len();
            } else {
                let k = (READ_CHUNK as u64).min(self.remaining()) as usize;
                self.buf.resize(k, 0);
                self.src
                    .read_exact_at(&mut self.buf, self.pos)
                    .map_err(|e| ConvertError::io(self.src.describe(), e))?;
                self.buf_start = self.pos;
            }
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.take(&mut b, what)?;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(&format!("length of {what}"))?;
        if len > self.remaining() {
            return Err(gguf_err(format!(
                "{what}: string length {len} at offset {} runs past the end of the file ({} bytes remain)",
                self.pos - 8,
                self.remaining()
            )));
        }
        // len <= remaining <= file length, and the file exists, so it fits in memory terms
        // only if usize can hold it.
        let len = usize::try_from(len).map_err(|_| gguf_err(format!("{what}: string too long")))?;
        let mut bytes = vec![0u8; len];
        self.take(&mut bytes, what)?;
        String::from_utf8(bytes)
            .map_err(|e| gguf_err(format!("{what}: string is not valid UTF-8 ({e})")))
    }

    /// Reads one metadata value of type id `ty` for `key`, `depth` arrays deep.
    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<GgufValue> {
        self.n_values += 1;
        if self.n_values > MAX_METADATA_VALUES {
            return Err(gguf_err(format!(
                "metadata {key:?}: more than {MAX_METADATA_VALUES} metadata values in the file"
            )));
        }
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>(key)?[0]),
            1 => GgufValue::I8(self.array::<1>(key)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(key)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(key)?)),
            4 => GgufValue::U32(self.u32(key)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(key)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => {
                    return Err(gguf_err(format!(
                        "metadata {key:?}: bool byte {b} is neither 0 nor 1"
                    )))
                }
            },
            8 => GgufValue::String(self.string(&format!("metadata {key:?}"))?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(gguf_err(format!(
                        "metadata {key:?}: arrays nested deeper than {MAX_ARRAY_DEPTH}"
                    )));
                }
                let elem_ty = self.u32(&format!("element type of metadata array {key:?}"))?;
                let count = self.u64(&format!("length of metadata array {key:?}"))?;
                let min = min_value_bytes(elem_ty).ok_or_else(|| {
                    gguf_err(format!(
                        "metadata array {key:?}: unknown element type id {elem_ty}"
                    ))
                })?;
                if count > self.remaining() / min {
                    return Err(gguf_err(format!(
                        "metadata array {key:?}: {count} elements cannot fit in the {} bytes left in the file",
                        self.remaining()
                    )));
                }
                let mut items = Vec::with_capacity(count.min(ARRAY_PREALLOC) as usize);
                for _ in 0..count {
                    items.push(self.value(elem_ty, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(key)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(key)?)),
            t => {
                return Err(gguf_err(format!(
                    "metadata {key:?}: unknown value type id {t}"
                )))
            }
        })
    }
}

/// Smallest encoded size of a value of type id `ty`; `None` for unknown ids.
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,
        9 => 12,
        10..=12 => 8,
        _ => return None,
    })
}
