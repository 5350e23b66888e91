//! Hugging Face checkpoint directories: `config.json` + safetensors (single or
//! sharded) + `tokenizer.json` (+ `tokenizer_config.json`, chat template).
//!
//! Supported classes: `LlamaForCausalLM`, `MistralForCausalLM`,
//! `Qwen2ForCausalLM`, `Qwen3ForCausalLM`, `Gemma3ForCausalLM`,
//! `Phi3ForCausalLM` (see `config`). Weights keep transformers' rotate-half
//! RoPE layout (`RopePairing::Half`); nothing is permuted. Fused matrices are
//! split into their row ranges and Gemma's norm weights stored as `1 + w`
//! (see `weights`).

pub mod config;
pub mod weights;

use std::path::Path;

use serde_json::Value;

use crate::error::{ConvertError, Result};
use crate::ir::ModelIr;
use crate::tokenizer_import::hf_json;

pub use config::{parse_config, HfArch, HfConfig};
pub use weights::load_tensors;

/// Reads `dir/config.json`.
pub fn read_config(dir: &Path) -> Result<HfConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| ConvertError::io(&path, e))?;
    parse_config(&text)
}

/// Reads a Hugging Face model directory into a `ModelIr`. Tensor data is read
/// lazily, one tensor at a time, when the writer asks for it.
pub fn load(dir: &Path) -> Result<ModelIr> {
    let cfg = read_config(dir)?;
    let tokenizer_json = dir.join("tokenizer.json");
    if !tokenizer_json.is_file() {
        return Err(ConvertError::Tokenizer(format!(
            "{} not found: Ember needs the fast-tokenizer file tokenizer.json next to config.json \
             (older checkpoints with only tokenizer.model can be re-saved with transformers' \
             AutoTokenizer.save_pretrained)",
            tokenizer_json.display()
        )));
    }
    let tensors = load_tensors(dir, &cfg)?;

    let tokenizer_config = dir.join("tokenizer_config.json");
    let tokenizer_config = tokenizer_config.is_file().then_some(tokenizer_config);
    let tokenizer = hf_json::from_hf_files_for_model(
        &tokenizer_json,
        tokenizer_config.as_deref(),
        u64::from(cfg.hparams.vocab_size),
    )?;
    let chat_template = read_chat_template(dir, tokenizer_config.as_deref())?;

    let mut metadata = vec![
        ("source.kind".to_string(), "hf".to_string()),
        (
            "hf.architecture".to_string(),
            cfg.arch.class_name().to_string(),
        ),
    ];
    if let Some(t) = &cfg.model_type {
        metadata.push(("hf.model_type".into(), t.clone()));
    }
    if let Some(n) = &cfg.name_or_path {
        metadata.push(("hf.name_or_path".into(), n.clone()));
        metadata.push(("model.name".into(), n.clone()));
    }
    Ok(ModelIr {
        hparams: cfg.hparams,
        tensors,
        tokenizer,
        chat_template,
        metadata,
    })
}

/// The chat template: `chat_template.jinja` if present (transformers >= 4.43 saves
/// it there), else `chat_template` in `tokenizer_config.json`, which is a string or
/// a list of `{name, template}` of which the one named `default` is taken.
/// Errors: `ChatTemplate` if the template fails `ember_runtime::chat::check`.
pub fn read_chat_template(dir: &Path, tokenizer_config: Option<&Path>) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        let text = std::fs::read_to_string(&jinja).map_err(|e| ConvertError::io(&jinja, e))?;
        return checked(text, &jinja);
    }
    let Some(path) = tokenizer_config else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|e| ConvertError::io(path, e))?;
    let root: Value = serde_json::from_str(&text)
        .map_err(|e| ConvertError::Tokenizer(format!("{}: not valid JSON: {e}", path.display())))?;
    let bad =
        |what: &str| ConvertError::Tokenizer(format!("{}: `chat_template` {what}", path.display()));
    match root.get("chat_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => checked(s.clone(), path),
        Some(Value::Array(list)) => {
            for entry in list {
                let name = entry.get("name").and_then(Value::as_str);
                let template = entry.get("template").and_then(Value::as_str);
                match (name, template) {
                    (Some("default"), Some(t)) => return checked(t.to_string(), path),
                    (Some(_), Some(_)) => {}
                    _ => {
                        return Err(bad(
                            "list entries must be {\"name\": ..., \"template\": ...}",
                        ))
                    }
                }
            }
            Ok(None)
        }
        Some(_) => Err(bad("must be a string or a list of named templates")),
    }
}

/// `template`, read from `origin`, if it passes `ember_runtime::chat::check`.
fn checked(template: String, origin: &Path) -> Result<Option<String>> {
    match ember_runtime::chat::check(&template, "", "") {
        Ok(()) => Ok(Some(template)),
        Err(source) => Err(ConvertError::ChatTemplate {
            origin: origin.display().to_string(),
            source,
        }),
    }
}
