//! Resumable checkpoints.
//!
//! A checkpoint is a directory `OUT/checkpoint-NNNNNNNN` (the optimizer step
//! count, zero-padded) holding:
//! - the adapter in PEFT layout (`adapter_model.safetensors`,
//!   `adapter_config.json`; [`crate::peft::save_peft`]), for use as is;
//! - `trainer_state.safetensors`: the exact f32 parameters and AdamW moments
//!   (`params`, `adam_m`, `adam_v`, one flat vector each in
//!   [`crate::params::Layout`] order);
//! - `trainer_state.json`: [`TrainerState`] (step, data position, RNG state,
//!   configuration, fingerprints of the base model and the training data).
//!
//! Written atomically: everything goes into a temporary directory inside `OUT`,
//! is synced, and the directory is renamed to its final name (then `OUT` is
//! synced). A run killed at any moment leaves either a complete checkpoint or
//! only a `.checkpoint-*` temporary directory, which is ignored and removed by
//! the next save. Older checkpoints beyond the last [`KEEP`] are removed after
//! a new one is in place, each renamed to a `.checkpoint-*` name first, so a
//! kill during the removal never leaves a half-deleted checkpoint.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ember_runtime::format::HyperParams;
use ember_runtime::lora::peft::ModuleLayout;
use ember_runtime::lora::LoraAdapter;
use ember_runtime::Model;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::trainer::TrainConfig;
use ember_runtime::sampler::{mix64, Rng};

/// `trainer_state.json`.
pub const STATE_JSON: &str = "trainer_state.json";
/// `trainer_state.safetensors`.
pub const STATE_TENSORS: &str = "trainer_state.safetensors";
/// Checkpoints kept in an output directory.
pub const KEEP: usize = 2;
/// Version of the checkpoint layout.
pub const FORMAT_VERSION: u32 = 1;

/// The training state besides the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub format: u32,
    /// [`base_fingerprint`] of the model trained on (hex).
    pub base_fingerprint: String,
    /// [`crate::data::fingerprint`] of the training sequences (hex).
    pub data_fingerprint: String,
    pub config: TrainConfig,
    /// Optimizer steps completed.
    pub step: u64,
    /// Total optimizer steps of the run.
    pub total_steps: u64,
    /// Training sequences consumed (index into the epoch-shuffled stream).
    pub position: u64,
    /// The dropout-seed generator.
    pub rng: Rng,
    /// Validation loss of the adapter at initialisation (if measured).
    pub val_loss_before: Option<f64>,
    /// Mean training loss of the first optimizer step.
    pub first_train_loss: Option<f64>,
}

/// Tensors of a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct StateTensors {
    pub params: Vec<f32>,
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
}

/// A fingerprint of the base model: its hyperparameters and every tensor's
/// name, type, shape and stored checksum.
pub fn base_fingerprint(model: &Model) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    };
    let hp: &HyperParams = model.hparams();
    eat(bytemuck::bytes_of(hp));
    for t in model.tensors() {
        eat(t.name.as_bytes());
        eat(&(t.dtype as u32).to_le_bytes());
        for d in &t.shape {
            eat(&d.to_le_bytes());
        }
        eat(&t.checksum.to_le_bytes());
    }
    format!("{:016x}", mix64(h))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e| TrainError::io(path, e);
    let mut f = std::fs::File::create(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| TrainError::io(dir, e))
}

/// The directory name of the checkpoint after `step` steps.
pub fn dir_name(step: u64) -> String {
    format!("checkpoint-{step:08}")
}

/// Checkpoints in `out`, oldest first.
pub fn list(out: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    let rd = match std::fs::read_dir(out) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(TrainError::io(out, e)),
    };
    for e in rd {
        let e = e.map_err(|e| TrainError::io(out, e))?;
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(n) = name
            .strip_prefix("checkpoint-")
            .and_then(|s| s.parse().ok())
        {
            if e.path().join(STATE_JSON).is_file() {
                v.push((n, e.path()));
            }
        }
    }
    v.sort();
    Ok(v)
}

/// The checkpoint to resume from: `dir` itself when it is one, else the newest
/// checkpoint inside it.
pub fn resolve(dir: &Path) -> Result<PathBuf> {
    if dir.join(STATE_JSON).is_file() {
        return Ok(dir.to_path_buf());
    }
    if !dir.is_dir() {
        return Err(TrainError::Checkpoint(format!(
            "--resume {}: no such directory",
            dir.display()
        )));
    }
    list(dir)?.pop().map(|(_, p)| p).ok_or_else(|| {
        TrainError::Checkpoint(format!(
            "--resume {}: no checkpoint in this directory ({STATE_JSON} not found)",
            dir.display()
        ))
    })
}

/// Writes a checkpoint of `step` into `out` (see the module documentation);
/// returns its path.
pub fn save(
    out: &Path,
    state: &TrainerState,
    tensors: &StateTensors,
    adapter: &LoraAdapter,
    hp: &HyperParams,
    layout: ModuleLayout,
    base_name: &str,
) -> Result<PathBuf> {
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    // Leftovers of runs killed while saving.
    if let Ok(rd) = std::fs::read_dir(out) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(".checkpoint-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let tmp = crate::peft::new_file_builder(0o777)
        .prefix(".checkpoint-")
        .tempdir_in(out)
        .map_err(|e| TrainError::io(out, e))?;
    crate::peft::save_peft(tmp.path(), adapter, hp, layout, base_name)?;
    let bytes = |v: &[f32]| bytemuck::cast_slice::<f32, u8>(v).to_vec();
    let (p, m, v) = (
        bytes(&tensors.params),
        bytes(&tensors.adam_m),
        bytes(&tensors.adam_v),
    );
    let views = [("params", &p), ("adam_m", &m), ("adam_v", &v)]
        .into_iter()
        .map(|(name, data)| {
            safetensors::tensor::TensorView::new(Dtype::F32, vec![data.len() / 4], data)
                .map(|t| (name.to_string(), t))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| TrainError::Checkpoint(format!("encoding the optimizer state: {e}")))?;
    let st = safetensors::serialize(views, None)
        .map_err(|e| TrainError::Checkpoint(format!("encoding the optimizer state: {e}")))?;
    write_synced(&tmp.path().join(STATE_TENSORS), &st)?;
    let mut json = serde_json::to_vec_pretty(state)
        .map_err(|e| TrainError::Checkpoint(format!("encoding {STATE_JSON}: {e}")))?;
    json.push(b'\n');
    write_synced(&tmp.path().join(STATE_JSON), &json)?;
    sync_dir(tmp.path())?;
    let final_dir = out.join(dir_name(state.step));
    if final_dir.exists() {
        retire(&final_dir, out)?;
    }
    let staged = tmp.keep();
    std::fs::rename(&staged, &final_dir).map_err(|e| {
        let _ = std::fs::remove_dir_all(&staged);
        TrainError::io(&final_dir, e)
    })?;
    sync_dir(out)?;
    let all = list(out)?;
    for (_, old) in all.iter().take(all.len().saturating_sub(KEEP)) {
        let _ = retire(old, out);
    }
    Ok(final_dir)
}

/// Removes checkpoint `dir` of `out` so that a kill at any moment leaves it
/// either whole or gone: it is first renamed to a `.checkpoint-*` name (which
/// [`list`] ignores and the next save removes), then deleted.
fn retire(dir: &Path, out: &Path) -> Result<()> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let doomed = out.join(format!(".checkpoint-retired-{name}"));
    if doomed.exists() {
        std::fs::remove_dir_all(&doomed).map_err(|e| TrainError::io(&doomed, e))?;
    }
    std::fs::rename(dir, &doomed).map_err(|e| TrainError::io(dir, e))?;
    sync_dir(out)?;
    std::fs::remove_dir_all(&doomed).map_err(|e| TrainError::io(&doomed, e))
}

/// Reads a checkpoint directory. Refuses a state that no run writes: a step
/// beyond the run's total, or a data position other than `step * batch *
/// grad_accum`.
pub fn load(dir: &Path) -> Result<(TrainerState, StateTensors)> {
    let bad = |msg: String| TrainError::Checkpoint(format!("checkpoint {}: {msg}", dir.display()));
    let jp = dir.join(STATE_JSON);
    let text = std::fs::read(&jp).map_err(|e| TrainError::io(&jp, e))?;
    let state: TrainerState =
        serde_json::from_slice(&text).map_err(|e| bad(format!("{STATE_JSON}: {e}")))?;
    if state.format != FORMAT_VERSION {
        return Err(bad(format!(
            "format {} (this build reads {FORMAT_VERSION})",
            state.format
        )));
    }
    if state.step > state.total_steps {
        return Err(bad(format!(
            "{STATE_JSON}: step {} is beyond the run's total of {} steps",
            state.step, state.total_steps
        )));
    }
    let per_step = (state.config.batch as u64).saturating_mul(state.config.grad_accum as u64);
    if state.step.checked_mul(per_step) != Some(state.position) {
        return Err(bad(format!(
            "{STATE_JSON}: data position {} is not step {} times {per_step} sequences per step",
            state.position, state.step
        )));
    }
    let tp = dir.join(STATE_TENSORS);
    let bytes = std::fs::read(&tp).map_err(|e| TrainError::io(&tp, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("{STATE_TENSORS}: {e}")))?;
    let mut got: HashMap<&str, Vec<f32>> = HashMap::new();
    for name in ["params", "adam_m", "adam_v"] {
        let t = st
            .tensor(name)
            .map_err(|e| bad(format!("{STATE_TENSORS}: {name}: {e}")))?;
        if t.dtype() != Dtype::F32 {
            return Err(bad(format!("{STATE_TENSORS}: {name} is not f32")));
        }
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        got.insert(name, v);
    }
    let tensors = StateTensors {
        params: got.remove("params").unwrap_or_default(),
        adam_m: got.remove("adam_m").unwrap_or_default(),
        adam_v: got.remove("adam_v").unwrap_or_default(),
    };
    if tensors.adam_m.len() != tensors.params.len() || tensors.adam_v.len() != tensors.params.len()
    {
        return Err(bad("parameter and moment vectors differ in length".into()));
    }
    Ok((state, tensors))
}
