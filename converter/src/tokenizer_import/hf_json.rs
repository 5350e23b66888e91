//! Tokenizer from Hugging Face `tokenizer.json` (+ `tokenizer_config.json`).
//!
//! Supported: model type `BPE` in two shapes, and `WordPiece`.
//! * Byte-level (GPT-2, SmolLM/SmolLM2, Llama 3, Qwen2 without its NFC normalizer):
//!   pre-tokenizer `ByteLevel` (alone or as the only member of a `Sequence`), no
//!   normalizer. `use_regex: true` gives the GPT-2 split, `false` no split.
//!   `add_prefix_space: true` is not supported. A `Split` (regex, `Isolated`, not
//!   inverted) before a `ByteLevel` without regex selects the split by its pattern:
//!   GPT-2's, Llama 3's or Qwen2's (see `PreSplit`), character for character.
//!   `ignore_merges` must be true with Llama 3's pattern and false otherwise
//!   (`PreSplit::Llama3` includes it).
//! * SentencePiece-style (Llama 2, Mistral, TinyLlama): normalizer `Replace(' ', '▁')`
//!   optionally preceded by `Prepend('▁')`, or pre-tokenizer `Metaspace` without
//!   splitting; `byte_fallback` as given. HF applies such merges by rank, llama2.c-style
//!   SentencePiece by score of the merged token, so each token gets
//!   `score = -(rank of the first merge producing it)` and tokens no merge produces get
//!   `-inf` (never merged). HF's converter emits every split of each piece, ordered by
//!   the piece's SentencePiece score, so both loops make the same merges; the only
//!   possible difference is the order of two different splits of the same token
//!   present at once (ranked by HF, leftmost here).
//!
//! Not modelled: added-token `lstrip`/`rstrip`/`single_word`/`normalized` flags,
//! `fuse_unk`, Metaspace `prepend_scheme: "first"` (the dummy prefix is added to every
//! text segment between special tokens, as with the legacy normalizer).
//! * WordPiece (BERT, MiniLM): normalizer `BertNormalizer` (or none), pre-tokenizer
//!   `BertPreTokenizer`, `continuing_subword_prefix` `##`, decoder `WordPiece`
//!   (its `cleanup` flag). The `TemplateProcessing` post-processor's `[CLS] A [SEP]`
//!   becomes bos/eos with `add_bos`/`add_eos`, as HF's `encode(text)` adds them.
//!   Padding and truncation settings are not part of the tokenizer spec.
//!
//! Other model types (Unigram, WordLevel) are `ConvertError::Unsupported`.

use std::collections::HashMap;
use std::path::Path;

use ember_runtime::tokenizer::{
    PreSplit, TokenType, TokenizerKind, TokenizerSpec, WordPieceOptions, TOKENIZER_SCHEMA,
};
use serde_json::Value;

use crate::error::{ConvertError, Result};

/// `Split` pre-tokenizer regexes recognised, with the split each one is.
const SPLIT_PATTERNS: &[(&str, PreSplit)] = &[
    (
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
        PreSplit::Gpt2,
    ),
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        PreSplit::Llama3,
    ),
    (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        PreSplit::Qwen2,
    ),
];

/// Largest token id accepted, so a corrupt id cannot trigger a huge allocation.
const MAX_TOKEN_ID: u64 = 1 << 24;

/// Control-token texts that end a turn in well-known chat formats; importers add the
/// ones present to `eog` (besides `eos`) so generation stops on them.
pub(crate) const END_OF_TURN_TEXTS: &[&str] = &[
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|end_of_text|>",
];

/// Ids of the well-known end-of-turn Control tokens in `spec`, excluding `eos`.
pub(crate) fn well_known_eog(spec: &TokenizerSpec) -> Vec<u32> {
    spec.tokens
        .iter()
        .zip(&spec.token_types)
        .enumerate()
        .filter(|(i, (text, ty))| {
            **ty == TokenType::Control
                && END_OF_TURN_TEXTS.contains(&text.as_str())
                && spec.eos != Some(*i as u32)
        })
        .map(|(i, _)| i as u32)
        .collect()
}

/// Builds the tokenizer described by `tokenizer.json`, taking BOS/EOS choices from
/// `tokenizer_config.json` when given.
///
/// BOS/EOS/PAD/UNK come from the config's `bos_token`/`eos_token`/`pad_token`/
/// `unk_token` (strings or `{"content": ..}` objects) and the model's `unk_token`;
/// `add_bos`/`add_eos` from `add_bos_token`/`add_eos_token`, else from whether the
/// post-processor template starts / ends with a special token.
pub fn from_hf_files(
    tokenizer_json: &Path,
    tokenizer_config: Option<&Path>,
) -> Result<TokenizerSpec> {
    from_hf_files_for_model(tokenizer_json, tokenizer_config, MAX_TOKEN_ID)
}

/// [`from_hf_files`] for a model of `vocab_size` tokens: an id at or beyond it
/// is an error (found before any table is sized by it).
pub fn from_hf_files_for_model(
    tokenizer_json: &Path,
    tokenizer_config: Option<&Path>,
    vocab_size: u64,
) -> Result<TokenizerSpec> {
    let json = read_json(tokenizer_json)?;
    let config = tokenizer_config.map(read_json).transpose()?;
    build(&json, config.as_ref(), vocab_size).map_err(|e| match e {
        ConvertError::Tokenizer(msg) => {
            ConvertError::Tokenizer(format!("{}: {msg}", tokenizer_json.display()))
        }
        ConvertError::Unsupported(msg) => {
            ConvertError::Unsupported(format!("{}: {msg}", tokenizer_json.display()))
        }
        other => other,
    })
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| ConvertError::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| ConvertError::Tokenizer(format!("{}: bad JSON: {e}", path.display())))
}

fn bad(msg: impl Into<String>) -> ConvertError {
    ConvertError::Tokenizer(msg.into())
}

fn unsupported(msg: impl Into<String>) -> ConvertError {
    ConvertError::Unsupported(msg.into())
}

fn type_of(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("?")
}

/// The flavour of BPE and its options, read from normalizer and pre-tokenizer.
struct Flavour {
    kind: TokenizerKind,
    pre_split: PreSplit,
    add_space_prefix: bool,
}

/// The BPE flavour that the normalizer and pre-tokenizer of `json` describe
/// (see the module docs for the supported combinations). Errors:
/// `Unsupported` for any other combination.
fn flavour(json: &Value) -> Result<Flavour> {
    let null = Value::Null;
    let norms = members(json.get("normalizer").unwrap_or(&null), "normalizers");
    let (prepend, replace) = sentencepiece_normalizers(&norms)?;
    let pres = members(json.get("pre_tokenizer").unwrap_or(&null), "pretokenizers");
    match (pres.as_slice(), replace) {
        ([split, p], false)
            if type_of(split) == "Split" && type_of(p) == "ByteLevel" && norms.is_empty() =>
        {
            split_then_byte_level(split, p)
        }
        ([], true) => Ok(Flavour {
            kind: TokenizerKind::SentencePieceBpe,
            pre_split: PreSplit::None,
            add_space_prefix: prepend,
        }),
        ([p], false) if type_of(p) == "ByteLevel" && norms.is_empty() => byte_level(p),
        ([p], false) if type_of(p) == "Metaspace" && norms.is_empty() => metaspace(p),
        (ps, _) => Err(unsupported_combination(ps, &norms)),
    }
}

/// The members of normalizer or pre-tokenizer `v`: none for null, the
/// `list_key` array of a `Sequence`, else `v` alone.
fn members<'a>(v: &'a Value, list_key: &str) -> Vec<&'a Value> {
    match v {
        Value::Null => vec![],
        s if type_of(s) == "Sequence" => s
            .get(list_key)
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        v => vec![v],
    }
}

/// Whether `norms` holds the legacy SentencePiece normalizers `Prepend('▁')`
/// and `Replace(' ', '▁')`, as `(prepend, replace)`. Errors: `Unsupported`
/// for any other normalizer.
fn sentencepiece_normalizers(norms: &[&Value]) -> Result<(bool, bool)> {
    let (mut prepend, mut replace) = (false, false);
    for n in norms {
        match type_of(n) {
            "Prepend" if n.get("prepend").and_then(Value::as_str) == Some("\u{2581}") => {
                prepend = true
            }
            "Replace"
                if n.pointer("/pattern/String").and_then(Value::as_str) == Some(" ")
                    && n.get("content").and_then(Value::as_str) == Some("\u{2581}") =>
            {
                replace = true
            }
            other => return Err(unsupported(format!("normalizer {other} is not supported"))),
        }
    }
    Ok((prepend, replace))
}

/// Byte-level BPE with the pre-split that `split`'s regex selects (one of
/// `SPLIT_PATTERNS`), followed by ByteLevel `p` without its own regex.
/// Errors: `Unsupported` for other patterns or options.
fn split_then_byte_level(split: &Value, p: &Value) -> Result<Flavour> {
    let pattern = split.pointer("/pattern/Regex").and_then(Value::as_str);
    let behavior = split.get("behavior").and_then(Value::as_str);
    let invert = split
        .get("invert")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(&(_, pre_split)) = SPLIT_PATTERNS.iter().find(|(pat, _)| Some(*pat) == pattern) else {
        return Err(unsupported(format!(
            "Split pre-tokenizer pattern {} (known: GPT-2, Llama 3, Qwen2)",
            split.get("pattern").unwrap_or(&Value::Null)
        )));
    };
    if behavior != Some("Isolated") || invert {
        return Err(unsupported(format!(
            "Split pre-tokenizer with behavior {behavior:?}, invert {invert}"
        )));
    }
    if p.get("use_regex").and_then(Value::as_bool).unwrap_or(true)
        || p.get("add_prefix_space")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    {
        return Err(unsupported(
            "ByteLevel after Split must have use_regex = false and add_prefix_space = false",
        ));
    }
    Ok(Flavour {
        kind: TokenizerKind::ByteLevelBpe,
        pre_split,
        add_space_prefix: false,
    })
}

/// Byte-level BPE from a lone ByteLevel pre-tokenizer `p`: the GPT-2 split
/// with `use_regex`, else none. Errors: `Unsupported` with `add_prefix_space`.
fn byte_level(p: &Value) -> Result<Flavour> {
    if p.get("add_prefix_space")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return Err(unsupported(
            "ByteLevel pre-tokenizer with add_prefix_space = true",
        ));
    }
    let split = if p.get("use_regex").and_then(Value::as_bool).unwrap_or(true) {
        PreSplit::Gpt2
    } else {
        PreSplit::None
    };
    Ok(Flavour {
        kind: TokenizerKind::ByteLevelBpe,
        pre_split: split,
        add_space_prefix: false,
    })
}

/// SentencePiece-style BPE from a Metaspace pre-tokenizer `p` that does not
/// split; the dummy prefix follows `prepend_scheme` (or the legacy
/// `add_prefix_space`). Errors: `Unsupported` for another replacement or
/// `split = true`.
fn metaspace(p: &Value) -> Result<Flavour> {
    if p.get("replacement")
        .and_then(Value::as_str)
        .is_some_and(|r| r != "\u{2581}")
    {
        return Err(unsupported(
            "Metaspace with a replacement other than U+2581",
        ));
    }
    if p.get("split").and_then(Value::as_bool).unwrap_or(true) {
        return Err(unsupported("Metaspace pre-tokenizer with split = true"));
    }
    let scheme = p.get("prepend_scheme").and_then(Value::as_str);
    let legacy = p.get("add_prefix_space").and_then(Value::as_bool);
    let add_space_prefix = match scheme {
        Some("never") => false,
        Some(_) => true,
        None => legacy.unwrap_or(true),
    };
    Ok(Flavour {
        kind: TokenizerKind::SentencePieceBpe,
        pre_split: PreSplit::None,
        add_space_prefix,
    })
}

/// The error for pre-tokenizers `pres` with normalizers `norms` that match
/// no supported flavour, naming both.
fn unsupported_combination(pres: &[&Value], norms: &[&Value]) -> ConvertError {
    let names: Vec<&str> = pres.iter().map(|p| type_of(p)).collect();
    unsupported(format!(
        "pre-tokenizer [{}] with normalizer [{}] is not supported (byte-level BPE needs ByteLevel alone, SentencePiece BPE needs Replace(' ', '▁') or Metaspace)",
        names.join(", "),
        norms.iter().map(|n| type_of(n)).collect::<Vec<_>>().join(", ")
    ))
}

/// The text of a config token entry: a string or `{"content": ...}`.
fn token_text(v: &Value) -> Option<&str> {
    v.as_str()
        .or_else(|| v.get("content").and_then(Value::as_str))
}

/// The id of `text` in the vocabulary. Errors: `Tokenizer` naming `what`
/// when it is absent.
fn lookup(id_of: &HashMap<String, u32>, what: &str, text: &str) -> Result<u32> {
    id_of
        .get(text)
        .copied()
        .ok_or_else(|| bad(format!("{what} {text:?} is not in the vocabulary")))
}

/// The tokenizer of `json` (`config`: tokenizer_config.json), BPE or
/// WordPiece. Errors: `Unsupported` for other models and options,
/// `Tokenizer` for malformed content.
/// `max_tokens`: ids must be below it (the model's vocabulary size when known).
fn build(json: &Value, config: Option<&Value>, max_tokens: u64) -> Result<TokenizerSpec> {
    let model = json
        .get("model")
        .ok_or_else(|| bad("no \"model\" object"))?;
    match model.get("type").and_then(Value::as_str) {
        Some("BPE") => build_bpe(json, model, config, max_tokens),
        Some("WordPiece") => build_wordpiece(json, model, config, max_tokens),
        // Old files omit the type; BPE is recognised by its merges.
        None if model.get("merges").is_some() => build_bpe(json, model, config, max_tokens),
        Some(other) => Err(unsupported(format!(
            "tokenizer model type {other} (supported: BPE, WordPiece)"
        ))),
        None => Err(unsupported(
            "tokenizer model without a type and without merges",
        )),
    }
}

/// A BPE tokenizer, byte-level or SentencePiece-style (see the module
/// documentation). Errors: `Unsupported` for options Ember does not model,
/// `Tokenizer` for pieces missing from the vocabulary.
fn build_bpe(
    json: &Value,
    model: &Value,
    config: Option<&Value>,
    max_tokens: u64,
) -> Result<TokenizerSpec> {
    check_bpe_options(model)?;
    let fl = flavour(json)?;
    check_ignore_merges(model, fl.pre_split)?;
    let Vocab {
        tokens,
        mut types,
        id_of,
    } = vocabulary(json, model, max_tokens)?;
    let mut merges = bpe_merges(model, &id_of)?;
    let byte_fallback = model
        .get("byte_fallback")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut unk = match model.get("unk_token").and_then(Value::as_str) {
        Some(t) => {
            let id = lookup(&id_of, "unk_token", t)?;
            types[id as usize] = TokenType::Unknown;
            Some(id)
        }
        None => None,
    };
    let mut scores = Vec::new();
    if fl.kind == TokenizerKind::SentencePieceBpe {
        if byte_fallback {
            mark_byte_pieces(&tokens, &mut types);
        }
        scores = merge_rank_scores(&tokens, &merges, &id_of)?;
        merges.clear();
    }

    let sp = specials(json, config, &id_of)?;
    if unk.is_none() {
        unk = sp.unk;
    }
    finish(TokenizerSpec {
        schema: TOKENIZER_SCHEMA,
        kind: fl.kind,
        pre_split: fl.pre_split,
        tokens,
        scores,
        token_types: types,
        merges,
        bos: sp.bos,
        eos: sp.eos,
        unk,
        pad: sp.pad,
        eog: Vec::new(),
        add_bos: sp.add_bos,
        add_eos: sp.add_eos,
        add_space_prefix: fl.add_space_prefix,
        byte_fallback,
    })
}

/// Checks that BPE `model` uses no subword prefix or suffix and no dropout.
/// Errors: `Unsupported`.
fn check_bpe_options(model: &Value) -> Result<()> {
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if model
            .get(key)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(unsupported(format!("BPE with {key}")));
        }
    }
    if model
        .get("dropout")
        .and_then(Value::as_f64)
        .is_some_and(|p| p > 0.0)
    {
        return Err(unsupported("BPE with dropout"));
    }
    Ok(())
}

/// Checks that `ignore_merges` is set exactly with the Llama 3 pre-split, the
/// only combination Ember models. Errors: `Unsupported`.
fn check_ignore_merges(model: &Value, pre_split: PreSplit) -> Result<()> {
    let ignore_merges = model.get("ignore_merges").and_then(Value::as_bool) == Some(true);
    match (pre_split == PreSplit::Llama3, ignore_merges) {
        (true, false) => Err(unsupported(
            "the Llama 3 Split pattern without ignore_merges (only Llama 3's combination is supported)",
        )),
        (false, true) => Err(unsupported(
            "BPE with ignore_merges = true (supported only with the Llama 3 Split pattern)",
        )),
        _ => Ok(()),
    }
}

/// The merges of BPE `model` ("a b" strings or [a, b] pairs) as id pairs, in
/// rank order. Errors: `Tokenizer` for a malformed merge or unknown piece.
fn bpe_merges(model: &Value, id_of: &HashMap<String, u32>) -> Result<Vec<(u32, u32)>> {
    let merges_json = model
        .get("merges")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut merges = Vec::with_capacity(merges_json.len());
    for (rank, m) in merges_json.iter().enumerate() {
        let (a, b) = match m {
            Value::String(s) => s
                .split_once(' ')
                .ok_or_else(|| bad(format!("merge {rank} {s:?} is not \"a b\"")))?,
            Value::Array(v) if v.len() == 2 => match (v[0].as_str(), v[1].as_str()) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(bad(format!("merge {rank} {m} is not a pair of strings"))),
            },
            _ => {
                return Err(bad(format!(
                    "merge {rank} {m} is neither \"a b\" nor [a, b]"
                )))
            }
        };
        merges.push((
            lookup(id_of, "merge piece", a)?,
            lookup(id_of, "merge piece", b)?,
        ));
    }
    Ok(merges)
}

/// Marks the Normal tokens spelled `<0xNN>` as Byte tokens.
fn mark_byte_pieces(tokens: &[String], types: &mut [TokenType]) {
    for (t, ty) in tokens.iter().zip(types.iter_mut()) {
        if *ty == TokenType::Normal && is_byte_piece(t) {
            *ty = TokenType::Byte;
        }
    }
}

/// SentencePiece-style scores from merge ranks: `-(rank of the first merge
/// producing the token)`, `-inf` for tokens no merge produces. Errors:
/// `Tokenizer` when a merge result is not in the vocabulary.
fn merge_rank_scores(
    tokens: &[String],
    merges: &[(u32, u32)],
    id_of: &HashMap<String, u32>,
) -> Result<Vec<f32>> {
    let mut scores = vec![f32::NEG_INFINITY; tokens.len()];
    let mut cat = String::new();
    for (rank, &(a, b)) in merges.iter().enumerate() {
        cat.clear();
        cat.push_str(&tokens[a as usize]);
        cat.push_str(&tokens[b as usize]);
        let merged = lookup(id_of, "merge result", &cat)?;
        let s = &mut scores[merged as usize];
        if *s == f32::NEG_INFINITY {
            *s = -(rank as f32);
        }
    }
    Ok(scores)
}

/// Adds the well-known end-of-turn ids and validates the spec with the runtime.
fn finish(mut spec: TokenizerSpec) -> Result<TokenizerSpec> {
    spec.eog = well_known_eog(&spec);
    let n_tokens = spec.tokens.len() as u32;
    ember_runtime::tokenizer::Tokenizer::new(spec.clone(), n_tokens)?;
    Ok(spec)
}

/// A WordPiece tokenizer (BERT): see the module documentation.
fn build_wordpiece(
    json: &Value,
    model: &Value,
    config: Option<&Value>,
    max_tokens: u64,
) -> Result<TokenizerSpec> {
    let null = Value::Null;
    let normalizer = json.get("normalizer").unwrap_or(&null);
    let flag = |v: &Value, key: &str, default: bool| {
        v.get(key).and_then(Value::as_bool).unwrap_or(default)
    };
    let (clean_text, handle_chinese_chars, strip_accents, lowercase) = match normalizer {
        Value::Null => (false, false, false, false),
        n if type_of(n) == "BertNormalizer" => {
            let lowercase = flag(n, "lowercase", true);
            (
                flag(n, "clean_text", true),
                flag(n, "handle_chinese_chars", true),
                // HF: strip_accents null follows lowercase.
                flag(n, "strip_accents", lowercase),
                lowercase,
            )
        }
        n => {
            return Err(unsupported(format!(
                "normalizer {} with WordPiece (supported: BertNormalizer)",
                type_of(n)
            )))
        }
    };
    match json.get("pre_tokenizer") {
        Some(p) if type_of(p) == "BertPreTokenizer" => {}
        p => {
            return Err(unsupported(format!(
                "pre-tokenizer {} with WordPiece (supported: BertPreTokenizer)",
                p.map_or("none", type_of)
            )))
        }
    }
    let prefix = model
        .get("continuing_subword_prefix")
        .and_then(Value::as_str)
        .unwrap_or("##");
    if prefix != "##" {
        return Err(unsupported(format!(
            "WordPiece continuing_subword_prefix {prefix:?} (supported: \"##\")"
        )));
    }
    let max_chars = model
        .get("max_input_chars_per_word")
        .and_then(Value::as_u64)
        .unwrap_or(100);
    let max_input_chars_per_word = u32::try_from(max_chars)
        .map_err(|_| bad(format!("max_input_chars_per_word {max_chars} is too large")))?;
    let cleanup = match json.get("decoder") {
        Some(d) if type_of(d) == "WordPiece" => {
            if d.get("prefix").and_then(Value::as_str).unwrap_or("##") != "##" {
                return Err(unsupported("WordPiece decoder with a prefix other than ##"));
            }
            flag(d, "cleanup", true)
        }
        _ => false,
    };

    let Vocab {
        tokens,
        mut types,
        id_of,
    } = vocabulary(json, model, max_tokens)?;
    let mut unk = None;
    if let Some(t) = model.get("unk_token").and_then(Value::as_str) {
        let id = *id_of
            .get(t)
            .ok_or_else(|| bad(format!("unk_token {t:?} is not in the vocabulary")))?;
        types[id as usize] = TokenType::Unknown;
        unk = Some(id);
    }
    let sp = specials(json, config, &id_of)?;
    finish(TokenizerSpec {
        schema: TOKENIZER_SCHEMA,
        kind: TokenizerKind::WordPiece(WordPieceOptions {
            clean_text,
            handle_chinese_chars,
            strip_accents,
            lowercase,
            max_input_chars_per_word,
            cleanup,
        }),
        pre_split: PreSplit::Bert,
        tokens,
        scores: Vec::new(),
        token_types: types,
        merges: Vec::new(),
        bos: sp.bos,
        eos: sp.eos,
        unk: unk.or(sp.unk),
        pad: sp.pad,
        eog: Vec::new(),
        add_bos: sp.add_bos,
        add_eos: sp.add_eos,
        add_space_prefix: false,
        byte_fallback: false,
    })
}

/// Special ids and the add-BOS/EOS flags.
struct Specials {
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
    unk: Option<u32>,
    add_bos: bool,
    add_eos: bool,
}

/// Special ids and flags: tokenizer_config.json first, then the post-processor
/// template (its leading and trailing special tokens) and the padding settings.
fn specials(
    json: &Value,
    config: Option<&Value>,
    id_of: &HashMap<String, u32>,
) -> Result<Specials> {
    let (tmpl_first, tmpl_last) = template_specials(json);
    let cfg_token = |key: &str| -> Result<Option<u32>> {
        match config.and_then(|c| c.get(key)).and_then(token_text) {
            Some(text) => lookup(id_of, key, text).map(Some),
            None => Ok(None),
        }
    };
    let cfg_flag = |key: &str| config.and_then(|c| c.get(key)).and_then(Value::as_bool);
    let tmpl_id = |t: Option<&str>| t.and_then(|t| id_of.get(t).copied());
    let bos = cfg_token("bos_token")?.or(tmpl_id(tmpl_first.as_deref()));
    let eos = cfg_token("eos_token")?.or(tmpl_id(tmpl_last.as_deref()));
    let pad = cfg_token("pad_token")?.or(tmpl_id(
        json.pointer("/padding/pad_token").and_then(Value::as_str),
    ));
    let unk = cfg_token("unk_token")?;
    let add_bos = cfg_flag("add_bos_token").unwrap_or(tmpl_first.is_some()) && bos.is_some();
    let add_eos = cfg_flag("add_eos_token").unwrap_or(tmpl_last.is_some()) && eos.is_some();
    Ok(Specials {
        bos,
        eos,
        pad,
        unk,
        add_bos,
        add_eos,
    })
}

/// Tokens by id (gaps are empty Unused tokens), their types, and piece -> first id.
struct Vocab {
    tokens: Vec<String>,
    types: Vec<TokenType>,
    id_of: HashMap<String, u32>,
}

/// Vocabulary: model.vocab plus added_tokens (special: Control, else UserDefined).
/// Ids at or beyond `max_tokens` are refused before anything is sized by them.
fn vocabulary(json: &Value, model: &Value, max_tokens: u64) -> Result<Vocab> {
    let limit = max_tokens.min(MAX_TOKEN_ID);
    let beyond = |what: String, id: u64| {
        bad(format!(
            "{what} has id {id}, beyond the vocabulary of {limit} tokens{}",
            if max_tokens <= MAX_TOKEN_ID {
                " (the model's vocab_size)"
            } else {
                ""
            }
        ))
    };
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("model.vocab is not an object"))?;
    let mut entries: Vec<(u64, &str)> = Vec::with_capacity(vocab.len());
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| bad(format!("vocab entry {text:?} has bad id {id}")))?;
        if id >= limit {
            return Err(beyond(format!("vocab entry {text:?}"), id));
        }
        entries.push((id, text));
    }
    let mut added: Vec<(u64, &str, bool)> = Vec::new();
    for a in json
        .get("added_tokens")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let id = a.get("id").and_then(Value::as_u64);
        let content = a.get("content").and_then(Value::as_str);
        let (Some(id), Some(content)) = (id, content) else {
            return Err(bad(format!("added token {a} lacks a valid id or content")));
        };
        if id >= limit {
            return Err(beyond(format!("added token {content:?}"), id));
        }
        added.push((
            id,
            content,
            a.get("special").and_then(Value::as_bool).unwrap_or(false),
        ));
    }
    let n = entries
        .iter()
        .map(|e| e.0)
        .chain(added.iter().map(|a| a.0))
        .max()
        .map_or(0, |m| m + 1) as usize;
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let mut types = vec![TokenType::Normal; n];
    for &(id, text) in &entries {
        if tokens[id as usize].replace(text.to_string()).is_some() {
            return Err(bad(format!("two vocab entries share id {id}")));
        }
    }
    for &(id, content, special) in &added {
        tokens[id as usize] = Some(content.to_string());
        types[id as usize] = if special {
            TokenType::Control
        } else {
            TokenType::UserDefined
        };
    }
    // Gaps in the id space become empty Unused tokens: never produced, decode to nothing.
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                types[i] = TokenType::Unused;
                String::new()
            })
        })
        .collect();
    let mut id_of: HashMap<String, u32> = HashMap::with_capacity(n);
    for (i, t) in tokens.iter().enumerate() {
        if !t.is_empty() {
            id_of.entry(t.clone()).or_insert(i as u32);
        }
    }
    Ok(Vocab {
        tokens,
        types,
        id_of,
    })
}

/// Special tokens the `TemplateProcessing` post-processor puts before and after a
/// single sequence (`SpecialToken` entries around `Sequence A`).
fn template_specials(json: &Value) -> (Option<String>, Option<String>) {
    let Some(pp) = json
        .get("post_processor")
        .filter(|p| type_of(p) == "TemplateProcessing")
    else {
        return (None, None);
    };
    let Some(single) = pp.get("single").and_then(Value::as_array) else {
        return (None, None);
    };
    let special = |v: Option<&Value>| {
        v.and_then(|v| v.pointer("/SpecialToken/id"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    (
        special(single.first()),
        if single.len() > 1 {
            special(single.last())
        } else {
            None
        },
    )
}

/// `<0xNN>` with two hex digits.
fn is_byte_piece(s: &str) -> bool {
    s.len() == 6
        && s.starts_with("<0x")
        && s.ends_with('>')
        && s[3..5].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn llama_like() -> Value {
        json!({
            "added_tokens": [
                {"id": 0, "content": "<unk>", "special": true},
                {"id": 1, "content": "<s>", "special": true},
                {"id": 2, "content": "</s>", "special": true}
            ],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
            ]},
            "pre_tokenizer": null,
            "post_processor": {"type": "TemplateProcessing", "single": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}
            ]},
            "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": true,
                "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x41>": 3, "▁": 4, "h": 5, "i": 6, "▁h": 7, "hi": 8, "▁hi": 9},
                "merges": ["▁ h", ["h", "i"], "▁h i", "▁ hi"]}
        })
    }

    #[test]
    fn sentencepiece_style_scores_follow_merge_ranks() {
        let spec = build(&llama_like(), None, MAX_TOKEN_ID).unwrap();
        assert_eq!(spec.kind, TokenizerKind::SentencePieceBpe);
        assert!(spec.add_space_prefix && spec.byte_fallback && spec.add_bos);
        assert_eq!((spec.bos, spec.eos, spec.unk), (Some(1), None, Some(0)));
        assert_eq!(spec.token_types[0], TokenType::Unknown);
        assert_eq!(spec.token_types[3], TokenType::Byte);
        assert_eq!(&spec.scores[7..], [0.0, -1.0, -2.0]);
        assert_eq!(spec.scores[5], f32::NEG_INFINITY);
        let t = ember_runtime::tokenizer::Tokenizer::new(spec, 10).unwrap();
        assert_eq!(t.encode("hi", t.default_encode_options()), [1, 9]);
    }

    /// An id beyond the model's vocabulary is refused before any table is
    /// sized by it (one id of 2^24 - 1 used to cost about 1 GB).
    #[test]
    fn ids_beyond_the_vocabulary_are_refused() {
        let mut j = llama_like();
        j["added_tokens"] = json!([{"id": 16_777_215u64, "content": "<big>", "special": true}]);
        let e = build(&j, None, 10).map(|_| ()).unwrap_err().to_string();
        assert!(
            e.contains("added token \"<big>\" has id 16777215, beyond the vocabulary of 10"),
            "{e}"
        );
        let mut j = llama_like();
        j["model"]["vocab"]["far"] = json!(12);
        let e = build(&j, None, 10).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("vocab entry \"far\" has id 12"), "{e}");
        assert!(build(&llama_like(), None, 10).is_ok());
    }

    #[test]
    fn config_overrides_bos_eos() {
        let cfg =
            json!({"bos_token": {"content": "<s>"}, "eos_token": "</s>", "add_bos_token": false});
        let spec = build(&llama_like(), Some(&cfg), MAX_TOKEN_ID).unwrap();
        assert_eq!(
            (spec.bos, spec.eos, spec.add_bos),
            (Some(1), Some(2), false)
        );
        let cfg = json!({"eos_token": "<nope>"});
        assert!(matches!(
            build(&llama_like(), Some(&cfg), MAX_TOKEN_ID),
            Err(ConvertError::Tokenizer(_))
        ));
    }

    #[test]
    fn rejects_unsupported_models() {
        let mut j = llama_like();
        j["model"]["type"] = json!("Unigram");
        assert!(
            matches!(build(&j, None, MAX_TOKEN_ID), Err(ConvertError::Unsupported(m)) if m.contains("Unigram"))
        );
        let mut j = llama_like();
        j["normalizer"] = json!({"type": "NFKC"});
        assert!(
            matches!(build(&j, None, MAX_TOKEN_ID), Err(ConvertError::Unsupported(m)) if m.contains("NFKC"))
        );
        let mut j = llama_like();
        j["model"]["merges"] = json!(["▁ x"]);
        assert!(
            matches!(build(&j, None, MAX_TOKEN_ID), Err(ConvertError::Tokenizer(m)) if m.contains("\"x\""))
        );
    }

    #[test]
    fn wordpiece_bert_files() {
        let j = json!({
            "added_tokens": [
                {"id": 0, "content": "[PAD]", "special": true},
                {"id": 1, "content": "[UNK]", "special": true},
                {"id": 2, "content": "[CLS]", "special": true},
                {"id": 3, "content": "[SEP]", "special": true}
            ],
            "padding": {"pad_token": "[PAD]"},
            "normalizer": {"type": "BertNormalizer", "clean_text": true,
                "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {"type": "TemplateProcessing", "single": [
                {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 0}}
            ]},
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
            "model": {"type": "WordPiece", "unk_token": "[UNK]",
                "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
                "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hi": 4, "##s": 5}}
        });
        let spec = build(&j, None, MAX_TOKEN_ID).unwrap();
        let TokenizerKind::WordPiece(o) = spec.kind else {
            panic!("{:?}", spec.kind)
        };
        assert!(o.lowercase && o.strip_accents && o.clean_text && o.cleanup);
        assert_eq!(o.max_input_chars_per_word, 100);
        assert_eq!(
            (
                spec.bos,
                spec.eos,
                spec.unk,
                spec.pad,
                spec.add_bos,
                spec.add_eos
            ),
            (Some(2), Some(3), Some(1), Some(0), true, true)
        );
        let t = ember_runtime::tokenizer::Tokenizer::new(spec, 6).unwrap();
        assert_eq!(
            t.encode("HIS hi", t.default_encode_options()),
            [2, 4, 5, 4, 3]
        );
        let mut bad = j.clone();
        bad["model"]["continuing_subword_prefix"] = json!("@@");
        assert!(
            matches!(build(&bad, None, MAX_TOKEN_ID), Err(ConvertError::Unsupported(m)) if m.contains("@@"))
        );
        let mut bad = j.clone();
        bad["pre_tokenizer"] = json!({"type": "Whitespace"});
        assert!(matches!(
            build(&bad, None, MAX_TOKEN_ID),
            Err(ConvertError::Unsupported(_))
        ));
    }

    #[test]
    fn split_patterns_select_the_pre_split() {
        let pre = |pattern: &str| {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
            ]})
        };
        for &(pattern, split) in SPLIT_PATTERNS {
            let j = json!({"pre_tokenizer": pre(pattern)});
            assert_eq!(flavour(&j).ok().map(|f| f.pre_split), Some(split));
        }
        let j = json!({"pre_tokenizer": pre(r"\p{N}+|\s+")});
        assert!(matches!(flavour(&j), Err(ConvertError::Unsupported(m)) if m.contains("Split")));
        let mut j = json!({"pre_tokenizer": pre(SPLIT_PATTERNS[1].0)});
        j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = json!("Removed");
        assert!(flavour(&j).is_err());
        let mut j = json!({"pre_tokenizer": pre(SPLIT_PATTERNS[1].0)});
        j["normalizer"] = json!({"type": "NFC"});
        assert!(matches!(flavour(&j), Err(ConvertError::Unsupported(m)) if m.contains("NFC")));
    }

    #[test]
    fn bad_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        std::fs::write(&p, "{ not json").unwrap();
        match from_hf_files(&p, None) {
            Err(ConvertError::Tokenizer(m)) => {
                assert!(m.contains("tokenizer.json") && m.contains("bad JSON"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
