//! Tokenizer from a llama2.c `tokenizer.bin` (e.g. `tok512.bin`).
//!
//! Format (little-endian): `i32 max_token_length`, then for each of the model's
//! `vocab_size` tokens: `f32 score`, `i32 len`, `len` bytes of UTF-8. llama2.c's
//! exporter wrote SentencePiece's `▁` as a plain space and BOS/EOS as `"\n<s>\n"` /
//! `"\n</s>\n"`; both are mapped back here so the spec is SentencePiece-normal.
//! Layout assumed, as in every llama2.c export: 0 `<unk>`, 1 BOS, 2 EOS, and byte
//! tokens spelled `<0xNN>`.

use std::path::Path;

use ember_runtime::tokenizer::{
    PreSplit, TokenType, TokenizerKind, TokenizerSpec, TOKENIZER_SCHEMA,
};

use crate::error::{ConvertError, Result};

/// Reads a llama2.c tokenizer file for a model with `vocab_size` tokens; a path
/// ending in `.model` is read as a SentencePiece model instead
/// ([`super::sentencepiece::from_sentencepiece_file`]), which must not have more
/// pieces than `vocab_size`.
///
/// Errors (`ConvertError::Tokenizer`, naming the file) on truncation, negative or
/// oversized lengths, non-UTF-8 pieces, trailing bytes (a sign of the wrong vocab
/// size) or a vocabulary too small to hold `<unk>`, BOS and EOS.
pub fn from_llama2c_bin(path: &Path, vocab_size: u32) -> Result<TokenizerSpec> {
    if path.extension().is_some_and(|e| e == "model") {
        let spec = super::sentencepiece::from_sentencepiece_file(path)?;
        if spec.tokens.len() as u64 > u64::from(vocab_size) {
            return Err(ConvertError::Tokenizer(format!(
                "{}: {} pieces but the checkpoint's vocabulary has {vocab_size}",
                path.display(),
                spec.tokens.len()
            )));
        }
        return Ok(spec);
    }
    let data = std::fs::read(path).map_err(|e| ConvertError::io(path, e))?;
    parse(&data, vocab_size)
        .map_err(|msg| ConvertError::Tokenizer(format!("{}: {msg}", path.display())))
}

fn parse(data: &[u8], vocab_size: u32) -> std::result::Result<TokenizerSpec, String> {
    if vocab_size < 3 {
        return Err(format!(
            "vocabulary size {vocab_size} cannot hold <unk>, BOS and EOS"
        ));
    }
    let mut r = Reader { data, pos: 0 };
    let max_len = r.i32("max_token_length")?;
    if max_len < 0 {
        return Err(format!("negative max_token_length {max_len}"));
    }
    // Each token needs at least 8 bytes, which bounds the allocation by the file size.
    let n = vocab_size as usize;
    if data.len().saturating_sub(4) / 8 < n {
        return Err(format!(
            "{} bytes cannot hold {n} tokens (truncated file or wrong vocab size?)",
            data.len()
        ));
    }
    let mut tokens = Vec::with_capacity(n);
    let mut scores = Vec::with_capacity(n);
    let mut token_types = Vec::with_capacity(n);
    for i in 0..n {
        let score = f32::from_bits(r.i32(&format!("token {i} score"))? as u32);
        let len = r.i32(&format!("token {i} length"))?;
        if len < 0 || len > max_len {
            return Err(format!(
                "token {i} has length {len} (max_token_length is {max_len})"
            ));
        }
        let bytes = r.take(len as usize, &format!("token {i} text"))?;
        let text =
            std::str::from_utf8(bytes).map_err(|_| format!("token {i} is not valid UTF-8"))?;
        let (piece, ty) = match i {
            0 => (text.to_string(), TokenType::Unknown),
            1 => ("<s>".to_string(), TokenType::Control),
            2 => ("</s>".to_string(), TokenType::Control),
            _ if is_byte_piece(text) => (text.to_string(), TokenType::Byte),
            _ => (text.replace(' ', "\u{2581}"), TokenType::Normal),
        };
        tokens.push(piece);
        scores.push(score);
        token_types.push(ty);
    }
    if r.pos != data.len() {
        return Err(format!(
            "{} trailing bytes after {n} tokens (wrong vocab size?)",
            data.len() - r.pos
        ));
    }
    let byte_fallback = token_types.contains(&TokenType::Byte);
    Ok(TokenizerSpec {
        schema: TOKENIZER_SCHEMA,
        kind: TokenizerKind::SentencePieceBpe,
        pre_split: PreSplit::None,
        tokens,
        scores,
        token_types,
        merges: Vec::new(),
        bos: Some(1),
        eos: Some(2),
        unk: Some(0),
        pad: None,
        eog: Vec::new(),
        add_bos: true,
        add_eos: false,
        add_space_prefix: true,
        byte_fallback,
    })
}

/// `<0xNN>` with two upper- or lower-case hex digits.
fn is_byte_piece(s: &str) -> bool {
    s.len() == 6
        && s.starts_with("<0x")
        && s.ends_with('>')
        && s[3..5].bytes().all(|b| b.is_ascii_hexdigit())
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&[u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "truncated: {what} needs {n} bytes at offset {} but the file has {}",
                    self.pos,
                    self.data.len()
                )
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn i32(&mut self, what: &str) -> std::result::Result<i32, String> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(entries: &[(f32, &[u8])], max_len: i32) -> Vec<u8> {
        let mut d = max_len.to_le_bytes().to_vec();
        for (s, t) in entries {
            d.extend(s.to_le_bytes());
            d.extend((t.len() as i32).to_le_bytes());
            d.extend(*t);
        }
        d
    }

    #[test]
    fn maps_llama2c_conventions_back() {
        let d = file(
            &[
                (0.0, b"<unk>"),
                (0.0, b"\n<s>\n"),
                (0.0, b"\n</s>\n"),
                (0.0, b"<0x0A>"),
                (-1.0, b" the"),
            ],
            7,
        );
        let spec = parse(&d, 5).unwrap();
        assert_eq!(spec.tokens, ["<unk>", "<s>", "</s>", "<0x0A>", "▁the"]);
        assert_eq!(
            spec.token_types,
            [
                TokenType::Unknown,
                TokenType::Control,
                TokenType::Control,
                TokenType::Byte,
                TokenType::Normal
            ]
        );
        assert!(spec.byte_fallback && spec.add_bos && spec.add_space_prefix);
    }

    #[test]
    fn rejects_corrupt_files() {
        let good = file(&[(0.0, b"<unk>"), (0.0, b"<s>"), (0.0, b"</s>")], 5);
        assert!(parse(&good, 3).is_ok());
        for cut in 0..good.len() {
            assert!(parse(&good[..cut], 3).is_err(), "truncated at {cut}");
        }
        assert!(parse(&good, 4).unwrap_err().contains("truncated"));
        assert!(parse(&good, 1000).unwrap_err().contains("cannot hold"));
        assert!(parse(&good, 2).is_err());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(parse(&trailing, 3).unwrap_err().contains("trailing"));
        // A corrupt huge length must not allocate or panic.
        let mut huge = good.clone();
        huge[8..12].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(parse(&huge, 3).is_err());
        let bad_utf8 = file(&[(0.0, b"<unk>"), (0.0, b"<s>"), (0.0, b"\xff")], 5);
        assert!(parse(&bad_utf8, 3).unwrap_err().contains("UTF-8"));
        assert!(parse(&good, u32::MAX).is_err());
    }
}
