//! Tokenizer from a SentencePiece `tokenizer.model` (a serialized `ModelProto`).
//!
//! Only the fields the runtime needs are read, with a small protobuf reader:
//! `ModelProto.pieces` (1: `piece` 1, `score` 2, `type` 3), `trainer_spec` (2:
//! `model_type` 3, `treat_whitespace_as_suffix` 24, `byte_fallback` 35, `unk_id` 40,
//! `bos_id` 41, `eos_id` 42, `pad_id` 43) and `normalizer_spec` (3: `name` 1,
//! `precompiled_charsmap` 2, `add_dummy_prefix` 3, `remove_extra_whitespaces` 4,
//! `escape_whitespaces` 5). Unknown fields are skipped.
//!
//! Supported: BPE models (Llama 1/2, Mistral, TinyLlama, Gemma) whose normalizer is
//! the identity (no precompiled character map), without whitespace collapsing or
//! whitespace-as-suffix. Unigram models and NFKC normalizers are
//! `ConvertError::Unsupported`. BOS is added when encoding, as in SentencePiece-based
//! Hugging Face and llama.cpp tokenizers.
//!
//! Pieces of type Control, Unknown, Byte and Unused never result from a merge
//! (their score becomes `-inf`), as in SentencePiece's BPE encoder.

use std::path::Path;

use ember_runtime::tokenizer::{
    PreSplit, TokenType, TokenizerKind, TokenizerSpec, TOKENIZER_SCHEMA,
};

use crate::error::{ConvertError, Result};

fn bad(msg: impl Into<String>) -> ConvertError {
    ConvertError::Tokenizer(format!("SentencePiece model: {}", msg.into()))
}

/// One protobuf field: number and value.
enum Field<'a> {
    Varint(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
    Other,
}

/// Iterates the fields of one protobuf message.
struct Fields<'a> {
    buf: &'a [u8],
}

fn varint(buf: &mut &[u8]) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or_else(|| bad("truncated varint"))?;
        *buf = rest;
        v |= u64::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad("varint longer than 10 bytes"))
}

fn take<'a>(buf: &mut &'a [u8], n: u64) -> Result<&'a [u8]> {
    let n = usize::try_from(n)
        .ok()
        .filter(|&n| n <= buf.len())
        .ok_or_else(|| bad("field runs past the end of its message"))?;
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Field<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let mut read = || -> Result<(u64, Field<'a>)> {
            let key = varint(&mut self.buf)?;
            let field = match key & 7 {
                0 => Field::Varint(varint(&mut self.buf)?),
                1 => {
                    take(&mut self.buf, 8)?;
                    Field::Other
                }
                2 => {
                    let n = varint(&mut self.buf)?;
                    Field::Bytes(take(&mut self.buf, n)?)
                }
                5 => {
                    let b = take(&mut self.buf, 4)?;
                    Field::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                }
                w => return Err(bad(format!("unsupported wire type {w}"))),
            };
            Ok((key >> 3, field))
        };
        let r = read();
        if r.is_err() {
            self.buf = &[];
        }
        Some(r)
    }
}

fn fields(buf: &[u8]) -> Fields<'_> {
    Fields { buf }
}

/// Reads `tokenizer.model` at `path`.
pub fn from_sentencepiece_file(path: &Path) -> Result<TokenizerSpec> {
    let bytes = std::fs::read(path).map_err(|e| ConvertError::io(path, e))?;
    from_sentencepiece_bytes(&bytes).map_err(|e| match e {
        ConvertError::Tokenizer(m) => ConvertError::Tokenizer(format!("{}: {m}", path.display())),
        ConvertError::Unsupported(m) => {
            ConvertError::Unsupported(format!("{}: {m}", path.display()))
        }
        other => other,
    })
}

/// SentencePiece `ModelType` BPE.
const MODEL_TYPE_BPE: u64 = 2;

/// Builds the tokenizer of a serialized SentencePiece `ModelProto`.
pub fn from_sentencepiece_bytes(bytes: &[u8]) -> Result<TokenizerSpec> {
    let ModelProto {
        pieces,
        trainer,
        normalizer,
    } = parse_model(bytes)?;
    check_supported(&trainer, &normalizer)?;
    let Pieces {
        tokens,
        mut scores,
        types,
    } = pieces;
    if tokens.is_empty() {
        return Err(bad("no pieces"));
    }
    let n = tokens.len() as i64;
    let special = |what: &str, id: i64| -> Result<Option<u32>> {
        match id {
            -1 => Ok(None),
            id if (0..n).contains(&id) => Ok(Some(id as u32)),
            id => Err(bad(format!("{what} {id} is out of range ({n} pieces)"))),
        }
    };
    for (s, ty) in scores.iter_mut().zip(&types) {
        if !matches!(ty, TokenType::Normal | TokenType::UserDefined) {
            *s = f32::NEG_INFINITY;
        }
    }
    let bos = special("bos_id", trainer.bos_id)?;
    let mut spec = TokenizerSpec {
        schema: TOKENIZER_SCHEMA,
        kind: TokenizerKind::SentencePieceBpe,
        pre_split: PreSplit::None,
        tokens,
        scores,
        token_types: types,
        merges: Vec::new(),
        bos,
        eos: special("eos_id", trainer.eos_id)?,
        unk: special("unk_id", trainer.unk_id)?,
        pad: special("pad_id", trainer.pad_id)?,
        eog: Vec::new(),
        add_bos: bos.is_some(),
        add_eos: false,
        add_space_prefix: normalizer.dummy_prefix,
        byte_fallback: trainer.byte_fallback,
    };
    spec.eog = super::hf_json::well_known_eog(&spec);
    let n_tokens = spec.tokens.len() as u32;
    ember_runtime::tokenizer::Tokenizer::new(spec.clone(), n_tokens)?;
    Ok(spec)
}

/// The fields of a `ModelProto` that the runtime needs.
struct ModelProto {
    pieces: Pieces,
    trainer: TrainerSpec,
    normalizer: NormalizerSpec,
}

/// `ModelProto.pieces`, by id.
#[derive(Default)]
struct Pieces {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<TokenType>,
}

/// The `TrainerSpec` fields read.
struct TrainerSpec {
    model_type: u64,
    /// `treat_whitespace_as_suffix`.
    ws_suffix: bool,
    byte_fallback: bool,
    unk_id: i64,
    bos_id: i64,
    eos_id: i64,
    pad_id: i64,
}

impl Default for TrainerSpec {
    /// The defaults of sentencepiece_model.proto.
    fn default() -> Self {
        Self {
            model_type: 1,
            ws_suffix: false,
            byte_fallback: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
        }
    }
}

/// The `NormalizerSpec` fields read.
struct NormalizerSpec {
    name: String,
    /// Whether `precompiled_charsmap` is non-empty.
    charsmap: bool,
    /// `add_dummy_prefix`.
    dummy_prefix: bool,
    /// `remove_extra_whitespaces`.
    collapse_ws: bool,
    /// `escape_whitespaces`.
    escape_ws: bool,
}

impl Default for NormalizerSpec {
    /// The defaults of sentencepiece_model.proto.
    fn default() -> Self {
        Self {
            name: String::new(),
            charsmap: false,
            dummy_prefix: true,
            collapse_ws: true,
            escape_ws: true,
        }
    }
}

/// Reads the pieces, trainer spec and normalizer spec of a serialized
/// `ModelProto` (repeated spec messages merge, later fields winning).
/// Errors: `Tokenizer` for malformed protobuf or pieces.
fn parse_model(bytes: &[u8]) -> Result<ModelProto> {
    let mut pieces = Pieces::default();
    let mut trainer = TrainerSpec::default();
    let mut normalizer = NormalizerSpec::default();
    for f in fields(bytes) {
        match f? {
            (1, Field::Bytes(piece_msg)) => {
                let id = pieces.tokens.len();
                let (text, score, ty) = parse_piece(piece_msg, id)?;
                pieces.tokens.push(text);
                pieces.scores.push(score);
                pieces.types.push(ty);
            }
            (2, Field::Bytes(msg)) => parse_trainer_spec(msg, &mut trainer)?,
            (3, Field::Bytes(msg)) => parse_normalizer_spec(msg, &mut normalizer)?,
            _ => {}
        }
    }
    Ok(ModelProto {
        pieces,
        trainer,
        normalizer,
    })
}

/// The text, score and type of piece `id` from its `SentencePiece` message.
/// Errors: `Tokenizer` for text that is absent or not UTF-8, or an unknown type.
fn parse_piece(msg: &[u8], id: usize) -> Result<(String, f32, TokenType)> {
    let (mut piece, mut score, mut ty) = (None, 0.0f32, 1u64);
    for g in fields(msg) {
        match g? {
            (1, Field::Bytes(b)) => {
                piece = Some(
                    std::str::from_utf8(b)
                        .map_err(|_| bad(format!("piece {id} is not UTF-8")))?
                        .to_string(),
                )
            }
            (2, Field::Fixed32(x)) => score = f32::from_bits(x),
            (3, Field::Varint(x)) => ty = x,
            _ => {}
        }
    }
    let text = piece.ok_or_else(|| bad(format!("piece {id} has no text")))?;
    let ty = match ty {
        1 => TokenType::Normal,
        2 => TokenType::Unknown,
        3 => TokenType::Control,
        4 => TokenType::UserDefined,
        5 => TokenType::Unused,
        6 => TokenType::Byte,
        t => return Err(bad(format!("piece {id} has unknown type {t}"))),
    };
    Ok((text, score, ty))
}

/// An int32 field's value: a varint of the sign-extended 64-bit value.
fn int32(v: u64) -> i64 {
    v as i64 as i32 as i64
}

/// Updates `spec` with the fields of a `TrainerSpec` message. Errors:
/// `Tokenizer` for malformed protobuf.
fn parse_trainer_spec(msg: &[u8], spec: &mut TrainerSpec) -> Result<()> {
    for g in fields(msg) {
        match g? {
            (3, Field::Varint(x)) => spec.model_type = x,
            (24, Field::Varint(x)) => spec.ws_suffix = x != 0,
            (35, Field::Varint(x)) => spec.byte_fallback = x != 0,
            (40, Field::Varint(x)) => spec.unk_id = int32(x),
            (41, Field::Varint(x)) => spec.bos_id = int32(x),
            (42, Field::Varint(x)) => spec.eos_id = int32(x),
            (43, Field::Varint(x)) => spec.pad_id = int32(x),
            _ => {}
        }
    }
    Ok(())
}

/// Updates `spec` with the fields of a `NormalizerSpec` message. Errors:
/// `Tokenizer` for malformed protobuf.
fn parse_normalizer_spec(msg: &[u8], spec: &mut NormalizerSpec) -> Result<()> {
    for g in fields(msg) {
        match g? {
            (1, Field::Bytes(b)) => spec.name = String::from_utf8_lossy(b).into(),
            (2, Field::Bytes(b)) => spec.charsmap = !b.is_empty(),
            (3, Field::Varint(x)) => spec.dummy_prefix = x != 0,
            (4, Field::Varint(x)) => spec.collapse_ws = x != 0,
            (5, Field::Varint(x)) => spec.escape_ws = x != 0,
            _ => {}
        }
    }
    Ok(())
}

/// Checks that the model is BPE with an identity normalizer that keeps
/// whitespace and escapes it as a `▁` prefix. Errors: `Unsupported`.
fn check_supported(trainer: &TrainerSpec, normalizer: &NormalizerSpec) -> Result<()> {
    let unsupported = |m: String| {
        Err(ConvertError::Unsupported(format!(
            "SentencePiece model: {m}"
        )))
    };
    let model_type = trainer.model_type;
    if model_type != MODEL_TYPE_BPE {
        let name = match model_type {
            1 => "UNIGRAM",
            3 => "WORD",
            4 => "CHAR",
            _ => "unknown",
        };
        return unsupported(format!(
            "model type {name} ({model_type}); only BPE is supported"
        ));
    }
    let norm_name = &normalizer.name;
    if normalizer.charsmap || !(norm_name.is_empty() || norm_name == "identity") {
        return unsupported(format!(
            "normalizer {norm_name:?} with a precompiled character map (only identity)"
        ));
    }
    if normalizer.collapse_ws {
        return unsupported("normalizer with remove_extra_whitespaces = true".into());
    }
    if !normalizer.escape_ws || trainer.ws_suffix {
        return unsupported("whitespace not escaped as a ▁ prefix".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint_bytes(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7F) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(num: u64, body: &[u8], out: &mut Vec<u8>) {
        varint_bytes(num << 3 | 2, out);
        varint_bytes(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    fn varint_field(num: u64, v: u64, out: &mut Vec<u8>) {
        varint_bytes(num << 3, out);
        varint_bytes(v, out);
    }

    fn piece(text: &str, score: f32, ty: u64) -> Vec<u8> {
        let mut p = Vec::new();
        bytes_field(1, text.as_bytes(), &mut p);
        varint_bytes(2 << 3 | 5, &mut p);
        p.extend_from_slice(&score.to_le_bytes());
        varint_field(3, ty, &mut p);
        p
    }

    fn model(model_type: u64, collapse: bool) -> Vec<u8> {
        let mut m = Vec::new();
        for (t, s, ty) in [
            ("<unk>", 0.0, 2),
            ("<s>", 0.0, 3),
            ("</s>", 0.0, 3),
            ("<0x41>", 0.0, 6),
            ("▁", -1.0, 1),
            ("a", -2.0, 1),
            ("▁a", -3.0, 1),
        ] {
            bytes_field(1, &piece(t, s, ty), &mut m);
        }
        let mut trainer = Vec::new();
        varint_field(3, model_type, &mut trainer);
        varint_field(35, 1, &mut trainer);
        varint_field(43, u64::MAX, &mut trainer); // pad_id = -1
        bytes_field(2, &trainer, &mut m);
        let mut norm = Vec::new();
        bytes_field(1, b"identity", &mut norm);
        varint_field(4, u64::from(collapse), &mut norm);
        bytes_field(3, &norm, &mut m);
        m
    }

    #[test]
    fn reads_pieces_and_specs() {
        let spec = from_sentencepiece_bytes(&model(2, false)).unwrap();
        assert_eq!(spec.tokens.len(), 7);
        assert_eq!(
            (spec.bos, spec.eos, spec.unk, spec.pad),
            (Some(1), Some(2), Some(0), None)
        );
        assert!(spec.add_bos && spec.add_space_prefix && spec.byte_fallback);
        assert_eq!(spec.token_types[3], TokenType::Byte);
        assert_eq!(spec.scores[6], -3.0);
        assert_eq!(spec.scores[1], f32::NEG_INFINITY);
        let t = ember_runtime::tokenizer::Tokenizer::new(spec, 7).unwrap();
        assert_eq!(t.encode("aA", t.default_encode_options()), [1, 6, 3]);
    }

    #[test]
    fn llama2c_tokenizer_path_accepts_a_model_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.model");
        std::fs::write(&p, model(2, false)).unwrap();
        let spec = super::super::llama2c::from_llama2c_bin(&p, 8).unwrap();
        assert_eq!(spec.tokens.len(), 7);
        assert!(matches!(
            super::super::llama2c::from_llama2c_bin(&p, 5),
            Err(ConvertError::Tokenizer(m)) if m.contains("7 pieces")
        ));
    }

    #[test]
    fn rejects_unsupported_and_truncated() {
        assert!(matches!(
            from_sentencepiece_bytes(&model(1, false)),
            Err(ConvertError::Unsupported(m)) if m.contains("UNIGRAM")
        ));
        assert!(matches!(
            from_sentencepiece_bytes(&model(2, true)),
            Err(ConvertError::Unsupported(m)) if m.contains("remove_extra_whitespaces")
        ));
        let m = model(2, false);
        for cut in [1, 5, m.len() / 2, m.len() - 1] {
            assert!(from_sentencepiece_bytes(&m[..cut]).is_err(), "cut at {cut}");
        }
        assert!(from_sentencepiece_bytes(&[]).is_err());
    }
}
