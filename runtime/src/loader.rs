//! Reading and validating `.ember` bytes. `parse` works on any byte slice (a
//! memory map, a caller's buffer); it checks everything once so that later
//! accesses cannot fail: magic, version, sizes, section bounds, header checksum,
//! hyperparameters, every directory entry (dtype, shape, bounds, alignment,
//! overlaps) and the exact tensor set the hyperparameters require.

use std::collections::HashMap;

use bytemuck::Zeroable;

use crate::error::{Error, Result};
use crate::format::{
    self, tensor_flags, DType, DirEntry, Header, HyperParams, Metadata, Section, DATA_ALIGNMENT,
    DIR_ENTRY_SIZE, HEADER_SIZE, MAGIC, MAX_DIMS, MAX_TENSORS, MIN_TENSOR_ALIGNMENT, VERSION_MAJOR,
};
use crate::tokenizer::TokenizerSpec;

/// A validated tensor directory entry.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    /// Outermost first.
    pub shape: Vec<u64>,
    /// Absolute file offset (aligned to the file's tensor alignment).
    pub offset: u64,
    pub nbytes: u64,
    /// Stored CRC-32 of the bytes.
    pub checksum: u32,
    /// Rows stored rotated (`format::tensor_flags::ROTATED`).
    pub rotated: bool,
}

/// Everything in a file except the tensor bytes, validated.
#[derive(Clone, Debug)]
pub struct ParsedFile {
    pub header: Header,
    pub hparams: HyperParams,
    /// In directory order.
    pub tensors: Vec<TensorInfo>,
    /// Index into `tensors` by name.
    pub by_name: HashMap<String, usize>,
    pub tokenizer: TokenizerSpec,
    pub chat_template: Option<String>,
    pub metadata: Metadata,
}

fn truncated(what: impl Into<String>, needed: u64, actual: u64) -> Error {
    Error::Truncated {
        what: what.into(),
        needed,
        actual,
    }
}

/// Reads the fixed header without validating anything but its presence.
pub fn read_header(bytes: &[u8]) -> Result<Header> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
            return Err(truncated("magic", MAGIC.len() as u64, bytes.len() as u64));
        }
        return Err(Error::BadMagic);
    }
    if bytes.len() < HEADER_SIZE {
        return Err(truncated("header", HEADER_SIZE as u64, bytes.len() as u64));
    }
    let mut header = Header::zeroed();
    bytemuck::bytes_of_mut(&mut header).copy_from_slice(&bytes[..HEADER_SIZE]);
    Ok(header)
}

fn section_bytes<'a>(bytes: &'a [u8], s: &Section) -> &'a [u8] {
    // Bounds were validated by `check_sections`.
    &bytes[s.offset as usize..(s.offset + s.len) as usize]
}

fn check_sections(h: &Header, file_len: u64) -> Result<()> {
    let data_start = h.data.offset;
    if !data_start.is_multiple_of(DATA_ALIGNMENT) {
        return Err(Error::BadSection {
            section: "data",
            reason: format!("offset {data_start} is not a multiple of {DATA_ALIGNMENT}"),
        });
    }
    let data_end = h.data.end().ok_or(Error::BadSection {
        section: "data",
        reason: "offset + length overflows".into(),
    })?;
    if data_end > file_len {
        return Err(truncated("data section", data_end, file_len));
    }
    if data_end != file_len {
        return Err(Error::BadSection {
            section: "data",
            reason: format!("ends at {data_end} but the file is {file_len} bytes"),
        });
    }
    if data_start < HEADER_SIZE as u64 {
        return Err(Error::BadSection {
            section: "data",
            reason: "overlaps the header".into(),
        });
    }
    // The metadata sections lie between the header and the data, in order, without
    // overlapping.
    let mut cursor = HEADER_SIZE as u64;
    for (name, s) in [
        ("directory", h.directory),
        ("tokenizer", h.tokenizer),
        ("chat_template", h.chat_template),
        ("metadata", h.metadata),
    ] {
        let end = s.end().ok_or(Error::BadSection {
            section: name,
            reason: "offset + length overflows".into(),
        })?;
        if s.offset < cursor {
            return Err(Error::BadSection {
                section: name,
                reason: format!(
                    "starts at {} inside the previous section (ends {cursor})",
                    s.offset
                ),
            });
        }
        if end > data_start {
            return Err(Error::BadSection {
                section: name,
                reason: format!("ends at {end}, past the start of the data section ({data_start})"),
            });
        }
        cursor = end;
    }
    Ok(())
}

/// FORMAT.md: the header's reserved bytes and every byte between the header
/// and the data section that no section covers are zero (so nothing can hide
/// there, and a file has one byte image per content). Sections were checked to
/// be in order and inside `..data.offset`.
fn check_zero_filler(bytes: &[u8], h: &Header) -> Result<()> {
    if h.reserved.iter().any(|&b| b != 0) {
        return Err(Error::BadHeader(
            "reserved header bytes are not zero".into(),
        ));
    }
    let mut cursor = HEADER_SIZE as u64;
    for (name, s) in [
        ("directory", h.directory),
        ("tokenizer", h.tokenizer),
        ("chat_template", h.chat_template),
        ("metadata", h.metadata),
        (
            "data",
            Section {
                offset: h.data.offset,
                len: 0,
            },
        ),
    ] {
        let gap = &bytes[cursor as usize..s.offset as usize];
        if let Some(i) = gap.iter().position(|&b| b != 0) {
            return Err(Error::BadSection {
                section: name,
                reason: format!(
                    "non-zero byte at offset {} in the padding before it",
                    cursor + i as u64
                ),
            });
        }
        cursor = s.offset + s.len;
    }
    Ok(())
}

/// Parses and validates a whole file image. `bytes` must be the complete file.
pub fn parse(bytes: &[u8]) -> Result<ParsedFile> {
    parse_prefix(bytes, bytes.len() as u64)
}

/// Parses and validates a file of `file_len` bytes from its first bytes, which
/// must include everything before the data section (tensor bytes are not read).
pub fn parse_prefix(bytes: &[u8], file_len: u64) -> Result<ParsedFile> {
    if cfg!(target_endian = "big") {
        return Err(Error::BigEndianHost);
    }
    let h = read_header(bytes)?;
    if h.version_major != VERSION_MAJOR {
        return Err(Error::UnsupportedVersion {
            major: h.version_major,
            minor: h.version_minor,
            supported: VERSION_MAJOR,
        });
    }
    if h.header_size as usize != HEADER_SIZE {
        return Err(Error::BadHeader(format!(
            "header_size is {} (expected {HEADER_SIZE})",
            h.header_size
        )));
    }
    if h.file_size > file_len {
        return Err(truncated("file", h.file_size, file_len));
    }
    if h.file_size < file_len {
        return Err(Error::BadHeader(format!(
            "file is {file_len} bytes but the header says {}",
            h.file_size
        )));
    }
    check_sections(&h, file_len)?;
    if (bytes.len() as u64) < h.data.offset {
        return Err(truncated(
            "header sections",
            h.data.offset,
            bytes.len() as u64,
        ));
    }
    let computed = format::header_checksum(&bytes[..h.data.offset as usize]);
    if computed != h.header_checksum {
        return Err(Error::HeaderChecksum {
            stored: h.header_checksum,
            computed,
        });
    }
    // Past the checksum, any inconsistency is a writer bug or a deliberately
    // crafted file; it is still reported, never trusted.
    if h.flags != 0 {
        return Err(Error::BadHeader(format!(
            "unknown header flags {:#x}",
            h.flags
        )));
    }
    check_zero_filler(bytes, &h)?;
    if !h.tensor_alignment.is_power_of_two() || h.tensor_alignment < MIN_TENSOR_ALIGNMENT {
        return Err(Error::BadHeader(format!(
            "tensor_alignment {} is not a power of two >= {MIN_TENSOR_ALIGNMENT}",
            h.tensor_alignment
        )));
    }
    if h.tensor_count > MAX_TENSORS {
        return Err(Error::BadHeader(format!(
            "tensor_count {} is too large",
            h.tensor_count
        )));
    }
    if h.directory.len != h.tensor_count * DIR_ENTRY_SIZE as u64 {
        return Err(Error::BadSection {
            section: "directory",
            reason: format!(
                "{} bytes for {} entries of {DIR_ENTRY_SIZE} bytes",
                h.directory.len, h.tensor_count
            ),
        });
    }
    let hp = h.hparams;
    hp.validate()?;

    let tensors = parse_directory(section_bytes(bytes, &h.directory), &h)?;
    let by_name = check_tensor_set(&tensors, &hp)?;

    let tokenizer = format::decode_tokenizer(section_bytes(bytes, &h.tokenizer))?;
    let template = section_bytes(bytes, &h.chat_template);
    let chat_template = if template.is_empty() {
        None
    } else {
        Some(
            std::str::from_utf8(template)
                .map_err(|e| Error::BadSection {
                    section: "chat_template",
                    reason: format!("not UTF-8: {e}"),
                })?
                .to_string(),
        )
    };
    let metadata = format::decode_metadata(section_bytes(bytes, &h.metadata))?;
    Ok(ParsedFile {
        header: h,
        hparams: hp,
        tensors,
        by_name,
        tokenizer,
        chat_template,
        metadata,
    })
}

/// Decodes and validates every directory entry, then checks that no two tensors'
/// byte ranges overlap.
fn parse_directory(dir: &[u8], h: &Header) -> Result<Vec<TensorInfo>> {
    let mut out = Vec::with_capacity(h.tensor_count as usize);
    for raw in dir.chunks_exact(DIR_ENTRY_SIZE) {
        out.push(parse_entry(raw, h)?);
    }
    check_no_overlaps(&out)?;
    Ok(out)
}

/// A `BadTensor` error for tensor `name`.
fn bad_tensor(name: &str, reason: String) -> Error {
    Error::BadTensor {
        name: name.to_string(),
        reason,
    }
}

/// Decodes one raw directory entry: name, dtype, shape and size, placement in the
/// data section, flags.
fn parse_entry(raw: &[u8], h: &Header) -> Result<TensorInfo> {
    let mut e = DirEntry::zeroed();
    bytemuck::bytes_of_mut(&mut e).copy_from_slice(raw);
    let name = e.name_str()?.to_string();
    if name.is_empty() {
        return Err(Error::BadTensorName);
    }
    let dtype = DType::from_u32(e.dtype).ok_or_else(|| Error::UnknownDType {
        name: name.clone(),
        id: e.dtype,
    })?;
    check_shape_and_size(&e, dtype, &name)?;
    check_placement(&e, h, &name)?;
    let rotated = decode_entry_flags(&e, dtype, &name)?;
    Ok(TensorInfo {
        name,
        dtype,
        shape: e.dims().to_vec(),
        offset: e.offset,
        nbytes: e.nbytes,
        checksum: e.checksum,
        rotated,
    })
}

/// Checks the rank, the dimensions, the row length against the dtype's block (and
/// tile) and that `nbytes` is exactly the shape's size in `dtype`.
fn check_shape_and_size(e: &DirEntry, dtype: DType, name: &str) -> Result<()> {
    let bad = |reason: String| bad_tensor(name, reason);
    let nd = e.n_dims as usize;
    if nd == 0 || nd > MAX_DIMS {
        return Err(bad(format!("rank {nd} is outside 1..={MAX_DIMS}")));
    }
    if e.shape[nd..].iter().any(|&d| d != 0) {
        return Err(bad("shape entries past n_dims must be zero".into()));
    }
    let mut count: u64 = 1;
    for &d in e.dims() {
        if d == 0 {
            return Err(bad("zero-sized dimension".into()));
        }
        count = count
            .checked_mul(d)
            .ok_or_else(|| bad("element count overflows".into()))?;
    }
    let cols = e.dims()[nd - 1];
    if !cols.is_multiple_of(dtype.block_elems() as u64) {
        return Err(bad(format!(
            "row length {cols} is not a multiple of the {} block size {}",
            dtype.name(),
            dtype.block_elems()
        )));
    }
    if dtype.is_tiled()
        && (nd != 2 || !e.dims()[0].is_multiple_of(ember_kernels::blocks::TILE_ROWS as u64))
    {
        return Err(bad(format!(
            "{} needs a matrix whose row count is a multiple of {} (shape {:?})",
            dtype.name(),
            ember_kernels::blocks::TILE_ROWS,
            e.dims()
        )));
    }
    let nbytes = dtype
        .bytes_for(count)
        .ok_or_else(|| bad("byte size overflows".into()))?;
    if nbytes != e.nbytes {
        return Err(bad(format!(
            "byte length {} does not match shape {:?} of {} ({nbytes} bytes)",
            e.nbytes,
            e.dims(),
            dtype.name()
        )));
    }
    Ok(())
}

/// Checks the entry's offset is aligned and its bytes lie inside the data section.
fn check_placement(e: &DirEntry, h: &Header, name: &str) -> Result<()> {
    if !e.offset.is_multiple_of(h.tensor_alignment) {
        return Err(Error::Misaligned {
            name: name.to_string(),
            offset: e.offset,
            align: h.tensor_alignment,
        });
    }
    let end = e.offset.checked_add(e.nbytes);
    let (data_start, data_end) = (h.data.offset, h.data.offset + h.data.len);
    match end {
        Some(end) if e.offset >= data_start && end <= data_end => Ok(()),
        _ => Err(Error::TensorOutOfBounds {
            name: name.to_string(),
            offset: e.offset,
            end: end.unwrap_or(u64::MAX),
            data_start,
            data_end,
        }),
    }
}

/// Rejects unknown flag bits and returns whether the rows are stored rotated
/// (allowed only for block-quantized matrices).
fn decode_entry_flags(e: &DirEntry, dtype: DType, name: &str) -> Result<bool> {
    if e.flags & !tensor_flags::KNOWN != 0 {
        return Err(bad_tensor(
            name,
            format!("unknown flag bits {:#x}", e.flags & !tensor_flags::KNOWN),
        ));
    }
    let rotated = e.flags & tensor_flags::ROTATED != 0;
    if rotated && (dtype.block_elems() == 1 || e.n_dims != 2) {
        return Err(bad_tensor(
            name,
            format!(
                "flagged as rotated, but it is a {}-D {} tensor (only block-quantized matrices can be)",
                e.n_dims,
                dtype.name()
            ),
        ));
    }
    Ok(rotated)
}

/// Fails with the first pair of tensors (in offset order) whose byte ranges overlap.
fn check_no_overlaps(tensors: &[TensorInfo]) -> Result<()> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors[i].offset);
    for w in order.windows(2) {
        let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
        if a.offset + a.nbytes > b.offset {
            return Err(Error::TensorOverlap {
                a: a.name.clone(),
                b: b.name.clone(),
            });
        }
    }
    Ok(())
}

fn check_tensor_set(tensors: &[TensorInfo], hp: &HyperParams) -> Result<HashMap<String, usize>> {
    let mut by_name = HashMap::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        if by_name.insert(t.name.clone(), i).is_some() {
            return Err(Error::DuplicateTensor(t.name.clone()));
        }
    }
    let expected = format::expected_tensors(hp);
    for (name, shape) in &expected {
        let Some(&i) = by_name.get(name) else {
            return Err(Error::MissingTensor(name.clone()));
        };
        if &tensors[i].shape != shape {
            return Err(Error::ShapeMismatch {
                name: name.clone(),
                expected: shape.clone(),
                actual: tensors[i].shape.clone(),
            });
        }
        // Norm weights and biases are read as f32 by the forward pass.
        if shape.len() == 1 && tensors[i].dtype != DType::F32 {
            return Err(Error::BadTensor {
                name: name.clone(),
                reason: format!("vectors must be f32, found {}", tensors[i].dtype.name()),
            });
        }
    }
    if expected.len() != tensors.len() {
        let names: std::collections::HashSet<&str> =
            expected.iter().map(|(n, _)| n.as_str()).collect();
        if let Some(extra) = tensors.iter().find(|t| !names.contains(t.name.as_str())) {
            return Err(Error::UnexpectedTensor(extra.name.clone()));
        }
    }
    Ok(by_name)
}

/// Recomputes every tensor's CRC-32 and compares it with the directory.
/// Returns the first mismatch as an error.
pub fn verify_tensor_checksums(bytes: &[u8], parsed: &ParsedFile) -> Result<()> {
    verify_tensor_checksums_with_progress(bytes, parsed, &mut |_| {})
}

/// [`verify_tensor_checksums`], calling `progress(bytes_checked)` after each tensor.
pub fn verify_tensor_checksums_with_progress(
    bytes: &[u8],
    parsed: &ParsedFile,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut checked = 0;
    for t in &parsed.tensors {
        let data = &bytes[t.offset as usize..(t.offset + t.nbytes) as usize];
        let computed = format::tensor_checksum(data);
        if computed != t.checksum {
            return Err(Error::TensorChecksum {
                name: t.name.clone(),
                stored: t.checksum,
                computed,
            });
        }
        checked += t.nbytes;
        progress(checked);
    }
    Ok(())
}
