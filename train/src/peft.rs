//! LoRA adapters in Hugging Face PEFT's layout: a directory holding
//! `adapter_model.safetensors` and `adapter_config.json`, loadable by
//! `peft.PeftModel.from_pretrained` and written by `PeftModel.save_pretrained`.
//!
//! Tensor names are PEFT's for a `LlamaForCausalLM` (also Mistral and Qwen2):
//! `base_model.model.model.layers.{i}.{module}.lora_A.weight` `[r, in]` and
//! `….lora_B.weight` `[out, r]`, with `module` one of
//! [`LoraTarget::peft_module`]. Loading accepts f32, f16 and bf16 tensors;
//! saving writes f32.
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
use std::io::Write;
use std::path::{Path, PathBuf};

use ember_runtime::format::{HyperParams, RopePairing};
use ember_runtime::lora::{LayerLora, LoraAdapter, LoraPair, LoraTarget};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};

use crate::error::{Result, TrainError};

/// The weights file of a PEFT adapter directory.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The configuration file of a PEFT adapter directory.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// Prefix of every LoRA tensor name PEFT saves for a causal LM.
const PREFIX: &str = "base_model.model.model.layers.";

fn bad(dir: &Path, msg: impl std::fmt::Display) -> TrainError {
    TrainError::Adapter(format!("LoRA adapter {}: {msg}", dir.display()))
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
/// (a no-op for half pairing). `load_peft` does this.
pub fn hf_to_model_rows(adapter: &mut LoraAdapter, hp: &HyperParams) {
    permute_qk(adapter, hp, true);
}

/// The inverse of [`hf_to_model_rows`]; `save_peft` does this.
pub fn model_to_hf_rows(adapter: &mut LoraAdapter, hp: &HyperParams) {
    permute_qk(adapter, hp, false);
}

/// The PEFT tensor name of one LoRA matrix (`which` is `"A"` or `"B"`).
pub fn tensor_name(layer: usize, target: LoraTarget, which: &str) -> String {
    format!(
        "{PREFIX}{layer}.{}.lora_{which}.weight",
        target.peft_module()
    )
}

/// PEFT's `target_modules` for `adapter`: the module names (`q_proj`, …) when
/// every layer adapts the same set, else a regular expression PEFT matches
/// against the full module names, listing exactly the adapted ones.
fn target_modules(adapter: &LoraAdapter) -> Value {
    let present = |l: &LayerLora| -> Vec<LoraTarget> {
        LoraTarget::ALL
            .into_iter()
            .filter(|t| l.get(*t).is_some())
            .collect()
    };
    let first = present(&adapter.layers[0]);
    if adapter.layers.iter().all(|l| present(l) == first) {
        let mut names: Vec<&str> = first
            .iter()
            .map(|t| t.peft_module().rsplit('.').next().unwrap_or_default())
            .collect();
        names.sort_unstable();
        return json!(names);
    }
    let alts: Vec<String> = adapter
        .layers
        .iter()
        .enumerate()
        .flat_map(|(l, layer)| {
            present(layer)
                .into_iter()
                .map(move |t| format!("{l}\\.{}", t.peft_module().replace('.', "\\.")))
        })
        .collect();
    json!(format!("model\\.layers\\.(?:{})", alts.join("|")))
}

/// The `adapter_config.json` PEFT writes for a LoRA adapter on a causal LM.
fn config_json(adapter: &LoraAdapter, base_model_name: &str) -> Value {
    json!({
        "alpha_pattern": {},
        "auto_mapping": null,
        "base_model_name_or_path": base_model_name,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        "lora_alpha": adapter.alpha,
        "lora_bias": false,
        "lora_dropout": 0.0,
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": adapter.rank,
        "rank_pattern": {},
        "revision": null,
        "target_modules": target_modules(adapter),
        "task_type": "CAUSAL_LM",
        "use_dora": false,
        "use_rslora": adapter.rslora,
    })
}

/// The two files of a PEFT adapter directory, as bytes.
fn encode(
    adapter: &LoraAdapter,
    hp: &HyperParams,
    base_model_name: &str,
) -> Result<(Vec<u8>, Vec<u8>)> {
    adapter.validate(hp)?;
    if adapter
        .layers
        .iter()
        .all(|l| l.pairs.iter().all(Option::is_none))
    {
        return Err(TrainError::Adapter(
            "LoRA adapter adapts no matrix: nothing to save".into(),
        ));
    }
    let mut hf = adapter.clone();
    model_to_hf_rows(&mut hf, hp);
    let rank = hf.rank;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (l, layer) in hf.layers.iter().enumerate() {
        for t in LoraTarget::ALL {
            let Some(p) = layer.get(t) else { continue };
            let (inp, out) = t.dims(hp);
            let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            tensors.push((tensor_name(l, t, "A"), vec![rank, inp], bytes(&p.a)));
            tensors.push((tensor_name(l, t, "B"), vec![out, rank], bytes(&p.b)));
        }
    }
    let views = tensors
        .iter()
        .map(|(name, shape, data)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (name.as_str(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| TrainError::Adapter(format!("cannot encode the LoRA tensors: {e}")))?;
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let weights = safetensors::serialize(views, Some(meta))
        .map_err(|e| TrainError::Adapter(format!("cannot encode the LoRA tensors: {e}")))?;
    let mut config = serde_json::to_vec_pretty(&config_json(adapter, base_model_name))
        .map_err(|e| TrainError::Adapter(format!("cannot encode {CONFIG_FILE}: {e}")))?;
    config.push(b'\n');
    Ok((weights, config))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e| TrainError::io(path, e);
    let mut f = std::fs::File::create(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Saves `adapter` (in the row order of a model with hyperparameters `hp`) as a
/// PEFT adapter directory `dir`: `adapter_model.safetensors` (f32) and
/// `adapter_config.json` with `base_model_name_or_path = base_model_name`.
///
/// Atomic: when `dir` does not exist, both files are written into a temporary
/// directory beside it, synced, and the directory is renamed into place; when it
/// exists (e.g. a checkpoint directory), each file is written to a temporary
/// file in `dir` and renamed over its name, weights first. An error leaves no
/// partially written file.
pub fn save_peft(
    dir: &Path,
    adapter: &LoraAdapter,
    hp: &HyperParams,
    base_model_name: &str,
) -> Result<()> {
    let (weights, config) = encode(adapter, hp, base_model_name)?;
    if dir.is_dir() {
        for (name, bytes) in [(WEIGHTS_FILE, &weights), (CONFIG_FILE, &config)] {
            let tmp = tempfile::Builder::new()
                .prefix(&format!(".{name}."))
                .suffix(".tmp")
                .tempfile_in(dir)
                .map_err(|e| TrainError::io(dir, e))?;
            let io = |e| TrainError::io(tmp.path(), e);
            tmp.as_file().write_all(bytes).map_err(io)?;
            tmp.as_file().sync_all().map_err(io)?;
            let target = dir.join(name);
            tmp.persist(&target)
                .map_err(|e| TrainError::io(&target, e.error))?;
        }
        return Ok(());
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".ember-peft-")
        .tempdir_in(&parent)
        .map_err(|e| TrainError::io(&parent, e))?;
    write_synced(&tmp.path().join(WEIGHTS_FILE), &weights)?;
    write_synced(&tmp.path().join(CONFIG_FILE), &config)?;
    let staged = tmp.keep();
    std::fs::rename(&staged, dir).map_err(|e| {
        let _ = std::fs::remove_dir_all(&staged);
        TrainError::io(dir, e)
    })?;
    Ok(())
}

/// What `adapter_config.json` says, after the checks of [`load_peft`].
#[derive(Clone, Debug, PartialEq)]
pub struct PeftConfig {
    pub rank: usize,
    pub alpha: f32,
    pub rslora: bool,
    pub base_model_name_or_path: Option<String>,
}

/// Reads and checks `adapter_config.json`: a LoRA adapter Ember can apply
/// (plain LoRA: no DoRA, no per-module rank or alpha, no trained biases or
/// extra saved modules, not fan-in-fan-out).
pub fn read_config(dir: &Path) -> Result<PeftConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| bad(dir, format!("{CONFIG_FILE} is not valid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad(dir, format!("{CONFIG_FILE} is not a JSON object")))?;
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
    for k in ["rank_pattern", "alpha_pattern"] {
        if get(k).is_some_and(|p| p.as_object().is_none_or(|m| !m.is_empty())) {
            return Err(bad(
                dir,
                format!("per-module ranks or alphas ({k}) are not supported"),
            ));
        }
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
    Ok(PeftConfig {
        rank,
        alpha,
        rslora: flag("use_rslora"),
        base_model_name_or_path: get("base_model_name_or_path")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// Decodes a little-endian f32, f16 or bf16 tensor to f32.
fn to_f32(dir: &Path, name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        d => {
            return Err(bad(
                dir,
                format!("tensor {name} has dtype {d:?}; only F32, F16 and BF16 are supported"),
            ))
        }
    })
}

/// Parses `base_model.model.model.layers.{i}.{module}.lora_{A|B}.weight`.
fn parse_name(name: &str) -> Option<(usize, LoraTarget, bool)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (layer, rest) = rest.split_once('.')?;
    let layer = layer.parse().ok()?;
    let (module, is_a) = if let Some(m) = rest.strip_suffix(".lora_A.weight") {
        (m, true)
    } else {
        (rest.strip_suffix(".lora_B.weight")?, false)
    };
    let t = LoraTarget::ALL
        .into_iter()
        .find(|t| t.peft_module() == module)?;
    Some((layer, t, is_a))
}

/// Loads the PEFT adapter directory `dir` for a model with hyperparameters
/// `hp`, in that model's row order (see the module docs).
///
/// Clear errors for: missing or unreadable files, a corrupt safetensors file,
/// a config Ember cannot apply ([`read_config`]), tensors other than LoRA
/// A/B of the seven projection matrices, a layer index outside the model, an
/// A without its B (or the reverse), ranks that differ from `r`, dtypes other
/// than f32/f16/bf16, shapes of another base model, and a rank larger than an
/// adapted matrix.
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
    let bytes = std::fs::read(&weights_path).map_err(|e| TrainError::io(&weights_path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        bad(
            dir,
            format!("{WEIGHTS_FILE} is not a valid safetensors file: {e}"),
        )
    })?;

    let n_layers = hp.n_layers as usize;
    let rank = config.rank;
    // (layer, target) -> (A, B) as loaded.
    let mut found: BTreeMap<(usize, LoraTarget), [Option<Vec<f32>>; 2]> = BTreeMap::new();
    for (name, view) in st.tensors() {
        let (layer, t, is_a) = parse_name(&name).ok_or_else(|| {
            bad(
                dir,
                format!(
                    "unknown tensor {name}: Ember applies LoRA A/B matrices of the modules {} \
                     of model.layers.N",
                    LoraTarget::ALL.map(LoraTarget::peft_module).join(", ")
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
        let (inp, out) = t.dims(hp);
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
                    t.peft_module()
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
        found.entry((layer, t)).or_default()[usize::from(!is_a)] = Some(values);
    }
    if found.is_empty() {
        return Err(bad(dir, format!("{WEIGHTS_FILE} holds no LoRA tensors")));
    }

    let mut adapter = LoraAdapter {
        rank,
        alpha: config.alpha,
        rslora: config.rslora,
        layers: vec![LayerLora::default(); n_layers],
    };
    for ((layer, t), [a, b]) in found {
        let (a, b) = match (a, b) {
            (Some(a), Some(b)) => (a, b),
            (a, _) => {
                let missing = if a.is_none() { "A" } else { "B" };
                return Err(bad(
                    dir,
                    format!(
                        "{} is missing (every adapted matrix needs lora_A and lora_B)",
                        tensor_name(layer, t, missing)
                    ),
                ));
            }
        };
        adapter.layers[layer].pairs[t.index()] = Some(LoraPair { a, b });
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
        let n = tensor_name(3, LoraTarget::Down, "B");
        assert_eq!(
            n,
            "base_model.model.model.layers.3.mlp.down_proj.lora_B.weight"
        );
        assert_eq!(parse_name(&n), Some((3, LoraTarget::Down, false)));
        assert_eq!(parse_name("base_model.model.lm_head.lora_A.weight"), None);
        assert_eq!(
            parse_name("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"),
            None
        );
    }
}
