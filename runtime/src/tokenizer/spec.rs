//! The tokenizer description stored in the `.ember` tokenizer section.

use serde::{Deserialize, Serialize};

/// Schema version of `TokenizerSpec`'s postcard encoding. Readers refuse others.
pub const TOKENIZER_SCHEMA: u32 = 1;

/// Tokenization algorithm family.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerKind {
    /// SentencePiece-style BPE over Unicode characters, merges chosen by score
    /// (llama2.c, Llama 1/2, Mistral, TinyLlama): spaces become `▁`, optional dummy
    /// prefix, unknown characters fall back to `<0xNN>` byte tokens.
    SentencePieceBpe,
    /// Byte-level BPE (GPT-2, SmolLM2, Qwen2, Llama 3): bytes mapped to printable
    /// characters, text pre-split by `pre_split`, merges applied by rank.
    ByteLevelBpe,
    /// WordPiece (BERT, MiniLM): the BERT normalizer with these options, words
    /// split by `PreSplit::Bert`, then greedy longest-match-first pieces, where a
    /// piece continuing a word is spelled with the `##` prefix. A word with no
    /// segmentation, or longer than `max_input_chars_per_word` characters, becomes
    /// `unk`.
    WordPiece(WordPieceOptions),
}

/// Options of a WordPiece tokenizer, named as in Hugging Face's `BertNormalizer`,
/// `WordPiece` model and `WordPiece` decoder.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct WordPieceOptions {
    /// Drop NUL, U+FFFD and control characters (Cc, Cf, Co; not tab, newline,
    /// carriage return) and turn every whitespace character into a space.
    pub clean_text: bool,
    /// Put spaces around CJK ideographs so each becomes its own word.
    pub handle_chinese_chars: bool,
    /// Decompose (NFD) and drop non-spacing marks (Mn).
    pub strip_accents: bool,
    /// Lowercase (Unicode full lowercase mapping).
    pub lowercase: bool,
    /// Words of more characters than this become `unk` (BERT: 100).
    pub max_input_chars_per_word: u32,
    /// Decoding: no space before a word-initial `.`, `?`, `!` or `,` token (HF's
    /// decoder `cleanup`, which applies per token).
    pub cleanup: bool,
}

/// Pre-tokenizer split applied before byte-level BPE.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreSplit {
    /// No split: the whole text is one word.
    None,
    /// GPT-2's pattern: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    /// (also SmolLM / SmolLM2).
    Gpt2,
    /// BERT's pre-tokenizer: split at whitespace (dropped) and around every
    /// punctuation character (ASCII punctuation or Unicode P*). Only for WordPiece.
    Bert,
    /// Llama 3's pre-tokenization: a word whose byte-level spelling is a token is
    /// taken whole without merging (HF's `ignore_merges`, which Llama 3's
    /// tokenizer.json sets and llama.cpp applies to `llama-bpe`); otherwise merged.
    /// Words are split by Llama 3's pattern:
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    Llama3,
    /// Qwen2's pattern: Llama 3's with single digits (`\p{N}` for `\p{N}{1,3}`);
    /// merges apply to every word (no `ignore_merges`).
    Qwen2,
}

/// Token types, numbered as GGUF's `tokenizer.ggml.token_type`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    Normal,
    Unknown,
    /// Special control token (BOS, EOS, `<|im_start|>`): matched in text as a whole
    /// when special-token parsing is on, decoded to nothing when skipping specials.
    Control,
    /// Added user token: matched in text as a whole, decoded verbatim.
    UserDefined,
    Unused,
    /// `<0xNN>` byte-fallback token.
    Byte,
}

/// Everything the runtime needs to encode and decode text for one model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TokenizerSpec {
    /// `TOKENIZER_SCHEMA`.
    pub schema: u32,
    pub kind: TokenizerKind,
    pub pre_split: PreSplit,
    /// Token pieces indexed by id. SentencePiece: `▁` stands for space, byte tokens are
    /// spelled `<0xNN>`. Byte-level: GPT-2's byte-to-unicode alphabet.
    pub tokens: Vec<String>,
    /// SentencePiece merge scores (higher merges first); empty for byte-level BPE.
    pub scores: Vec<f32>,
    /// One per token.
    pub token_types: Vec<TokenType>,
    /// Byte-level BPE merges in rank order (rank 0 first), as token-id pairs;
    /// the merged token is the concatenation of the two pieces.
    pub merges: Vec<(u32, u32)>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    /// Extra end-of-generation ids (e.g. `<|eot_id|>`), besides `eos`.
    pub eog: Vec<u32>,
    /// Prepend BOS when encoding a prompt.
    pub add_bos: bool,
    /// Append EOS when encoding.
    pub add_eos: bool,
    /// SentencePiece: prepend `▁` to the text (the "dummy prefix").
    pub add_space_prefix: bool,
    /// SentencePiece: encode unknown characters as `<0xNN>` byte tokens.
    pub byte_fallback: bool,
}
