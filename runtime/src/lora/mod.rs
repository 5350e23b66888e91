//! LoRA adapters: low-rank updates `W' = W + scale * B A` to a layer's
//! projection matrices, kept in f32 beside the frozen (possibly quantized) base.
//!
//! Shapes follow Hugging Face PEFT: for a matrix `W: [out, in]`, `A: [rank, in]`
//! and `B: [out, rank]`, both row-major; `scale = alpha / rank` (or
//! `alpha / sqrt(rank)` with rsLoRA). The adapted product is
//! `y = W x + scale * B (A x)`.
//!
//! This module holds the in-memory adapter and its validation against a model;
//! [`peft`] reads PEFT adapter directories (the `peft` feature: JSON and
//! safetensors stay out of a build without it). Writing them belongs to
//! training (`ember-train`).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::HyperParams;

#[cfg(feature = "peft")]
pub mod peft;
#[cfg(feature = "peft")]
pub mod safetensors_names;

/// A projection matrix of a decoder layer that an adapter may target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LoraTarget {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl LoraTarget {
    /// Every target, in the order of `LayerLora::pairs`.
    pub const ALL: [LoraTarget; 7] = [
        LoraTarget::Q,
        LoraTarget::K,
        LoraTarget::V,
        LoraTarget::O,
        LoraTarget::Gate,
        LoraTarget::Up,
        LoraTarget::Down,
    ];

    /// Index into `LayerLora::pairs`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The short name used on the command line (`q,k,v,o,gate,up,down`).
    pub fn short_name(self) -> &'static str {
        match self {
            LoraTarget::Q => "q",
            LoraTarget::K => "k",
            LoraTarget::V => "v",
            LoraTarget::O => "o",
            LoraTarget::Gate => "gate",
            LoraTarget::Up => "up",
            LoraTarget::Down => "down",
        }
    }

    /// The PEFT / transformers module name inside a Llama-family layer
    /// (`model.layers.N.<module>`).
    pub fn peft_module(self) -> &'static str {
        match self {
            LoraTarget::Q => "self_attn.q_proj",
            LoraTarget::K => "self_attn.k_proj",
            LoraTarget::V => "self_attn.v_proj",
            LoraTarget::O => "self_attn.o_proj",
            LoraTarget::Gate => "mlp.gate_proj",
            LoraTarget::Up => "mlp.up_proj",
            LoraTarget::Down => "mlp.down_proj",
        }
    }

    /// Parses a short name (`q`) or a PEFT module's last component (`q_proj`).
    pub fn parse(s: &str) -> Option<LoraTarget> {
        LoraTarget::ALL
            .into_iter()
            .find(|t| s == t.short_name() || t.peft_module().rsplit('.').next() == Some(s))
    }

    /// `(in, out)`: the input width and output height of the targeted matrix.
    pub fn dims(self, hp: &HyperParams) -> (usize, usize) {
        let dim = hp.dim as usize;
        let ffn = hp.ffn_dim as usize;
        match self {
            LoraTarget::Q => (dim, hp.q_dim()),
            LoraTarget::K | LoraTarget::V => (dim, hp.kv_dim()),
            LoraTarget::O => (hp.q_dim(), dim),
            LoraTarget::Gate | LoraTarget::Up => (dim, ffn),
            LoraTarget::Down => (ffn, dim),
        }
    }
}

/// One adapted matrix: `A: [rank, in]`, `B: [out, rank]`, row-major f32.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraPair {
    pub a: Vec<f32>,
    pub b: Vec<f32>,
}

/// The adapted matrices of one layer, indexed by `LoraTarget::index`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerLora {
    pub pairs: [Option<LoraPair>; 7],
}

impl LayerLora {
    pub fn get(&self, t: LoraTarget) -> Option<&LoraPair> {
        self.pairs[t.index()].as_ref()
    }
    pub fn get_mut(&mut self, t: LoraTarget) -> Option<&mut LoraPair> {
        self.pairs[t.index()].as_mut()
    }
}

/// A LoRA adapter for every layer of one model shape.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraAdapter {
    /// Rank `r` shared by every pair.
    pub rank: usize,
    /// PEFT's `lora_alpha`.
    pub alpha: f32,
    /// PEFT's `use_rslora`: scale by `alpha / sqrt(rank)` instead of `alpha / rank`.
    pub rslora: bool,
    /// One entry per layer of the base model.
    pub layers: Vec<LayerLora>,
}

impl LoraAdapter {
    /// An adapter of `rank` on `targets` of every layer, all zeros (a no-op until
    /// initialised or loaded). Errors if `rank` is 0 or larger than a targeted
    /// matrix's smaller side.
    pub fn zeros(
        hp: &HyperParams,
        rank: usize,
        alpha: f32,
        targets: &[LoraTarget],
    ) -> Result<Self> {
        if targets.is_empty() {
            return Err(Error::InvalidArgument(
                "LoRA: no target matrices given".into(),
            ));
        }
        for &t in targets {
            check_rank(hp, t, rank)?;
        }
        let layer = {
            let mut l = LayerLora::default();
            for &t in targets {
                let (i, o) = t.dims(hp);
                l.pairs[t.index()] = Some(LoraPair {
                    a: vec![0.0; rank * i],
                    b: vec![0.0; o * rank],
                });
            }
            l
        };
        Ok(Self {
            rank,
            alpha,
            rslora: false,
            layers: vec![layer; hp.n_layers as usize],
        })
    }

    /// The factor applied to `B A x`.
    pub fn scale(&self) -> f32 {
        if self.rslora {
            self.alpha / (self.rank as f32).sqrt()
        } else {
            self.alpha / self.rank as f32
        }
    }

    /// The targets present in any layer, in `LoraTarget::ALL` order.
    pub fn targets(&self) -> Vec<LoraTarget> {
        LoraTarget::ALL
            .into_iter()
            .filter(|t| self.layers.iter().any(|l| l.get(*t).is_some()))
            .collect()
    }

    /// Checks that the adapter fits a model with hyperparameters `hp`: the layer
    /// count, and every pair's shapes. The forward pass relies on this.
    pub fn validate(&self, hp: &HyperParams) -> Result<()> {
        if self.layers.len() != hp.n_layers as usize {
            return Err(Error::InvalidArgument(format!(
                "LoRA adapter has {} layers but the model has {}",
                self.layers.len(),
                hp.n_layers
            )));
        }
        if !self.alpha.is_finite() {
            return Err(Error::InvalidArgument("LoRA alpha is not finite".into()));
        }
        for (l, layer) in self.layers.iter().enumerate() {
            for t in LoraTarget::ALL {
                let Some(p) = layer.get(t) else { continue };
                check_rank(hp, t, self.rank)?;
                let (i, o) = t.dims(hp);
                if p.a.len() != self.rank * i || p.b.len() != o * self.rank {
                    return Err(Error::InvalidArgument(format!(
                        "LoRA layer {l} {}: A has {} values and B {}, but this model needs \
                         A [{}, {i}] and B [{o}, {}] (an adapter for another base model?)",
                        t.peft_module(),
                        p.a.len(),
                        p.b.len(),
                        self.rank,
                        self.rank
                    )));
                }
            }
        }
        Ok(())
    }

    /// Number of trainable parameters.
    pub fn num_params(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| l.pairs.iter().flatten())
            .map(|p| p.a.len() + p.b.len())
            .sum()
    }
}

fn check_rank(hp: &HyperParams, t: LoraTarget, rank: usize) -> Result<()> {
    if t == LoraTarget::Gate && hp.flags & crate::format::flags::PLAIN_MLP != 0 {
        return Err(Error::InvalidArgument(
            "LoRA targets gate_proj, but this model's MLP has no gate".into(),
        ));
    }
    let (i, o) = t.dims(hp);
    if rank == 0 || rank > i.min(o) {
        return Err(Error::InvalidArgument(format!(
            "LoRA rank {rank} is invalid for {} ([{o}, {i}]): it must be 1..={}",
            t.peft_module(),
            i.min(o)
        )));
    }
    Ok(())
}

/// `out += scale * B (A x)` for one pair, using `tmp[..rank]` as scratch.
/// Shapes: `x: [in]`, `out: [out]`, as validated by `LoraAdapter::validate`.
pub fn apply_pair(
    p: &LoraPair,
    rank: usize,
    scale: f32,
    x: &[f32],
    tmp: &mut [f32],
    out: &mut [f32],
) {
    let tmp = &mut tmp[..rank];
    for (r, t) in tmp.iter_mut().enumerate() {
        let row = &p.a[r * x.len()..(r + 1) * x.len()];
        *t = row.iter().zip(x).map(|(a, b)| a * b).sum::<f32>() * scale;
    }
    for (o, y) in out.iter_mut().enumerate() {
        let row = &p.b[o * rank..(o + 1) * rank];
        *y += row.iter().zip(tmp.iter()).map(|(b, t)| b * t).sum::<f32>();
    }
}

/// An adapter attached to a session: the shared adapter, the factor applied to
/// `B A x` (`adapter.scale() * user scale`) and `rank` floats of scratch, sized
/// here so that the forward pass allocates nothing.
#[derive(Clone, Debug)]
pub struct ActiveLora {
    adapter: Arc<LoraAdapter>,
    factor: f32,
    tmp: Vec<f32>,
}

impl ActiveLora {
    /// Validates `adapter` against `hp` (layer count, ranks, shapes) and `scale`
    /// (finite), and allocates the scratch.
    pub fn new(adapter: Arc<LoraAdapter>, scale: f32, hp: &HyperParams) -> Result<Self> {
        adapter.validate(hp)?;
        let factor = adapter.scale() * scale;
        if !scale.is_finite() || !factor.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "LoRA scale {scale} (effective factor {factor}) is not finite"
            )));
        }
        let tmp = vec![0.0; adapter.rank];
        Ok(Self {
            adapter,
            factor,
            tmp,
        })
    }

    pub fn adapter(&self) -> &Arc<LoraAdapter> {
        &self.adapter
    }

    /// The factor multiplying `B (A x)`.
    pub fn factor(&self) -> f32 {
        self.factor
    }

    /// `out += factor * B (A x)` for `layer`'s matrix `t`, if the adapter has it.
    /// `x` and `out` have the matrix's input and output widths.
    #[inline]
    pub fn apply(&mut self, layer: usize, t: LoraTarget, x: &[f32], out: &mut [f32]) {
        if let Some(p) = self.adapter.layers[layer].get(t) {
            apply_pair(p, self.adapter.rank, self.factor, x, &mut self.tmp, out);
        }
    }
}

/// Sees the input vector of every per-layer matrix product, e.g. to gather the
/// activation statistics of calibrated quantization (`ember convert
/// --calibrate`). Called on the session's thread, once per token, layer and
/// target (`x` has the matrix's input width; Q, K and V share an input, as do
/// Gate and Up, and each is reported). Observation is an offline tool: unlike
/// the rest of the forward pass, an observer may allocate.
pub trait InputObserver: Send {
    fn observe(&mut self, layer: usize, target: LoraTarget, x: &[f32]);
}

/// What runs after each per-layer matrix product: the attached adapter and the
/// input observer, both optional (`Session::set_lora`, `Session::set_observer`).
#[derive(Default)]
pub struct MatrixHooks {
    pub(crate) adapter: Option<ActiveLora>,
    pub(crate) observer: Option<Box<dyn InputObserver>>,
}

impl MatrixHooks {
    /// Whether no hook is attached (the forward pass then skips the calls).
    pub fn is_none(&self) -> bool {
        self.adapter.is_none() && self.observer.is_none()
    }
}

/// The forward pass's hook after each targeted matrix-vector product: the
/// observer sees `x`; then `out += factor * B (A x)` when an adapter is
/// attached and adapts `t` in `layer`. Allocates nothing itself.
#[inline]
pub fn lora_hook(hooks: &mut MatrixHooks, layer: usize, t: LoraTarget, x: &[f32], out: &mut [f32]) {
    if let Some(o) = &mut hooks.observer {
        o.observe(layer, t, x);
    }
    if let Some(a) = &mut hooks.adapter {
        a.apply(layer, t, x, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_round_trip() {
        for t in LoraTarget::ALL {
            assert_eq!(LoraTarget::parse(t.short_name()), Some(t));
            let last = t.peft_module().rsplit('.').next().unwrap();
            assert_eq!(LoraTarget::parse(last), Some(t));
        }
        assert_eq!(LoraTarget::parse("x"), None);
    }

    #[test]
    fn apply_pair_matches_dense_update() {
        // W' - W = scale * B A, checked on a 3x4 matrix of rank 2.
        let p = LoraPair {
            a: vec![1.0, 0.0, 2.0, -1.0, 0.5, 1.0, 0.0, 3.0],
            b: vec![1.0, 2.0, -1.0, 0.0, 0.5, 0.5],
        };
        let x = [1.0, 2.0, 3.0, 4.0];
        let mut out = [10.0, 20.0, 30.0];
        let mut tmp = [0.0; 2];
        apply_pair(&p, 2, 0.5, &x, &mut tmp, &mut out);
        // A x = [1+6-4, 0.5+2+12] = [3, 14.5]; B (A x) = [32, -3, 8.75]; * 0.5
        assert_eq!(out, [10.0 + 16.0, 20.0 - 1.5, 30.0 + 4.375]);
    }
}
