//! Tokenizer from GGUF metadata (`tokenizer.ggml.*`).
//!
//! `tokenizer.ggml.model` `"llama"` is SentencePiece BPE (scores, `<0xNN>` byte
//! tokens), `"gpt2"` is byte-level BPE with `tokenizer.ggml.merges`. For byte-level
//! BPE, `tokenizer.ggml.pre` must name a pre-tokenizer whose split is one of ours:
//! GPT-2's (`default`, `gpt2`, `smollm`), Llama 3's (`llama-bpe`, `llama3`,
//! `llama-v3`; llama.cpp encodes them with `ignore_merges`, which
//! `PreSplit::Llama3` includes) or Qwen2's (`qwen2`). (llama.cpp additionally isolates digits for
//! `smollm`; SmolLM2's vocabulary has no multi-character token containing a digit,
//! and HF's `tokenizer.json` for SmolLM2 uses the plain GPT-2 split, which is what
//! the reference goldens are made with.) Integer values may use any GGUF integer type.

use ember_runtime::tokenizer::{
    PreSplit, TokenType, TokenizerKind, TokenizerSpec, TOKENIZER_SCHEMA,
};

use crate::error::{ConvertError, Result};
use crate::gguf::{GgufMetadata, GgufValue};

/// GGUF `tokenizer.ggml.pre` names and the split each one is.
const PRE_SPLITS: &[(&str, PreSplit)] = &[
    ("default", PreSplit::Gpt2),
    ("gpt2", PreSplit::Gpt2),
    // llama.cpp's own name for the GPT-2 split (convert_hf_to_gguf.py).
    ("gpt-2", PreSplit::Gpt2),
    ("smollm", PreSplit::Gpt2),
    ("llama-bpe", PreSplit::Llama3),
    ("llama3", PreSplit::Llama3),
    ("llama-v3", PreSplit::Llama3),
    ("qwen2", PreSplit::Qwen2),
];

fn bad(msg: impl Into<String>) -> ConvertError {
    ConvertError::Tokenizer(format!("GGUF metadata: {}", msg.into()))
}

fn as_u64(v: &GgufValue) -> Option<u64> {
    match *v {
        GgufValue::U8(x) => Some(x.into()),
        GgufValue::U16(x) => Some(x.into()),
        GgufValue::U32(x) => Some(x.into()),
        GgufValue::U64(x) => Some(x),
        GgufValue::I8(x) => u64::try_from(x).ok(),
        GgufValue::I16(x) => u64::try_from(x).ok(),
        GgufValue::I32(x) => u64::try_from(x).ok(),
        GgufValue::I64(x) => u64::try_from(x).ok(),
        _ => None,
    }
}

fn as_f32(v: &GgufValue) -> Option<f32> {
    match *v {
        GgufValue::F32(x) => Some(x),
        GgufValue::F64(x) => Some(x as f32),
        _ => as_u64(v).map(|x| x as f32).or(match *v {
            GgufValue::I8(x) => Some(x.into()),
            GgufValue::I16(x) => Some(x.into()),
            GgufValue::I32(x) => Some(x as f32),
            GgufValue::I64(x) => Some(x as f32),
            _ => None,
        }),
    }
}

fn key(name: &str) -> String {
    format!("tokenizer.ggml.{name}")
}

fn string<'a>(meta: &'a GgufMetadata, name: &str) -> Result<Option<&'a str>> {
    match meta.get(&key(name)) {
        None => Ok(None),
        Some(GgufValue::String(s)) => Ok(Some(s)),
        Some(v) => Err(bad(format!(
            "{} should be a string, found {v:?}",
            key(name)
        ))),
    }
}

fn array<'a>(meta: &'a GgufMetadata, name: &str) -> Result<Option<&'a [GgufValue]>> {
    match meta.get(&key(name)) {
        None => Ok(None),
        Some(GgufValue::Array(a)) => Ok(Some(a)),
        Some(_) => Err(bad(format!("{} should be an array", key(name)))),
    }
}

fn id(meta: &GgufMetadata, name: &str) -> Result<Option<u32>> {
    match meta.get(&key(name)) {
        None => Ok(None),
        Some(v) => as_u64(v)
            .and_then(|x| u32::try_from(x).ok())
            .map(Some)
            .ok_or_else(|| bad(format!("{} should be a token id, found {v:?}", key(name)))),
    }
}

fn flag(meta: &GgufMetadata, name: &str) -> Result<Option<bool>> {
    match meta.get(&key(name)) {
        None => Ok(None),
        Some(GgufValue::Bool(b)) => Ok(Some(*b)),
        Some(v) => match as_u64(v) {
            Some(x @ (0 | 1)) => Ok(Some(x == 1)),
            _ => Err(bad(format!(
                "{} should be a boolean, found {v:?}",
                key(name)
            ))),
        },
    }
}

/// Builds the tokenizer stored in a GGUF file's metadata.
///
/// Errors: `ConvertError::Unsupported` for other tokenizer models or pre-tokenizers
/// (naming them), `ConvertError::Tokenizer` for missing or malformed keys, and the
/// runtime's validation error if the result is inconsistent (ids out of range,
/// unresolvable merges).
pub fn from_gguf_metadata(meta: &GgufMetadata) -> Result<TokenizerSpec> {
    let kind = tokenizer_kind(meta)?;
    let pre_split = pre_split(meta, kind)?;
    let tokens = tokens(meta)?;
    let n = tokens.len();
    let token_types = token_types(meta, n)?;
    let scores = scores(meta, kind, n)?;
    let merges = if kind == TokenizerKind::ByteLevelBpe {
        merges(meta, &tokens)?
    } else {
        Vec::new()
    };

    let spm = kind == TokenizerKind::SentencePieceBpe;
    let bos = id(meta, "bos_token_id")?;
    let eos = id(meta, "eos_token_id")?;
    let eog = end_of_turn_ids(meta, eos)?;
    let add_bos = flag(meta, "add_bos_token")?.unwrap_or(spm) && bos.is_some();
    let add_eos = flag(meta, "add_eos_token")?.unwrap_or(false) && eos.is_some();
    let byte_fallback = spm && token_types.contains(&TokenType::Byte);
    let mut spec = TokenizerSpec {
        schema: TOKENIZER_SCHEMA,
        kind,
        pre_split,
        tokens,
        scores,
        token_types,
        merges,
        bos,
        eos,
        unk: id(meta, "unknown_token_id")?,
        pad: id(meta, "padding_token_id")?,
        eog,
        add_bos,
        add_eos,
        add_space_prefix: flag(meta, "add_space_prefix")?.unwrap_or(spm),
        byte_fallback,
    };
    for x in super::hf_json::well_known_eog(&spec) {
        if !spec.eog.contains(&x) {
            spec.eog.push(x);
        }
    }
    let n_tokens = u32::try_from(n).map_err(|_| bad("too many tokens"))?;
    ember_runtime::tokenizer::Tokenizer::new(spec.clone(), n_tokens)?;
    Ok(spec)
}

/// The tokenizer kind named by `tokenizer.ggml.model`. Errors: `Tokenizer`
/// when it is missing, `Unsupported` for models other than llama and gpt2.
fn tokenizer_kind(meta: &GgufMetadata) -> Result<TokenizerKind> {
    let model = string(meta, "model")?.ok_or_else(|| bad("tokenizer.ggml.model is missing"))?;
    match model {
        "llama" => Ok(TokenizerKind::SentencePieceBpe),
        "gpt2" => Ok(TokenizerKind::ByteLevelBpe),
        other => Err(ConvertError::Unsupported(format!(
            "GGUF tokenizer model {other:?} (supported: \"llama\", \"gpt2\")"
        ))),
    }
}

/// The pre-tokenizer split: from `tokenizer.ggml.pre` (default `"default"`)
/// for byte-level BPE, none otherwise. Errors: `Unsupported` for a name not
/// in `PRE_SPLITS`.
fn pre_split(meta: &GgufMetadata, kind: TokenizerKind) -> Result<PreSplit> {
    if kind != TokenizerKind::ByteLevelBpe {
        return Ok(PreSplit::None);
    }
    let pre = string(meta, "pre")?.unwrap_or("default");
    match PRE_SPLITS.iter().find(|(name, _)| *name == pre) {
        Some(&(_, split)) => Ok(split),
        None => {
            let names: Vec<&str> = PRE_SPLITS.iter().map(|(n, _)| *n).collect();
            Err(ConvertError::Unsupported(format!(
                "GGUF pre-tokenizer {pre:?} (supported: {})",
                names.join(", ")
            )))
        }
    }
}

/// The token texts of `tokenizer.ggml.tokens`. Errors: `Tokenizer` when it
/// is missing or holds a non-string.
fn tokens(meta: &GgufMetadata) -> Result<Vec<String>> {
    array(meta, "tokens")?
        .ok_or_else(|| bad("tokenizer.ggml.tokens is missing"))?
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            GgufValue::String(s) => Ok(s.clone()),
            _ => Err(bad(format!("token {i} is not a string"))),
        })
        .collect()
}

/// The types of the `n` tokens from `tokenizer.ggml.token_type` (llama.cpp's
/// ids), all Normal when absent. Errors: `Tokenizer` for a wrong length or
/// an unknown id.
fn token_types(meta: &GgufMetadata, n: usize) -> Result<Vec<TokenType>> {
    match array(meta, "token_type")? {
        None => Ok(vec![TokenType::Normal; n]),
        Some(a) if a.len() != n => Err(bad(format!("{} token types for {n} tokens", a.len()))),
        Some(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| match as_u64(v) {
                Some(0 | 1) => Ok(TokenType::Normal),
                Some(2) => Ok(TokenType::Unknown),
                Some(3) => Ok(TokenType::Control),
                Some(4) => Ok(TokenType::UserDefined),
                Some(5) => Ok(TokenType::Unused),
                Some(6) => Ok(TokenType::Byte),
                _ => Err(bad(format!("token {i} has unknown token type {v:?}"))),
            })
            .collect(),
    }
}

/// The scores of the `n` tokens from `tokenizer.ggml.scores` (all 0 when
/// absent); none for byte-level BPE, which ranks merges instead. Errors:
/// `Tokenizer` for a non-array, a wrong length or a non-number.
fn scores(meta: &GgufMetadata, kind: TokenizerKind, n: usize) -> Result<Vec<f32>> {
    match (array(meta, "scores")?, kind) {
        (_, TokenizerKind::ByteLevelBpe) => Ok(Vec::new()),
        (None, _) => Ok(vec![0.0; n]),
        (Some(a), _) if a.len() != n => Err(bad(format!("{} scores for {n} tokens", a.len()))),
        (Some(a), _) => a
            .iter()
            .enumerate()
            .map(|(i, v)| as_f32(v).ok_or_else(|| bad(format!("score {i} is not a number"))))
            .collect(),
    }
}

/// The byte-level BPE merges of `tokenizer.ggml.merges` as pairs of ids into
/// `tokens` (the first id of a repeated text), in rank order. Errors:
/// `Tokenizer` when missing, or for a merge that is not two known tokens.
fn merges(meta: &GgufMetadata, tokens: &[String]) -> Result<Vec<(u32, u32)>> {
    let mut id_of = std::collections::HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        id_of.entry(t.as_str()).or_insert(i as u32);
    }
    let list = array(meta, "merges")?
        .ok_or_else(|| bad("tokenizer.ggml.merges is missing (gpt2 model)"))?;
    let mut merges = Vec::with_capacity(list.len());
    for (rank, m) in list.iter().enumerate() {
        let GgufValue::String(s) = m else {
            return Err(bad(format!("merge {rank} is not a string")));
        };
        // Split at the first space after the first character, as llama.cpp does.
        let cut = s
            .char_indices()
            .skip(1)
            .find(|&(_, c)| c == ' ')
            .map(|(i, _)| i);
        let Some(cut) = cut else {
            return Err(bad(format!("merge {rank} {s:?} is not \"a b\"")));
        };
        let (a, b) = (&s[..cut], &s[cut + 1..]);
        let look = |p: &str| {
            id_of
                .get(p)
                .copied()
                .ok_or_else(|| bad(format!("merge {rank} {s:?}: {p:?} is not a token")))
        };
        merges.push((look(a)?, look(b)?));
    }
    Ok(merges)
}

/// The distinct ids of `tokenizer.ggml.eot_token_id` and `eom_token_id`
/// other than `eos`. Errors: `Tokenizer` for a value that is not a token id.
fn end_of_turn_ids(meta: &GgufMetadata, eos: Option<u32>) -> Result<Vec<u32>> {
    let mut eog = Vec::new();
    for name in ["eot_token_id", "eom_token_id"] {
        if let Some(x) = id(meta, name)? {
            if Some(x) != eos && !eog.contains(&x) {
                eog.push(x);
            }
        }
    }
    Ok(eog)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> GgufValue {
        GgufValue::Array(v.iter().map(|s| GgufValue::String(s.to_string())).collect())
    }

    fn gpt2_meta() -> GgufMetadata {
        let mut m = GgufMetadata::new();
        m.insert(key("model"), GgufValue::String("gpt2".into()));
        m.insert(key("pre"), GgufValue::String("smollm".into()));
        m.insert(
            key("tokens"),
            strings(&["<|endoftext|>", "<|im_end|>", "h", "i", "hi"]),
        );
        m.insert(
            key("token_type"),
            GgufValue::Array([3, 3, 1, 1, 1].map(GgufValue::I32).to_vec()),
        );
        m.insert(key("merges"), strings(&["h i"]));
        m.insert(key("bos_token_id"), GgufValue::U8(1));
        m.insert(key("eos_token_id"), GgufValue::I64(1));
        m.insert(key("add_bos_token"), GgufValue::Bool(false));
        m
    }

    #[test]
    fn maps_gpt2_metadata() {
        let spec = from_gguf_metadata(&gpt2_meta()).unwrap();
        assert_eq!(spec.kind, TokenizerKind::ByteLevelBpe);
        assert_eq!(spec.pre_split, PreSplit::Gpt2);
        assert_eq!(spec.merges, [(2, 3)]);
        assert_eq!(
            (spec.bos, spec.eos, spec.add_bos),
            (Some(1), Some(1), false)
        );
        assert_eq!(spec.eog, [0]);
        assert_eq!(spec.token_types[0], TokenType::Control);
    }

    #[test]
    fn rejects_unknown_and_malformed() {
        let mut m = gpt2_meta();
        m.insert(key("pre"), GgufValue::String("deepseek-llm".into()));
        assert!(
            matches!(from_gguf_metadata(&m), Err(ConvertError::Unsupported(s)) if s.contains("deepseek-llm"))
        );
        m.insert(key("pre"), GgufValue::String("llama-bpe".into()));
        assert_eq!(from_gguf_metadata(&m).unwrap().pre_split, PreSplit::Llama3);
        m.insert(key("pre"), GgufValue::String("qwen2".into()));
        assert_eq!(from_gguf_metadata(&m).unwrap().pre_split, PreSplit::Qwen2);
        let mut m = gpt2_meta();
        m.insert(key("model"), GgufValue::String("bert".into()));
        assert!(
            matches!(from_gguf_metadata(&m), Err(ConvertError::Unsupported(s)) if s.contains("bert"))
        );
        let mut m = gpt2_meta();
        m.insert(key("merges"), strings(&["h x"]));
        assert!(matches!(
            from_gguf_metadata(&m),
            Err(ConvertError::Tokenizer(_))
        ));
        let mut m = gpt2_meta();
        m.insert(key("eos_token_id"), GgufValue::I32(-1));
        assert!(from_gguf_metadata(&m).is_err());
        let mut m = gpt2_meta();
        m.insert(key("bos_token_id"), GgufValue::U32(99));
        assert!(matches!(
            from_gguf_metadata(&m),
            Err(ConvertError::Runtime(_))
        ));
        let mut m = gpt2_meta();
        m.remove(&key("tokens"));
        assert!(from_gguf_metadata(&m).is_err());
    }

    #[test]
    fn maps_llama_metadata_with_defaults() {
        let mut m = GgufMetadata::new();
        m.insert(key("model"), GgufValue::String("llama".into()));
        m.insert(
            key("tokens"),
            strings(&["<unk>", "<s>", "</s>", "<0x41>", "▁", "a", "▁a"]),
        );
        m.insert(
            key("scores"),
            GgufValue::Array(
                [0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0]
                    .map(GgufValue::F32)
                    .to_vec(),
            ),
        );
        m.insert(
            key("token_type"),
            GgufValue::Array([2, 3, 3, 6, 1, 1, 1].map(GgufValue::U32).to_vec()),
        );
        m.insert(key("bos_token_id"), GgufValue::U32(1));
        m.insert(key("eos_token_id"), GgufValue::U32(2));
        m.insert(key("unknown_token_id"), GgufValue::U16(0));
        let spec = from_gguf_metadata(&m).unwrap();
        assert!(spec.add_bos && spec.add_space_prefix && spec.byte_fallback);
        let t = ember_runtime::tokenizer::Tokenizer::new(spec, 7).unwrap();
        assert_eq!(t.encode("aA", t.default_encode_options()), [1, 6, 3]);
    }
}
