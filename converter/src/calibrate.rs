//! Calibrated quantization (`ember convert --calibrate TEXT`): runs the model
//! over sample text, gathers per-column statistics of every matrix's input, and
//! uses them twice:
//!
//! 1. **Smoothing** (SmoothQuant): activations are quantized to 8-bit blocks at
//!    run time, and a few input channels with large values coarsen the block
//!    scale for the rest. Per input channel `j` of a group of matrices sharing
//!    an input, `s_j = max|x_j|^alpha / max|W[:, j]|^(1 - alpha)`; the input is
//!    divided by `s_j` and the weight columns multiplied by it, which leaves the
//!    model's function unchanged in exact arithmetic. The division is folded
//!    into the producer of the input: the RMSNorm weight (for Q/K/V and
//!    Gate/Up) or the rows of the up projection (for Down, whose input is
//!    `act(gate) * up`). The attention output projection and the (possibly tied)
//!    output matrix are not smoothed.
//! 2. **Importance**: each matrix's quantizer minimises the squared error
//!    weighted by the mean square of the (smoothed) input column it multiplies
//!    (`crate::quantize`, `scalar::quantize_row_iq4_nl_weighted`).
//!
//! A smoothed file computes the same function but its weights are in a
//! rescaled basis: LoRA adapters trained on the original model do not apply to
//! it (train them on the calibrated file instead).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ember_progress::{Progress, Unit};
use ember_runtime::format::{names, DType, NormKind};
use ember_runtime::lora::{InputObserver, LoraTarget};
use ember_runtime::tokenizer::EncodeOptions;
use ember_runtime::{Model, Session, SessionConfig};

use crate::error::{ConvertError, Result};
use crate::ir::{IrTensor, ModelIr, TensorSource};
use crate::writer::{write_model, DTypeChoice, WriteOptions};

/// Per-column weights of a matrix's quantization error, by tensor name (one
/// non-negative value per input column).
pub type Importance = HashMap<String, Vec<f32>>;

/// Settings of `--calibrate`.
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    /// The sample text.
    pub text: String,
    /// At most this many tokens of it are run.
    pub max_tokens: usize,
    /// Tokens per window (the session is reset between windows).
    pub window: usize,
    /// Smoothing strength in 0..=1; 0 disables smoothing.
    pub alpha: f32,
}

impl CalibrateOptions {
    /// 2048 tokens in windows of 512, alpha 0.5 (SmoothQuant's default).
    pub fn new(text: String) -> Self {
        Self {
            text,
            max_tokens: 2048,
            window: 512,
            alpha: 0.5,
        }
    }
}

/// What calibration measured and decided.
#[derive(Debug)]
pub struct Calibration {
    pub tokens: usize,
    /// Matrices whose input columns were rescaled.
    pub smoothed: usize,
    pub importance: Importance,
}

/// Sum of squares and largest magnitude per input column.
#[derive(Clone, Debug, Default)]
struct ColStats {
    sum_sq: Vec<f64>,
    max_abs: Vec<f32>,
    count: usize,
}

impl ColStats {
    fn add(&mut self, x: &[f32]) {
        if self.sum_sq.is_empty() {
            self.sum_sq = vec![0.0; x.len()];
            self.max_abs = vec![0.0; x.len()];
        }
        for ((s, m), &v) in self.sum_sq.iter_mut().zip(&mut self.max_abs).zip(x) {
            *s += v as f64 * v as f64;
            *m = m.max(v.abs());
        }
        self.count += 1;
    }

    fn mean_sq(&self) -> Vec<f32> {
        let n = self.count.max(1) as f64;
        self.sum_sq.iter().map(|&s| (s / n) as f32).collect()
    }
}

/// The inputs of one layer's matrices: Q/K/V share `attn_in`, Gate/Up share
/// `ffn_in`.
#[derive(Clone, Debug, Default)]
struct LayerStats {
    attn_in: ColStats,
    attn_out: ColStats,
    ffn_in: ColStats,
    down_in: ColStats,
}

struct Collector(Arc<Mutex<Vec<LayerStats>>>);

impl InputObserver for Collector {
    fn observe(&mut self, layer: usize, target: LoraTarget, x: &[f32]) {
        let mut layers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut layers[layer];
        match target {
            LoraTarget::Q => s.attn_in.add(x),
            LoraTarget::O => s.attn_out.add(x),
            LoraTarget::Gate => s.ffn_in.add(x),
            LoraTarget::Down => s.down_in.add(x),
            LoraTarget::K | LoraTarget::V | LoraTarget::Up => {}
        }
    }
}

/// Runs `ir` over the calibration text and returns per-layer statistics. The
/// model is written once at f16 to a temporary file for the run.
/// Reports progress on stderr when `progress` is set.
fn collect(
    ir: &ModelIr,
    opts: &CalibrateOptions,
    progress: bool,
) -> Result<(Vec<LayerStats>, usize)> {
    let dir = tempfile::tempdir().map_err(|e| ConvertError::Io {
        path: std::env::temp_dir(),
        source: e,
    })?;
    let tmp = dir.path().join("calibrate.ember");
    write_model(
        ir,
        &tmp,
        &WriteOptions {
            dtype: DTypeChoice::Fixed(DType::F16),
            ..Default::default()
        },
    )?;
    let model = Arc::new(Model::load(&tmp)?);
    let ids = model.tokenizer().encode(
        &opts.text,
        EncodeOptions {
            add_bos: true,
            parse_special: false,
        },
    );
    let ids = &ids[..ids.len().min(opts.max_tokens)];
    if ids.len() < 2 {
        return Err(ConvertError::Unsupported(
            "--calibrate: the text gives fewer than 2 tokens".into(),
        ));
    }
    let window = opts
        .window
        .clamp(2, model.hparams().max_context as usize)
        .min(ids.len());
    let layers = Arc::new(Mutex::new(vec![
        LayerStats::default();
        model.hparams().n_layers as usize
    ]));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let mut session = Session::new(
        model.clone(),
        SessionConfig {
            threads,
            ..SessionConfig::new(window)
        },
    )?;
    session.set_observer(Some(Box::new(Collector(layers.clone()))));
    let report = Progress::new(
        "calibrate",
        ids.len() as u64,
        Unit::Items("tokens"),
        !progress,
    );
    for chunk in ids.chunks(window) {
        session.reset();
        session.prefill(chunk)?;
        report.inc(chunk.len() as u64);
    }
    report.finish();
    drop(session);
    let stats = std::mem::take(&mut *layers.lock().unwrap_or_else(|e| e.into_inner()));
    Ok((stats, ids.len()))
}

/// A source whose values are another's with row `i` multiplied by `rows[i]`
/// and column `j` by `cols[j]` (vectors: element `i` by `rows[i]`). It never
/// offers raw blocks: the values changed.
struct Scaled {
    inner: Box<dyn TensorSource>,
    /// Elements per row (1 for vectors).
    n_cols: usize,
    rows: Option<Vec<f32>>,
    cols: Option<Vec<f32>>,
}

impl TensorSource for Scaled {
    fn source_dtype(&self) -> String {
        self.inner.source_dtype()
    }
    fn native_dtype(&self) -> Option<DType> {
        self.inner.native_dtype()
    }
    fn to_f32(&self) -> Result<Vec<f32>> {
        let mut v = self.inner.to_f32()?;
        for (i, row) in v.chunks_exact_mut(self.n_cols).enumerate() {
            let r = self.rows.as_ref().map_or(1.0, |r| r[i]);
            for (j, x) in row.iter_mut().enumerate() {
                *x *= r * self.cols.as_ref().map_or(1.0, |c| c[j]);
            }
        }
        Ok(v)
    }
}

fn tensor_index(ir: &ModelIr, name: &str) -> Option<usize> {
    ir.tensors.iter().position(|t| t.name == name)
}

/// Largest magnitude per column of the named matrices (all with the same width).
fn column_max(ir: &ModelIr, names: &[String]) -> Result<Vec<f32>> {
    let mut max: Vec<f32> = Vec::new();
    for n in names {
        let t = &ir.tensors[tensor_index(ir, n).expect("expected tensor")];
        let cols = t.shape[t.shape.len() - 1] as usize;
        let v = t.source.to_f32()?;
        if max.is_empty() {
            max = vec![0.0; cols];
        }
        for row in v.chunks_exact(cols) {
            for (m, x) in max.iter_mut().zip(row) {
                *m = m.max(x.abs());
            }
        }
    }
    Ok(max)
}

/// SmoothQuant factors `x_max^alpha / w_max^(1 - alpha)`, 1 where either is
/// zero or not finite, clamped to a range that keeps f16 and block scales sane.
fn smoothing_factors(x_max: &[f32], w_max: &[f32], alpha: f32) -> Vec<f32> {
    const RANGE: (f32, f32) = (1e-2, 1e2);
    x_max
        .iter()
        .zip(w_max)
        .map(|(&x, &w)| {
            let s = x.powf(alpha) / w.powf(1.0 - alpha);
            if x > 0.0 && w > 0.0 && s.is_finite() {
                s.clamp(RANGE.0, RANGE.1)
            } else {
                1.0
            }
        })
        .collect()
}

/// Wraps tensor `name` so its rows and/or columns are rescaled; composes with
/// an earlier wrap of the same tensor.
fn rescale(ir: &mut ModelIr, name: &str, rows: Option<&[f32]>, cols: Option<&[f32]>) {
    let Some(i) = tensor_index(ir, name) else {
        return;
    };
    let t: &mut IrTensor = &mut ir.tensors[i];
    let n_cols = if t.shape.len() > 1 {
        t.shape[t.shape.len() - 1] as usize
    } else {
        1
    };
    let inner = std::mem::replace(&mut t.source, Box::new(crate::ir::F32Source(Vec::new())));
    t.source = Box::new(Scaled {
        inner,
        n_cols,
        rows: rows.map(<[f32]>::to_vec),
        cols: cols.map(<[f32]>::to_vec),
    });
}

/// Calibrates `ir` in place (smoothing when the architecture allows it and
/// `opts.alpha > 0`) and returns the importance of every matrix with
/// statistics; reports progress on stderr when `progress` is set.
pub fn calibrate(ir: &mut ModelIr, opts: &CalibrateOptions, progress: bool) -> Result<Calibration> {
    if !(0.0..=1.0).contains(&opts.alpha) {
        return Err(ConvertError::Unsupported(format!(
            "--smooth-alpha {} is outside 0..=1",
            opts.alpha
        )));
    }
    let (stats, tokens) = collect(ir, opts, progress)?;
    let hp = ir.hparams;
    // Smoothing folds 1/s into an RMSNorm weight or the up projection's rows.
    let smooth = opts.alpha > 0.0 && NormKind::from_u32(hp.norm) == Some(NormKind::RmsNorm);
    let mut importance = Importance::new();
    let mut smoothed = 0;
    for (l, s) in stats.iter().enumerate() {
        let name = |suffix: &str| names::layer(l, suffix);
        let groups = [
            (
                &s.attn_in,
                names::ATTN_NORM,
                &[names::WQ, names::WK, names::WV][..],
            ),
            (
                &s.ffn_in,
                names::FFN_NORM,
                &[names::W_GATE, names::W_UP][..],
            ),
        ];
        for (x, norm, mats) in groups {
            let mats: Vec<String> = mats.iter().map(|m| name(m)).collect();
            let mut imp = x.mean_sq();
            if smooth && x.count > 0 {
                let f = smoothing_factors(&x.max_abs, &column_max(ir, &mats)?, opts.alpha);
                let inv: Vec<f32> = f.iter().map(|s| 1.0 / s).collect();
                rescale(ir, &name(norm), Some(&inv), None);
                for m in &mats {
                    rescale(ir, m, None, Some(&f));
                }
                for (i, s) in imp.iter_mut().zip(&f) {
                    *i /= s * s;
                }
                smoothed += mats.len();
            }
            for m in mats {
                importance.insert(m, imp.clone());
            }
        }
        // Down: input act(gate) * up, rescaled through the up projection's rows.
        let (down, up, b_up) = (name(names::W_DOWN), name(names::W_UP), name(names::B_UP));
        let mut imp = s.down_in.mean_sq();
        if smooth && s.down_in.count > 0 {
            let f = smoothing_factors(
                &s.down_in.max_abs,
                &column_max(ir, std::slice::from_ref(&down))?,
                opts.alpha,
            );
            let inv: Vec<f32> = f.iter().map(|s| 1.0 / s).collect();
            rescale(ir, &up, Some(&inv), None);
            rescale(ir, &b_up, Some(&inv), None);
            rescale(ir, &down, None, Some(&f));
            for (i, s) in imp.iter_mut().zip(&f) {
                *i /= s * s;
            }
            smoothed += 1;
        }
        if s.down_in.count > 0 {
            importance.insert(down, imp);
        }
        if s.attn_out.count > 0 {
            importance.insert(name(names::WO), s.attn_out.mean_sq());
        }
    }
    importance.retain(|_, v| !v.is_empty());
    Ok(Calibration {
        tokens,
        smoothed,
        importance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_factors_balance_and_guard() {
        let f = smoothing_factors(&[4.0, 0.0, 1.0, 1e9], &[1.0, 1.0, 0.0, 1e-9], 0.5);
        assert_eq!(f[0], 2.0);
        assert_eq!(f[1], 1.0);
        assert_eq!(f[2], 1.0);
        assert_eq!(f[3], 1e2, "clamped");
    }

    #[test]
    fn scaled_source_scales_rows_and_columns() {
        let s = Scaled {
            inner: Box::new(crate::ir::F32Source(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
            n_cols: 3,
            rows: Some(vec![10.0, 100.0]),
            cols: Some(vec![1.0, 0.5, 2.0]),
        };
        assert_eq!(
            s.to_f32().unwrap(),
            vec![10.0, 10.0, 60.0, 400.0, 250.0, 1200.0]
        );
        assert!(s.raw_as(DType::Q8_0).is_none());
    }
}
