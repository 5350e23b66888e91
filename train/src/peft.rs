//! Writing LoRA adapters in Hugging Face PEFT's layout (`adapter_model.safetensors`
//! and `adapter_config.json`), loadable by `peft.PeftModel.from_pretrained`. Reading
//! them is the runtime's ([`ember_runtime::lora::peft`], re-exported here), so
//! `ember run --lora` and the C API need no training code.
//!
//! Saving writes f32 tensors in Hugging Face row order, with the base model's
//! own module names ([`ModuleLayout`]): for Phi-3, whose PEFT modules are the
//! fused `qkv_proj` and `gate_up_proj`, the separately trained parts are stacked
//! into one pair of rank `parts × r` with a block-diagonal `B` and a
//! `rank_pattern` / `alpha_pattern` that keeps the scale: the same update, exactly.

use std::io::Write;
use std::path::{Path, PathBuf};

use ember_runtime::format::HyperParams;
pub use ember_runtime::lora::peft::{
    hf_to_model_rows, load_peft, read_config, ModuleLayout, PeftConfig, CONFIG_FILE, WEIGHTS_FILE,
};
use ember_runtime::lora::peft::{model_to_hf_rows, tensor_name, FusedModule};
use ember_runtime::lora::{LayerLora, LoraAdapter, LoraPair, LoraTarget};
use safetensors::Dtype;
use serde_json::{json, Value};

use crate::error::{Result, TrainError};

/// One PEFT module of a saved layer: its module path and its `(A, B)` with
/// shapes `[rank, in]`, `[out, rank]`.
struct SavedModule {
    module: &'static str,
    rank: usize,
    inp: usize,
    out: usize,
    a: Vec<f32>,
    b: Vec<f32>,
}

/// The fused modules a layout writes, and the targets they replace.
fn fused_modules(layout: ModuleLayout) -> &'static [FusedModule] {
    match layout {
        ModuleLayout::Separate => &[],
        ModuleLayout::FusedPhi3 => &FusedModule::ALL,
    }
}

/// Stacks the parts of fused module `m` present in `layer` into one pair of
/// rank `parts × r`: `A` = the parts' `A` blocks (zero for an absent part), `B`
/// block-diagonal (part `j`'s rows use only block `j`). `None` if no part is adapted.
fn stack_fused(
    m: FusedModule,
    layer: &LayerLora,
    rank: usize,
    hp: &HyperParams,
) -> Option<SavedModule> {
    let parts = m.parts();
    if parts.iter().all(|t| layer.get(*t).is_none()) {
        return None;
    }
    let (inp, out) = m.dims(hp);
    let wide = parts.len() * rank;
    let mut a = vec![0.0; wide * inp];
    let mut b = vec![0.0; out * wide];
    let mut row0 = 0;
    for (j, &t) in parts.iter().enumerate() {
        let rows = t.dims(hp).1;
        if let Some(p) = layer.get(t) {
            a[j * rank * inp..(j + 1) * rank * inp].copy_from_slice(&p.a);
            for (r, src) in p.b.chunks_exact(rank).enumerate() {
                let dst = (row0 + r) * wide + j * rank;
                b[dst..dst + rank].copy_from_slice(src);
            }
        }
        row0 += rows;
    }
    Some(SavedModule {
        module: m.peft_module(),
        rank: wide,
        inp,
        out,
        a,
        b,
    })
}

/// The modules of one layer as `layout` names them, in PEFT's module order.
fn layer_modules(
    layer: &LayerLora,
    rank: usize,
    hp: &HyperParams,
    layout: ModuleLayout,
) -> Vec<SavedModule> {
    let fused = fused_modules(layout);
    let mut out = Vec::new();
    for t in LoraTarget::ALL {
        if let Some(m) = fused.iter().find(|m| m.parts().contains(&t)) {
            if m.parts()[0] == t {
                out.extend(stack_fused(*m, layer, rank, hp));
            }
            continue;
        }
        let Some(LoraPair { a, b }) = layer.get(t) else {
            continue;
        };
        let (inp, out_rows) = t.dims(hp);
        out.push(SavedModule {
            module: t.peft_module(),
            rank,
            inp,
            out: out_rows,
            a: a.clone(),
            b: b.clone(),
        });
    }
    out
}

/// The last component of a module path (`q_proj`), as PEFT's config names it.
fn short(module: &str) -> &str {
    module.rsplit('.').next().unwrap_or(module)
}

/// PEFT's `target_modules`: the module names (`q_proj`, …) when every layer
/// adapts the same set, else a regular expression PEFT matches against the full
/// module names, listing exactly the adapted ones.
fn target_modules(layers: &[Vec<SavedModule>]) -> Value {
    let names =
        |l: &Vec<SavedModule>| -> Vec<&'static str> { l.iter().map(|m| m.module).collect() };
    let first = names(&layers[0]);
    if layers.iter().all(|l| names(l) == first) {
        let mut short_names: Vec<&str> = first.iter().map(|m| short(m)).collect();
        short_names.sort_unstable();
        return json!(short_names);
    }
    let alts: Vec<String> = layers
        .iter()
        .enumerate()
        .flat_map(|(l, layer)| {
            layer
                .iter()
                .map(move |m| format!("{l}\\.{}", m.module.replace('.', "\\.")))
        })
        .collect();
    json!(format!("model\\.layers\\.(?:{})", alts.join("|")))
}

/// `rank_pattern` and `alpha_pattern` for modules whose rank differs from the
/// adapter's (stacked fused modules), with the alpha that keeps the scale.
fn patterns(adapter: &LoraAdapter, layers: &[Vec<SavedModule>]) -> (Value, Value) {
    let mut ranks = serde_json::Map::new();
    let mut alphas = serde_json::Map::new();
    for m in layers.iter().flatten().filter(|m| m.rank != adapter.rank) {
        let ratio = m.rank as f64 / adapter.rank as f64;
        let factor = if adapter.rslora { ratio.sqrt() } else { ratio };
        ranks.insert(short(m.module).into(), json!(m.rank));
        alphas.insert(
            short(m.module).into(),
            json!(f64::from(adapter.alpha) * factor),
        );
    }
    (Value::Object(ranks), Value::Object(alphas))
}

/// The `adapter_config.json` PEFT writes for a LoRA adapter on a causal LM.
fn config_json(adapter: &LoraAdapter, layers: &[Vec<SavedModule>], base_model_name: &str) -> Value {
    let (rank_pattern, alpha_pattern) = patterns(adapter, layers);
    json!({
        "alpha_pattern": alpha_pattern,
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
        "rank_pattern": rank_pattern,
        "revision": null,
        "target_modules": target_modules(layers),
        "task_type": "CAUSAL_LM",
        "use_dora": false,
        "use_rslora": adapter.rslora,
    })
}

/// The two files of a PEFT adapter directory, as bytes.
fn encode(
    adapter: &LoraAdapter,
    hp: &HyperParams,
    layout: ModuleLayout,
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
    let layers: Vec<Vec<SavedModule>> = hf
        .layers
        .iter()
        .map(|l| layer_modules(l, hf.rank, hp, layout))
        .collect();
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (l, layer) in layers.iter().enumerate() {
        for m in layer {
            tensors.push((
                tensor_name(l, m.module, "A"),
                vec![m.rank, m.inp],
                bytes(&m.a),
            ));
            tensors.push((
                tensor_name(l, m.module, "B"),
                vec![m.out, m.rank],
                bytes(&m.b),
            ));
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
    let mut config = serde_json::to_vec_pretty(&config_json(adapter, &layers, base_model_name))
        .map_err(|e| TrainError::Adapter(format!("cannot encode {CONFIG_FILE}: {e}")))?;
    config.push(b'\n');
    Ok((weights, config))
}

/// A `tempfile` builder whose files or directories get `mode & ~umask`, as any
/// new file does (`tempfile` alone makes them owner-only, which other accounts,
/// e.g. a service user, could not read once renamed into place).
pub(crate) fn new_file_builder<'a, 'b>(mode: u32) -> tempfile::Builder<'a, 'b> {
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(mode));
    #[cfg(not(unix))]
    let _ = mode;
    builder
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e| TrainError::io(path, e);
    let mut f = std::fs::File::create(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Saves `adapter` (in the row order of a model with hyperparameters `hp`) as a
/// PEFT adapter directory `dir`: `adapter_model.safetensors` (f32) and
/// `adapter_config.json` with `base_model_name_or_path = base_model_name`, with
/// the module names of `layout` (the base model's: `ModuleLayout::of(model.metadata())`).
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
    layout: ModuleLayout,
    base_model_name: &str,
) -> Result<()> {
    let (weights, config) = encode(adapter, hp, layout, base_model_name)?;
    if dir.is_dir() {
        for (name, bytes) in [(WEIGHTS_FILE, &weights), (CONFIG_FILE, &config)] {
            let tmp = new_file_builder(0o666)
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
    let tmp = new_file_builder(0o777)
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
