//! Safetensors weights of a Hugging Face checkpoint: a single `model.safetensors`
//! or `model.safetensors.index.json` + shards.
//!
//! Memory: at load time only each shard's JSON header is read (with the
//! `safetensors` crate's `Metadata` parser, which checks that offsets are contiguous
//! and sized by dtype x shape) and the file length is checked against it. Tensor
//! bytes are read on demand, one tensor at a time, by `SafetensorsSource::to_f32`
//! (seek + read). The converter forbids `unsafe`, so shards are not memory-mapped.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ember_runtime::format::{expected_tensors, names, DType, HyperParams};
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::Dtype;
use serde_json::Value;

use crate::error::{ConvertError, Result};
use crate::hf::{HfArch, HfConfig};
use crate::ir::{IrTensor, TensorSource};

/// Single-file weights.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Index of sharded weights.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Upper bound on a safetensors JSON header (the `safetensors` crate's own limit).
const MAX_HEADER_LEN: u64 = 100_000_000;

fn st_err(path: &Path, msg: impl std::fmt::Display) -> ConvertError {
    ConvertError::Safetensors(format!("{}: {msg}", path.display()))
}

/// One tensor inside a shard.
struct Located {
    shard: Arc<PathBuf>,
    /// Absolute byte offset of the first byte in the shard file.
    offset: u64,
    info: TensorInfo,
}

/// Reads and validates one shard's header; returns its tensors.
fn read_shard(path: &Path) -> Result<Vec<(String, Located)>> {
    let mut file = File::open(path).map_err(|e| ConvertError::io(path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| ConvertError::io(path, e))?
        .len();
    if file_len < 8 {
        return Err(st_err(
            path,
            format!("truncated: {file_len} bytes, shorter than the 8-byte header length"),
        ));
    }
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|e| ConvertError::io(path, e))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_LEN {
        return Err(st_err(
            path,
            format!("header length {header_len} is implausibly large (corrupt file?)"),
        ));
    }
    if 8 + header_len > file_len {
        return Err(st_err(
            path,
            format!("truncated: header claims {header_len} bytes but the file has only {file_len}"),
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| ConvertError::io(path, e))?;
    let text = std::str::from_utf8(&header)
        .map_err(|e| st_err(path, format!("header is not UTF-8: {e}")))?;
    ember_runtime::lora::safetensors_names::check_unique_names(text)
        .map_err(|e| st_err(path, e))?;
    let meta: Metadata =
        serde_json::from_str(text).map_err(|e| st_err(path, format!("bad header JSON: {e}")))?;
    let expected_len = 8 + header_len + meta.data_len() as u64;
    if expected_len != file_len {
        return Err(st_err(
            path,
            format!(
                "file is {file_len} bytes but its header describes {expected_len} ({})",
                if file_len < expected_len {
                    "truncated"
                } else {
                    "trailing garbage"
                }
            ),
        ));
    }
    let shard = Arc::new(path.to_path_buf());
    let data_start = 8 + header_len;
    Ok(meta
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let located = Located {
                shard: shard.clone(),
                offset: data_start + info.data_offsets.0 as u64,
                info: info.clone(),
            };
            (name, located)
        })
        .collect())
}

/// The shard files named by an index, checked to lie inside `dir`.
fn read_index(dir: &Path) -> Result<BTreeMap<String, String>> {
    let path = dir.join(INDEX_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| ConvertError::io(&path, e))?;
    let root: Value =
        serde_json::from_str(&text).map_err(|e| st_err(&path, format!("not valid JSON: {e}")))?;
    let map = root
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| st_err(&path, "missing `weight_map` object"))?;
    let mut out = BTreeMap::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| {
            st_err(
                &path,
                format!("weight_map[{tensor:?}] must be a file name, got {file}"),
            )
        })?;
        let p = Path::new(file);
        if file.is_empty()
            || p.components().count() != 1
            || p.is_absolute()
            || file == ".."
            || file == "."
        {
            return Err(st_err(
                &path,
                format!("weight_map[{tensor:?}] = {file:?} is not a plain file name"),
            ));
        }
        out.insert(tensor.clone(), file.to_string());
    }
    if out.is_empty() {
        return Err(st_err(&path, "empty `weight_map`"));
    }
    Ok(out)
}

/// Every tensor of the checkpoint by its Hugging Face name.
fn read_all(dir: &Path) -> Result<BTreeMap<String, Located>> {
    let single = dir.join(SINGLE_FILE);
    let mut all = BTreeMap::new();
    if single.is_file() {
        for (name, t) in read_shard(&single)? {
            all.insert(name, t);
        }
        return Ok(all);
    }
    if !dir.join(INDEX_FILE).is_file() {
        if dir.join("pytorch_model.bin").exists()
            || dir.join("pytorch_model.bin.index.json").exists()
        {
            return Err(ConvertError::Unsupported(format!(
                "{}: PyTorch pickle weights (pytorch_model.bin); save the model as safetensors first",
                dir.display()
            )));
        }
        return Err(ConvertError::Safetensors(format!(
            "{}: neither {SINGLE_FILE} nor {INDEX_FILE} found",
            dir.display()
        )));
    }
    let index = read_index(dir)?;
    let shard_names: BTreeSet<&String> = index.values().collect();
    for shard_name in shard_names {
        let path = dir.join(shard_name);
        if !path.is_file() {
            return Err(ConvertError::Safetensors(format!(
                "{INDEX_FILE} names shard {shard_name:?}, which is not in {}",
                dir.display()
            )));
        }
        for (name, t) in read_shard(&path)? {
            match index.get(&name) {
                Some(f) if f == shard_name => {}
                // A tensor the index places elsewhere (or not at all) is ignored here;
                // the index is authoritative, as in transformers.
                _ => continue,
            }
            all.insert(name, t);
        }
    }
    if let Some((name, file)) = index.iter().find(|(n, _)| !all.contains_key(*n)) {
        return Err(ConvertError::Safetensors(format!(
            "{INDEX_FILE} places tensor {name:?} in {file:?}, but that shard does not contain it"
        )));
    }
    Ok(all)
}

/// Where a Hugging Face tensor goes.
enum Mapped {
    /// One canonical tensor, with a value transform.
    Canonical(String, Transform),
    /// A fused matrix whose consecutive row ranges are separate canonical
    /// matrices (Phi-3's `qkv_proj`, `gate_up_proj`): `(name, rows)` in order.
    Split(Vec<(String, u64)>),
    /// GPT-NeoX's `query_key_value` (weight or bias): per head `[q_h | k_h |
    /// v_h]`, gathered into the `(q, k, v)` names given.
    PerHeadQkv([String; 3]),
    /// A buffer that need not be converted.
    Ignored,
    Unknown,
}

/// A value transform applied on import.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transform {
    None,
    /// Gemma's RMSNorm scales by `1 + w`: the stored weight is `1 + w`,
    /// computed in f32 exactly as transformers does before its product.
    AddOne,
}

/// (Hugging Face per-layer suffix, canonical suffix) of Llama-style layers.
const LAYER_NAMES: &[(&str, &str)] = &[
    ("input_layernorm.weight", names::ATTN_NORM),
    ("self_attn.q_proj.weight", names::WQ),
    ("self_attn.k_proj.weight", names::WK),
    ("self_attn.v_proj.weight", names::WV),
    ("self_attn.o_proj.weight", names::WO),
    ("self_attn.q_proj.bias", names::BQ),
    ("self_attn.k_proj.bias", names::BK),
    ("self_attn.v_proj.bias", names::BV),
    ("self_attn.o_proj.bias", names::BO),
    ("self_attn.q_norm.weight", names::Q_NORM),
    ("self_attn.k_norm.weight", names::K_NORM),
    ("post_attention_layernorm.weight", names::FFN_NORM),
    ("mlp.gate_proj.weight", names::W_GATE),
    ("mlp.up_proj.weight", names::W_UP),
    ("mlp.down_proj.weight", names::W_DOWN),
    ("mlp.gate_proj.bias", names::B_GATE),
    ("mlp.up_proj.bias", names::B_UP),
    ("mlp.down_proj.bias", names::B_DOWN),
];

/// Gemma 3's layer names that differ from Llama's: its
/// `post_attention_layernorm` is the attention block's post-norm, and the
/// FFN has pre- and post-norms.
const GEMMA3_NAMES: &[(&str, &str)] = &[
    ("post_attention_layernorm.weight", names::POST_ATTN_NORM),
    ("pre_feedforward_layernorm.weight", names::FFN_NORM),
    ("post_feedforward_layernorm.weight", names::POST_FFN_NORM),
];

fn layer_suffix(arch: HfArch, suffix: &str) -> Option<&'static str> {
    let family = match arch {
        HfArch::Gemma3 => GEMMA3_NAMES,
        _ => &[],
    };
    family
        .iter()
        .chain(LAYER_NAMES)
        .find(|(h, _)| *h == suffix)
        .map(|(_, c)| *c)
}

/// GPT-NeoX's names (after `gpt_neox.`) that differ from Llama's.
const NEOX_NAMES: &[(&str, &str)] = &[
    ("input_layernorm.weight", names::ATTN_NORM),
    ("post_attention_layernorm.weight", names::FFN_NORM),
    ("attention.dense.weight", names::WO),
    ("attention.dense.bias", names::BO),
    ("mlp.dense_h_to_4h.weight", names::W_UP),
    ("mlp.dense_h_to_4h.bias", names::B_UP),
    ("mlp.dense_4h_to_h.weight", names::W_DOWN),
    ("mlp.dense_4h_to_h.bias", names::B_DOWN),
];

fn map_neox_name(hf: &str) -> Mapped {
    let canonical = |c: &str| Mapped::Canonical(c.to_string(), Transform::None);
    match hf {
        "gpt_neox.embed_in.weight" => return canonical(names::TOK_EMBEDDINGS),
        "embed_out.weight" => return canonical(names::OUTPUT),
        "gpt_neox.final_layer_norm.weight" => return canonical(names::NORM),
        "gpt_neox.final_layer_norm.bias" => return canonical(&names::norm_bias(names::NORM)),
        _ => {}
    }
    if hf.ends_with(".attention.bias") || hf.ends_with(".attention.masked_bias") {
        return Mapped::Ignored; // causal-mask buffers of old checkpoints
    }
    let Some((layer, suffix)) = hf
        .strip_prefix("gpt_neox.layers.")
        .and_then(|r| r.split_once('.'))
    else {
        return Mapped::Unknown;
    };
    let Ok(layer) = layer.parse::<usize>() else {
        return Mapped::Unknown;
    };
    let l = |c: &str| names::layer(layer, c);
    match suffix {
        "attention.query_key_value.weight" => {
            return Mapped::PerHeadQkv([l(names::WQ), l(names::WK), l(names::WV)])
        }
        "attention.query_key_value.bias" => {
            return Mapped::PerHeadQkv([l(names::BQ), l(names::BK), l(names::BV)])
        }
        "attention.rotary_emb.inv_freq" => return Mapped::Ignored,
        _ => {}
    }
    if let Some(weight) = suffix
        .strip_suffix(".bias")
        .filter(|w| w.ends_with("layernorm"))
    {
        return match NEOX_NAMES
            .iter()
            .find(|(h, _)| *h == format!("{weight}.weight"))
        {
            Some((_, c)) => canonical(&names::norm_bias(&l(c))),
            None => Mapped::Unknown,
        };
    }
    match NEOX_NAMES.iter().find(|(h, _)| *h == suffix) {
        Some((_, c)) => canonical(&l(c)),
        None => Mapped::Unknown,
    }
}

fn map_name(hf: &str, arch: HfArch, hp: &HyperParams) -> Mapped {
    if arch == HfArch::GptNeoX {
        return map_neox_name(hf);
    }
    let norm = |name: &str| {
        let t = if arch == HfArch::Gemma3 {
            Transform::AddOne
        } else {
            Transform::None
        };
        Mapped::Canonical(name.to_string(), t)
    };
    match hf {
        "model.embed_tokens.weight" => {
            return Mapped::Canonical(names::TOK_EMBEDDINGS.into(), Transform::None)
        }
        "model.norm.weight" => return norm(names::NORM),
        "model.norm.bias" => {
            return Mapped::Canonical(names::norm_bias(names::NORM), Transform::None)
        }
        // transformers writes lm_head even for some tied models; the tie wins.
        "lm_head.weight" if hp.tied_output() => return Mapped::Ignored,
        "lm_head.weight" => return Mapped::Canonical(names::OUTPUT.into(), Transform::None),
        _ => {}
    }
    // Non-persistent RoPE buffers that old transformers versions saved.
    if hf.ends_with("rotary_emb.inv_freq") {
        return Mapped::Ignored;
    }
    let Some(rest) = hf.strip_prefix("model.layers.") else {
        return Mapped::Unknown;
    };
    let Some((layer, suffix)) = rest.split_once('.') else {
        return Mapped::Unknown;
    };
    let Ok(layer) = layer.parse::<usize>() else {
        return Mapped::Unknown;
    };
    if layer.to_string() != rest[..rest.len() - suffix.len() - 1] {
        return Mapped::Unknown; // "01", "+1"
    }
    let l = |c: &str| names::layer(layer, c);
    if arch == HfArch::Phi3 {
        let (q, kv, ffn) = (hp.q_dim() as u64, hp.kv_dim() as u64, hp.ffn_dim as u64);
        match suffix {
            "self_attn.qkv_proj.weight" => {
                return Mapped::Split(vec![
                    (l(names::WQ), q),
                    (l(names::WK), kv),
                    (l(names::WV), kv),
                ])
            }
            "mlp.gate_up_proj.weight" => {
                return Mapped::Split(vec![(l(names::W_GATE), ffn), (l(names::W_UP), ffn)])
            }
            _ => {}
        }
    }
    if let Some(weight) = suffix
        .strip_suffix(".bias")
        .filter(|w| w.ends_with("layernorm") || w.ends_with("_norm"))
    {
        // A LayerNorm's bias, beside its weight.
        return match layer_suffix(arch, &format!("{weight}.weight")) {
            Some(c) => Mapped::Canonical(names::norm_bias(&l(c)), Transform::None),
            None => Mapped::Unknown,
        };
    }
    match layer_suffix(arch, suffix) {
        Some(c) if c.ends_with("norm") => norm(&l(c)),
        Some(c) => Mapped::Canonical(l(c), Transform::None),
        None => Mapped::Unknown,
    }
}

/// The Hugging Face name of a canonical tensor, for messages.
fn hf_name_of(canonical: &str, arch: HfArch) -> String {
    match canonical {
        names::TOK_EMBEDDINGS => "model.embed_tokens.weight".into(),
        names::NORM => "model.norm.weight".into(),
        names::OUTPUT => "lm_head.weight".into(),
        _ => canonical
            .strip_prefix("layers.")
            .and_then(|r| r.split_once('.'))
            .and_then(|(l, s)| {
                let family = if arch == HfArch::Gemma3 {
                    GEMMA3_NAMES
                } else {
                    &[]
                };
                family
                    .iter()
                    .chain(LAYER_NAMES)
                    .find(|(_, c)| *c == s)
                    .map(|(h, _)| format!("model.layers.{l}.{h}"))
            })
            .unwrap_or_else(|| canonical.to_string()),
    }
}

/// Hint for a tensor that the config does not call for.
fn why_unexpected(canonical: &str) -> &'static str {
    let suffix = canonical.rsplit('.').next().unwrap_or("");
    if canonical == names::OUTPUT {
        "unexpected with tie_word_embeddings"
    } else if [names::BQ, names::BK, names::BV, names::BO].contains(&suffix) {
        "attention bias present but config.json does not enable it (attention_bias)"
    } else if [names::B_GATE, names::B_UP, names::B_DOWN].contains(&suffix) {
        "MLP bias present but config.json does not enable it (mlp_bias)"
    } else if [names::Q_NORM, names::K_NORM].contains(&suffix) {
        "QK norm present but this architecture does not use one"
    } else {
        "layer index beyond num_hidden_layers"
    }
}

/// The float dtype of a safetensors tensor.
fn float_dtype(hf: &str, dtype: Dtype) -> Result<DType> {
    match dtype {
        Dtype::F32 => Ok(DType::F32),
        Dtype::F16 => Ok(DType::F16),
        Dtype::BF16 => Ok(DType::BF16),
        other => Err(ConvertError::Unsupported(format!(
            "tensor {hf} has dtype {other:?} (supported: F32, F16, BF16)"
        ))),
    }
}

/// Reads all weights in `dir`, maps them to canonical names (splitting fused
/// matrices, applying the family's value transforms) and checks the set and
/// the shapes against `expected_tensors(hp)`. Only headers are read here; see
/// the module docs.
pub fn load_tensors(dir: &Path, cfg: &HfConfig) -> Result<Vec<IrTensor>> {
    let hp = &cfg.hparams;
    let all = read_all(dir)?;
    let expected: BTreeMap<String, Vec<u64>> = expected_tensors(hp).into_iter().collect();
    let mut out = Vec::with_capacity(expected.len());
    for (hf, t) in &all {
        let stored = StoredTensor {
            hf,
            located: t,
            shape: t.info.shape.iter().map(|&d| d as u64).collect(),
            expected: &expected,
        };
        let parts = match map_name(hf, cfg.arch, hp) {
            Mapped::Canonical(c, transform) => vec![RowPart {
                name: c,
                shape: stored.shape.clone(),
                first_row: 0,
                transform,
            }],
            Mapped::Split(parts) => stored.split_rows(parts)?,
            Mapped::PerHeadQkv(parts) => {
                out.extend(stored.per_head_qkv_tensors(parts, hp)?);
                continue;
            }
            Mapped::Ignored => continue,
            Mapped::Unknown => {
                return Err(ConvertError::Tensor {
                    name: hf.clone(),
                    reason: format!(
                        "unexpected tensor in {} (not part of a {} checkpoint)",
                        t.shard.display(),
                        cfg.arch.class_name()
                    ),
                })
            }
        };
        out.extend(stored.row_part_tensors(parts)?);
    }
    check_all_present(dir, cfg.arch, &expected, &out)?;
    Ok(out)
}

/// A canonical tensor made of consecutive whole rows of a stored tensor.
struct RowPart {
    name: String,
    shape: Vec<u64>,
    /// Index of the first stored row it takes.
    first_row: u64,
    transform: Transform,
}

/// A stored Hugging Face tensor being mapped, and the canonical tensors the
/// config calls for.
struct StoredTensor<'a> {
    hf: &'a str,
    located: &'a Located,
    shape: Vec<u64>,
    expected: &'a BTreeMap<String, Vec<u64>>,
}

impl StoredTensor<'_> {
    /// Checks that `canonical`, taken from this tensor with `shape`, is
    /// expected with that shape. Errors: `Tensor`, with a hint.
    fn check(&self, canonical: &str, shape: &[u64]) -> Result<()> {
        let Some(want) = self.expected.get(canonical) else {
            return Err(ConvertError::Tensor {
                name: self.hf.to_string(),
                reason: format!("{} (would be {canonical})", why_unexpected(canonical)),
            });
        };
        if shape != want.as_slice() {
            return Err(ConvertError::Tensor {
                name: self.hf.to_string(),
                reason: format!(
                    "shape {shape:?} in {}, but config.json implies {want:?}{}",
                    self.located.shard.display(),
                    if canonical == self.hf {
                        String::new()
                    } else {
                        format!(" for {canonical}")
                    }
                ),
            });
        }
        Ok(())
    }

    /// The consecutive row ranges `parts` (`(name, rows)`) of this fused
    /// matrix. Errors: `Tensor` when it is not a matrix of that many rows.
    fn split_rows(&self, parts: Vec<(String, u64)>) -> Result<Vec<RowPart>> {
        let shape = &self.shape;
        let total: u64 = parts.iter().map(|(_, r)| r).sum();
        if shape.len() != 2 || shape[0] != total {
            return Err(ConvertError::Tensor {
                name: self.hf.to_string(),
                reason: format!(
                    "fused matrix of shape {shape:?}, but config.json implies {total} rows"
                ),
            });
        }
        let mut r0 = 0;
        Ok(parts
            .into_iter()
            .map(|(name, rows)| {
                r0 += rows;
                RowPart {
                    name,
                    shape: vec![rows, shape[1]],
                    first_row: r0 - rows,
                    transform: Transform::None,
                }
            })
            .collect())
    }

    /// IR tensors reading `parts` from the shard. Errors: `Unsupported` for a
    /// non-float dtype; those of `check`.
    fn row_part_tensors(&self, parts: Vec<RowPart>) -> Result<Vec<IrTensor>> {
        let t = self.located;
        let dtype = float_dtype(self.hf, t.info.dtype)?;
        let row_bytes = self.shape.last().copied().unwrap_or(1) * dtype.block_bytes() as u64;
        let mut out = Vec::with_capacity(parts.len());
        for part in parts {
            self.check(&part.name, &part.shape)?;
            let nbytes = part.shape.iter().product::<u64>() * dtype.block_bytes() as u64;
            let source = SafetensorsSource {
                path: t.shard.clone(),
                offset: t.offset + part.first_row * row_bytes,
                nbytes,
                dtype,
            };
            out.push(IrTensor {
                name: part.name,
                shape: part.shape,
                source: match part.transform {
                    Transform::None => Box::new(source),
                    Transform::AddOne => Box::new(AddOne(source)),
                },
            });
        }
        Ok(out)
    }

    /// IR tensors for the q, k and v (`parts`, in that order) of this GPT-NeoX
    /// per-head fused weight or bias. Errors: `Tensor` when its rows do not
    /// match the heads of `hp`; `Unsupported` for a non-float dtype; those of
    /// `check`.
    fn per_head_qkv_tensors(&self, parts: [String; 3], hp: &HyperParams) -> Result<Vec<IrTensor>> {
        let (t, shape) = (self.located, &self.shape);
        let (heads, head_dim) = (hp.n_heads as u64, hp.head_dim as u64);
        let rows = 3 * heads * head_dim;
        if shape.first() != Some(&rows) || shape.len() > 2 {
            return Err(ConvertError::Tensor {
                name: self.hf.to_string(),
                reason: format!(
                    "fused per-head q/k/v of shape {shape:?}, but config.json implies {rows} rows"
                ),
            });
        }
        let dtype = float_dtype(self.hf, t.info.dtype)?;
        let cols = shape.get(1).copied().unwrap_or(1);
        let mut out = Vec::with_capacity(parts.len());
        for (slot, canonical) in parts.into_iter().enumerate() {
            let part_shape: Vec<u64> = if shape.len() == 2 {
                vec![heads * head_dim, cols]
            } else {
                vec![heads * head_dim]
            };
            self.check(&canonical, &part_shape)?;
            out.push(IrTensor {
                name: canonical,
                shape: part_shape,
                source: Box::new(PerHeadSlot {
                    src: SafetensorsSource {
                        path: t.shard.clone(),
                        offset: t.offset,
                        nbytes: rows * cols * dtype.block_bytes() as u64,
                        dtype,
                    },
                    slot: slot as u64,
                    heads,
                    head_dim,
                    cols,
                }),
            });
        }
        Ok(out)
    }
}

/// Checks that `loaded` holds every `expected` tensor. Errors: `Safetensors`
/// naming the first few missing ones by their Hugging Face names.
fn check_all_present(
    dir: &Path,
    arch: HfArch,
    expected: &BTreeMap<String, Vec<u64>>,
    loaded: &[IrTensor],
) -> Result<()> {
    let seen: BTreeSet<&str> = loaded.iter().map(|t| t.name.as_str()).collect();
    let missing: Vec<String> = expected
        .keys()
        .filter(|k| !seen.contains(k.as_str()))
        .map(|k| hf_name_of(k, arch))
        .collect();
    if !missing.is_empty() {
        const SHOWN: usize = 5;
        let more = if missing.len() > SHOWN {
            format!(" and {} more", missing.len() - SHOWN)
        } else {
            String::new()
        };
        return Err(ConvertError::Safetensors(format!(
            "{}: missing tensors required by config.json: {}{more}",
            dir.display(),
            missing[..missing.len().min(SHOWN)].join(", ")
        )));
    }
    Ok(())
}

/// One of q, k, v (`slot` 0, 1, 2) of a per-head fused `[heads, 3, head_dim,
/// cols]` tensor (GPT-NeoX): the rows `h * 3 * head_dim + slot * head_dim ..`
/// of every head `h`, in head order.
struct PerHeadSlot {
    src: SafetensorsSource,
    slot: u64,
    heads: u64,
    head_dim: u64,
    cols: u64,
}

impl TensorSource for PerHeadSlot {
    fn source_dtype(&self) -> String {
        self.src.source_dtype()
    }
    fn native_dtype(&self) -> Option<DType> {
        self.src.native_dtype()
    }
    fn to_f32(&self) -> Result<Vec<f32>> {
        let all = self.src.to_f32()?;
        let block = (self.head_dim * self.cols) as usize;
        let mut out = Vec::with_capacity(self.heads as usize * block);
        for h in 0..self.heads {
            let start = ((3 * h + self.slot) * self.head_dim * self.cols) as usize;
            out.extend_from_slice(&all[start..start + block]);
        }
        Ok(out)
    }
}

/// A norm weight `w` imported as `1 + w` (Gemma), in f32.
struct AddOne(SafetensorsSource);

impl TensorSource for AddOne {
    fn source_dtype(&self) -> String {
        format!("{} (1 + w)", self.0.source_dtype())
    }
    fn native_dtype(&self) -> Option<DType> {
        None
    }
    fn to_f32(&self) -> Result<Vec<f32>> {
        let mut v = self.0.to_f32()?;
        v.iter_mut().for_each(|x| *x += 1.0);
        Ok(v)
    }
}

/// A tensor in a safetensors shard, read from disk when converted.
pub struct SafetensorsSource {
    path: Arc<PathBuf>,
    offset: u64,
    nbytes: u64,
    dtype: DType,
}

impl SafetensorsSource {
    fn read(&self) -> Result<Vec<u8>> {
        let path = self.path.as_path();
        let mut file = File::open(path).map_err(|e| ConvertError::io(path, e))?;
        file.seek(SeekFrom::Start(self.offset))
            .map_err(|e| ConvertError::io(path, e))?;
        let mut buf = vec![0u8; self.nbytes as usize];
        file.read_exact(&mut buf)
            .map_err(|e| ConvertError::io(path, e))?;
        Ok(buf)
    }
}

impl TensorSource for SafetensorsSource {
    fn source_dtype(&self) -> String {
        self.dtype.name().into()
    }
    fn native_dtype(&self) -> Option<DType> {
        Some(self.dtype)
    }
    fn to_f32(&self) -> Result<Vec<f32>> {
        let bytes = self.read()?;
        Ok(match self.dtype {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::Q8_0
            | DType::Q4_0
            | DType::Q8_0X4
            | DType::Q4_0X4
            | DType::Iq4Nl
            | DType::Iq4NlX4 => {
                unreachable!("safetensors dtypes map to float types")
            }
        })
    }
}
