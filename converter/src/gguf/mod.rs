//! GGUF (v2/v3) reader: header, metadata, tensor infos, dequantization, and the
//! mapping of `llama`-family GGUF files onto the converter's `ModelIr`.
//!
//! - `reader`: the container (validated; tensor bytes read on demand).
//! - `types`: ggml type ids and block sizes.
//! - `dequant`: block layouts and decoding to f32.
//! - this module: architecture support, hyperparameters and tensor names.
//!
//! Supported architectures:
//! - `llama` (also used by llama.cpp for Mistral, SmolLM, TinyLlama …):
//!   `RopePairing::Interleaved`. llama.cpp's HF→GGUF converter permutes the rows of
//!   `attn_q` / `attn_k` so that the rotate-half pairs `(i, i + d/2)` of the Hugging
//!   Face weights become adjacent pairs `(2i, 2i + 1)`; ggml then applies "normal"
//!   (interleaved) RoPE. Keeping the rows as stored and using interleaved RoPE is
//!   therefore exact, and no un-permutation is done here.
//! - `qwen2`: `RopePairing::Half`. llama.cpp applies NEOX-style (rotate-half) RoPE
//!   to qwen2 and its converter does not permute Q/K; q/k/v carry biases.

use std::collections::BTreeMap;

pub mod dequant;
pub mod reader;
pub mod types;

pub use reader::{GgufFile, GgufTensorInfo};
pub use types::GgmlType;

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

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// The value as a float, if it is an f32 or f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => None,
        }
    }
    /// The value as text, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }
}

/// All metadata key/value pairs of a GGUF file.
pub type GgufMetadata = BTreeMap<String, GgufValue>;

use std::path::Path;
use std::sync::Arc;

use ember_runtime::format::{
    expected_tensors, flags, names, Activation, Architecture, DType, HyperParams, Metadata,
    NormKind, RopePairing, RopeScaling,
};

use crate::error::{ConvertError, Result};
use crate::ir::{IrTensor, ModelIr, TensorSource};
use crate::rope::{yarn_mscale, yarn_range};
use reader::ByteSource;

/// RoPE base frequency when `{arch}.rope.freq_base` is absent (llama.cpp's default).
pub const DEFAULT_ROPE_THETA: f32 = 10_000.0;

/// `v` rounded up to a multiple of the power of two `align`; `None` on overflow.
pub(crate) fn align_up_checked(v: u64, align: u64) -> Option<u64> {
    v.checked_add(align - 1).map(|x| x & !(align - 1))
}

/// Reads a GGUF checkpoint of a supported architecture into a `ModelIr`.
///
/// Tensor data is not read here: each `IrTensor` decodes its bytes from the file
/// when asked. Errors: `Io` for unreadable files, `Gguf` for malformed content,
/// `Unsupported` for valid files this converter cannot represent (other
/// architectures, MoE, llama3 RoPE factors, undecodable quant types, …),
/// `ChatTemplate` for a chat template that fails `ember_runtime::chat::check`.
pub fn load(path: &Path) -> Result<ModelIr> {
    let file = GgufFile::open(path)?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let weights = map_weights(&file, file_name.as_deref())?;
    let tokenizer = crate::tokenizer_import::gguf::from_gguf_metadata(&file.metadata)?;
    let chat_template = match file.metadata.get("tokenizer.chat_template") {
        None => None,
        Some(GgufValue::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ConvertError::Gguf(
                "tokenizer.chat_template is not a string".into(),
            ))
        }
    };
    if let Some(t) = &chat_template {
        ember_runtime::chat::check(t, "", "").map_err(|source| ConvertError::ChatTemplate {
            origin: format!("{}: tokenizer.chat_template", path.display()),
            source,
        })?;
    }
    Ok(ModelIr {
        hparams: weights.hparams,
        tensors: weights.tensors,
        tokenizer,
        chat_template,
        metadata: weights.metadata,
    })
}

/// Everything `load` derives from a GGUF file except the tokenizer and chat template.
pub struct GgufWeights {
    /// Validated (`HyperParams::validate`).
    pub hparams: HyperParams,
    /// Exactly `expected_tensors(&hparams)`, with matching shapes, in file order.
    pub tensors: Vec<IrTensor>,
    pub metadata: Metadata,
}

/// Maps a parsed GGUF file onto hyperparameters, canonical tensors and metadata.
/// `file_name` is recorded as `source.file`. Errors: as for `load`.
pub fn map_weights(file: &GgufFile, file_name: Option<&str>) -> Result<GgufWeights> {
    let arch = file
        .get_str("general.architecture")
        .ok_or_else(|| {
            ConvertError::Gguf("general.architecture is missing or not a string".into())
        })?
        .to_string();
    let family = Family::of(&arch)?;
    let m = Meta {
        md: &file.metadata,
        arch: &arch,
    };

    if m.opt_u32("expert_count")?.unwrap_or(0) > 0 {
        return Err(ConvertError::Unsupported(format!(
            "{arch}: mixture-of-experts models"
        )));
    }

    // Tensors: map names first, since the vocabulary size and the optional-tensor
    // flags come from what is present.
    let n_layers = m.req_u32("block_count")?;
    let SortedTensors {
        mut mapped,
        fused,
        skipped,
        flags: tensor_flags,
    } = sort_tensors(file, n_layers, family)?;
    let vocab = vocab_size(&m, &mapped)?;

    let hparams = hyperparams(&m, n_layers, vocab, family, tensor_flags)?;
    hparams.validate()?;
    split_fused(&mut mapped, fused, &hparams)?;
    check_tensor_set(&mapped, &expected_tensors(&hparams))?;

    Ok(GgufWeights {
        hparams,
        tensors: lazy_tensors(file, &mapped),
        metadata: source_metadata(file, file_name, &arch, &skipped),
    })
}

/// The tensors of a GGUF file sorted by where they go (see `Mapped`), each
/// list in file order.
struct SortedTensors<'a> {
    /// Tensors with a canonical name.
    mapped: Vec<(String, GgufTensorInfo)>,
    /// Fused matrices and their layers, split once the hyperparameters are known.
    fused: Vec<(Fused, usize, &'a GgufTensorInfo)>,
    /// GGUF names of the redundant tensors left out.
    skipped: Vec<&'a str>,
    /// The family's flags, plus those the present optional tensors imply
    /// (`TIED_OUTPUT` when there is no output matrix).
    flags: u32,
}

/// Sorts the tensors of `file` by `canonical_name`. Errors: those of
/// `canonical_name`.
fn sort_tensors(file: &GgufFile, n_layers: u32, family: Family) -> Result<SortedTensors<'_>> {
    let mut sorted = SortedTensors {
        mapped: Vec::new(),
        fused: Vec::new(),
        skipped: Vec::new(),
        flags: family.flags,
    };
    for t in &file.tensors {
        match canonical_name(&t.name, n_layers, family)? {
            Mapped::To(name) => {
                sorted.flags |= flag_for(&name);
                sorted.mapped.push((name, t.clone()));
            }
            Mapped::Fused(kind, layer) => sorted.fused.push((kind, layer, t)),
            Mapped::Skip => sorted.skipped.push(&t.name),
        }
    }
    if !sorted.mapped.iter().any(|(n, _)| n == names::OUTPUT) {
        sorted.flags |= flags::TIED_OUTPUT;
    }
    Ok(sorted)
}

/// The vocabulary size: the row count of `token_embd.weight`, which must
/// agree with `{arch}.vocab_size` when present. Errors: `Gguf`.
fn vocab_size(m: &Meta<'_>, mapped: &[(String, GgufTensorInfo)]) -> Result<u32> {
    let embd = mapped
        .iter()
        .find(|(n, _)| n == names::TOK_EMBEDDINGS)
        .map(|(_, t)| t)
        .ok_or_else(|| ConvertError::Gguf("tensor token_embd.weight is missing".into()))?;
    if embd.ne.len() != 2 {
        return Err(ConvertError::Gguf(format!(
            "token_embd.weight must be a matrix, has dims {:?}",
            embd.ne
        )));
    }
    let vocab = u32::try_from(embd.ne[1])
        .map_err(|_| ConvertError::Gguf(format!("vocabulary size {} too large", embd.ne[1])))?;
    if let Some(v) = m.opt_u32("vocab_size")? {
        if v != vocab {
            return Err(ConvertError::Gguf(format!(
                "{}.vocab_size = {v} but token_embd.weight has {vocab} rows",
                m.arch
            )));
        }
    }
    Ok(vocab)
}

/// Appends the canonical matrices of each fused matrix to `mapped`: its row
/// ranges, sized by `hparams`. Errors: `Gguf` when the rows do not add up.
fn split_fused(
    mapped: &mut Vec<(String, GgufTensorInfo)>,
    fused: Vec<(Fused, usize, &GgufTensorInfo)>,
    hparams: &HyperParams,
) -> Result<()> {
    for (kind, layer, t) in fused {
        let mut r0 = 0;
        for (name, rows) in kind.parts(hparams, layer) {
            mapped.push((name, row_slice(t, r0, rows)?));
            r0 += rows;
        }
        if Some(&r0) != t.ne.get(1) || t.ne.len() != 2 {
            return Err(ConvertError::Gguf(format!(
                "fused tensor {} has dims {:?}, but the hyperparameters imply {r0} rows",
                t.name, t.ne
            )));
        }
    }
    Ok(())
}

/// Checks that `mapped` is exactly the `expected` set, with the expected
/// shapes and decodable types. Errors: `Gguf` for a duplicate, missing,
/// misshapen or unexpected tensor; `Unsupported` for an undecodable type.
fn check_tensor_set(
    mapped: &[(String, GgufTensorInfo)],
    expected: &[(String, Vec<u64>)],
) -> Result<()> {
    let mut by_name: BTreeMap<&str, &GgufTensorInfo> = BTreeMap::new();
    for (name, t) in mapped {
        if by_name.insert(name.as_str(), t).is_some() {
            return Err(ConvertError::Gguf(format!(
                "two GGUF tensors map onto {name}"
            )));
        }
    }
    for (name, shape) in expected {
        let t = by_name.get(name.as_str()).ok_or_else(|| {
            ConvertError::Gguf(format!(
                "tensor {} (canonical {name}) is missing",
                gguf_name_of(name)
            ))
        })?;
        if &t.shape() != shape {
            return Err(ConvertError::Gguf(format!(
                "tensor {} has shape {:?} (ggml ne {:?}) but {name} must be {shape:?}",
                t.name,
                t.shape(),
                t.ne
            )));
        }
        if !t.ggml_type.can_dequantize() {
            return Err(ConvertError::Unsupported(format!(
                "tensor {}: ggml type {} cannot be decoded",
                t.name,
                t.ggml_type.name()
            )));
        }
    }
    if mapped.len() != expected.len() {
        // Only possible if a present tensor is not expected for these hparams.
        let unexpected: Vec<&str> = mapped
            .iter()
            .filter(|(n, _)| !expected.iter().any(|(e, _)| e == n))
            .map(|(_, t)| t.name.as_str())
            .collect();
        return Err(ConvertError::Gguf(format!(
            "unexpected tensors {unexpected:?}"
        )));
    }
    Ok(())
}

/// The `mapped` tensors as IR tensors that read their data from `file` when
/// asked.
fn lazy_tensors(file: &GgufFile, mapped: &[(String, GgufTensorInfo)]) -> Vec<IrTensor> {
    let source = file.source();
    mapped
        .iter()
        .map(|(name, t)| IrTensor {
            name: name.clone(),
            shape: t.shape(),
            source: Box::new(GgufTensorSource {
                src: Arc::clone(&source),
                info: t.clone(),
            }),
        })
        .collect()
}

/// The `.ember` metadata recording where the model came from: `file_name`,
/// the GGUF name, license, version, architecture `arch`, the count of each
/// tensor type and the `skipped` tensors.
fn source_metadata(
    file: &GgufFile,
    file_name: Option<&str>,
    arch: &str,
    skipped: &[&str],
) -> Metadata {
    let mut metadata: Metadata = vec![("source.kind".into(), "gguf".into())];
    if let Some(f) = file_name {
        metadata.push(("source.file".into(), f.to_string()));
    }
    if let Some(n) = file.get_str("general.name") {
        metadata.push(("model.name".into(), n.to_string()));
    }
    if let Some(l) = file.get_str("general.license") {
        metadata.push(("license".into(), l.to_string()));
    }
    metadata.push(("gguf.version".into(), file.version.to_string()));
    metadata.push(("gguf.architecture".into(), arch.to_string()));
    let mut counts: BTreeMap<GgmlType, usize> = BTreeMap::new();
    for t in &file.tensors {
        *counts.entry(t.ggml_type).or_default() += 1;
    }
    let counts: Vec<String> = counts
        .iter()
        .map(|(t, n)| format!("{}={n}", t.name()))
        .collect();
    metadata.push(("gguf.tensor_types".into(), counts.join(",")));
    if !skipped.is_empty() {
        metadata.push(("gguf.skipped_tensors".into(), skipped.join(",")));
    }
    metadata
}

/// What a supported GGUF architecture implies beyond its metadata keys
/// (llama.cpp's conventions for it).
#[derive(Clone, Copy, Debug)]
struct Family {
    name: &'static str,
    /// `llama`: llama.cpp's converter permuted Q/K rows for interleaved
    /// pairs; the others use rotate-half RoPE on unpermuted rows.
    pairing: RopePairing,
    /// Flags every file of the family has.
    flags: u32,
    activation: Activation,
    /// Gemma 3: norm weights stored as `1 + w` already, embeddings scaled by
    /// `sqrt(dim)`, every sixth layer global, `rope.freq_base_swa` for the rest.
    gemma3: bool,
    /// Phi-3: `attn_qkv` and `ffn_up` (gate then up) are fused matrices.
    phi3: bool,
}

impl Family {
    const ALL: [Family; 5] = [
        Family {
            name: "llama",
            pairing: RopePairing::Interleaved,
            flags: 0,
            activation: Activation::Silu,
            gemma3: false,
            phi3: false,
        },
        Family {
            name: "qwen2",
            pairing: RopePairing::Half,
            flags: flags::QKV_BIAS,
            activation: Activation::Silu,
            gemma3: false,
            phi3: false,
        },
        Family {
            name: "qwen3",
            pairing: RopePairing::Half,
            flags: flags::QK_NORM,
            activation: Activation::Silu,
            gemma3: false,
            phi3: false,
        },
        Family {
            name: "gemma3",
            pairing: RopePairing::Half,
            flags: flags::QK_NORM | flags::POST_ATTN_NORM | flags::POST_FFN_NORM,
            activation: Activation::GeluTanh,
            gemma3: true,
            phi3: false,
        },
        Family {
            name: "phi3",
            pairing: RopePairing::Half,
            flags: 0,
            activation: Activation::Silu,
            gemma3: false,
            phi3: true,
        },
    ];

    fn of(arch: &str) -> Result<Family> {
        Self::ALL
            .into_iter()
            .find(|f| f.name == arch)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|f| f.name).collect();
                ConvertError::Unsupported(format!(
                    "GGUF architecture {arch:?} (supported: {})",
                    names.join(", ")
                ))
            })
    }
}

/// Gemma 3 layers attend globally every this many (llama.cpp's fixed pattern
/// when the file has no `attention.sliding_window_pattern`).
const GEMMA3_SWA_PERIOD: u32 = 6;
/// Gemma 3 27B has 62 layers; llama.cpp scales its queries by
/// `1 / sqrt(dim / n_heads)` instead of `1 / sqrt(head_dim)`.
const GEMMA3_27B_LAYERS: u32 = 62;

fn hyperparams(
    m: &Meta<'_>,
    n_layers: u32,
    vocab: u32,
    family: Family,
    flags: u32,
) -> Result<HyperParams> {
    let dim = m.req_u32("embedding_length")?;
    let n_heads = m.req_u32("attention.head_count")?;
    let n_kv_heads = m.opt_u32("attention.head_count_kv")?.unwrap_or(n_heads);
    let head_dim = match m.opt_u32("attention.key_length")? {
        Some(k) => k,
        None => {
            if n_heads == 0 || dim % n_heads != 0 {
                return Err(ConvertError::Gguf(format!(
                    "{}.attention.key_length is absent and embedding_length {dim} is not a multiple of head_count {n_heads}",
                    m.arch
                )));
            }
            dim / n_heads
        }
    };
    if let Some(v) = m.opt_u32("attention.value_length")? {
        if v != head_dim {
            return Err(ConvertError::Unsupported(format!(
                "attention value_length {v} differs from key_length {head_dim}"
            )));
        }
    }
    let ffn_dim = m.req_u32("feed_forward_length")?;
    let max_context = m.req_u32("context_length")?;
    let rope_theta = m.opt_f32("rope.freq_base")?.unwrap_or(DEFAULT_ROPE_THETA);
    let norm_eps = m.req_f32("attention.layer_norm_rms_epsilon")?;
    let rope_dim = m.opt_u32("rope.dimension_count")?.unwrap_or(head_dim);
    let rope = rope_scaling(m, rope_theta, rope_dim, max_context)?;

    // Sliding windows: Gemma 3 (all layers but every sixth) and Phi-3 (all
    // layers) use `attention.sliding_window`; llama.cpp ignores it elsewhere.
    let window = if family.gemma3 || family.phi3 {
        m.opt_u32("attention.sliding_window")?.unwrap_or(0)
    } else {
        0
    };
    let mut extra = HyperParams::default();
    if family.gemma3 {
        extra.embed_scale = (dim as f64).sqrt() as f32;
        extra.logit_softcap = m.opt_f32("final_logit_softcapping")?.unwrap_or(0.0);
        if n_layers == GEMMA3_27B_LAYERS && n_heads != 0 {
            extra.attn_scale = 1.0 / ((dim / n_heads) as f32).sqrt();
        }
        if window > 0 {
            extra.swa_period = m
                .opt_u32("attention.sliding_window_pattern")?
                .unwrap_or(GEMMA3_SWA_PERIOD);
            extra.rope_theta_local = m.opt_f32("rope.freq_base_swa")?.unwrap_or(10_000.0);
        }
    }
    if m.opt_f32("attn_logit_softcapping")?
        .is_some_and(|c| c != 0.0)
    {
        return Err(ConvertError::Unsupported(
            "attention logit soft-capping".into(),
        ));
    }

    Ok(HyperParams {
        architecture: Architecture::Llama as u32,
        activation: family.activation as u32,
        dim,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim,
        ffn_dim,
        vocab_size: vocab,
        max_context,
        sliding_window: window,
        rope_pairing: family.pairing as u32,
        rope_dim,
        rope_theta,
        rope_scaling: rope.scaling as u32,
        rope_scaling_factor: rope.factor,
        rope_low_freq_factor: rope.low,
        rope_high_freq_factor: rope.high,
        rope_original_context: rope.original_context,
        norm: NormKind::RmsNorm as u32,
        norm_eps,
        flags,
        rope_attn_factor: rope.attn_factor,
        ..extra
    }
    .with_extended_flag())
}

/// RoPE scaling from `rope.scaling.*` (or the older `rope.scale_linear`).
struct Scaling {
    scaling: RopeScaling,
    factor: f32,
    low: f32,
    high: f32,
    original_context: u32,
    attn_factor: f32,
}

fn rope_scaling(m: &Meta<'_>, theta: f32, rope_dim: u32, max_context: u32) -> Result<Scaling> {
    let scaling_type = match m.md.get(&m.key("rope.scaling.type")) {
        None => None,
        Some(GgufValue::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(ConvertError::Gguf(format!(
                "{}: expected a string, got {other:?}",
                m.key("rope.scaling.type")
            )))
        }
    };
    let factor = m.opt_f32("rope.scaling.factor")?;
    let legacy_linear = m.opt_f32("rope.scale_linear")?;
    let none = Scaling {
        scaling: RopeScaling::None,
        factor: 1.0,
        low: 0.0,
        high: 0.0,
        original_context: max_context,
        attn_factor: 0.0,
    };
    let original = || -> Result<u32> {
        Ok(m.opt_u32("rope.scaling.original_context_length")?
            .unwrap_or(max_context))
    };
    let need_factor = || {
        factor.or(legacy_linear).ok_or_else(|| {
            ConvertError::Gguf(format!(
                "{} is set but {} is missing",
                m.key("rope.scaling.type"),
                m.key("rope.scaling.factor")
            ))
        })
    };
    Ok(match scaling_type {
        Some("none") => none,
        None => match legacy_linear {
            Some(f) if f != 1.0 => Scaling {
                scaling: RopeScaling::Linear,
                factor: f,
                original_context: original()?,
                ..none
            },
            _ => none,
        },
        Some("linear") => Scaling {
            scaling: RopeScaling::Linear,
            factor: need_factor()?,
            original_context: original()?,
            ..none
        },
        Some("yarn") => {
            let f = need_factor()?;
            let original = original()?;
            let beta_fast = m.opt_f32("rope.scaling.yarn_beta_fast")?.unwrap_or(32.0);
            let beta_slow = m.opt_f32("rope.scaling.yarn_beta_slow")?.unwrap_or(1.0);
            let (low, high) = yarn_range(
                theta as f64,
                rope_dim,
                original,
                beta_fast as f64,
                beta_slow as f64,
                true,
            );
            let attn = m.opt_f32("rope.scaling.attn_factor")?.unwrap_or(1.0) as f64
                * yarn_mscale(f as f64, 1.0);
            Scaling {
                scaling: RopeScaling::Yarn,
                factor: f,
                low: low as f32,
                high: high as f32,
                original_context: original,
                attn_factor: attn as f32,
            }
        }
        Some(other) => {
            // llama3 scaling comes as the rope_freqs tensor (read as frequency
            // factors); longrope is not implemented by the runtime.
            return Err(ConvertError::Unsupported(format!(
                "RoPE scaling type {other:?}"
            )));
        }
    })
}

/// Rows `r0..r0 + rows` of a 2-D GGUF tensor, as a tensor of its own (rows
/// are contiguous whole blocks, so the slice is a byte range of the file).
fn row_slice(t: &GgufTensorInfo, r0: u64, rows: u64) -> Result<GgufTensorInfo> {
    if t.ne.len() != 2 || r0 + rows > t.ne[1] {
        return Err(ConvertError::Gguf(format!(
            "fused tensor {} has dims {:?}, too few rows for {}..{}",
            t.name,
            t.ne,
            r0,
            r0 + rows
        )));
    }
    let row_bytes = t
        .ggml_type
        .row_bytes(t.ne[0])
        .ok_or_else(|| ConvertError::Gguf(format!("tensor {}: bad row length", t.name)))?;
    Ok(GgufTensorInfo {
        name: format!("{}[rows {}..{}]", t.name, r0, r0 + rows),
        ne: vec![t.ne[0], rows],
        ggml_type: t.ggml_type,
        offset: t.offset + r0 * row_bytes,
        n_bytes: rows * row_bytes,
    })
}

/// A fused GGUF matrix whose row ranges are canonical matrices.
#[derive(Clone, Copy, Debug)]
enum Fused {
    /// `attn_qkv`: `[q | k | v]`.
    Qkv,
    /// Phi-3's `ffn_up`: `[gate | up]`.
    GateUp,
}

impl Fused {
    fn parts(self, hp: &HyperParams, layer: usize) -> Vec<(String, u64)> {
        let n = |s: &str| names::layer(layer, s);
        match self {
            Self::Qkv => vec![
                (n(names::WQ), hp.q_dim() as u64),
                (n(names::WK), hp.kv_dim() as u64),
                (n(names::WV), hp.kv_dim() as u64),
            ],
            Self::GateUp => vec![
                (n(names::W_GATE), hp.ffn_dim as u64),
                (n(names::W_UP), hp.ffn_dim as u64),
            ],
        }
    }
}

/// Typed access to `{arch}.*` metadata.
struct Meta<'a> {
    md: &'a GgufMetadata,
    arch: &'a str,
}

impl Meta<'_> {
    fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch)
    }

    /// An integer key that fits u32. Per-layer arrays are accepted only when every
    /// layer has the same value (otherwise `Unsupported`).
    fn opt_u32(&self, suffix: &str) -> Result<Option<u32>> {
        let key = self.key(suffix);
        let one = |v: &GgufValue| -> Result<u32> {
            v.as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| {
                    ConvertError::Gguf(format!(
                        "{key}: expected an unsigned 32-bit integer, got {v:?}"
                    ))
                })
        };
        match self.md.get(&key) {
            None => Ok(None),
            Some(GgufValue::Array(items)) => {
                let vals = items.iter().map(&one).collect::<Result<Vec<u32>>>()?;
                match vals.split_first() {
                    None => Err(ConvertError::Gguf(format!("{key}: empty array"))),
                    Some((first, rest)) if rest.iter().all(|v| v == first) => Ok(Some(*first)),
                    Some(_) => Err(ConvertError::Unsupported(format!(
                        "{key} differs between layers ({vals:?})"
                    ))),
                }
            }
            Some(v) => one(v).map(Some),
        }
    }

    fn req_u32(&self, suffix: &str) -> Result<u32> {
        self.opt_u32(suffix)?
            .ok_or_else(|| ConvertError::Gguf(format!("metadata {} is missing", self.key(suffix))))
    }

    fn opt_f32(&self, suffix: &str) -> Result<Option<f32>> {
        let key = self.key(suffix);
        match self.md.get(&key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|x| Some(x as f32))
                .ok_or_else(|| ConvertError::Gguf(format!("{key}: expected a float, got {v:?}"))),
        }
    }

    fn req_f32(&self, suffix: &str) -> Result<f32> {
        self.opt_f32(suffix)?
            .ok_or_else(|| ConvertError::Gguf(format!("metadata {} is missing", self.key(suffix))))
    }
}

/// Where a GGUF tensor goes.
enum Mapped {
    /// Its canonical `.ember` name.
    To(String),
    /// A fused matrix of layer `N`, split once the hyperparameters are known.
    Fused(Fused, usize),
    /// Redundant data the runtime does not need.
    Skip,
}

/// GGUF per-layer names (`blk.N.<gguf>`) and their canonical suffixes.
const LAYER_NAMES: [(&str, &str); 20] = [
    ("attn_norm.weight", names::ATTN_NORM),
    ("attn_q.weight", names::WQ),
    ("attn_k.weight", names::WK),
    ("attn_v.weight", names::WV),
    ("attn_output.weight", names::WO),
    ("attn_q.bias", names::BQ),
    ("attn_k.bias", names::BK),
    ("attn_v.bias", names::BV),
    ("attn_output.bias", names::BO),
    ("attn_q_norm.weight", names::Q_NORM),
    ("attn_k_norm.weight", names::K_NORM),
    ("post_attention_norm.weight", names::POST_ATTN_NORM),
    ("ffn_norm.weight", names::FFN_NORM),
    ("ffn_gate.weight", names::W_GATE),
    ("ffn_up.weight", names::W_UP),
    ("ffn_down.weight", names::W_DOWN),
    ("ffn_gate.bias", names::B_GATE),
    ("ffn_up.bias", names::B_UP),
    ("ffn_down.bias", names::B_DOWN),
    ("post_ffw_norm.weight", names::POST_FFN_NORM),
];

/// The canonical name of GGUF tensor `name`. Tensors that would change the
/// model's computation but have no canonical slot are `Unsupported`: silently
/// dropping them would produce a wrong model.
fn canonical_name(name: &str, n_layers: u32, family: Family) -> Result<Mapped> {
    match name {
        "token_embd.weight" => return Ok(Mapped::To(names::TOK_EMBEDDINGS.into())),
        "output_norm.weight" => return Ok(Mapped::To(names::NORM.into())),
        "output.weight" => return Ok(Mapped::To(names::OUTPUT.into())),
        "rope_freqs.weight" => return Ok(Mapped::To(names::ROPE_FREQS.into())),
        _ => {}
    }
    let unsupported =
        || ConvertError::Unsupported(format!("tensor {name:?} has no equivalent in .ember"));
    let rest = name.strip_prefix("blk.").ok_or_else(unsupported)?;
    let (layer, suffix) = rest.split_once('.').ok_or_else(unsupported)?;
    let layer: u32 = layer
        .parse()
        .map_err(|_| ConvertError::Gguf(format!("tensor {name:?}: bad layer number")))?;
    if layer >= n_layers {
        return Err(ConvertError::Gguf(format!(
            "tensor {name:?}: layer {layer} but block_count is {n_layers}"
        )));
    }
    // Precomputed rotary inverse frequencies in some old conversions: redundant with
    // rope.freq_base.
    if suffix == "attn_rot_embd" {
        return Ok(Mapped::Skip);
    }
    match (suffix, family.phi3) {
        ("attn_qkv.weight", _) => return Ok(Mapped::Fused(Fused::Qkv, layer as usize)),
        ("ffn_up.weight", true) => return Ok(Mapped::Fused(Fused::GateUp, layer as usize)),
        _ => {}
    }
    let canon = LAYER_NAMES
        .iter()
        .find(|(g, _)| *g == suffix)
        .map(|(_, c)| *c)
        .ok_or_else(unsupported)?;
    Ok(Mapped::To(names::layer(layer as usize, canon)))
}

/// The GGUF name of canonical tensor `canon`, for error messages.
fn gguf_name_of(canon: &str) -> String {
    match canon {
        names::TOK_EMBEDDINGS => "token_embd.weight".into(),
        names::NORM => "output_norm.weight".into(),
        names::OUTPUT => "output.weight".into(),
        _ => {
            let Some((layer, suffix)) = canon
                .strip_prefix("layers.")
                .and_then(|r| r.split_once('.'))
            else {
                return canon.into();
            };
            match LAYER_NAMES.iter().find(|(_, c)| *c == suffix) {
                Some((g, _)) => format!("blk.{layer}.{g}"),
                None => canon.into(),
            }
        }
    }
}

/// The `flags` bit implied by the presence of optional canonical tensor `name`.
fn flag_for(name: &str) -> u32 {
    if name == names::ROPE_FREQS {
        return flags::ROPE_FREQ_FACTORS;
    }
    match name.rsplit('.').next() {
        Some(names::BQ | names::BK | names::BV) => flags::QKV_BIAS,
        Some(names::BO) => flags::ATTN_OUT_BIAS,
        Some(names::B_GATE | names::B_UP | names::B_DOWN) => flags::MLP_BIAS,
        _ => 0,
    }
}

/// A GGUF tensor decoded on demand from the file.
struct GgufTensorSource {
    src: Arc<dyn ByteSource>,
    info: GgufTensorInfo,
}

impl TensorSource for GgufTensorSource {
    fn source_dtype(&self) -> String {
        self.info.ggml_type.name().into()
    }
    fn native_dtype(&self) -> Option<DType> {
        match self.info.ggml_type {
            GgmlType::F32 => Some(DType::F32),
            GgmlType::F16 => Some(DType::F16),
            GgmlType::BF16 => Some(DType::BF16),
            _ => None,
        }
    }
    fn to_f32(&self) -> Result<Vec<f32>> {
        reader::decode(self.src.as_ref(), &self.info)
    }
    /// GGUF Q8_0, Q4_0 and IQ4_NL blocks have exactly the `.ember` layout (f16
    /// scale, then the quants; rows of `ne[0] / 32` blocks, row-major), so they
    /// are copied as stored.
    fn raw_as(&self, dtype: DType) -> Option<Result<Vec<u8>>> {
        self.has_raw(dtype)
            .then(|| reader::read_range(self.src.as_ref(), &self.info))
    }
    fn has_raw(&self, dtype: DType) -> bool {
        matches!(
            (self.info.ggml_type, dtype),
            (GgmlType::Q8_0, DType::Q8_0)
                | (GgmlType::Q4_0, DType::Q4_0)
                | (GgmlType::Iq4Nl, DType::Iq4Nl)
        )
    }
}
