//! Tokenizers stored in `.ember` files: SentencePiece-style BPE and byte-level BPE.

mod spec;

pub use spec::*;
