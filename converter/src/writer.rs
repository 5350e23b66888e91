//! Writes a `ModelIr` as an `.ember` file, atomically: everything goes to a
//! temporary file in the destination directory, which is renamed over the
//! output only after it is complete and synced. Any error or an interrupt
//! (checked between tensors) deletes the temporary file; the output path is
//! never left partially written.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytemuck::Zeroable;
use ember_progress::{Progress, Unit};
use ember_runtime::format::{
    self, align_up, names, tensor_flags, DType, DirEntry, Header, HyperParams, Section,
    DATA_ALIGNMENT, DIR_ENTRY_SIZE, HEADER_SIZE, MAGIC, MAX_DIMS, MIN_TENSOR_ALIGNMENT,
    VERSION_MAJOR, VERSION_MINOR,
};
use half::{bf16, f16};
use tempfile::NamedTempFile;

use crate::error::{ConvertError, Result};
use crate::ir::{IrTensor, ModelIr};
use crate::output;

/// Which dtype the matrices are stored in. Vectors (norms, biases) are always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DTypeChoice {
    /// Keep f32/f16/bf16 sources as they are; quantized sources become f32 (exact).
    #[default]
    Auto,
    /// Store every matrix in this dtype (see `WriteOptions::embed_dtype` for
    /// the embeddings and output matrix under 4-bit types).
    Fixed(DType),
}

/// The mixed-precision policy: the dtype of matrix `name` (`cols` = row length)
/// when the matrices are `base` and the embeddings/output override is `embed`.
///
/// - The token embeddings and the output matrix use `embed` if given, else
///   q8_0 when `base` is a 4-bit type (they are the most sensitive matrices:
///   llama.cpp keeps them at 6-8 bits too), else `base`.
/// - A block type needs rows that are a multiple of 32; other matrices fall
///   back to f32 (exact). Vectors are f32 in any case.
pub fn mixed_policy(name: &str, cols: u64, base: DType, embed: Option<DType>) -> DType {
    let is_embed = name == format::names::TOK_EMBEDDINGS || name == format::names::OUTPUT;
    let d = match (is_embed, embed, base) {
        (true, Some(e), _) => e,
        (true, None, DType::Q4_0 | DType::Iq4Nl) => DType::Q8_0,
        _ => base,
    };
    if !cols.is_multiple_of(d.block_elems() as u64) {
        DType::F32
    } else {
        d
    }
}

/// Options for `write_model`.
#[derive(Debug, Default)]
pub struct WriteOptions<'a> {
    pub dtype: DTypeChoice,
    /// Dtype of the token embeddings and output matrix (default: see
    /// `mixed_policy`). Ignored with `DTypeChoice::Auto`.
    pub embed_dtype: Option<DType>,
    /// Report progress on stderr (`ember_progress`: a bar on a terminal, a line
    /// every few seconds otherwise).
    pub progress: bool,
    /// Set from another thread (e.g. a Ctrl-C handler) to abort; checked between
    /// tensors and while converting large tensors.
    pub interrupt: Option<&'a AtomicBool>,
    /// Per-column error weights of matrices quantized from f32 values
    /// (`calibrate`); matrices without an entry use the reference quantizers.
    /// Rotated matrices ignore them (see `rotation_plan`).
    pub importance: Option<&'a crate::calibrate::Importance>,
    /// Which block-quantized matrices to store rotated (`rotation_plan`).
    pub rotation: Rotation,
}

/// Policy for storing block-quantized matrices rotated (FORMAT.md, "Rotated
/// matrices").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rotation {
    /// Rotate every block-quantized matrix (`ember convert`'s default). Source
    /// blocks stored unrotated (GGUF Q8_0 / Q4_0 / IQ4_NL) are re-quantized in
    /// the rotated basis instead of copied: on SmolLM2 that costs less than
    /// the 8-bit activations of an unrotated product (benches/RESULTS.md,
    /// "Rotated quantization").
    #[default]
    All,
    /// Rotate nothing (`--no-rotate`): GGUF blocks are copied bit for bit.
    None,
    /// Keep what the copied tensors have (`ember merge`): a group holding a
    /// copy takes the copy's orientation; other groups are rotated.
    FollowCopies,
}

/// Which planned tensors to store rotated. Matrices that read one input (a
/// layer's `wq`/`wk`/`wv`, its `w_gate`/`w_up`; every other matrix alone) share
/// one orientation, counting only block-quantized members (see `Rotation`).
/// A source's blocks are copied only when their orientation is the planned one.
fn rotation_plan(planned: &[Planned], n_layers: usize, policy: Rotation) -> Vec<bool> {
    let index: HashMap<&str, usize> = planned
        .iter()
        .enumerate()
        .map(|(i, p)| (p.tensor.name.as_str(), i))
        .collect();
    let mut groups: Vec<Vec<String>> = Vec::new();
    for l in 0..n_layers {
        let n = |s: &str| names::layer(l, s);
        groups.push(vec![n(names::WQ), n(names::WK), n(names::WV)]);
        groups.push(vec![n(names::WO)]);
        groups.push(vec![n(names::W_GATE), n(names::W_UP)]);
        groups.push(vec![n(names::W_DOWN)]);
    }
    groups.push(vec![names::TOK_EMBEDDINGS.to_string()]);
    groups.push(vec![names::OUTPUT.to_string()]);
    let mut plan = vec![false; planned.len()];
    for group in groups {
        let members: Vec<usize> = group
            .iter()
            .filter_map(|n| index.get(n.as_str()).copied())
            .filter(|&i| planned[i].dtype.is_quantized() && planned[i].n_dims == 2)
            .collect();
        let copy = members
            .iter()
            .copied()
            .find(|&i| planned[i].tensor.source.has_raw(planned[i].dtype.untiled()));
        let rotate = match (policy, copy) {
            (Rotation::All, _) => true,
            (Rotation::None, _) => false,
            (Rotation::FollowCopies, Some(i)) => planned[i].tensor.source.raw_rotated(),
            (Rotation::FollowCopies, None) => true,
        };
        for i in members {
            plan[i] = rotate;
        }
    }
    plan
}

/// What was written.
#[derive(Clone, Debug)]
pub struct WriteSummary {
    pub path: PathBuf,
    pub file_bytes: u64,
    pub tensors: usize,
    pub params: u64,
    /// Tensor count per stored dtype name.
    pub dtype_counts: Vec<(String, usize)>,
    /// Tensor count per source dtype name.
    pub source_dtype_counts: Vec<(String, usize)>,
    /// Tensors whose quantized source blocks were copied bit for bit.
    pub raw_copies: usize,
    /// Matrices stored rotated (FORMAT.md, "Rotated matrices").
    pub rotated: usize,
    pub elapsed: Duration,
}

/// One canonical tensor placed in the output: its source, stored dtype and
/// byte range.
struct Planned<'a> {
    tensor: &'a IrTensor,
    dtype: DType,
    shape: [u64; MAX_DIMS],
    n_dims: usize,
    offset: u64,
    nbytes: u64,
}

impl Planned<'_> {
    /// Number of elements.
    fn count(&self) -> u64 {
        self.shape[..self.n_dims].iter().product()
    }

    /// Row length: the innermost dimension.
    fn cols(&self) -> usize {
        self.shape[self.n_dims - 1] as usize
    }
}

impl WriteOptions<'_> {
    /// Whether `interrupt` has been set.
    fn interrupted(&self) -> bool {
        self.interrupt.is_some_and(|f| f.load(Ordering::Relaxed))
    }
}

/// The error for a layout whose offsets or sizes overflow `u64`.
fn too_large() -> ConvertError {
    ConvertError::Unsupported("model too large for the format".into())
}

/// Validates `ir` against its hyperparameters and writes it to `out`
/// atomically (see `output`: through symlinks, a temporary file beside the
/// target, renamed into place, the directory synced).
pub fn write_model(ir: &ModelIr, out: &Path, opts: &WriteOptions) -> Result<WriteSummary> {
    let start = Instant::now();
    let out = &output::resolve_symlinks(out)?;
    let hp = ir.hparams.with_extended_flag();
    hp.validate()?;
    // The loader builds the tokenizer against the vocabulary: a file it would
    // refuse is never written.
    ember_runtime::tokenizer::Tokenizer::new(ir.tokenizer.clone(), hp.vocab_size)?;
    let expected = format::expected_tensors(&hp);
    let by_name = index_tensors(ir, &expected)?;
    let layout = PrefixLayout::new(ir, expected.len())?;
    let (planned, file_size) = plan_tensors(&expected, &by_name, layout.data_offset, opts)?;

    // Write into a temporary file next to the output, then rename.
    let tmp = output::temp_file_beside(out)?;
    let mut data = DataWriter::new(&tmp, layout.data_offset)?;
    let bar = Progress::new(
        "convert",
        planned.iter().map(|p| p.nbytes).sum(),
        Unit::Bytes,
        !opts.progress,
    );
    let rotated = rotation_plan(&planned, hp.n_layers as usize, opts.rotation);
    let (entries, raw_copies) = write_tensor_data(&mut data, &planned, &rotated, opts, &bar)?;
    if opts.interrupted() {
        return Err(ConvertError::Interrupted);
    }
    let prefix = layout.encode(&entries, hp, file_size);
    data.finish(&prefix, file_size)?;
    bar.finish();

    // Check what we wrote with the runtime's own validator before publishing it.
    ember_runtime::loader::parse_prefix(&prefix, file_size)?;

    if opts.interrupted() {
        return Err(ConvertError::Interrupted);
    }
    output::publish(tmp, out)?;
    Ok(summarize(
        out, &planned, &rotated, raw_copies, file_size, start,
    ))
}

/// The tensors of `ir` by name. Errors: `DuplicateTensor`, and
/// `UnexpectedTensor` for a name not in `expected`.
fn index_tensors<'a>(
    ir: &'a ModelIr,
    expected: &[(String, Vec<u64>)],
) -> Result<HashMap<&'a str, &'a IrTensor>> {
    let mut by_name: HashMap<&str, &IrTensor> = HashMap::new();
    for t in &ir.tensors {
        if by_name.insert(t.name.as_str(), t).is_some() {
            return Err(ember_runtime::Error::DuplicateTensor(t.name.clone()).into());
        }
    }
    if let Some(extra) = ir
        .tensors
        .iter()
        .find(|t| !expected.iter().any(|(n, _)| n == &t.name))
    {
        return Err(ember_runtime::Error::UnexpectedTensor(extra.name.clone()).into());
    }
    Ok(by_name)
}

/// The sections before the tensor data (header, directory, tokenizer, chat
/// template, metadata), with the encoded bytes of the last three.
struct PrefixLayout {
    directory: Section,
    tokenizer: Section,
    chat_template: Section,
    metadata: Section,
    /// Start of the tensor data, a multiple of `DATA_ALIGNMENT`.
    data_offset: u64,
    tokenizer_bytes: Vec<u8>,
    template_bytes: Vec<u8>,
    metadata_bytes: Vec<u8>,
}

impl PrefixLayout {
    /// Encodes the non-tensor sections of `ir` and places them after the header
    /// and a directory of `n_tensors` entries. Errors: `Unsupported` on overflow.
    fn new(ir: &ModelIr, n_tensors: usize) -> Result<Self> {
        let tokenizer_bytes = format::encode_tokenizer(&ir.tokenizer);
        let template_bytes = ir
            .chat_template
            .as_deref()
            .unwrap_or("")
            .as_bytes()
            .to_vec();
        let metadata_bytes = format::encode_metadata(&ir.metadata);
        let dir_len = (n_tensors * DIR_ENTRY_SIZE) as u64;
        let directory = Section {
            offset: HEADER_SIZE as u64,
            len: dir_len,
        };
        let tokenizer = Section {
            offset: directory.offset + dir_len,
            len: tokenizer_bytes.len() as u64,
        };
        let chat_template = Section {
            offset: tokenizer.offset + tokenizer.len,
            len: template_bytes.len() as u64,
        };
        let metadata = Section {
            offset: chat_template.offset + chat_template.len,
            len: metadata_bytes.len() as u64,
        };
        let data_offset =
            align_up(metadata.offset + metadata.len, DATA_ALIGNMENT).ok_or_else(too_large)?;
        Ok(Self {
            directory,
            tokenizer,
            chat_template,
            metadata,
            data_offset,
            tokenizer_bytes,
            template_bytes,
            metadata_bytes,
        })
    }

    /// The file's first `data_offset` bytes: header (with its checksum),
    /// directory `entries`, tokenizer, template, metadata and zero padding.
    fn encode(&self, entries: &[DirEntry], hp: HyperParams, file_size: u64) -> Vec<u8> {
        let mut prefix = vec![0u8; self.data_offset as usize];
        let mut h = Header::zeroed();
        h.magic = MAGIC;
        h.version_major = VERSION_MAJOR;
        h.version_minor = VERSION_MINOR;
        h.header_size = HEADER_SIZE as u32;
        h.file_size = file_size;
        h.tensor_alignment = MIN_TENSOR_ALIGNMENT;
        h.tensor_count = entries.len() as u64;
        h.directory = self.directory;
        h.tokenizer = self.tokenizer;
        h.chat_template = self.chat_template;
        h.metadata = self.metadata;
        h.data = Section {
            offset: self.data_offset,
            len: file_size - self.data_offset,
        };
        h.hparams = hp;
        prefix[..HEADER_SIZE].copy_from_slice(bytemuck::bytes_of(&h));
        for (i, e) in entries.iter().enumerate() {
            let at = self.directory.offset as usize + i * DIR_ENTRY_SIZE;
            prefix[at..at + DIR_ENTRY_SIZE].copy_from_slice(bytemuck::bytes_of(e));
        }
        let put = |prefix: &mut Vec<u8>, s: Section, b: &[u8]| {
            prefix[s.offset as usize..(s.offset + s.len) as usize].copy_from_slice(b)
        };
        put(&mut prefix, self.tokenizer, &self.tokenizer_bytes);
        put(&mut prefix, self.chat_template, &self.template_bytes);
        put(&mut prefix, self.metadata, &self.metadata_bytes);
        h.header_checksum = format::header_checksum(&prefix);
        prefix[..HEADER_SIZE].copy_from_slice(bytemuck::bytes_of(&h));
        prefix
    }
}

/// Places the `expected` tensors (taken from `by_name`) in canonical order
/// from `data_offset`, each aligned to `MIN_TENSOR_ALIGNMENT`, and picks their
/// stored dtypes. Returns the plan and the file size. Errors:
/// `MissingTensor`, `ShapeMismatch`, `Unsupported` on overflow.
fn plan_tensors<'a>(
    expected: &[(String, Vec<u64>)],
    by_name: &HashMap<&str, &'a IrTensor>,
    data_offset: u64,
    opts: &WriteOptions,
) -> Result<(Vec<Planned<'a>>, u64)> {
    let mut planned = Vec::with_capacity(expected.len());
    let mut cursor = data_offset;
    for (name, shape) in expected {
        let t = *by_name
            .get(name.as_str())
            .ok_or_else(|| ConvertError::from(ember_runtime::Error::MissingTensor(name.clone())))?;
        if &t.shape != shape {
            return Err(ember_runtime::Error::ShapeMismatch {
                name: name.clone(),
                expected: shape.clone(),
                actual: t.shape.clone(),
            }
            .into());
        }
        let dtype = stored_dtype(name, shape, t, opts);
        let count: u64 = shape.iter().product();
        let nbytes = dtype.bytes_for(count).ok_or_else(too_large)?;
        let offset = align_up(cursor, MIN_TENSOR_ALIGNMENT).ok_or_else(too_large)?;
        cursor = offset.checked_add(nbytes).ok_or_else(too_large)?;
        let mut s = [0u64; MAX_DIMS];
        s[..shape.len()].copy_from_slice(shape);
        planned.push(Planned {
            tensor: t,
            dtype,
            shape: s,
            n_dims: shape.len(),
            offset,
            nbytes,
        });
    }
    Ok((planned, cursor))
}

/// The dtype tensor `name` of `shape` (source `t`) is stored in: f32 for
/// vectors; for matrices, `opts.dtype` under the mixed policy (tiled when the
/// shape allows), or with `Auto` the source's native dtype, else f32.
fn stored_dtype(name: &str, shape: &[u64], t: &IrTensor, opts: &WriteOptions) -> DType {
    if shape.len() == 1 {
        return DType::F32;
    }
    match opts.dtype {
        DTypeChoice::Fixed(d) => tiled_if_possible(
            mixed_policy(name, shape[shape.len() - 1], d, opts.embed_dtype),
            shape,
        ),
        DTypeChoice::Auto => t.source.native_dtype().unwrap_or(DType::F32),
    }
}

/// The temporary output file, written from `data_offset` on while the
/// tensors are encoded; the prefix goes in last (`finish`).
struct DataWriter<'a> {
    w: BufWriter<File>,
    path: &'a Path,
    /// Absolute offset where the next write starts.
    pos: u64,
}

impl<'a> DataWriter<'a> {
    /// A buffered writer on `tmp`, positioned at `data_offset`. Errors: `Io`.
    fn new(tmp: &'a NamedTempFile, data_offset: u64) -> Result<Self> {
        let io = |e| ConvertError::io(tmp.path(), e);
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file().try_clone().map_err(io)?);
        w.seek(SeekFrom::Start(data_offset)).map_err(io)?;
        Ok(Self {
            w,
            path: tmp.path(),
            pos: data_offset,
        })
    }

    /// Writes `bytes`, the stored data of `p`, at `p.offset` (not before the
    /// current position), zero-filling the gap. Errors: `Io`.
    fn write_tensor(&mut self, p: &Planned, bytes: &[u8]) -> Result<()> {
        let io = |e| ConvertError::io(self.path, e);
        let pad = p.offset - self.pos;
        self.w.write_all(&vec![0u8; pad as usize]).map_err(io)?;
        self.w.write_all(bytes).map_err(io)?;
        self.pos = p.offset + p.nbytes;
        Ok(())
    }

    /// Writes `prefix` at offset 0, sets the length to `file_size` and syncs
    /// the file to disk. Errors: `Io`.
    fn finish(self, prefix: &[u8], file_size: u64) -> Result<()> {
        let io = |e| ConvertError::io(self.path, e);
        let mut w = self.w;
        w.seek(SeekFrom::Start(0)).map_err(io)?;
        w.write_all(prefix).map_err(io)?;
        let file: File = w.into_inner().map_err(|e| io(e.into_error()))?;
        file.set_len(file_size).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(())
    }
}

/// Encodes and writes every planned tensor (stored rotated where `rotated`
/// says), checking for an interrupt before each. Returns the directory
/// entries in plan order and how many tensors were raw copies. Errors:
/// `Interrupted`, a source's error, `Tensor` for a source of the wrong size,
/// `Io`.
fn write_tensor_data(
    data: &mut DataWriter,
    planned: &[Planned],
    rotated: &[bool],
    opts: &WriteOptions,
    bar: &Progress,
) -> Result<(Vec<DirEntry>, usize)> {
    let mut entries = Vec::with_capacity(planned.len());
    let mut raw_copies = 0;
    for (p, &rotate) in planned.iter().zip(rotated) {
        if opts.interrupted() {
            return Err(ConvertError::Interrupted);
        }
        bar.set_message(p.tensor.name.clone());
        let (bytes, copied) = stored_bytes(p, rotate, opts)?;
        raw_copies += usize::from(copied);
        debug_assert_eq!(bytes.len() as u64, p.nbytes);
        data.write_tensor(p, &bytes)?;
        entries.push(dir_entry(p, &bytes, rotate)?);
        bar.inc(p.nbytes);
    }
    Ok((entries, raw_copies))
}

/// The stored bytes of `p`, and whether they are a raw copy: the source's
/// blocks when it holds them in `p`'s dtype and orientation, else its values
/// encoded (rotated if `rotate`). Errors: the source's, `Tensor` on a size
/// mismatch.
fn stored_bytes(p: &Planned, rotate: bool, opts: &WriteOptions) -> Result<(Vec<u8>, bool)> {
    let source = &p.tensor.source;
    let copy = if source.raw_rotated() == rotate || !p.dtype.is_quantized() {
        source.raw_as(p.dtype.untiled())
    } else {
        None
    };
    match copy {
        Some(raw) => Ok((copied_bytes(p, raw?)?, true)),
        None => Ok((encoded_bytes(p, rotate, opts)?, false)),
    }
}

/// The source blocks `raw` of `p` in its stored layout (row-interleaved for a
/// tiled dtype). Errors: `Tensor` when `raw` is not `p.nbytes` long.
fn copied_bytes(p: &Planned, raw: Vec<u8>) -> Result<Vec<u8>> {
    let raw = if p.dtype.is_tiled() && raw.len() as u64 == p.nbytes {
        interleave_bytes(&raw, p.dtype, p.cols())
    } else {
        raw
    };
    if raw.len() as u64 != p.nbytes {
        return Err(ConvertError::Tensor {
            name: p.tensor.name.clone(),
            reason: format!("source holds {} bytes, expected {}", raw.len(), p.nbytes),
        });
    }
    Ok(raw)
}

/// The source values of `p` encoded as its dtype: rotated if `rotate`, else
/// weighted by `opts.importance` where it has an entry. Errors: the source's,
/// `Tensor` when the source yields the wrong number of values.
fn encoded_bytes(p: &Planned, rotate: bool, opts: &WriteOptions) -> Result<Vec<u8>> {
    let values = p.tensor.source.to_f32()?;
    let count = p.count();
    if values.len() as u64 != count {
        return Err(ConvertError::Tensor {
            name: p.tensor.name.clone(),
            reason: format!(
                "source produced {} values for {count} elements",
                values.len()
            ),
        });
    }
    Ok(if rotate {
        encode_rotated(values, p.dtype, p.cols())
    } else {
        let importance = opts.importance.and_then(|m| m.get(&p.tensor.name));
        encode_weighted(&values, p.dtype, p.cols(), importance.map(Vec::as_slice))
    })
}

/// The directory entry of `p`, whose stored data is `bytes`. Errors: a name
/// the directory cannot hold.
fn dir_entry(p: &Planned, bytes: &[u8], rotate: bool) -> Result<DirEntry> {
    let mut e = DirEntry::zeroed();
    e.name = DirEntry::encode_name(&p.tensor.name)?;
    e.dtype = p.dtype as u32;
    e.n_dims = p.n_dims as u32;
    e.shape = p.shape;
    e.offset = p.offset;
    e.nbytes = p.nbytes;
    e.checksum = format::tensor_checksum(bytes);
    e.flags = if rotate { tensor_flags::ROTATED } else { 0 };
    Ok(e)
}

/// The summary of a file of `file_size` bytes written to `out` from
/// `planned` (`rotated`: the rotation plan), timed from `start`.
fn summarize(
    out: &Path,
    planned: &[Planned],
    rotated: &[bool],
    raw_copies: usize,
    file_size: u64,
    start: Instant,
) -> WriteSummary {
    WriteSummary {
        path: out.to_path_buf(),
        file_bytes: file_size,
        tensors: planned.len(),
        params: planned.iter().map(Planned::count).sum(),
        dtype_counts: count_by(planned, |p| p.dtype.name().to_string()),
        source_dtype_counts: count_by(planned, |p| p.tensor.source.source_dtype()),
        raw_copies,
        rotated: rotated.iter().filter(|&&r| r).count(),
        elapsed: start.elapsed(),
    }
}

/// How many planned tensors have each `key`, in order of first appearance.
fn count_by(planned: &[Planned], key: impl Fn(&Planned) -> String) -> Vec<(String, usize)> {
    let mut v: Vec<(String, usize)> = Vec::new();
    for p in planned {
        let k = key(p);
        match v.iter_mut().find(|(n, _)| *n == k) {
            Some((_, c)) => *c += 1,
            None => v.push((k, 1)),
        }
    }
    v
}

/// The row-interleaved variant of a block type for a matrix whose row count
/// allows it (2-D, rows a multiple of `TILE_ROWS`): the layout the matrix
/// kernels read as one stream. Other dtypes and shapes are returned unchanged.
pub fn tiled_if_possible(d: DType, shape: &[u64]) -> DType {
    let tileable =
        shape.len() == 2 && shape[0].is_multiple_of(ember_kernels::blocks::TILE_ROWS as u64);
    if tileable {
        d.tiled()
    } else {
        d
    }
}

/// Permutes the plain row-major blocks of a `[rows, cols]` matrix (`bytes`, of
/// `dtype.untiled()`) into the row-interleaved layout of `dtype`.
fn interleave_bytes(bytes: &[u8], dtype: DType, cols: usize) -> Vec<u8> {
    use ember_kernels::blocks::{interleave_rows, BlockIq4Nl, BlockQ4_0, BlockQ8_0, QK};
    let nb = cols / QK;
    match dtype {
        DType::Q8_0X4 => {
            let src: &[BlockQ8_0] = bytemuck::cast_slice(bytes);
            let mut dst = src.to_vec();
            interleave_rows(src, nb, &mut dst);
            bytemuck::cast_slice(&dst).to_vec()
        }
        DType::Q4_0X4 => {
            let src: &[BlockQ4_0] = bytemuck::cast_slice(bytes);
            let mut dst = src.to_vec();
            interleave_rows(src, nb, &mut dst);
            bytemuck::cast_slice(&dst).to_vec()
        }
        DType::Iq4NlX4 => {
            let src: &[BlockIq4Nl] = bytemuck::cast_slice(bytes);
            let mut dst = src.to_vec();
            interleave_rows(src, nb, &mut dst);
            bytemuck::cast_slice(&dst).to_vec()
        }
        _ => bytes.to_vec(),
    }
}

/// Encodes f32 values of a tensor whose rows have `cols` elements as
/// little-endian bytes of `dtype`: float types round to nearest even; block
/// types quantize consecutive runs of 32 values with the reference quantizers
/// (`cols` a multiple of 32, so rows are whole blocks); row-interleaved types
/// are quantized row by row, then permuted (`values.len()` a multiple of
/// `TILE_ROWS * cols`).
pub fn encode(values: &[f32], dtype: DType, cols: usize) -> Vec<u8> {
    encode_weighted(values, dtype, cols, None)
}

/// `encode` with per-column error weights for the block types (`importance`:
/// one non-negative value per column, see `crate::quantize`); float types
/// ignore them. `None` gives exactly `encode`'s reference quantization.
pub fn encode_weighted(
    values: &[f32],
    dtype: DType,
    cols: usize,
    importance: Option<&[f32]>,
) -> Vec<u8> {
    use ember_kernels::blocks::{BlockQ4_0, BlockQ8_0, QK};
    use ember_kernels::scalar;
    if let Some(imp) = importance.filter(|i| i.len() == cols && dtype.block_elems() > 1) {
        return encode_rows_weighted(values, dtype, cols, imp);
    }
    match dtype {
        DType::Q8_0X4 | DType::Q4_0X4 | DType::Iq4NlX4 => {
            interleave_bytes(&encode(values, dtype.untiled(), cols), dtype, cols)
        }
        DType::F32 => bytemuck::cast_slice(values).to_vec(),
        DType::F16 => {
            let v: Vec<f16> = values.iter().map(|&x| f16::from_f32(x)).collect();
            bytemuck::cast_slice(&v).to_vec()
        }
        DType::BF16 => {
            let v: Vec<bf16> = values.iter().map(|&x| bf16::from_f32(x)).collect();
            bytemuck::cast_slice(&v).to_vec()
        }
        DType::Q8_0 => {
            let mut b = vec![BlockQ8_0::zeroed(); values.len() / QK];
            scalar::quantize_row_q8_0(values, &mut b);
            bytemuck::cast_slice(&b).to_vec()
        }
        DType::Q4_0 => {
            let mut b = vec![BlockQ4_0::zeroed(); values.len() / QK];
            scalar::quantize_row_q4_0(values, &mut b);
            bytemuck::cast_slice(&b).to_vec()
        }
        DType::Iq4Nl => {
            let mut b = vec![ember_kernels::blocks::BlockIq4Nl::zeroed(); values.len() / QK];
            scalar::quantize_row_iq4_nl(values, &mut b);
            bytemuck::cast_slice(&b).to_vec()
        }
    }
}

/// Encodes a block-type matrix stored rotated: each block of each row is
/// rotated (`ember_kernels::scalar::hadamard32`), then quantized with the
/// error-minimising scale search of `crate::quantize` under equal weights.
/// Per-column importance does not carry over to the rotated basis (each rotated
/// element mixes its block's 32 columns, so its weight would be the block's
/// mean), and equal weights are what that mean gives within a block.
fn encode_rotated(mut values: Vec<f32>, dtype: DType, cols: usize) -> Vec<u8> {
    ember_kernels::scalar::hadamard32(&mut values);
    encode_rows_weighted(&values, dtype, cols, &vec![1.0; cols])
}

/// Rows quantized per rayon job, at least: enough work per job that
/// scheduling costs nothing next to it.
const ROWS_PER_JOB: usize = 16;

/// Quantizes each row of a block-type matrix with the importance-weighted
/// quantizer of its type (`imp`: one weight per column, the same for every
/// row), rows in parallel on rayon's global pool.
fn encode_rows_weighted(values: &[f32], dtype: DType, cols: usize, imp: &[f32]) -> Vec<u8> {
    use crate::quantize::{quantize_row_q4_0_weighted, quantize_row_q8_0_weighted};
    use ember_kernels::blocks::{BlockIq4Nl, BlockQ4_0, BlockQ8_0, QK};
    use ember_kernels::scalar::quantize_row_iq4_nl_weighted;
    fn rows<B: bytemuck::Pod + Zeroable + Send>(
        values: &[f32],
        cols: usize,
        imp: &[f32],
        f: fn(&[f32], Option<&[f32]>, &mut [B]),
    ) -> Vec<u8> {
        use rayon::prelude::*;
        let mut b = vec![B::zeroed(); values.len() / QK];
        // Rows are independent (each row's blocks depend only on its values
        // and `imp`), so splitting them over threads changes no bit.
        values
            .par_chunks_exact(cols)
            .zip(b.par_chunks_exact_mut(cols / QK))
            .with_min_len(ROWS_PER_JOB)
            .for_each(|(x, out)| f(x, Some(imp), out));
        bytemuck::cast_slice(&b).to_vec()
    }
    let plain = match dtype.untiled() {
        DType::Q8_0 => rows::<BlockQ8_0>(values, cols, imp, quantize_row_q8_0_weighted),
        DType::Q4_0 => rows::<BlockQ4_0>(values, cols, imp, quantize_row_q4_0_weighted),
        DType::Iq4Nl => rows::<BlockIq4Nl>(values, cols, imp, quantize_row_iq4_nl_weighted),
        _ => return encode(values, dtype, cols),
    };
    if dtype.is_tiled() {
        interleave_bytes(&plain, dtype, cols)
    } else {
        plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::F32Source;
    use ember_runtime::format::{flags, names, Activation, Architecture, NormKind, RopePairing};
    use ember_runtime::tokenizer::{PreSplit, TokenType, TokenizerKind, TokenizerSpec};

    fn tiny_ir() -> ModelIr {
        let hparams = ember_runtime::format::HyperParams {
            architecture: Architecture::Llama as u32,
            activation: Activation::Silu as u32,
            dim: 8,
            n_layers: 1,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 4,
            ffn_dim: 16,
            vocab_size: 4,
            max_context: 16,
            rope_pairing: RopePairing::Half as u32,
            rope_dim: 4,
            rope_theta: 10000.0,
            rope_scaling_factor: 1.0,
            norm: NormKind::RmsNorm as u32,
            norm_eps: 1e-5,
            flags: flags::TIED_OUTPUT,
            ..Default::default()
        };
        let tensors = format::expected_tensors(&hparams)
            .into_iter()
            .map(|(name, shape)| {
                let n = shape.iter().product::<u64>() as usize;
                IrTensor {
                    name,
                    shape,
                    source: Box::new(F32Source(vec![0.5; n])),
                }
            })
            .collect();
        let tokens: Vec<String> = ["<unk>", "<s>", "</s>", "a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        ModelIr {
            hparams,
            tensors,
            tokenizer: TokenizerSpec {
                schema: ember_runtime::tokenizer::TOKENIZER_SCHEMA,
                kind: TokenizerKind::SentencePieceBpe,
                pre_split: PreSplit::None,
                scores: vec![0.0; 4],
                token_types: vec![
                    TokenType::Unknown,
                    TokenType::Control,
                    TokenType::Control,
                    TokenType::Normal,
                ],
                tokens,
                merges: vec![],
                bos: Some(1),
                eos: Some(2),
                unk: Some(0),
                pad: None,
                eog: vec![],
                add_bos: true,
                add_eos: false,
                add_space_prefix: false,
                byte_fallback: false,
            },
            chat_template: None,
            metadata: vec![],
        }
    }

    fn no_temporaries(dir: &Path) -> bool {
        std::fs::read_dir(dir)
            .unwrap()
            .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp"))
    }

    #[test]
    fn interrupt_leaves_no_output_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.ember");
        let flag = AtomicBool::new(true);
        let opts = WriteOptions {
            interrupt: Some(&flag),
            ..Default::default()
        };
        assert!(matches!(
            write_model(&tiny_ir(), &out, &opts),
            Err(ConvertError::Interrupted)
        ));
        assert!(!out.exists());
        assert!(no_temporaries(dir.path()));
    }

    #[test]
    fn failing_source_leaves_previous_output_untouched() {
        struct Broken;
        impl crate::ir::TensorSource for Broken {
            fn source_dtype(&self) -> String {
                "broken".into()
            }
            fn native_dtype(&self) -> Option<DType> {
                None
            }
            fn to_f32(&self) -> Result<Vec<f32>> {
                Err(ConvertError::Tensor {
                    name: "x".into(),
                    reason: "read error".into(),
                })
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.ember");
        std::fs::write(&out, b"previous contents").unwrap();
        let mut ir = tiny_ir();
        let last = ir
            .tensors
            .iter_mut()
            .find(|t| t.name == names::NORM)
            .unwrap();
        last.source = Box::new(Broken);
        assert!(write_model(&ir, &out, &WriteOptions::default()).is_err());
        assert_eq!(std::fs::read(&out).unwrap(), b"previous contents");
        assert!(no_temporaries(dir.path()));
    }

    #[test]
    fn written_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.ember");
        let s = write_model(&tiny_ir(), &out, &WriteOptions::default()).unwrap();
        assert_eq!(s.file_bytes, std::fs::metadata(&out).unwrap().len());
        let m = ember_runtime::Model::load(&out).unwrap();
        m.verify_checksums().unwrap();
    }
}
