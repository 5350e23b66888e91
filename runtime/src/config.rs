//! The typed architecture description of a model: decoded once from the
//! on-disk [`HyperParams`] (every id checked, every size validated, an unknown
//! tag is an error), then read by every path that runs the transformer block:
//! decode, batched prefill, training, LoRA and session sizing.
//!
//! One description covers the decoder families Ember runs (Llama, Mistral,
//! Qwen2/3, Gemma 3, Phi-3, SmolLM, llama2.c): pre-norm blocks with RMSNorm or
//! LayerNorm, optional post-attention / post-FFN norms and per-head QK norms,
//! gated or plain MLPs, biases, grouped-query attention with per-layer sliding
//! windows and per-kind RoPE, embedding scaling and final-logit soft-capping.

use ember_kernels::scalar::RopeLayout;

use crate::error::{Error, Result};
use crate::format::{flags, Activation, Architecture, HyperParams, NormKind, RopePairing};

/// RoPE frequency scaling, with its parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Frequencies divided by `factor` (positions interpolated).
    Linear {
        factor: f32,
    },
    /// Llama 3.1: wavelengths above `original_context / low_freq_factor` are
    /// divided by `factor`, below `original_context / high_freq_factor` kept,
    /// and blended in between (transformers' `_compute_llama3_parameters`).
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_context: u32,
    },
    /// YaRN: pair `i` gets `interp * (1 - e_i) + extrap * e_i` with
    /// `e_i = 1 - clamp((i - low) / (high - low), 0, 1)`, `interp = f / factor`,
    /// `extrap = f` (transformers' `_compute_yarn_parameters`; the converter
    /// stores the correction range `low..high` it computes there).
    Yarn {
        factor: f32,
        low: f32,
        high: f32,
    },
}

/// The rotary embedding of one kind of layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    /// Which elements of a head are paired.
    pub layout: RopeLayout,
    /// Leading elements of each head that are rotated (even, <= head_dim).
    pub dim: usize,
    /// Base frequency.
    pub theta: f32,
    pub scaling: RopeScaling,
    /// Factor on cos and sin (YaRN's attention temperature; 1 otherwise).
    pub attn_factor: f32,
    /// Whether the model's `rope_freqs` tensor divides the frequencies.
    pub freq_factors: bool,
}

impl Rope {
    /// Number of rotated pairs per head.
    pub fn pairs(&self) -> usize {
        self.dim / 2
    }

    /// The `dim / 2` inverse frequencies `1 / theta^(2i / dim)`, computed in
    /// f32 as llama2.c and transformers do, then scaled, then divided by
    /// `factors` (the `rope_freqs` tensor) when the model has them.
    pub fn inverse_frequencies(&self, factors: Option<&[f32]>) -> Vec<f32> {
        let rot = self.dim;
        let base: Vec<f32> = (0..rot / 2)
            .map(|i| 1.0 / libm::powf(self.theta, (2 * i) as f32 / rot as f32))
            .collect();
        let mut inv: Vec<f32> = match self.scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor: low,
                high_freq_factor: high,
                original_context,
            } => {
                let orig = original_context as f32;
                let low_wavelen = orig / low;
                let high_wavelen = orig / high;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (orig / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
            RopeScaling::Yarn { factor, low, high } => {
                // transformers: pos_freqs = theta^(2i/dim); extrapolation is
                // 1 / pos_freqs (= `base`), interpolation 1 / (factor * pos_freqs).
                let high = if low == high { high + 0.001 } else { high };
                base.iter()
                    .enumerate()
                    .map(|(i, &extrap)| {
                        let pos_freq = libm::powf(self.theta, (2 * i) as f32 / rot as f32);
                        let interp = 1.0 / (factor * pos_freq);
                        let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrap_factor = 1.0 - ramp;
                        interp * (1.0 - extrap_factor) + extrap * extrap_factor
                    })
                    .collect()
            }
        };
        if let Some(factors) = factors.filter(|_| self.freq_factors) {
            for (f, d) in inv.iter_mut().zip(factors) {
                *f /= d;
            }
        }
        inv
    }
}

/// How a layer's queries see the keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attention {
    /// Every earlier position.
    Global,
    /// The last `window` positions (the query's own included).
    Sliding { window: usize },
}

/// Which RoPE table a layer uses: index into [`ModelConfig::ropes`].
pub type RopeKind = usize;

/// One layer's variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerKind {
    pub attention: Attention,
    /// 0 = the global RoPE, 1 = the local one (sliding layers with
    /// `rope_theta_local`).
    pub rope: RopeKind,
}

impl LayerKind {
    /// First position the query at `pos` attends to.
    pub fn window_start(&self, pos: usize) -> usize {
        match self.attention {
            Attention::Global => 0,
            Attention::Sliding { window } => (pos + 1).saturating_sub(window),
        }
    }
}

/// The feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mlp {
    /// `down(act(gate(x)) * up(x))`.
    Gated,
    /// `down(act(up(x)))`.
    Plain,
}

/// The typed, validated description of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    /// Residual stream width.
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub vocab_size: usize,
    pub max_context: usize,
    pub norm: NormKind,
    pub norm_eps: f32,
    pub activation: Activation,
    pub mlp: Mlp,
    pub qkv_bias: bool,
    pub attn_out_bias: bool,
    pub mlp_bias: bool,
    /// Per-head RMSNorm / LayerNorm of queries and keys before RoPE.
    pub qk_norm: bool,
    /// Norm of the attention output before the residual add.
    pub post_attn_norm: bool,
    /// Norm of the feed-forward output before the residual add.
    pub post_ffn_norm: bool,
    pub tied_output: bool,
    /// Factor on every attention score `q . k`.
    pub attn_scale: f32,
    /// Factor on the embedding row.
    pub embed_scale: Option<f32>,
    /// Final-logit soft-capping `c * tanh(logits / c)`.
    pub logit_softcap: Option<f32>,
    /// RoPE of each kind: `[global]` or `[global, local]`.
    pub ropes: Vec<Rope>,
    /// One entry per layer.
    pub layers: Vec<LayerKind>,
}

/// Limits on sizes read from a file, so that a corrupt file cannot request
/// absurd buffers; generous for real models.
const SIZE_LIMIT: u32 = 1 << 24;

fn unknown(what: &'static str, id: u32) -> Error {
    Error::UnknownId { what, id }
}

fn bad(what: impl Into<String>) -> Error {
    Error::BadHyperParams(what.into())
}

fn positive_finite(name: &str, v: f32) -> Result<f32> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(bad(format!("{name} = {v} must be finite and positive")))
    }
}

/// `None` for 0 (the field's "absent"), else the value, which must be finite
/// and positive.
fn optional_positive(name: &str, v: f32) -> Result<Option<f32>> {
    if v == 0.0 {
        Ok(None)
    } else {
        positive_finite(name, v).map(Some)
    }
}

/// The enumerated tags of the hyperparameters, each a known id.
struct Tags {
    architecture: Architecture,
    activation: Activation,
    pairing: RopePairing,
    norm: NormKind,
}

impl Tags {
    /// Decodes the architecture, activation, RoPE pairing and norm ids, in that order;
    /// the first unknown one is an `UnknownId` error.
    fn decode(hp: &HyperParams) -> Result<Self> {
        let architecture = Architecture::from_u32(hp.architecture)
            .ok_or(unknown("architecture", hp.architecture))?;
        let activation =
            Activation::from_u32(hp.activation).ok_or(unknown("activation", hp.activation))?;
        let pairing = RopePairing::from_u32(hp.rope_pairing)
            .ok_or(unknown("rope pairing", hp.rope_pairing))?;
        let norm = NormKind::from_u32(hp.norm).ok_or(unknown("norm", hp.norm))?;
        Ok(Self {
            architecture,
            activation,
            pairing,
            norm,
        })
    }
}

/// Rejects unknown flag bits, non-zero reserved words, and an extended-fields flag
/// that disagrees with the extended fields.
fn check_flags_and_reserved(hp: &HyperParams) -> Result<()> {
    if hp.flags & !flags::KNOWN != 0 {
        return Err(bad(format!(
            "unknown flag bits {:#x}",
            hp.flags & !flags::KNOWN
        )));
    }
    if hp.reserved.iter().any(|&w| w != 0) {
        return Err(bad("reserved words must be zero"));
    }
    let extended = hp.flags & flags::EXTENDED != 0;
    if extended != hp.uses_extended_fields() {
        return Err(bad(if extended {
            "the extended-fields flag is set but every extended field is zero"
        } else {
            "extended fields are set without the extended-fields flag"
        }));
    }
    Ok(())
}

/// Checks every size is in `1..=SIZE_LIMIT`, layer and head counts are plausible,
/// heads group evenly over KV heads, and `rope_dim` is even and within `head_dim`.
fn check_sizes(hp: &HyperParams) -> Result<()> {
    for (name, v) in [
        ("dim", hp.dim),
        ("n_layers", hp.n_layers),
        ("n_heads", hp.n_heads),
        ("n_kv_heads", hp.n_kv_heads),
        ("head_dim", hp.head_dim),
        ("ffn_dim", hp.ffn_dim),
        ("vocab_size", hp.vocab_size),
        ("max_context", hp.max_context),
    ] {
        if v == 0 {
            return Err(bad(format!("{name} is zero")));
        }
        if v > SIZE_LIMIT {
            return Err(bad(format!("{name} = {v} is implausibly large")));
        }
    }
    if hp.n_layers > 4096 || hp.n_heads > 4096 || hp.head_dim > 4096 {
        return Err(bad("layer / head counts implausibly large"));
    }
    if !hp.n_heads.is_multiple_of(hp.n_kv_heads) {
        return Err(bad(format!(
            "n_heads {} is not a multiple of n_kv_heads {}",
            hp.n_heads, hp.n_kv_heads
        )));
    }
    if hp.rope_dim == 0 || hp.rope_dim > hp.head_dim || !hp.rope_dim.is_multiple_of(2) {
        return Err(bad(format!(
            "rope_dim {} must be even and in 1..=head_dim ({})",
            hp.rope_dim, hp.head_dim
        )));
    }
    Ok(())
}

/// Each layer's attention: global when there is no sliding window or the layer
/// closes a `swa_period`, else sliding with RoPE kind `sliding_rope`.
fn layer_kinds(hp: &HyperParams, sliding_rope: RopeKind) -> Vec<LayerKind> {
    (0..hp.n_layers as usize)
        .map(|l| {
            let global = hp.sliding_window == 0
                || (hp.swa_period != 0 && (l + 1) % hp.swa_period as usize == 0);
            if global {
                LayerKind {
                    attention: Attention::Global,
                    rope: 0,
                }
            } else {
                LayerKind {
                    attention: Attention::Sliding {
                        window: hp.sliding_window as usize,
                    },
                    rope: sliding_rope,
                }
            }
        })
        .collect()
}

impl ModelConfig {
    /// Decodes and validates the on-disk hyperparameters.
    pub fn decode(hp: &HyperParams) -> Result<Self> {
        let tags = Tags::decode(hp)?;
        check_flags_and_reserved(hp)?;
        check_sizes(hp)?;
        let theta = positive_finite("rope_theta", hp.rope_theta)?;
        if !(hp.norm_eps.is_finite() && hp.norm_eps >= 0.0) {
            return Err(bad("norm_eps must be finite and non-negative"));
        }
        let ropes = Self::decode_ropes(hp, tags.pairing, theta)?;
        if hp.swa_period != 0 && hp.sliding_window == 0 {
            return Err(bad("swa_period is set without a sliding window"));
        }
        let layers = layer_kinds(hp, ropes.len() - 1);
        let head_dim = hp.head_dim as usize;
        let attn_scale = match optional_positive("attn_scale", hp.attn_scale)? {
            Some(s) => s,
            None => 1.0 / (head_dim as f32).sqrt(),
        };
        let has = |f: u32| hp.flags & f != 0;
        Ok(Self {
            architecture: tags.architecture,
            dim: hp.dim as usize,
            n_layers: hp.n_layers as usize,
            n_heads: hp.n_heads as usize,
            n_kv_heads: hp.n_kv_heads as usize,
            head_dim,
            ffn_dim: hp.ffn_dim as usize,
            vocab_size: hp.vocab_size as usize,
            max_context: hp.max_context as usize,
            norm: tags.norm,
            norm_eps: hp.norm_eps,
            activation: tags.activation,
            mlp: if has(flags::PLAIN_MLP) {
                Mlp::Plain
            } else {
                Mlp::Gated
            },
            qkv_bias: has(flags::QKV_BIAS),
            attn_out_bias: has(flags::ATTN_OUT_BIAS),
            mlp_bias: has(flags::MLP_BIAS),
            qk_norm: has(flags::QK_NORM),
            post_attn_norm: has(flags::POST_ATTN_NORM),
            post_ffn_norm: has(flags::POST_FFN_NORM),
            tied_output: has(flags::TIED_OUTPUT),
            attn_scale,
            embed_scale: optional_positive("embed_scale", hp.embed_scale)?,
            logit_softcap: optional_positive("logit_softcap", hp.logit_softcap)?,
            ropes,
            layers,
        })
    }

    /// The RoPE of each kind: `[global]`, plus a local one (global theta replaced,
    /// no scaling) when `rope_theta_local` is set, which needs a sliding window.
    fn decode_ropes(hp: &HyperParams, pairing: RopePairing, theta: f32) -> Result<Vec<Rope>> {
        let scaling = Self::decode_scaling(hp)?;
        let attn_factor = optional_positive("rope_attn_factor", hp.rope_attn_factor)?;
        if attn_factor.is_some() && !matches!(scaling, RopeScaling::Yarn { .. }) {
            return Err(bad("rope_attn_factor is set without YaRN scaling"));
        }
        let layout = match pairing {
            RopePairing::Interleaved => RopeLayout::Interleaved,
            RopePairing::Half => RopeLayout::Half,
        };
        let global = Rope {
            layout,
            dim: hp.rope_dim as usize,
            theta,
            scaling,
            attn_factor: attn_factor.unwrap_or(1.0),
            freq_factors: hp.flags & flags::ROPE_FREQ_FACTORS != 0,
        };
        let mut ropes = vec![global];
        let local_theta = optional_positive("rope_theta_local", hp.rope_theta_local)?;
        if let Some(theta) = local_theta {
            if hp.sliding_window == 0 {
                return Err(bad(
                    "rope_theta_local is set but no layer has a sliding window",
                ));
            }
            ropes.push(Rope {
                theta,
                scaling: RopeScaling::None,
                attn_factor: 1.0,
                freq_factors: false,
                ..global
            });
        }
        Ok(ropes)
    }

    fn decode_scaling(hp: &HyperParams) -> Result<RopeScaling> {
        use crate::format::RopeScaling as Id;
        let id = Id::from_u32(hp.rope_scaling).ok_or(unknown("rope scaling", hp.rope_scaling))?;
        let factor = || positive_finite("rope_scaling_factor", hp.rope_scaling_factor);
        Ok(match id {
            Id::None => RopeScaling::None,
            Id::Linear => RopeScaling::Linear { factor: factor()? },
            Id::Llama3 => {
                let (low, high) = (hp.rope_low_freq_factor, hp.rope_high_freq_factor);
                if !(low.is_finite() && high.is_finite() && low > 0.0 && high > low) {
                    return Err(bad(format!(
                        "llama3 RoPE scaling needs 0 < low_freq_factor ({low}) < high_freq_factor ({high})"
                    )));
                }
                if hp.rope_original_context == 0 {
                    return Err(bad("llama3 RoPE scaling needs the original context"));
                }
                RopeScaling::Llama3 {
                    factor: factor()?,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_context: hp.rope_original_context,
                }
            }
            Id::Yarn => {
                let (low, high) = (hp.rope_low_freq_factor, hp.rope_high_freq_factor);
                if !(low.is_finite() && high.is_finite() && low >= 0.0 && high >= low) {
                    return Err(bad(format!(
                        "YaRN needs a correction range 0 <= low ({low}) <= high ({high})"
                    )));
                }
                RopeScaling::Yarn {
                    factor: factor()?,
                    low,
                    high,
                }
            }
        })
    }

    /// Width of the concatenated query heads.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    /// Width of the concatenated key (or value) heads.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
    /// Query heads per key/value head.
    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }
    /// The RoPE of `layer`.
    pub fn rope(&self, layer: usize) -> &Rope {
        &self.ropes[self.layers[layer].rope]
    }
    /// The RoPE layout (the same for every kind).
    pub fn rope_layout(&self) -> RopeLayout {
        self.ropes[0].layout
    }
    /// Rotated pairs per head (the same for every kind).
    pub fn rope_pairs(&self) -> usize {
        self.ropes[0].pairs()
    }
    /// Whether the feed-forward block has a gate.
    pub fn gated(&self) -> bool {
        self.mlp == Mlp::Gated
    }
    /// The attention window of the sliding layers, if any layer slides (one
    /// window for all of them).
    pub fn sliding_window(&self) -> Option<usize> {
        self.layers.iter().find_map(|l| match l.attention {
            Attention::Sliding { window } => Some(window),
            Attention::Global => None,
        })
    }
    /// Whether every layer attends globally.
    pub fn all_global(&self) -> bool {
        self.layers.iter().all(|l| l.attention == Attention::Global)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HyperParams {
        HyperParams {
            architecture: 1,
            activation: 1,
            dim: 64,
            n_layers: 6,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            ffn_dim: 128,
            vocab_size: 100,
            max_context: 64,
            rope_pairing: 2,
            rope_dim: 16,
            rope_theta: 10000.0,
            norm: 1,
            norm_eps: 1e-5,
            ..Default::default()
        }
    }

    #[test]
    fn unknown_tags_are_errors() {
        for (field, v) in [("activation", 9), ("norm", 3), ("rope pairing", 0)] {
            let mut hp = base();
            match field {
                "activation" => hp.activation = v,
                "norm" => hp.norm = v,
                _ => hp.rope_pairing = v,
            }
            let e = ModelConfig::decode(&hp).unwrap_err();
            assert!(
                matches!(e, Error::UnknownId { what, .. } if what == field),
                "{e}"
            );
        }
        let mut hp = base();
        hp.rope_scaling = 7;
        assert!(ModelConfig::decode(&hp).is_err());
        let mut hp = base();
        hp.flags = 1 << 30;
        assert!(ModelConfig::decode(&hp).is_err());
        let mut hp = base();
        hp.reserved[3] = 1;
        assert!(ModelConfig::decode(&hp).is_err());
    }

    #[test]
    fn extended_fields_need_their_flag() {
        let mut hp = base();
        hp.logit_softcap = 30.0;
        assert!(ModelConfig::decode(&hp).is_err(), "field without flag");
        let hp = hp.with_extended_flag();
        let c = ModelConfig::decode(&hp).unwrap();
        assert_eq!(c.logit_softcap, Some(30.0));
        let mut hp = base();
        hp.flags = flags::EXTENDED;
        assert!(ModelConfig::decode(&hp).is_err(), "flag without field");
    }

    #[test]
    fn sliding_pattern_and_local_rope() {
        let mut hp = base();
        hp.sliding_window = 4;
        hp.swa_period = 3;
        hp.rope_theta_local = 10.0;
        let c = ModelConfig::decode(&hp.with_extended_flag()).unwrap();
        let kinds: Vec<bool> = c
            .layers
            .iter()
            .map(|l| l.attention == Attention::Global)
            .collect();
        assert_eq!(kinds, [false, false, true, false, false, true]);
        assert_eq!(c.rope(0).theta, 10.0);
        assert_eq!(c.rope(2).theta, 10000.0);
        assert_eq!(c.layers[0].window_start(10), 7);
        assert_eq!(c.layers[2].window_start(10), 0);
        // Without a period every layer slides and shares the global RoPE.
        let mut hp = base();
        hp.sliding_window = 4;
        let c = ModelConfig::decode(&hp).unwrap();
        assert!(c
            .layers
            .iter()
            .all(|l| l.attention == Attention::Sliding { window: 4 } && l.rope == 0));
    }

    #[test]
    fn default_attention_scale_is_inverse_sqrt_head_dim() {
        let c = ModelConfig::decode(&base()).unwrap();
        assert_eq!(c.attn_scale, 0.25);
    }
}
