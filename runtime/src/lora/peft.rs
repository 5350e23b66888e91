//! Reading LoRA adapters in Hugging Face PEFT's layout: a directory holding
//! `adapter_model.safetensors` and `adapter_config.json`, as written by
//! `PeftModel.save_pretrained` (and by `ember finetune`).
//!
//! Tensor names are PEFT's for a causal LM:
//! `base_model.model.model.layers.{i}.{module}.lora_A.weight` `[r, in]` and
//! `….lora_B.weight` `[out, r]`. `module` is one of [`LoraTarget::peft_module`]
//! (Llama, Mistral, Qwen, Gemma) or a fused module of Phi-3 ([`FusedModule`]:
//! `self_attn.qkv_proj`, `mlp.gate_up_proj`), whose pair is split on load into
//! one pair per part: `A` shared, `B` cut by rows — the same update, exactly.
//! Loading accepts f32, f16 and bf16 tensors.
//!
//! Row order of `q_proj` / `k_proj`: PEFT's `lora_B` rows follow the Hugging
//! Face checkpoint, which pairs RoPE dimensions as `(i, i + head_dim/2)`. A
//! model converted from GGUF (or llama2.c) stores Q/K rows in llama.cpp's
//! permuted order and says `rope_pairing = interleaved`; for such a model the
//! B rows of q and k are permuted on load ([`hf_to_model_rows`], llama.cpp's
//! per-head permutation) and back on save, so one PEFT file means the same
//! adapter on both conversions of a model. A [`LoraAdapter`] in memory is always
//! in the model file's row order.

use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use super::{LayerLora, LoraAdapter, LoraPair, LoraTarget};
use crate::error::{Error, Result};
use crate::format::{HyperParams, Metadata, RopePairing};

/// The weights file of a PEFT adapter directory.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The configuration file of a PEFT adapter directory.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// Prefix of every LoRA tensor name PEFT saves for a causal LM.
const PREFIX: &str = "base_model.model.model.layers.";

type JsonObject = serde_json::Map<String, Value>;

fn bad(dir: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Adapter(format!("LoRA adapter {}: {msg}", dir.display()))
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A PEFT module that holds several of Ember's targets stacked by rows (Phi-3
/// fuses Q, K, V into `qkv_proj` and gate, up into `gate_up_proj`; Ember's
/// converter splits the weights, so adapters are split the same way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FusedModule {
    Qkv,
    GateUp,
}

impl FusedModule {
    pub const ALL: [FusedModule; 2] = [FusedModule::Qkv, FusedModule::GateUp];

    /// The module name inside `model.layers.N`.
    pub fn peft_module(self) -> &'static str {
        match self {
            FusedModule::Qkv => "self_attn.qkv_proj",
            FusedModule::GateUp => "mlp.gate_up_proj",
        }
    }

    /// The module's last name component, as in `target_modules` / `rank_pattern`.
    pub fn short_module(self) -> &'static str {
        match self {
            FusedModule::Qkv => "qkv_proj",
            FusedModule::GateUp => "gate_up_proj",
        }
    }

    /// The targets stacked in this module, first rows first.
    pub fn parts(self) -> &'static [LoraTarget] {
        match self {
            FusedModule::Qkv => &[LoraTarget::Q, LoraTarget::K, LoraTarget::V],
            FusedModule::GateUp => &[LoraTarget::Gate, LoraTarget::Up],
        }
    }

    /// `(in, out)` of the fused matrix: the shared input width, the summed rows.
    pub fn dims(self, hp: &HyperParams) -> (usize, usize) {
        let parts = self.parts();
        let inp = parts[0].dims(hp).0;
        (inp, parts.iter().map(|t| t.dims(hp).1).sum())
    }
}

/// Which PEFT module names a base model has: one module per Ember target
/// (Llama-like), or Phi-3's fused `qkv_proj` / `gate_up_proj`. Loading accepts
/// both whatever the model; saving writes the base model's own names so that
/// PEFT finds the modules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModuleLayout {
    #[default]
    Separate,
    FusedPhi3,
}

impl ModuleLayout {
    /// The layout of a model converted by Ember, from its metadata
    /// (`hf.architecture` / `gguf.architecture` name the source family).
    pub fn of(metadata: &Metadata) -> Self {
        let phi3 = metadata.iter().any(|(k, v)| {
            (k == "hf.architecture" && v == "Phi3ForCausalLM")
                || (k == "gguf.architecture" && v == "phi3")
        });
        if phi3 {
            ModuleLayout::FusedPhi3
        } else {
            ModuleLayout::Separate
        }
    }
}

/// Which Q/K row order a model file uses: llama.cpp's permuted rows
/// (interleaved RoPE pairing) or Hugging Face's (half pairing).
fn permuted_qk(hp: &HyperParams) -> bool {
    RopePairing::from_u32(hp.rope_pairing) != Some(RopePairing::Half)
}

/// The Hugging Face row that model row `row` of a Q/K matrix holds when the
/// model uses llama.cpp's order: within each head of `head_dim` rows, model row
/// `2i + j` is HF row `j * head_dim/2 + i` (llama.cpp's `permute`).
fn hf_row_of(row: usize, head_dim: usize) -> usize {
    let (h, r) = (row / head_dim, row % head_dim);
    let (i, j) = (r / 2, r % 2);
    h * head_dim + j * (head_dim / 2) + i
}

/// Reorders the rows of `b` (`[rows, rank]`): `to_model` moves HF rows into the
/// model's order, otherwise back.
fn permute_rows(b: &mut [f32], rank: usize, head_dim: usize, to_model: bool) {
    let src = b.to_vec();
    let rows = b.len() / rank;
    for m in 0..rows {
        let h = hf_row_of(m, head_dim);
        let (dst, from) = if to_model { (m, h) } else { (h, m) };
        b[dst * rank..(dst + 1) * rank].copy_from_slice(&src[from * rank..(from + 1) * rank]);
    }
}

fn permute_qk(adapter: &mut LoraAdapter, hp: &HyperParams, to_model: bool) {
    if !permuted_qk(hp) {
        return;
    }
    let head_dim = hp.head_dim as usize;
    let rank = adapter.rank;
    for layer in &mut adapter.layers {
        for t in [LoraTarget::Q, LoraTarget::K] {
            if let Some(p) = layer.get_mut(t) {
                permute_rows(&mut p.b, rank, head_dim, to_model);
            }
        }
    }
}

/// Converts an adapter whose Q/K `B` rows are in Hugging Face order (as PEFT
/// stores them) into the row order of a model with hyperparameters `hp`
/// (a no-op for half pairing). [`load_peft`] does this.
pub fn hf_to_model_rows(adapter: &mut LoraAdapter, hp: &HyperParams) {
    permute_qk(adapter, hp, true);
}

/// The inverse of [`hf_to_model_rows`], for writers of PEFT files.
pub fn model_to_hf_rows(adapter: &mut LoraAdapter, hp: &HyperParams) {
    permute_qk(adapter, hp, false);
}

/// The PEFT tensor name of one LoRA matrix of `module` (a full module path
/// such as `self_attn.q_proj`; `which` is `"A"` or `"B"`).
pub fn tensor_name(layer: usize, module: &str, which: &str) -> String {
    format!("{PREFIX}{layer}.{module}.lora_{which}.weight")
}

/// What `adapter_config.json` says, after the checks of [`read_config`].
#[derive(Clone, Debug, PartialEq)]
pub struct PeftConfig {
    pub rank: usize,
    pub alpha: f32,
    pub rslora: bool,
    pub base_model_name_or_path: Option<String>,
    /// `rank_pattern` / `alpha_pattern` entries for fused modules (Ember writes
    /// them for Phi-3, see [`FusedModule`]): `(rank, alpha)` of the module.
    pub fused_patterns: BTreeMap<FusedModule, (usize, f32)>,
}

impl PeftConfig {
    /// PEFT's factor on `B A x` for a module of `rank` with `alpha`.
    fn scale(&self, rank: usize, alpha: f32) -> f64 {
        if self.rslora {
            f64::from(alpha) / (rank as f64).sqrt()
        } else {
            f64::from(alpha) / rank as f64
        }
    }
}

/// The fused module a `rank_pattern` / `alpha_pattern` key names (PEFT matches
/// a key against the end of a module's path).
fn fused_module_of_key(key: &str) -> Option<FusedModule> {
    FusedModule::ALL
        .into_iter()
        .find(|m| key == m.short_module() || key == m.peft_module())
}

/// Reads `rank_pattern` and `alpha_pattern`: only keys naming a fused module
/// are supported (a per-module rank elsewhere cannot share the adapter's rank).
fn read_fused_patterns(
    dir: &Path,
    obj: &JsonObject,
    rank: usize,
    alpha: f32,
) -> Result<BTreeMap<FusedModule, (usize, f32)>> {
    let get = |k: &str| obj.get(k).filter(|x| !x.is_null());
    let mut out: BTreeMap<FusedModule, (usize, f32)> = BTreeMap::new();
    for k in ["rank_pattern", "alpha_pattern"] {
        let Some(p) = get(k) else { continue };
        let map = p
            .as_object()
            .ok_or_else(|| bad(dir, format!("{k} must be a JSON object")))?;
        for (key, v) in map {
            let module = fused_module_of_key(key).ok_or_else(|| {
                bad(
                    dir,
                    format!(
                        "per-module ranks or alphas ({k}: {key:?}) are not supported \
                         (only for Phi-3's fused qkv_proj / gate_up_proj)"
                    ),
                )
            })?;
            let entry = out.entry(module).or_insert((rank, alpha));
            if k == "rank_pattern" {
                entry.0 =
                    v.as_u64().filter(|&r| r > 0).ok_or_else(|| {
                        bad(dir, format!("{k}[{key:?}] must be a positive integer"))
                    })? as usize;
            } else {
                entry.1 = v
                    .as_f64()
                    .filter(|a| a.is_finite())
                    .ok_or_else(|| bad(dir, format!("{k}[{key:?}] must be a number")))?
                    as f32;
            }
        }
    }
    Ok(out)
}

/// Refuses what Ember cannot apply: another PEFT method, DoRA, fan-in-fan-out
/// storage, trained biases, fully trained extra modules.
fn check_plain_lora(dir: &Path, obj: &JsonObject) -> Result<()> {
    let get = |k: &str| obj.get(k).filter(|x| !x.is_null());
    match get("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        other => {
            return Err(bad(
                dir,
                format!("peft_type is {other:?}; only LoRA adapters (\"LORA\") are supported"),
            ))
        }
    }
    let flag = |k: &str| get(k).and_then(Value::as_bool).unwrap_or(false);
    if flag("use_dora") {
        return Err(bad(dir, "DoRA adapters (use_dora) are not supported"));
    }
    if flag("fan_in_fan_out") {
        return Err(bad(dir, "fan_in_fan_out adapters are not supported"));
    }
    if flag("lora_bias") {
        return Err(bad(dir, "LoRA biases (lora_bias) are not supported"));
    }
    match get("bias").and_then(Value::as_str).unwrap_or("none") {
        "none" => {}
        b => {
            return Err(bad(
                dir,
                format!("bias = {b:?} (trained base biases) is not supported; only \"none\""),
            ))
        }
    }
    if get("modules_to_save").is_some_and(|m| m.as_array().is_none_or(|a| !a.is_empty())) {
        return Err(bad(
            dir,
            "modules_to_save (fully trained extra modules) is not supported",
        ));
    }
    Ok(())
}

/// Reads and checks `adapter_config.json`: a LoRA adapter Ember can apply
/// (plain LoRA: no DoRA, no per-module rank or alpha except on fused modules,
/// no trained biases or extra saved modules, not fan-in-fan-out).
pub fn read_config(dir: &Path) -> Result<PeftConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| bad(dir, format!("{CONFIG_FILE} is not valid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad(dir, format!("{CONFIG_FILE} is not a JSON object")))?;
    let get = |k: &str| obj.get(k).filter(|x| !x.is_null());
    check_plain_lora(dir, obj)?;
    let rank = get("r")
        .and_then(Value::as_u64)
        .filter(|&r| r > 0)
        .ok_or_else(|| bad(dir, "r (the rank) must be a positive integer"))?
        as usize;
    // PEFT's default lora_alpha is 8.
    let alpha = match get("lora_alpha") {
        None => 8.0,
        Some(a) => a
            .as_f64()
            .filter(|a| a.is_finite())
            .ok_or_else(|| bad(dir, "lora_alpha must be a number"))? as f32,
    };
    let fused_patterns = read_fused_patterns(dir, obj, rank, alpha)?;
    Ok(PeftConfig {
        rank,
        alpha,
        rslora: get("use_rslora").and_then(Value::as_bool).unwrap_or(false),
        base_model_name_or_path: get("base_model_name_or_path")
            .and_then(Value::as_str)
            .map(str::to_string),
        fused_patterns,
    })
}

/// Decodes a little-endian f32, f16 or bf16 tensor to f32.
fn to_f32(dir: &Path, name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>> {
    let width = match dtype {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        d => {
            return Err(bad(
                dir,
                format!("tensor {name} has dtype {d:?}; only F32, F16 and BF16 are supported"),
            ))
        }
    };
    // Reserved fallibly: the size comes from the file.
    let n = data.len() / width;
    let mut out = Vec::new();
    out.try_reserve_exact(n)
        .map_err(|_| Error::out_of_memory(format!("LoRA tensor {name}"), 4 * n as u64, ""))?;
    let chunks = data.chunks_exact(width);
    match dtype {
        Dtype::F32 => out.extend(chunks.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        Dtype::F16 => out.extend(chunks.map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())),
        _ => out.extend(chunks.map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())),
    }
    Ok(out)
}

/// A module a PEFT tensor belongs to: one target, or a fused group of targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Module {
    One(LoraTarget),
    Fused(FusedModule),
}

impl Module {
    fn peft_module(self) -> &'static str {
        match self {
            Module::One(t) => t.peft_module(),
            Module::Fused(m) => m.peft_module(),
        }
    }

    fn dims(self, hp: &HyperParams) -> (usize, usize) {
        match self {
            Module::One(t) => t.dims(hp),
            Module::Fused(m) => m.dims(hp),
        }
    }

    /// The rank this module's tensors must have under `config`.
    fn rank(self, config: &PeftConfig) -> usize {
        match self {
            Module::Fused(m) => config.fused_patterns.get(&m).map_or(config.rank, |p| p.0),
            Module::One(_) => config.rank,
        }
    }
}

/// Parses `base_model.model.model.layers.{i}.{module}.lora_{A|B}.weight`.
fn parse_name(name: &str) -> Option<(usize, Module, bool)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (layer, rest) = rest.split_once('.')?;
    let layer = layer.parse().ok()?;
    let (module, is_a) = if let Some(m) = rest.strip_suffix(".lora_A.weight") {
        (m, true)
    } else {
        (rest.strip_suffix(".lora_B.weight")?, false)
    };
    let one = LoraTarget::ALL
        .into_iter()
        .find(|t| t.peft_module() == module)
        .map(Module::One);
    let fused = || {
        FusedModule::ALL
            .into_iter()
            .find(|m| m.peft_module() == module)
            .map(Module::Fused)
    };
    Some((layer, one.or_else(fused)?, is_a))
}

/// Every module's `(A, B)` as read from the weights file, checked against the
/// model's shapes and the config's ranks.
type FoundPairs = BTreeMap<(usize, Module), [Option<Vec<f32>>; 2]>;

fn read_tensors(
    dir: &Path,
    st: &SafeTensors,
    hp: &HyperParams,
    cfg: &PeftConfig,
) -> Result<FoundPairs> {
    let n_layers = hp.n_layers as usize;
    let mut found = FoundPairs::new();
    for (name, view) in st.tensors() {
        let (layer, module, is_a) = parse_name(&name).ok_or_else(|| {
            bad(
                dir,
                format!(
                    "unknown tensor {name}: Ember applies LoRA A/B matrices of the modules {}, \
                     {} of model.layers.N",
                    LoraTarget::ALL.map(LoraTarget::peft_module).join(", "),
                    FusedModule::ALL.map(FusedModule::peft_module).join(", ")
                ),
            )
        })?;
        if layer >= n_layers {
            return Err(bad(
                dir,
                format!(
                    "tensor {name} is for layer {layer} but the model has {n_layers} layers \
                     (an adapter for another base model?)"
                ),
            ));
        }
        let shape = view.shape();
        let (inp, out) = module.dims(hp);
        let (r, want_other, other, what) = match shape {
            [a, b] if is_a => (*a, inp, *b, "input width"),
            [a, b] => (*b, out, *a, "output height"),
            _ => {
                return Err(bad(
                    dir,
                    format!("tensor {name} has shape {shape:?}; LoRA matrices are 2-D"),
                ))
            }
        };
        let rank = module.rank(cfg);
        if r != rank {
            return Err(bad(
                dir,
                format!("tensor {name} has rank {r} but r = {rank}: mixed ranks are not supported"),
            ));
        }
        if other != want_other {
            return Err(bad(
                dir,
                format!(
                    "tensor {name} has shape {shape:?} but this model's {} has {what} \
                     {want_other} (an adapter for another base model?)",
                    module.peft_module()
                ),
            ));
        }
        let values = to_f32(dir, &name, view.dtype(), view.data())?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(bad(
                dir,
                format!("tensor {name} holds NaN or infinite values"),
            ));
        }
        found.entry((layer, module)).or_default()[usize::from(!is_a)] = Some(values);
    }
    if found.is_empty() {
        return Err(bad(dir, format!("{WEIGHTS_FILE} holds no LoRA tensors")));
    }
    Ok(found)
}

/// Splits a fused module's pair into one pair per part, each of the adapter's
/// `rank`. With the module's own rank equal to `rank`, every part shares `A`
/// and takes its rows of `B`. With a `rank_pattern` of `parts × rank` (Ember's
/// save of separately trained parts), `B` must be block-diagonal: part `j`
/// takes block `j` of `A` and of its `B` rows, and a part whose blocks are all
/// zero is absent. The scale must equal the adapter's, so the update is exact.
fn split_fused(
    dir: &Path,
    layer: usize,
    m: FusedModule,
    (a, b): (Vec<f32>, Vec<f32>),
    hp: &HyperParams,
    cfg: &PeftConfig,
) -> Result<Vec<(LoraTarget, LoraPair)>> {
    let rank = cfg.rank;
    let (m_rank, m_alpha) = cfg
        .fused_patterns
        .get(&m)
        .copied()
        .unwrap_or((rank, cfg.alpha));
    let (want, got) = (cfg.scale(rank, cfg.alpha), cfg.scale(m_rank, m_alpha));
    if (want - got).abs() > 1e-6 * want.abs() {
        return Err(bad(
            dir,
            format!(
                "{} has scale {got} (rank {m_rank}, alpha {m_alpha}) but the other modules {want}: \
                 per-module scales are not supported",
                m.short_module()
            ),
        ));
    }
    let inp = m.dims(hp).0;
    let blocks = m_rank / rank;
    if m_rank != rank && m_rank != m.parts().len() * rank {
        return Err(bad(
            dir,
            format!(
                "{} has rank {m_rank}; Ember reads r = {rank} or {} (one block per part)",
                m.short_module(),
                m.parts().len() * rank
            ),
        ));
    }
    let mut out = Vec::new();
    let mut row0 = 0;
    for (j, &t) in m.parts().iter().enumerate() {
        let rows = t.dims(hp).1;
        let b_rows = &b[row0 * m_rank..(row0 + rows) * m_rank];
        row0 += rows;
        if blocks == 1 {
            out.push((
                t,
                LoraPair {
                    a: a.clone(),
                    b: b_rows.to_vec(),
                },
            ));
            continue;
        }
        let in_block = |c: usize| c / rank == j;
        let off_diagonal = b_rows
            .iter()
            .enumerate()
            .any(|(i, &x)| x != 0.0 && !in_block(i % m_rank));
        if off_diagonal {
            return Err(bad(
                dir,
                format!(
                    "layer {layer} {}: with rank {m_rank} Ember reads one rank-{rank} block per \
                     part, but the {} rows of lora_B use other blocks",
                    m.short_module(),
                    t.short_name()
                ),
            ));
        }
        let a_block = a[j * rank * inp..(j + 1) * rank * inp].to_vec();
        let b_block: Vec<f32> = b_rows
            .chunks_exact(m_rank)
            .flat_map(|row| &row[j * rank..(j + 1) * rank])
            .copied()
            .collect();
        if a_block.iter().chain(&b_block).any(|&x| x != 0.0) {
            out.push((
                t,
                LoraPair {
                    a: a_block,
                    b: b_block,
                },
            ));
        }
    }
    Ok(out)
}

/// Loads the PEFT adapter directory `dir` for a model with hyperparameters
/// `hp`, in that model's row order (see the module docs).
///
/// Clear errors for: missing or unreadable files, a corrupt safetensors file,
/// a config Ember cannot apply ([`read_config`]), tensors other than LoRA
/// A/B of the projection matrices, a layer index outside the model, an
/// A without its B (or the reverse), ranks that differ from `r`, dtypes other
/// than f32/f16/bf16, shapes of another base model, a rank larger than an
/// adapted matrix, and a module adapted both fused and separately.
pub fn load_peft(dir: &Path, hp: &HyperParams) -> Result<LoraAdapter> {
    if !dir.is_dir() {
        return Err(bad(
            dir,
            "not a directory (expected a PEFT adapter directory)",
        ));
    }
    let weights_path = dir.join(WEIGHTS_FILE);
    if !weights_path.is_file() && dir.join("adapter_model.bin").is_file() {
        return Err(bad(
            dir,
            "only adapter_model.bin (a pickle) is present; save the adapter with \
             safe_serialization=True to get adapter_model.safetensors",
        ));
    }
    let config = read_config(dir)?;
    let bytes = std::fs::read(&weights_path).map_err(|e| io_error(&weights_path, e))?;
    super::safetensors_names::check_unique_names_in_file(&bytes)
        .map_err(|e| bad(dir, format!("{WEIGHTS_FILE}: {e}")))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        bad(
            dir,
            format!("{WEIGHTS_FILE} is not a valid safetensors file: {e}"),
        )
    })?;
    let found = read_tensors(dir, &st, hp, &config)?;

    let mut adapter = LoraAdapter {
        rank: config.rank,
        alpha: config.alpha,
        rslora: config.rslora,
        layers: vec![LayerLora::default(); hp.n_layers as usize],
    };
    for ((layer, module), [a, b]) in found {
        let (a, b) = match (a, b) {
            (Some(a), Some(b)) => (a, b),
            (a, _) => {
                let missing = if a.is_none() { "A" } else { "B" };
                return Err(bad(
                    dir,
                    format!(
                        "{} is missing (every adapted matrix needs lora_A and lora_B)",
                        tensor_name(layer, module.peft_module(), missing)
                    ),
                ));
            }
        };
        let pairs = match module {
            Module::One(t) => vec![(t, LoraPair { a, b })],
            Module::Fused(m) => split_fused(dir, layer, m, (a, b), hp, &config)?,
        };
        for (t, pair) in pairs {
            let slot = &mut adapter.layers[layer].pairs[t.index()];
            if slot.is_some() {
                return Err(bad(
                    dir,
                    format!(
                        "layer {layer} adapts {} twice (fused and separately)",
                        t.peft_module()
                    ),
                ));
            }
            *slot = Some(pair);
        }
    }
    adapter
        .validate(hp)
        .map_err(|e| bad(dir, format!("does not fit this model: {e}")))?;
    hf_to_model_rows(&mut adapter, hp);
    Ok(adapter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_row_mapping_is_llama_cpp_permute() {
        // llama.cpp: w.reshape(n_head, 2, hd/2, …).swapaxes(1, 2): model row
        // (h, 2i + j) = HF row (h, j * hd/2 + i). For hd = 4: [0, 2, 1, 3].
        let got: Vec<usize> = (0..8).map(|r| hf_row_of(r, 4)).collect();
        assert_eq!(got, [0, 2, 1, 3, 4, 6, 5, 7]);
    }

    #[test]
    fn permute_rows_round_trips() {
        let orig: Vec<f32> = (0..16 * 3).map(|x| x as f32).collect();
        let mut b = orig.clone();
        permute_rows(&mut b, 3, 8, true);
        assert_ne!(b, orig);
        // Model row 1 (h 0, i 0, j 1) holds HF row 4.
        assert_eq!(&b[3..6], &orig[12..15]);
        permute_rows(&mut b, 3, 8, false);
        assert_eq!(b, orig);
    }

    #[test]
    fn names_parse() {
        let n = tensor_name(3, LoraTarget::Down.peft_module(), "B");
        assert_eq!(
            n,
            "base_model.model.model.layers.3.mlp.down_proj.lora_B.weight"
        );
        assert_eq!(
            parse_name(&n),
            Some((3, Module::One(LoraTarget::Down), false))
        );
        let n = tensor_name(0, FusedModule::Qkv.peft_module(), "A");
        assert_eq!(
            parse_name(&n),
            Some((0, Module::Fused(FusedModule::Qkv), true))
        );
        assert_eq!(parse_name("base_model.model.lm_head.lora_A.weight"), None);
        assert_eq!(
            parse_name("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"),
            None
        );
    }

    #[test]
    fn layout_follows_the_source_family() {
        let md = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert_eq!(
            ModuleLayout::of(&md("hf.architecture", "Phi3ForCausalLM")),
            ModuleLayout::FusedPhi3
        );
        assert_eq!(
            ModuleLayout::of(&md("gguf.architecture", "phi3")),
            ModuleLayout::FusedPhi3
        );
        assert_eq!(
            ModuleLayout::of(&md("gguf.architecture", "llama")),
            ModuleLayout::Separate
        );
    }
}
