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
}

/// Pre-tokenizer split applied before byte-level BPE.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreSplit {
    /// No split: the whole text is one word.
    None,
    /// GPT-2's pattern: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    /// (also SmolLM / SmolLM2).
    Gpt2,
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
