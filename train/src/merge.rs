//! Baking a LoRA adapter into a model: `W' = W + factor * B A` for every adapted
//! matrix, written as a new `.ember` file through the converter's atomic writer
//! (`ember_converter::writer::write_model`), so a failed merge leaves no output.
//!
//! Each adapted matrix is dequantized (or widened) to f32, updated row by row
//! and re-encoded in its stored dtype (or the dtype asked for); every other
//! tensor is copied bit for bit when its dtype is kept. Tokenizer, chat template
//! and metadata are carried over; the metadata gains `lora.merged`.

use std::path::Path;
use std::sync::Arc;

use ember_converter::ir::{IrTensor, ModelIr, TensorSource};
use ember_converter::writer::{write_model, WriteOptions, WriteSummary};
use ember_runtime::format::{names, DType};
use ember_runtime::lora::{LoraAdapter, LoraTarget};
use ember_runtime::Model;

use crate::error::Result;

/// The canonical `.ember` suffix of each target's matrix.
fn tensor_suffix(t: LoraTarget) -> &'static str {
    match t {
        LoraTarget::Q => names::WQ,
        LoraTarget::K => names::WK,
        LoraTarget::V => names::WV,
        LoraTarget::O => names::WO,
        LoraTarget::Gate => names::W_GATE,
        LoraTarget::Up => names::W_UP,
        LoraTarget::Down => names::W_DOWN,
    }
}

/// The low-rank update of one matrix.
struct Delta {
    adapter: Arc<LoraAdapter>,
    layer: usize,
    target: LoraTarget,
    factor: f32,
}

/// Tensor `index` of `model`, plus the update if the adapter targets it.
struct MergedSource {
    model: Arc<Model>,
    index: usize,
    delta: Option<Delta>,
}

impl MergedSource {
    fn stored(&self) -> DType {
        self.model.tensors()[self.index].dtype
    }
}

impl TensorSource for MergedSource {
    fn source_dtype(&self) -> String {
        self.stored().name().to_string()
    }

    /// The stored dtype: with `DTypeChoice::Auto` the writer keeps it (block
    /// types included: they are re-quantized after the merge).
    fn native_dtype(&self) -> Option<DType> {
        Some(self.stored())
    }

    fn to_f32(&self) -> ember_converter::Result<Vec<f32>> {
        let info = &self.model.tensors()[self.index];
        let w = self.model.weights(self.index);
        let cols = *info.shape.last().unwrap_or(&1) as usize;
        let rows = w.len() / cols.max(1);
        let mut out = vec![0.0f32; rows * cols];
        for (r, row) in out.chunks_exact_mut(cols).enumerate() {
            // In the true basis: a rotated matrix is rotated back here, and the
            // writer decides the new file's orientation.
            self.model.row_to_f32(self.index, r, row);
        }
        if let Some(d) = &self.delta {
            let p = d.adapter.layers[d.layer]
                .get(d.target)
                .expect("a delta is only made for an adapted matrix");
            let rank = d.adapter.rank;
            // Row o of W gains factor * sum_r B[o, r] * A[r, :].
            for (o, row) in out.chunks_exact_mut(cols).enumerate() {
                for (r, &b) in p.b[o * rank..(o + 1) * rank].iter().enumerate() {
                    let fb = d.factor * b;
                    for (y, &a) in row.iter_mut().zip(&p.a[r * cols..(r + 1) * cols]) {
                        *y += fb * a;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Unchanged tensors kept in their dtype are copied bit for bit (the
    /// writer asks for block types in plain row order and interleaves them
    /// again, so row-interleaved tensors are handed over de-interleaved).
    fn raw_as(&self, dtype: DType) -> Option<ember_converter::Result<Vec<u8>>> {
        self.has_raw(dtype).then(|| {
            let bytes = self.model.tensor_bytes(self.index);
            let stored = self.stored();
            if !stored.is_tiled() {
                return Ok(bytes.to_vec());
            }
            let cols = *self.model.tensors()[self.index].shape.last().unwrap_or(&1) as usize;
            Ok(untile(
                bytes,
                stored.block_bytes(),
                cols / stored.block_elems(),
            ))
        })
    }

    fn has_raw(&self, dtype: DType) -> bool {
        self.delta.is_none() && dtype == self.stored().untiled()
    }

    /// Copied bytes keep the source's orientation.
    fn raw_rotated(&self) -> bool {
        self.model.tensors()[self.index].rotated
    }
}

/// The blocks of a row-interleaved matrix (`block` bytes each, `nb` per row)
/// in plain row-major order.
fn untile(bytes: &[u8], block: usize, nb: usize) -> Vec<u8> {
    let mut out = vec![0u8; bytes.len()];
    for (i, o) in out.chunks_exact_mut(block).enumerate() {
        let j = ember_kernels::blocks::tiled_index(i / nb, i % nb, nb);
        o.copy_from_slice(&bytes[j * block..(j + 1) * block]);
    }
    out
}

/// Writes `model` with `adapter` merged in at `adapter.scale() * scale` to `out`
/// (atomically; `opts.dtype` `Auto` keeps every tensor's stored dtype).
/// `note` is recorded in the metadata under `lora.merged` (e.g. the adapter's
/// directory). Errors if the adapter does not fit the model or the factor is
/// not finite; nothing is written then.
pub fn merge(
    model: &Arc<Model>,
    adapter: &Arc<LoraAdapter>,
    scale: f32,
    out: &Path,
    opts: &WriteOptions,
    note: &str,
) -> Result<WriteSummary> {
    let hp = *model.hparams();
    adapter.validate(&hp)?;
    let factor = adapter.scale() * scale;
    if !factor.is_finite() {
        return Err(ember_runtime::Error::InvalidArgument(format!(
            "LoRA scale {scale} gives a non-finite factor {factor}"
        ))
        .into());
    }
    let mut tensors = Vec::with_capacity(model.tensors().len());
    for (index, info) in model.tensors().iter().enumerate() {
        let delta = adapter.layers.iter().enumerate().find_map(|(l, layer)| {
            LoraTarget::ALL.into_iter().find_map(|t| {
                (layer.get(t).is_some() && info.name == names::layer(l, tensor_suffix(t))).then(
                    || Delta {
                        adapter: adapter.clone(),
                        layer: l,
                        target: t,
                        factor,
                    },
                )
            })
        });
        tensors.push(IrTensor {
            name: info.name.clone(),
            shape: info.shape.clone(),
            source: Box::new(MergedSource {
                model: model.clone(),
                index,
                delta,
            }),
        });
    }
    let file = model.file();
    let mut metadata = file.metadata.clone();
    metadata.retain(|(k, _)| k != "lora.merged");
    metadata.push((
        "lora.merged".into(),
        format!(
            "{note} (rank {}, alpha {}, scale {scale})",
            adapter.rank, adapter.alpha
        ),
    ));
    let ir = ModelIr {
        hparams: hp,
        tensors,
        tokenizer: file.tokenizer.clone(),
        chat_template: file.chat_template.clone(),
        metadata,
    };
    Ok(write_model(&ir, out, opts)?)
}
