//! `config.json` of a Hugging Face Llama-family checkpoint → `HyperParams`.
//!
//! Absent optional fields take the defaults of the transformers config class named
//! by `architectures[0]` (transformers 4.x and 5.x agree on all of them). The
//! structural sizes (`hidden_size`, `num_hidden_layers`, `num_attention_heads`,
//! `intermediate_size`, `vocab_size`) are required: a checkpoint without them is
//! more likely corrupt than relying on a default.

use ember_runtime::format::{
    flags, Activation, Architecture, HyperParams, NormKind, RopePairing, RopeScaling,
};
use serde_json::{Map, Value};

use crate::error::{ConvertError, Result};
use crate::rope::{yarn_mscale, yarn_range};

/// The transformers model classes this reader understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HfArch {
    /// `LlamaForCausalLM` (also SmolLM, TinyLlama, Llama 2/3).
    Llama,
    /// `MistralForCausalLM`: no biases, sliding-window attention.
    Mistral,
    /// `Qwen2ForCausalLM`: q/k/v biases, no o bias, optional sliding window.
    Qwen2,
    /// `Qwen3ForCausalLM`: per-head QK norms, optional attention biases.
    Qwen3,
    /// `Gemma3ForCausalLM` (text): (1 + w) RMSNorms, post-attention and
    /// post-FFN norms, QK norms, sliding-window layers with their own RoPE
    /// base, scaled embeddings, GELU (tanh), query_pre_attn_scalar.
    Gemma3,
    /// `Phi3ForCausalLM`: fused qkv_proj and gate_up_proj (split on import),
    /// partial rotary dimensions.
    Phi3,
    /// `StableLmForCausalLM`: LayerNorm with biases, partial rotary
    /// dimensions, optional q/k/v biases (sequential residual only).
    StableLm,
    /// `GPTNeoXForCausalLM` (sequential residual only): LayerNorm with biases,
    /// a plain MLP, per-head fused query_key_value, partial rotary dimensions.
    GptNeoX,
}

impl HfArch {
    /// Every class, in the order messages list them.
    pub const ALL: [HfArch; 8] = [
        Self::Llama,
        Self::Mistral,
        Self::Qwen2,
        Self::Qwen3,
        Self::Gemma3,
        Self::Phi3,
        Self::StableLm,
        Self::GptNeoX,
    ];

    /// The transformers class name.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Mistral => "MistralForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
            Self::Gemma3 => "Gemma3ForCausalLM",
            Self::Phi3 => "Phi3ForCausalLM",
            Self::StableLm => "StableLmForCausalLM",
            Self::GptNeoX => "GPTNeoXForCausalLM",
        }
    }

    fn from_class_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.class_name() == name)
    }
}

/// What `config.json` says, mapped onto Ember's hyperparameters.
#[derive(Clone, Debug)]
pub struct HfConfig {
    pub arch: HfArch,
    /// Validated hyperparameters.
    pub hparams: HyperParams,
    /// `model_type`, if given.
    pub model_type: Option<String>,
    /// `_name_or_path` (or `_model_name_or_path`), if given and non-empty.
    pub name_or_path: Option<String>,
}

fn bad(msg: impl Into<String>) -> ConvertError {
    ConvertError::Config(msg.into())
}

/// Typed accessors that treat JSON `null` like an absent field and reject wrong types
/// with a message naming the field.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    /// Prefix for messages, e.g. `rope_scaling.`.
    prefix: String,
}

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn u32(&self, key: &str) -> Result<Option<u32>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        // Accept integral floats such as `4096.0`, which some exporters write.
        let n = match v {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u32::MAX as f64)
                    .map(|f| f as u64)
            }),
            _ => None,
        };
        match n.and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Ok(Some(n)),
            None => Err(bad(format!(
                "`{}{key}` must be a non-negative integer below 2^32, got {v}",
                self.prefix
            ))),
        }
    }

    fn required_u32(&self, key: &str) -> Result<u32> {
        self.u32(key)?
            .ok_or_else(|| bad(format!("missing required field `{}{key}`", self.prefix)))
    }

    /// `sliding_window`: absent means the class default (4096 for Mistral and
    /// Qwen2), an explicit `null` means no window, as in transformers.
    fn window(&self) -> Result<u32> {
        match self.obj.get("sliding_window") {
            None => Ok(4096),
            Some(Value::Null) => Ok(0),
            Some(_) => Ok(self.u32("sliding_window")?.unwrap_or(0)),
        }
    }

    fn f64(&self, key: &str) -> Result<Option<f64>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.as_f64() {
            Some(f) if f.is_finite() => Ok(Some(f)),
            _ => Err(bad(format!(
                "`{}{key}` must be a finite number, got {v}",
                self.prefix
            ))),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_bool().map(Some).ok_or_else(|| {
            bad(format!(
                "`{}{key}` must be true or false, got {v}",
                self.prefix
            ))
        })
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_str()
            .map(Some)
            .ok_or_else(|| bad(format!("`{}{key}` must be a string, got {v}", self.prefix)))
    }

    fn object(&self, key: &str) -> Result<Option<Fields<'a>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let obj = v
            .as_object()
            .ok_or_else(|| bad(format!("`{}{key}` must be an object, got {v}", self.prefix)))?;
        Ok(Some(Fields {
            obj,
            prefix: format!("{}{key}.", self.prefix),
        }))
    }
}

/// Converts a finite f64 to a finite f32, naming the field when it does not fit.
fn to_f32(key: &str, v: f64) -> Result<f32> {
    let f = v as f32;
    if f.is_finite() {
        Ok(f)
    } else {
        Err(bad(format!("`{key}` = {v} does not fit in f32")))
    }
}

/// RoPE base and scaling of one kind of layer, from transformers 5's
/// `rope_parameters` or the older top-level `rope_theta` + `rope_scaling`.
#[derive(Clone, Copy, Debug)]
struct Rope {
    theta: f32,
    scaling: RopeScaling,
    factor: f32,
    /// llama3: low/high frequency factors; YaRN: the correction range.
    low: f32,
    high: f32,
    original_context: u32,
    /// YaRN's attention factor (0 = none).
    attn_factor: f32,
}

impl Rope {
    fn unscaled(theta: f32) -> Self {
        Rope {
            theta,
            scaling: RopeScaling::None,
            factor: 1.0,
            low: 0.0,
            high: 0.0,
            original_context: 0,
            attn_factor: 0.0,
        }
    }
}

/// The RoPE described by `params` (one `rope_parameters` entry or the legacy
/// `rope_scaling` object, `None` for neither) with base `theta`, for `rot`
/// rotated dimensions of a model whose context is `max_context`.
fn parse_rope_params(
    params: Option<&Fields<'_>>,
    theta: f64,
    rot: u32,
    max_context: u32,
) -> Result<Rope> {
    if theta <= 0.0 {
        return Err(bad(format!("rope_theta must be positive, got {theta}")));
    }
    let mut rope = Rope::unscaled(to_f32("rope_theta", theta)?);
    let Some(s) = params else { return Ok(rope) };
    let kind = match s.str("rope_type")? {
        Some(k) => Some(k),
        None => s.str("type")?,
    };
    let factor = |s: &Fields<'_>| -> Result<f32> {
        let f = s
            .f64("factor")?
            .ok_or_else(|| bad(format!("missing `{}factor`", s.prefix)))?;
        if f <= 0.0 {
            return Err(bad(format!(
                "`{}factor` must be positive, got {f}",
                s.prefix
            )));
        }
        to_f32("factor", f)
    };
    match kind.unwrap_or("default") {
        "default" => {}
        "linear" => {
            rope.scaling = RopeScaling::Linear;
            rope.factor = factor(s)?;
        }
        "llama3" => {
            rope.scaling = RopeScaling::Llama3;
            rope.factor = factor(s)?;
            let need = |k: &str| -> Result<f64> {
                s.f64(k)?
                    .ok_or_else(|| bad(format!("llama3 RoPE scaling needs `{}{k}`", s.prefix)))
            };
            rope.low = to_f32("low_freq_factor", need("low_freq_factor")?)?;
            rope.high = to_f32("high_freq_factor", need("high_freq_factor")?)?;
            rope.original_context =
                s.u32("original_max_position_embeddings")?.ok_or_else(|| {
                    bad(format!(
                        "llama3 RoPE scaling needs `{}original_max_position_embeddings`",
                        s.prefix
                    ))
                })?;
            if rope.high <= rope.low {
                return Err(bad(
                    "llama3 RoPE scaling needs high_freq_factor > low_freq_factor",
                ));
            }
        }
        "yarn" => {
            let original = s
                .u32("original_max_position_embeddings")?
                .unwrap_or(max_context);
            let yarn = yarn_parameters(s, theta, rot, original)?;
            rope.scaling = RopeScaling::Yarn;
            rope.factor = yarn.factor;
            rope.low = yarn.low;
            rope.high = yarn.high;
            rope.original_context = original;
            rope.attn_factor = yarn.attn_factor;
        }
        other => {
            return Err(ConvertError::Unsupported(format!(
                "RoPE scaling type {other:?} (supported: default, linear, llama3, yarn)"
            )))
        }
    }
    Ok(rope)
}

/// YaRN's parameters as transformers' `_compute_yarn_parameters` derives them
/// (in f64, as Python does): the correction range in rotary-pair indices and
/// the attention factor.
pub(crate) struct Yarn {
    pub factor: f32,
    pub low: f32,
    pub high: f32,
    pub attn_factor: f32,
}

fn yarn_parameters(s: &Fields<'_>, theta: f64, rot: u32, original: u32) -> Result<Yarn> {
    let factor = s
        .f64("factor")?
        .ok_or_else(|| bad(format!("YaRN needs `{}factor`", s.prefix)))?;
    if factor <= 0.0 {
        return Err(bad(format!("YaRN factor must be positive, got {factor}")));
    }
    let mscale = s.f64("mscale")?;
    let mscale_all_dim = s.f64("mscale_all_dim")?;
    let attn = match s.f64("attention_factor")? {
        Some(a) => a,
        None => match (mscale, mscale_all_dim) {
            (Some(m), Some(a)) if m != 0.0 && a != 0.0 => {
                yarn_mscale(factor, m) / yarn_mscale(factor, a)
            }
            _ => yarn_mscale(factor, 1.0),
        },
    };
    let beta_fast = s.f64("beta_fast")?.filter(|&b| b != 0.0).unwrap_or(32.0);
    let beta_slow = s.f64("beta_slow")?.filter(|&b| b != 0.0).unwrap_or(1.0);
    let truncate = s.bool("truncate")?.unwrap_or(true);
    let (low, high) = yarn_range(theta, rot, original, beta_fast, beta_slow, truncate);
    Ok(Yarn {
        factor: to_f32("factor", factor)?,
        low: low as f32,
        high: high as f32,
        attn_factor: to_f32("attention_factor", attn)?,
    })
}

/// Which layers slide, from transformers' `layer_types` (or the legacy
/// Gemma `sliding_window_pattern`), as `(sliding_window, swa_period)`: every
/// layer slides (period 0), none does (window 0), or every `P`-th layer
/// (`(l + 1) % P == 0`) is global. Other mixes are unsupported.
fn window_layout(sliding: &[bool], window: u32) -> Result<(u32, u32)> {
    let n = sliding.len();
    if sliding.iter().all(|&s| !s) || window == 0 {
        if sliding.iter().any(|&s| s) {
            return Err(bad(
                "`layer_types` asks for sliding attention but no sliding_window is set",
            ));
        }
        return Ok((0, 0));
    }
    if sliding.iter().all(|&s| s) {
        return Ok((window, 0));
    }
    let period = sliding.iter().position(|&s| !s).map_or(n, |i| i + 1);
    if sliding
        .iter()
        .enumerate()
        .all(|(l, &s)| s == ((l + 1) % period != 0))
    {
        return Ok((window, period as u32));
    }
    Err(ConvertError::Unsupported(format!(
        "sliding-window attention on layers {:?}: Ember supports all, none, or all but every P-th layer",
        sliding
            .iter()
            .enumerate()
            .filter(|(_, &s)| s)
            .map(|(l, _)| l)
            .collect::<Vec<_>>()
    )))
}

/// `layer_types` as booleans (true = sliding), if the config has it.
fn layer_types(f: &Fields<'_>, n_layers: u32) -> Result<Option<Vec<bool>>> {
    match f.get("layer_types") {
        None => Ok(None),
        Some(Value::Array(types)) => {
            if types.len() != n_layers as usize {
                return Err(bad(format!(
                    "`layer_types` has {} entries for {n_layers} layers",
                    types.len()
                )));
            }
            types
                .iter()
                .map(|t| match t.as_str() {
                    Some("sliding_attention") => Ok(true),
                    Some("full_attention") => Ok(false),
                    _ => Err(bad(format!("unknown entry {t} in `layer_types`"))),
                })
                .collect::<Result<Vec<bool>>>()
                .map(Some)
        }
        Some(v) => Err(bad(format!("`layer_types` must be a list, got {v}"))),
    }
}

/// The FFN activation named by `hidden_act` / `hidden_activation`.
fn activation(name: &str) -> Result<Activation> {
    match name {
        "silu" | "swish" => Ok(Activation::Silu),
        "gelu_pytorch_tanh" | "gelu_new" => Ok(Activation::GeluTanh),
        "gelu" => Ok(Activation::GeluErf),
        other => Err(ConvertError::Unsupported(format!(
            "activation {other:?} (supported: silu, gelu, gelu_pytorch_tanh, gelu_new)"
        ))),
    }
}

/// Parses the text of `config.json`.
pub fn parse_config(text: &str) -> Result<HfConfig> {
    let root: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let obj = root
        .as_object()
        .ok_or_else(|| bad("top level must be a JSON object"))?;
    let f = Fields {
        obj,
        prefix: String::new(),
    };
    let arch = architecture(&f)?;
    let mut hp = sizes(&f, arch)?;
    norm_and_activation(&f, arch, &mut hp)?;
    hp.flags = block_flags(&f, arch)?;
    let local = rope(&f, arch, &mut hp)?;
    windows(&f, arch, local.as_ref(), &mut hp)?;
    gemma_scales(&f, arch, &mut hp)?;
    let hparams = hp.with_extended_flag();
    hparams
        .validate()
        .map_err(|e| bad(format!("inconsistent hyperparameters: {e}")))?;

    let name_or_path = match f.str("_name_or_path")? {
        Some(s) => Some(s),
        None => f.str("_model_name_or_path")?,
    }
    .filter(|s| !s.is_empty())
    .map(str::to_string);
    Ok(HfConfig {
        arch,
        hparams,
        model_type: f.str("model_type")?.map(str::to_string),
        name_or_path,
    })
}

/// The transformers class named by `architectures[0]`.
fn architecture(f: &Fields<'_>) -> Result<HfArch> {
    let class = match f.get("architectures") {
        None => {
            return Err(bad(
                "missing `architectures` (which transformers class is this?)",
            ))
        }
        Some(Value::Array(a)) => match a.first() {
            Some(Value::String(s)) => s.as_str(),
            _ => {
                return Err(bad(
                    "`architectures` must be a non-empty list of class names",
                ))
            }
        },
        Some(v) => return Err(bad(format!("`architectures` must be a list, got {v}"))),
    };
    HfArch::from_class_name(class).ok_or_else(|| {
        let names: Vec<&str> = HfArch::ALL.iter().map(|a| a.class_name()).collect();
        ConvertError::Unsupported(format!(
            "architecture {class:?} (supported: {})",
            names.join(", ")
        ))
    })
}

/// The structural sizes (required, or the class default) and the RoPE
/// pairing every Hugging Face layout uses.
fn sizes(f: &Fields<'_>, arch: HfArch) -> Result<HyperParams> {
    let dim = f.required_u32("hidden_size")?;
    let n_layers = f.required_u32("num_hidden_layers")?;
    let n_heads = f.required_u32("num_attention_heads")?;
    let ffn_dim = f.required_u32("intermediate_size")?;
    let vocab_size = f.required_u32("vocab_size")?;
    if n_heads == 0 {
        return Err(bad("num_attention_heads is zero"));
    }
    // Absent: the class default; explicit null: one KV head per query head.
    let n_kv_heads = match (f.obj.get("num_key_value_heads"), arch) {
        (None, HfArch::Mistral) => 8,
        (None, HfArch::Qwen2 | HfArch::Qwen3) => 32,
        _ => f.u32("num_key_value_heads")?.unwrap_or(n_heads),
    };
    if n_kv_heads == 0 {
        return Err(bad("num_key_value_heads is zero"));
    }
    if n_heads % n_kv_heads != 0 {
        return Err(bad(format!(
            "num_attention_heads {n_heads} is not a multiple of num_key_value_heads {n_kv_heads}"
        )));
    }
    let head_dim = match (f.u32("head_dim")?, arch) {
        (Some(h), _) => h,
        (None, HfArch::Gemma3) => 256,
        (None, HfArch::Qwen3) => 128,
        (None, _) => {
            if dim % n_heads != 0 {
                return Err(bad(format!(
                    "hidden_size {dim} is not a multiple of num_attention_heads {n_heads} and no head_dim is given"
                )));
            }
            dim / n_heads
        }
    };
    let max_context = f.u32("max_position_embeddings")?.unwrap_or(match arch {
        HfArch::Llama => 2048,
        HfArch::Mistral => 4096 * 32,
        HfArch::Qwen2 | HfArch::Qwen3 => 32768,
        HfArch::Gemma3 => 131072,
        HfArch::Phi3 | HfArch::StableLm | HfArch::GptNeoX => 4096,
    });
    Ok(HyperParams {
        architecture: Architecture::Llama as u32,
        dim,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim,
        ffn_dim,
        vocab_size,
        max_context,
        rope_pairing: RopePairing::Half as u32,
        ..Default::default()
    })
}

/// The norm kind and epsilon, and the FFN activation.
fn norm_and_activation(f: &Fields<'_>, arch: HfArch, hp: &mut HyperParams) -> Result<()> {
    let (norm, norm_eps) = match arch {
        HfArch::StableLm | HfArch::GptNeoX => (
            NormKind::LayerNorm,
            f.f64("layer_norm_eps")?.unwrap_or(1e-5),
        ),
        _ => (NormKind::RmsNorm, f.f64("rms_norm_eps")?.unwrap_or(1e-6)),
    };
    if norm_eps < 0.0 {
        return Err(bad(format!(
            "the norm epsilon must be non-negative, got {norm_eps}"
        )));
    }
    let act = match arch {
        HfArch::Gemma3 => f
            .str("hidden_activation")?
            .or(f.str("hidden_act")?)
            .unwrap_or("gelu_pytorch_tanh"),
        HfArch::GptNeoX => f.str("hidden_act")?.unwrap_or("gelu"),
        _ => f.str("hidden_act")?.unwrap_or("silu"),
    };
    hp.norm = norm as u32;
    hp.norm_eps = to_f32("norm epsilon", norm_eps)?;
    hp.activation = activation(act)? as u32;
    Ok(())
}

/// The `flags` bits: tied output, biases, QK and post norms, plain MLP; and
/// the block variants Ember refuses, by name.
fn block_flags(f: &Fields<'_>, arch: HfArch) -> Result<u32> {
    let parallel_residual = || {
        ConvertError::Unsupported(
            "parallel attention and MLP residuals (use_parallel_residual)".into(),
        )
    };
    let mut bits = 0;
    if f.bool("tie_word_embeddings")?
        .unwrap_or(arch == HfArch::Gemma3)
    {
        bits |= flags::TIED_OUTPUT;
    }
    let attention_bias = f.bool("attention_bias")?;
    let attention_biases = flags::QKV_BIAS | flags::ATTN_OUT_BIAS;
    match arch {
        HfArch::Llama => {
            if attention_bias.unwrap_or(false) {
                bits |= attention_biases;
            }
            if f.bool("mlp_bias")?.unwrap_or(false) {
                bits |= flags::MLP_BIAS;
            }
        }
        HfArch::Mistral | HfArch::Phi3 => {}
        HfArch::Qwen2 => bits |= flags::QKV_BIAS,
        HfArch::GptNeoX => {
            bits |= flags::PLAIN_MLP | flags::MLP_BIAS;
            if attention_bias.unwrap_or(true) {
                bits |= attention_biases;
            }
            if f.bool("use_parallel_residual")?.unwrap_or(true) {
                return Err(parallel_residual());
            }
        }
        HfArch::StableLm => {
            if f.bool("use_qkv_bias")?.unwrap_or(false) {
                bits |= flags::QKV_BIAS;
            }
            if f.bool("qk_layernorm")?.unwrap_or(false) {
                return Err(ConvertError::Unsupported(
                    "StableLM with qk_layernorm (one LayerNorm per head)".into(),
                ));
            }
            if f.bool("use_parallel_residual")?.unwrap_or(false) {
                return Err(parallel_residual());
            }
        }
        HfArch::Qwen3 | HfArch::Gemma3 => {
            bits |= flags::QK_NORM;
            if attention_bias.unwrap_or(false) {
                bits |= attention_biases;
            }
        }
    }
    if arch == HfArch::Gemma3 {
        bits |= flags::POST_ATTN_NORM | flags::POST_FFN_NORM;
        if f.get("attn_logit_softcapping").is_some() {
            return Err(ConvertError::Unsupported(
                "attention logit soft-capping (attn_logit_softcapping)".into(),
            ));
        }
    }
    Ok(bits)
}

/// The global RoPE (rotated dimensions, base, scaling) into `hp`; returns
/// Gemma 3's `rope_parameters.sliding_attention`, if given. transformers 5
/// nests everything (per layer type for Gemma 3) in `rope_parameters`;
/// transformers 4 uses `rope_theta` + `rope_scaling` (GPT-NeoX:
/// `rotary_pct`, `rotary_emb_base`).
fn rope<'a>(f: &Fields<'a>, arch: HfArch, hp: &mut HyperParams) -> Result<Option<Fields<'a>>> {
    let params = f.object("rope_parameters")?;
    let per_type = |key: &str| -> Result<Option<Fields<'a>>> {
        match &params {
            Some(p) if arch == HfArch::Gemma3 => p.object(key),
            _ => Ok(None),
        }
    };
    let (global_params, local_params) =
        (per_type("full_attention")?, per_type("sliding_attention")?);
    let global_fields = match (&global_params, &params) {
        (Some(g), _) => Some(g),
        (None, Some(p)) if arch != HfArch::Gemma3 => Some(p),
        _ => None,
    };
    let nested = |key: &str| -> Result<Option<f64>> {
        Ok(global_fields.map(|g| g.f64(key)).transpose()?.flatten())
    };
    let partial = match nested("partial_rotary_factor")? {
        Some(p) => Some(p),
        None => f.f64("partial_rotary_factor")?.or(f.f64("rotary_pct")?),
    }
    .unwrap_or(1.0);
    if !(partial > 0.0 && partial <= 1.0) {
        return Err(bad(format!(
            "partial_rotary_factor must be in (0, 1], got {partial}"
        )));
    }
    let rope_dim = (hp.head_dim as f64 * partial) as u32;
    let theta_default = match arch {
        HfArch::Gemma3 | HfArch::Qwen3 => 1_000_000.0,
        _ => 10_000.0,
    };
    let theta = match nested("rope_theta")? {
        Some(t) => t,
        None => match f.f64("rope_theta")? {
            Some(t) => t,
            None => f.f64("rotary_emb_base")?.unwrap_or(theta_default),
        },
    };
    let legacy_scaling = f.object("rope_scaling")?;
    let scaling_fields = match global_fields {
        Some(g) => Some(g),
        None => legacy_scaling.as_ref(),
    };
    let rope = parse_rope_params(scaling_fields, theta, rope_dim, hp.max_context)?;
    hp.rope_dim = rope_dim;
    hp.rope_theta = rope.theta;
    hp.rope_scaling = rope.scaling as u32;
    hp.rope_scaling_factor = rope.factor;
    hp.rope_low_freq_factor = rope.low;
    hp.rope_high_freq_factor = rope.high;
    hp.rope_original_context = rope.original_context;
    hp.rope_attn_factor = rope.attn_factor;
    Ok(local_params)
}

/// Which layers slide, and the local RoPE base of Gemma 3's sliding layers
/// (`local`: its `rope_parameters.sliding_attention`).
fn windows(
    f: &Fields<'_>,
    arch: HfArch,
    local: Option<&Fields<'_>>,
    hp: &mut HyperParams,
) -> Result<()> {
    let n_layers = hp.n_layers;
    let (window, period) = match arch {
        HfArch::Llama | HfArch::StableLm | HfArch::GptNeoX => (0, 0),
        HfArch::Mistral => (f.window()?, 0),
        // Phi-3's default is no window.
        HfArch::Phi3 => (f.u32("sliding_window")?.unwrap_or(0), 0),
        HfArch::Qwen2 | HfArch::Qwen3 => qwen_window(f, n_layers)?,
        HfArch::Gemma3 => {
            let window = f.u32("sliding_window")?.unwrap_or(4096);
            let sliding = match layer_types(f, n_layers)? {
                Some(t) => t,
                None => {
                    let p = match f.u32("sliding_window_pattern")? {
                        Some(p) => p,
                        None => f.u32("_sliding_window_pattern")?.unwrap_or(6),
                    }
                    .max(1) as usize;
                    (0..n_layers as usize).map(|l| (l + 1) % p != 0).collect()
                }
            };
            window_layout(&sliding, window)?
        }
    };
    hp.sliding_window = window;
    hp.swa_period = period;
    if arch == HfArch::Gemma3 && window > 0 {
        hp.rope_theta_local = match local {
            Some(l) => {
                let theta = l.f64("rope_theta")?.unwrap_or(10_000.0);
                let local = parse_rope_params(Some(l), theta, hp.rope_dim, hp.max_context)?;
                if local.scaling != RopeScaling::None {
                    return Err(ConvertError::Unsupported(
                        "RoPE scaling on sliding-window layers".into(),
                    ));
                }
                local.theta
            }
            None => to_f32(
                "rope_local_base_freq",
                f.f64("rope_local_base_freq")?.unwrap_or(10_000.0),
            )?,
        };
    }
    Ok(())
}

/// Gemma 3's attention scale (`query_pre_attn_scalar^-0.5`), embedding scale
/// (`sqrt(hidden_size)`) and final-logit soft-cap.
fn gemma_scales(f: &Fields<'_>, arch: HfArch, hp: &mut HyperParams) -> Result<()> {
    if arch != HfArch::Gemma3 {
        return Ok(());
    }
    let q = f.f64("query_pre_attn_scalar")?.unwrap_or(256.0);
    if q <= 0.0 {
        return Err(bad(format!(
            "query_pre_attn_scalar must be positive, got {q}"
        )));
    }
    hp.logit_softcap = match f.f64("final_logit_softcapping")? {
        Some(c) if c <= 0.0 => {
            return Err(bad(format!(
                "final_logit_softcapping must be positive, got {c}"
            )))
        }
        Some(c) => to_f32("final_logit_softcapping", c)?,
        None => 0.0,
    };
    hp.attn_scale = to_f32("query_pre_attn_scalar", q.powf(-0.5))?;
    hp.embed_scale = to_f32("hidden_size", (hp.dim as f64).sqrt())?;
    Ok(())
}

/// Qwen2/3's window: transformers applies `sliding_window` (when
/// `use_sliding_window`) only to layers with index >= `max_window_layers`, or
/// as listed in `layer_types`.
fn qwen_window(f: &Fields<'_>, n_layers: u32) -> Result<(u32, u32)> {
    let window = if f.bool("use_sliding_window")?.unwrap_or(false) {
        f.window()?
    } else {
        0
    };
    let sliding = match layer_types(f, n_layers)? {
        Some(t) => t,
        None if window == 0 => vec![false; n_layers as usize],
        None => {
            let first = f.u32("max_window_layers")?.unwrap_or(28).min(n_layers);
            (0..n_layers).map(|l| l >= first).collect()
        }
    };
    window_layout(&sliding, window)
}
