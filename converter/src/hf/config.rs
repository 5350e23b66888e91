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

/// The transformers model classes this reader understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HfArch {
    /// `LlamaForCausalLM` (also SmolLM, TinyLlama, Llama 2/3).
    Llama,
    /// `MistralForCausalLM`: no biases, sliding-window attention.
    Mistral,
    /// `Qwen2ForCausalLM`: q/k/v biases, no o bias, optional sliding window.
    Qwen2,
}

impl HfArch {
    /// The transformers class name.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Mistral => "MistralForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    fn from_class_name(name: &str) -> Option<Self> {
        [Self::Llama, Self::Mistral, Self::Qwen2]
            .into_iter()
            .find(|a| a.class_name() == name)
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

/// RoPE base and scaling, from transformers 5's `rope_parameters` or the older
/// top-level `rope_theta` + `rope_scaling`.
struct Rope {
    theta: f32,
    scaling: RopeScaling,
    factor: f32,
    low_freq_factor: f32,
    high_freq_factor: f32,
    original_context: u32,
}

fn parse_rope(top: &Fields<'_>) -> Result<Rope> {
    // transformers 5 puts everything in `rope_parameters` (and may also keep a
    // top-level `rope_theta`); transformers 4 uses `rope_theta` + `rope_scaling`.
    let params = top.object("rope_parameters")?;
    let theta = match params
        .as_ref()
        .map(|p| p.f64("rope_theta"))
        .transpose()?
        .flatten()
    {
        Some(t) => t,
        None => top.f64("rope_theta")?.unwrap_or(10_000.0),
    };
    if theta <= 0.0 {
        return Err(bad(format!("rope_theta must be positive, got {theta}")));
    }
    let mut rope = Rope {
        theta: to_f32("rope_theta", theta)?,
        scaling: RopeScaling::None,
        factor: 1.0,
        low_freq_factor: 0.0,
        high_freq_factor: 0.0,
        original_context: 0,
    };
    let scaling = match params {
        Some(p) => Some(p),
        None => top.object("rope_scaling")?,
    };
    let Some(s) = scaling else { return Ok(rope) };
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
            rope.factor = factor(&s)?;
        }
        "llama3" => {
            rope.scaling = RopeScaling::Llama3;
            rope.factor = factor(&s)?;
            let need = |k: &str| -> Result<f64> {
                s.f64(k)?
                    .ok_or_else(|| bad(format!("llama3 RoPE scaling needs `{}{k}`", s.prefix)))
            };
            rope.low_freq_factor = to_f32("low_freq_factor", need("low_freq_factor")?)?;
            rope.high_freq_factor = to_f32("high_freq_factor", need("high_freq_factor")?)?;
            rope.original_context =
                s.u32("original_max_position_embeddings")?.ok_or_else(|| {
                    bad(format!(
                        "llama3 RoPE scaling needs `{}original_max_position_embeddings`",
                        s.prefix
                    ))
                })?;
            if rope.high_freq_factor <= rope.low_freq_factor {
                return Err(bad(
                    "llama3 RoPE scaling needs high_freq_factor > low_freq_factor",
                ));
            }
        }
        other => {
            return Err(ConvertError::Unsupported(format!(
                "RoPE scaling type {other:?} (supported: default, linear, llama3)"
            )))
        }
    }
    Ok(rope)
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
    let arch = HfArch::from_class_name(class).ok_or_else(|| {
        ConvertError::Unsupported(format!(
            "architecture {class:?} (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)"
        ))
    })?;

    let dim = f.required_u32("hidden_size")?;
    let n_layers = f.required_u32("num_hidden_layers")?;
    let n_heads = f.required_u32("num_attention_heads")?;
    let ffn_dim = f.required_u32("intermediate_size")?;
    let vocab_size = f.required_u32("vocab_size")?;
    if n_heads == 0 {
        return Err(bad("num_attention_heads is zero"));
    }
    // Absent: the class default; explicit null: one KV head per query head.
    let n_kv_heads = match (obj.get("num_key_value_heads"), arch) {
        (None, HfArch::Mistral) => 8,
        (None, HfArch::Qwen2) => 32,
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
    let head_dim = match f.u32("head_dim")? {
        Some(h) => h,
        None => {
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
        HfArch::Qwen2 => 32768,
    });
    let norm_eps = f.f64("rms_norm_eps")?.unwrap_or(1e-6);
    if norm_eps < 0.0 {
        return Err(bad(format!(
            "rms_norm_eps must be non-negative, got {norm_eps}"
        )));
    }
    let act = f.str("hidden_act")?.unwrap_or("silu");
    if act != "silu" && act != "swish" {
        return Err(ConvertError::Unsupported(format!(
            "hidden_act {act:?} (only silu)"
        )));
    }

    let mut flag_bits = 0;
    if f.bool("tie_word_embeddings")?.unwrap_or(false) {
        flag_bits |= flags::TIED_OUTPUT;
    }
    match arch {
        HfArch::Llama => {
            if f.bool("attention_bias")?.unwrap_or(false) {
                flag_bits |= flags::QKV_BIAS | flags::ATTN_OUT_BIAS;
            }
            if f.bool("mlp_bias")?.unwrap_or(false) {
                flag_bits |= flags::MLP_BIAS;
            }
        }
        HfArch::Mistral => {}
        HfArch::Qwen2 => flag_bits |= flags::QKV_BIAS,
    }

    let sliding_window = match arch {
        HfArch::Llama => 0,
        HfArch::Mistral => f.window()?,
        HfArch::Qwen2 => qwen2_window(&f, n_layers)?,
    };

    let rope = parse_rope(&f)?;
    let hparams = HyperParams {
        architecture: Architecture::Llama as u32,
        activation: Activation::Silu as u32,
        dim,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim,
        ffn_dim,
        vocab_size,
        max_context,
        sliding_window,
        rope_pairing: RopePairing::Half as u32,
        rope_dim: head_dim,
        rope_theta: rope.theta,
        rope_scaling: rope.scaling as u32,
        rope_scaling_factor: rope.factor,
        rope_low_freq_factor: rope.low_freq_factor,
        rope_high_freq_factor: rope.high_freq_factor,
        rope_original_context: rope.original_context,
        norm: NormKind::RmsNorm as u32,
        norm_eps: to_f32("rms_norm_eps", norm_eps)?,
        flags: flag_bits,
        ..Default::default()
    };
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

/// Qwen2's window: transformers applies `sliding_window` (when `use_sliding_window`)
/// only to layers with index >= `max_window_layers`, or as listed in `layer_types`.
/// Ember has one window for all layers, so a mix of windowed and full layers is
/// unsupported.
fn qwen2_window(f: &Fields<'_>, n_layers: u32) -> Result<u32> {
    let window = if f.bool("use_sliding_window")?.unwrap_or(false) {
        f.window()?
    } else {
        0
    };
    let sliding_layers: u32 = match f.get("layer_types") {
        Some(Value::Array(types)) => {
            if types.len() != n_layers as usize {
                return Err(bad(format!(
                    "`layer_types` has {} entries for {n_layers} layers",
                    types.len()
                )));
            }
            let mut n = 0;
            for t in types {
                match t.as_str() {
                    Some("sliding_attention") => n += 1,
                    Some("full_attention") => {}
                    _ => return Err(bad(format!("unknown entry {t} in `layer_types`"))),
                }
            }
            n
        }
        Some(v) => return Err(bad(format!("`layer_types` must be a list, got {v}"))),
        None if window == 0 => 0,
        None => {
            let first = f.u32("max_window_layers")?.unwrap_or(28).min(n_layers);
            n_layers - first
        }
    };
    match sliding_layers {
        0 => Ok(0),
        n if n == n_layers && window > 0 => Ok(window),
        n if n == n_layers => Err(bad("`layer_types` asks for sliding attention but no sliding_window is set")),
        n => Err(ConvertError::Unsupported(format!(
            "Qwen2 with sliding-window attention on {n} of {n_layers} layers (Ember applies one window to every layer)"
        ))),
    }
}
