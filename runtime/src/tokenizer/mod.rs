//! Tokenizers stored in `.ember` files: SentencePiece-style BPE, byte-level BPE and
//! WordPiece.
//!
//! [`Tokenizer::new`] validates a [`TokenizerSpec`] once and builds the lookup
//! tables; after that `encode`, `decode` and [`StreamDecoder`] cannot fail and never
//! panic, whatever the input text or ids.
//!
//! * SentencePiece BPE reproduces llama2.c's `encode`: optional `▁` dummy prefix,
//!   spaces become `▁`, each character is looked up as a piece (else `<0xNN>` byte
//!   tokens, else `unk`), then the adjacent pair whose concatenation is the
//!   highest-scoring token is merged, leftmost on ties, until none is left.
//! * Byte-level BPE reproduces Hugging Face `tokenizers` for GPT-2-style models:
//!   split by the GPT-2 (or Llama 3 / Qwen2) pattern, map bytes to GPT-2's
//!   alphabet, merge by rank.
//! * WordPiece reproduces Hugging Face `tokenizers` for BERT: BERT normalizer, split
//!   at whitespace and punctuation, greedy longest-match-first pieces (`##` marks a
//!   continuation). Decoding joins words with spaces, as HF's WordPiece decoder.
//!
//! With `parse_special`, the texts of Control, UserDefined and Unknown tokens are matched as
//! whole tokens first (leftmost, longest first) and the text between them is
//! encoded normally; the dummy prefix then applies to every such text segment, as in
//! llama.cpp and HF's legacy Llama tokenizer.

mod bpe;
mod byte_level;
mod pretokenize;
mod spec;
mod stream;
mod wordpiece;

use std::collections::HashMap;

pub use spec::*;
pub use stream::StreamDecoder;

use bpe::Merger;

/// A SentencePiece token merges only when its score is strictly above this: llama2.c
/// seeds its best-pair search with `-1e10`. Importers give tokens that no merge may
/// produce a score at or below it (e.g. `f32::NEG_INFINITY`).
pub const MIN_MERGE_SCORE: f32 = -1e10;

/// Most bytes encoding holds at its peak per byte of input, output included
/// (measured on 60 MB of text: 20 for byte-level BPE, 40-46 for SentencePiece),
/// for [`Tokenizer::try_encode`].
pub const ENCODE_BYTES_PER_INPUT_BYTE: usize = 48;

/// The SentencePiece word-boundary mark standing for a space.
const SPACE_MARK: char = '\u{2581}';

/// Options for one [`Tokenizer::encode`] call.
#[derive(Clone, Copy, Debug)]
pub struct EncodeOptions {
    /// Prepend the BOS token (ignored when the tokenizer has none).
    pub add_bos: bool,
    /// Match Control / UserDefined / Unknown token texts in the input as those tokens;
    /// when false they are encoded as plain text.
    pub parse_special: bool,
}

/// A validated tokenizer ready to encode and decode. `Send + Sync`; all methods take `&self`.
#[derive(Debug)]
pub struct Tokenizer {
    spec: TokenizerSpec,
    /// Piece text -> id (lowest id wins for duplicate pieces; empty pieces excluded).
    piece_to_id: HashMap<Box<str>, u32>,
    /// SentencePiece: merge key per token (`None`: never a merge result).
    sp_keys: Vec<Option<u32>>,
    /// Byte-level BPE: (left, right) -> (rank, merged id); first rank wins for duplicates.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// SentencePiece byte fallback: byte -> its `<0xNN>` token.
    byte_tokens: [Option<u32>; 256],
    /// Byte-level BPE: byte -> token of its alphabet character.
    byte_level_tokens: [Option<u32>; 256],
    /// Decoded bytes of every token, concatenated; token `i` is `offsets[i]..offsets[i+1]`.
    decoded: Vec<u8>,
    offsets: Vec<u32>,
    /// True for tokens of type `Byte` (never subject to the leading-space strip).
    is_byte: Vec<bool>,
    /// Control / UserDefined / Unknown tokens matched in text: (text, id), grouped by first byte,
    /// longest first within a group; `special_groups[b]..special_groups[b+1]` indexes it.
    specials: Vec<(Box<str>, u32)>,
    special_groups: Vec<u32>,
    max_token_bytes: usize,
}

fn err(msg: impl Into<String>) -> crate::Error {
    crate::Error::Tokenizer(msg.into())
}

/// Parses a `<0xNN>` byte-token piece (two hex digits, either case).
fn parse_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Checks the schema version, the token count against `vocab_size` and one type per token.
fn validate_shape(spec: &TokenizerSpec, vocab_size: u32) -> crate::Result<()> {
    if spec.schema != TOKENIZER_SCHEMA {
        return Err(err(format!(
            "schema {} is not the supported {}",
            spec.schema, TOKENIZER_SCHEMA
        )));
    }
    let n = spec.tokens.len();
    if n == 0 {
        return Err(err("the vocabulary is empty"));
    }
    if n as u64 > u64::from(vocab_size) {
        return Err(err(format!(
            "{n} tokens but the model's vocabulary size is {vocab_size}"
        )));
    }
    if spec.token_types.len() != n {
        return Err(err(format!(
            "{} token types for {n} tokens",
            spec.token_types.len()
        )));
    }
    Ok(())
}

/// Checks the scores, pre-split and merges each tokenizer kind allows.
fn validate_kind_fields(spec: &TokenizerSpec) -> crate::Result<()> {
    let n = spec.tokens.len();
    match spec.kind {
        TokenizerKind::SentencePieceBpe => {
            if spec.scores.len() != n {
                return Err(err(format!(
                    "{} scores for {n} SentencePiece tokens",
                    spec.scores.len()
                )));
            }
            if spec.pre_split != PreSplit::None {
                return Err(err("SentencePiece BPE does not take a pre-split"));
            }
        }
        TokenizerKind::ByteLevelBpe => {
            if !spec.scores.is_empty() && spec.scores.len() != n {
                return Err(err(format!("{} scores for {n} tokens", spec.scores.len())));
            }
            if spec.pre_split == PreSplit::Bert {
                return Err(err("byte-level BPE does not take the BERT pre-split"));
            }
        }
        TokenizerKind::WordPiece(_) => {
            if spec.pre_split != PreSplit::Bert {
                return Err(err("WordPiece needs the BERT pre-split"));
            }
            if !spec.merges.is_empty() || !spec.scores.is_empty() {
                return Err(err("WordPiece takes no merges or scores"));
            }
        }
    }
    Ok(())
}

/// Checks that bos, eos, unk, pad and every end-of-generation id name a token, and
/// that `add_bos` / `add_eos` have their token.
fn validate_special_ids(spec: &TokenizerSpec) -> crate::Result<()> {
    let n = spec.tokens.len();
    let check_id = |what: &str, id: u32| {
        if (id as usize) < n {
            Ok(())
        } else {
            Err(err(format!("{what} id {id} is out of range ({n} tokens)")))
        }
    };
    for (what, id) in [
        ("bos", spec.bos),
        ("eos", spec.eos),
        ("unk", spec.unk),
        ("pad", spec.pad),
    ] {
        if let Some(id) = id {
            check_id(what, id)?;
        }
    }
    for &id in &spec.eog {
        check_id("end-of-generation", id)?;
    }
    if spec.add_bos && spec.bos.is_none() {
        return Err(err("add_bos is set but there is no bos token"));
    }
    if spec.add_eos && spec.eos.is_none() {
        return Err(err("add_eos is set but there is no eos token"));
    }
    Ok(())
}

/// Piece lookups built in one pass over the vocabulary.
struct PieceIndex {
    /// Piece text -> id (lowest id wins; empty pieces excluded).
    piece_to_id: HashMap<Box<str>, u32>,
    /// Byte -> its `<0xNN>` token (lowest id wins).
    byte_tokens: [Option<u32>; 256],
    /// True for tokens of type `Byte`.
    is_byte: Vec<bool>,
}

impl PieceIndex {
    /// Indexes every piece; fails on a Byte token not spelled `<0xNN>`.
    fn build(spec: &TokenizerSpec) -> crate::Result<Self> {
        let n = spec.tokens.len();
        let mut piece_to_id = HashMap::with_capacity(n);
        let mut byte_tokens = [None; 256];
        let mut is_byte = vec![false; n];
        for (i, (piece, ty)) in spec.tokens.iter().zip(&spec.token_types).enumerate() {
            let id = i as u32;
            if !piece.is_empty() {
                piece_to_id.entry(piece.as_str().into()).or_insert(id);
            }
            if *ty == TokenType::Byte {
                let Some(b) = parse_byte_piece(piece) else {
                    return Err(err(format!(
                        "byte token {id} is spelled {piece:?}, not <0xNN>"
                    )));
                };
                byte_tokens[b as usize].get_or_insert(id);
                is_byte[i] = true;
            }
        }
        Ok(Self {
            piece_to_id,
            byte_tokens,
            is_byte,
        })
    }
}

/// (left, right) -> (rank, merged id) for every merge, first rank winning for
/// duplicates; fails on a merge naming an unknown token or making a non-token.
fn merge_table(
    spec: &TokenizerSpec,
    piece_to_id: &HashMap<Box<str>, u32>,
) -> crate::Result<HashMap<(u32, u32), (u32, u32)>> {
    let n = spec.tokens.len();
    let mut merges = HashMap::new();
    let mut concat = String::new();
    for (rank, &(a, b)) in spec.merges.iter().enumerate() {
        let (Some(pa), Some(pb)) = (spec.tokens.get(a as usize), spec.tokens.get(b as usize))
        else {
            return Err(err(format!(
                "merge {rank} ({a}, {b}) names a token out of range ({n} tokens)"
            )));
        };
        concat.clear();
        concat.push_str(pa);
        concat.push_str(pb);
        let Some(&merged) = piece_to_id.get(concat.as_str()) else {
            return Err(err(format!(
                "merge {rank} ({pa:?} + {pb:?}) makes {concat:?}, which is not a token"
            )));
        };
        merges.entry((a, b)).or_insert((rank as u32, merged));
    }
    Ok(merges)
}

/// Byte-level BPE: byte -> token of its GPT-2 alphabet character; all `None` for
/// other kinds.
fn byte_level_alphabet_tokens(
    spec: &TokenizerSpec,
    piece_to_id: &HashMap<Box<str>, u32>,
) -> [Option<u32>; 256] {
    let mut byte_level_tokens = [None; 256];
    if spec.kind == TokenizerKind::ByteLevelBpe {
        for (b, slot) in byte_level_tokens.iter_mut().enumerate() {
            let mut buf = [0u8; 4];
            *slot = piece_to_id
                .get(&*byte_level::BYTE_TO_CHAR[b].encode_utf8(&mut buf))
                .copied();
        }
    }
    byte_level_tokens
}

/// The decoded bytes of every token, concatenated.
struct DecodedTexts {
    /// Token `i` is `decoded[offsets[i]..offsets[i + 1]]`.
    decoded: Vec<u8>,
    offsets: Vec<u32>,
    max_token_bytes: usize,
}

impl DecodedTexts {
    /// Decodes every token; fails when the total exceeds 4 GiB (u32 offsets).
    fn build(spec: &TokenizerSpec) -> crate::Result<Self> {
        let n = spec.tokens.len();
        let mut decoded = Vec::new();
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0u32);
        let mut max_token_bytes = 0;
        for (i, (piece, ty)) in spec.tokens.iter().zip(&spec.token_types).enumerate() {
            let start = decoded.len();
            push_decoded_token(piece, *ty, spec.kind, &mut decoded);
            max_token_bytes = max_token_bytes.max(decoded.len() - start);
            let end = u32::try_from(decoded.len())
                .map_err(|_| err(format!("token {i}: the vocabulary text exceeds 4 GiB")))?;
            offsets.push(end);
        }
        Ok(Self {
            decoded,
            offsets,
            max_token_bytes,
        })
    }
}

/// Appends the bytes one token decodes to: nothing for Control tokens (and WordPiece's
/// Unknown), WordPiece words with their leading space, a Byte token's byte,
/// SentencePiece pieces with `▁` as space, byte-level pieces mapped back through
/// GPT-2's alphabet (UserDefined ones verbatim).
fn push_decoded_token(piece: &str, ty: TokenType, kind: TokenizerKind, decoded: &mut Vec<u8>) {
    match (ty, kind) {
        (TokenType::Control, _) => {}
        (TokenType::Unknown, TokenizerKind::WordPiece(_)) => {}
        (_, TokenizerKind::WordPiece(o)) => match piece.strip_prefix(wordpiece::CONTINUATION) {
            Some(rest) => decoded.extend_from_slice(rest.as_bytes()),
            None => {
                let glued = o.cleanup && matches!(piece, "." | "?" | "!" | ",");
                if !glued {
                    decoded.push(b' ');
                }
                decoded.extend_from_slice(piece.as_bytes());
            }
        },
        (TokenType::Byte, _) => decoded.extend(parse_byte_piece(piece)),
        (_, TokenizerKind::SentencePieceBpe) => {
            for c in piece.chars() {
                let c = if c == SPACE_MARK { ' ' } else { c };
                decoded.extend_from_slice(c.encode_utf8(&mut [0u8; 4]).as_bytes());
            }
        }
        (TokenType::UserDefined, TokenizerKind::ByteLevelBpe) => {
            decoded.extend_from_slice(piece.as_bytes())
        }
        (_, TokenizerKind::ByteLevelBpe) => {
            for c in piece.chars() {
                match byte_level::char_to_byte(c) {
                    Some(b) => decoded.push(b),
                    None => decoded.extend_from_slice(c.encode_utf8(&mut [0u8; 4]).as_bytes()),
                }
            }
        }
    }
}

/// The Control / UserDefined / Unknown tokens matched in text, sorted by first byte,
/// longest first, then by id; and the 257 group starts indexing them by first byte.
fn special_token_index(spec: &TokenizerSpec) -> (Vec<(Box<str>, u32)>, Vec<u32>) {
    let mut specials: Vec<(Box<str>, u32)> = spec
        .tokens
        .iter()
        .zip(&spec.token_types)
        .enumerate()
        .filter(|(_, (piece, ty))| {
            !piece.is_empty()
                && matches!(
                    ty,
                    TokenType::Control | TokenType::UserDefined | TokenType::Unknown
                )
        })
        .map(|(i, (piece, _))| (piece.as_str().into(), i as u32))
        .collect();
    specials.sort_by(|(a, ia), (b, ib)| {
        (a.as_bytes()[0], std::cmp::Reverse(a.len()), ia).cmp(&(
            b.as_bytes()[0],
            std::cmp::Reverse(b.len()),
            ib,
        ))
    });
    let mut special_groups = vec![0u32; 257];
    for (text, _) in &specials {
        special_groups[text.as_bytes()[0] as usize + 1] += 1;
    }
    for b in 0..256 {
        special_groups[b + 1] += special_groups[b];
    }
    (specials, special_groups)
}

impl Tokenizer {
    /// Validates `spec` for a model with `vocab_size` embedding rows and builds the
    /// lookup tables.
    ///
    /// Checks: `schema == TOKENIZER_SCHEMA`; `1 <= tokens.len() <= vocab_size`; one
    /// token type per token; SentencePiece needs one score per token and no pre-split,
    /// byte-level allows no scores or one per token; every special id (bos, eos, unk,
    /// pad, eog) names a token; `add_bos`/`add_eos` have their token; Byte tokens are
    /// spelled `<0xNN>`; every merge names two tokens whose concatenation is a token.
    /// Returns `Error::Tokenizer` naming the first problem; never panics.
    pub fn new(spec: TokenizerSpec, vocab_size: u32) -> crate::Result<Self> {
        validate_shape(&spec, vocab_size)?;
        validate_kind_fields(&spec)?;
        validate_special_ids(&spec)?;
        let pieces = PieceIndex::build(&spec)?;
        let merges = merge_table(&spec, &pieces.piece_to_id)?;
        let sp_keys = match spec.kind {
            TokenizerKind::SentencePieceBpe => {
                spec.scores.iter().map(|&s| bpe::score_key(s)).collect()
            }
            _ => Vec::new(),
        };
        let byte_level_tokens = byte_level_alphabet_tokens(&spec, &pieces.piece_to_id);
        let texts = DecodedTexts::build(&spec)?;
        let (specials, special_groups) = special_token_index(&spec);
        Ok(Self {
            spec,
            piece_to_id: pieces.piece_to_id,
            sp_keys,
            merges,
            byte_tokens: pieces.byte_tokens,
            byte_level_tokens,
            decoded: texts.decoded,
            offsets: texts.offsets,
            is_byte: pieces.is_byte,
            specials,
            special_groups,
            max_token_bytes: texts.max_token_bytes,
        })
    }

    /// The validated spec.
    pub fn spec(&self) -> &TokenizerSpec {
        &self.spec
    }

    /// Number of tokens with a piece (may be below the model's vocabulary size).
    pub fn n_tokens(&self) -> usize {
        self.spec.tokens.len()
    }

    /// The beginning-of-sequence id, if the model has one.
    pub fn bos(&self) -> Option<u32> {
        self.spec.bos
    }

    /// The end-of-sequence id, if the model has one.
    pub fn eos(&self) -> Option<u32> {
        self.spec.eos
    }

    /// True when generating `id` ends the turn: it is `eos` or one of `spec.eog`.
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.spec.eos == Some(id) || self.spec.eog.contains(&id)
    }

    /// The options the model's spec asks for: `add_bos = spec.add_bos`, `parse_special = true`.
    pub fn default_encode_options(&self) -> EncodeOptions {
        EncodeOptions {
            add_bos: self.spec.add_bos,
            parse_special: true,
        }
    }

    /// Length in bytes of the longest token's decoded text.
    pub fn max_token_bytes(&self) -> usize {
        self.max_token_bytes
    }

    /// [`encode`](Self::encode), after checking that the memory it may need
    /// ([`ENCODE_BYTES_PER_INPUT_BYTE`] per byte of `text`) can be reserved: for
    /// text whose size a file or a caller decides. Errors: [`Error::OutOfMemory`].
    pub fn try_encode(&self, text: &str, opts: EncodeOptions) -> crate::Result<Vec<u32>> {
        let need = text.len().saturating_mul(ENCODE_BYTES_PER_INPUT_BYTE);
        let mut probe: Vec<u8> = Vec::new();
        probe.try_reserve_exact(need).map_err(|_| {
            crate::Error::out_of_memory(
                format!("tokenizing {} bytes of text", text.len()),
                need as u64,
                "use a shorter text",
            )
        })?;
        drop(probe);
        Ok(self.encode(text, opts))
    }

    /// Encodes `text`: BOS if `opts.add_bos` (and the model has one), the tokens, then
    /// EOS if `spec.add_eos`. Characters with no token and no byte fallback become
    /// `unk`, or are dropped when the model has no `unk`; byte-level BPE drops bytes
    /// its alphabet lacks.
    pub fn encode(&self, text: &str, opts: EncodeOptions) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if opts.add_bos {
            out.extend(self.spec.bos);
        }
        let mut scratch = Scratch::default();
        if opts.parse_special {
            let bytes = text.as_bytes();
            let (mut start, mut i) = (0, 0);
            while i < bytes.len() {
                if let Some((len, id)) = self.match_special(&bytes[i..]) {
                    // Specials start and end on char boundaries: their first byte is a
                    // leading byte and they are valid UTF-8 themselves.
                    self.encode_text(
                        text.get(start..i).unwrap_or_default(),
                        &mut out,
                        &mut scratch,
                    );
                    out.push(id);
                    i += len;
                    start = i;
                } else {
                    i += 1;
                }
            }
            self.encode_text(
                text.get(start..).unwrap_or_default(),
                &mut out,
                &mut scratch,
            );
        } else {
            self.encode_text(text, &mut out, &mut scratch);
        }
        if self.spec.add_eos {
            out.extend(self.spec.eos);
        }
        out
    }

    /// The longest special token at the start of `bytes`: (byte length, id).
    fn match_special(&self, bytes: &[u8]) -> Option<(usize, u32)> {
        let first = *bytes.first()? as usize;
        let group = self.special_groups[first] as usize..self.special_groups[first + 1] as usize;
        self.specials
            .get(group)?
            .iter()
            .find(|(t, _)| bytes.starts_with(t.as_bytes()))
            .map(|(t, id)| (t.len(), *id))
    }

    /// Encodes text containing no special tokens.
    fn encode_text(&self, text: &str, out: &mut Vec<u32>, scratch: &mut Scratch) {
        if text.is_empty() {
            return;
        }
        match self.spec.kind {
            TokenizerKind::SentencePieceBpe => self.encode_sentencepiece(text, out, scratch),
            TokenizerKind::ByteLevelBpe => match self.spec.pre_split {
                PreSplit::None | PreSplit::Bert => self.encode_byte_level_word(text, out, scratch),
                PreSplit::Gpt2 => {
                    for word in pretokenize::Gpt2Split::new(text) {
                        self.encode_byte_level_word(word, out, scratch);
                    }
                }
                PreSplit::Llama3 | PreSplit::Qwen2 => {
                    let digits = if self.spec.pre_split == PreSplit::Llama3 {
                        3
                    } else {
                        1
                    };
                    let whole_words = self.spec.pre_split == PreSplit::Llama3;
                    for word in pretokenize::Llama3Split::new(text, digits) {
                        if !(whole_words && self.push_whole_word(word, out, scratch)) {
                            self.encode_byte_level_word(word, out, scratch);
                        }
                    }
                }
            },
            TokenizerKind::WordPiece(o) => self.encode_wordpiece(text, &o, out, scratch),
        }
    }

    fn encode_wordpiece(
        &self,
        text: &str,
        o: &WordPieceOptions,
        out: &mut Vec<u32>,
        scratch: &mut Scratch,
    ) {
        let Scratch {
            concat, norm, tmp, ..
        } = scratch;
        wordpiece::normalize(text, o, norm, tmp);
        let lookup = |p: &str| self.piece_to_id.get(p).copied();
        for word in wordpiece::BertSplit::new(norm) {
            wordpiece::segment_word(
                word,
                o.max_input_chars_per_word as usize,
                self.spec.unk,
                lookup,
                concat,
                out,
            );
        }
    }

    fn encode_sentencepiece(&self, text: &str, out: &mut Vec<u32>, scratch: &mut Scratch) {
        let m = &mut scratch.merger;
        m.clear();
        let mut push_char = |c: char| {
            let mut buf = [0u8; 4];
            let s = c.encode_utf8(&mut buf);
            if let Some(&id) = self.piece_to_id.get(&*s) {
                m.push(id);
            } else if self.spec.byte_fallback
                && s.bytes().all(|b| self.byte_tokens[b as usize].is_some())
            {
                s.bytes()
                    .filter_map(|b| self.byte_tokens[b as usize])
                    .for_each(|id| m.push(id));
            } else if let Some(unk) = self.spec.unk {
                m.push(unk);
            }
        };
        if self.spec.add_space_prefix {
            push_char(SPACE_MARK);
        }
        for c in text.chars() {
            push_char(if c == ' ' { SPACE_MARK } else { c });
        }
        let concat = &mut scratch.concat;
        let pair = |a: u32, b: u32| {
            concat.clear();
            concat.push_str(self.spec.tokens.get(a as usize)?);
            concat.push_str(self.spec.tokens.get(b as usize)?);
            let &merged = self.piece_to_id.get(concat.as_str())?;
            Some(((*self.sp_keys.get(merged as usize)?)?, merged))
        };
        m.run(pair, out);
    }

    /// Llama 3's `ignore_merges`: if the byte-level spelling of `word` is a token
    /// (not a Control one), pushes it and returns true.
    fn push_whole_word(&self, word: &str, out: &mut Vec<u32>, scratch: &mut Scratch) -> bool {
        let s = &mut scratch.concat;
        s.clear();
        s.extend(word.bytes().map(|b| byte_level::BYTE_TO_CHAR[b as usize]));
        match self.piece_to_id.get(s.as_str()) {
            Some(&id) if self.spec.token_types.get(id as usize) != Some(&TokenType::Control) => {
                out.push(id);
                true
            }
            _ => false,
        }
    }

    fn encode_byte_level_word(&self, word: &str, out: &mut Vec<u32>, scratch: &mut Scratch) {
        let m = &mut scratch.merger;
        m.clear();
        for b in word.bytes() {
            // A byte without a token is dropped, as HF's BPE (without a model-level
            // unk_token) and llama.cpp do; byte-level vocabularies never use `unk`.
            if let Some(id) = self.byte_level_tokens[b as usize] {
                m.push(id);
            }
        }
        m.run(|a, b| self.merges.get(&(a, b)).copied(), out);
    }

    /// The raw bytes token `id` stands for: a byte token's byte, a SentencePiece
    /// piece with `▁` as space, a byte-level piece mapped back through GPT-2's
    /// alphabet, a UserDefined byte-level token verbatim; Control tokens and
    /// out-of-range ids give nothing.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&s), Some(&e)) => self.decoded.get(s as usize..e as usize).unwrap_or_default(),
            _ => &[],
        }
    }

    /// Bytes `id` contributes to decoded text when it follows `prev` (`None`: start of
    /// text). SentencePiece with a dummy prefix drops the leading space of the first
    /// token and of a token right after BOS (llama2.c's rule); byte tokens keep theirs.
    /// WordPiece drops the space before the first word that produces text
    /// (`emitted`: an earlier token produced text), as HF decodes after skipping
    /// special tokens.
    pub(crate) fn decoded_bytes(&self, prev: Option<u32>, emitted: bool, id: u32) -> &[u8] {
        let bytes = self.token_bytes(id);
        let strip = match self.spec.kind {
            TokenizerKind::SentencePieceBpe => {
                self.spec.add_space_prefix
                    && (prev.is_none() || prev == self.spec.bos)
                    && !self.is_byte.get(id as usize).copied().unwrap_or(false)
            }
            TokenizerKind::WordPiece(_) => !emitted,
            TokenizerKind::ByteLevelBpe => false,
        };
        match bytes {
            [b' ', rest @ ..] if strip => rest,
            _ => bytes,
        }
    }

    /// Decodes a whole sequence: the tokens' bytes (Control tokens skipped, the
    /// leading-space rule of [`StreamDecoder`] applied) with invalid UTF-8 replaced by
    /// U+FFFD. Out-of-range ids decode to nothing.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        let mut prev = None;
        for &id in ids {
            bytes.extend_from_slice(self.decoded_bytes(prev, !bytes.is_empty(), id));
            prev = Some(id);
        }
        match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

/// Buffers reused across the words of one `encode` call.
#[derive(Default)]
struct Scratch {
    merger: Merger,
    concat: String,
    /// WordPiece: normalized text and a second buffer for the normalizer.
    norm: String,
    tmp: String,
}

#[cfg(test)]
mod tests;
