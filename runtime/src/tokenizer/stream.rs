//! Incremental decoding for streaming generated text.

use super::Tokenizer;

/// Initial capacity of the output buffer of [`StreamDecoder::new`]: enough for any
/// token of the supported vocabularies, so the buffer never grows while decoding.
const DEFAULT_OUTPUT_CAPACITY: usize = 1024;

/// Incremental decoder: feed ids one at a time, get back only complete UTF-8 text.
///
/// Bytes of a multi-byte character split across tokens (e.g. `<0xE4><0xBD><0xA0>`)
/// are held back until the character is complete. Invalid sequences become U+FFFD
/// exactly where `String::from_utf8_lossy` puts them, so the concatenation of every
/// `push` result followed by `finish` equals [`Tokenizer::decode`] of the same ids,
/// including its leading-space rule (the first token fed after `new`/`reset`, or
/// after BOS, counts as the start of the text; to stream a continuation without
/// that rule, push the prompt ids first and discard their text).
///
/// After creation, `push` does not allocate as long as one token's text fits the
/// output capacity ([`StreamDecoder::for_tokenizer`] sizes it for the largest token).
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    /// Bytes of an incomplete UTF-8 sequence carried over to the next token (≤ 3 used).
    pending: [u8; 4],
    pending_len: usize,
    /// Text produced by the last `push`/`finish`; capacity reused.
    out: String,
    /// Previous id fed, `None` at the start of the text.
    prev: Option<u32>,
    /// True once some token produced bytes (WordPiece's leading-space rule).
    emitted: bool,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamDecoder {
    /// A decoder at the start of a text, with a default output capacity.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_OUTPUT_CAPACITY)
    }

    /// A decoder whose output buffer holds the text of any single token of `tok`
    /// (worst case: every byte invalid, 3 bytes of U+FFFD each, plus carried bytes).
    pub fn for_tokenizer(tok: &Tokenizer) -> Self {
        Self::with_capacity((tok.max_token_bytes() + 4) * 3)
    }

    fn with_capacity(capacity: usize) -> Self {
        Self {
            pending: [0; 4],
            pending_len: 0,
            out: String::with_capacity(capacity),
            prev: None,
            emitted: false,
        }
    }

    /// Feeds one id (out-of-range ids decode to nothing) and returns the text it completes.
    pub fn push<'a>(&'a mut self, tok: &Tokenizer, id: u32) -> &'a str {
        self.out.clear();
        let bytes = tok.decoded_bytes(self.prev, self.emitted, id);
        self.prev = Some(id);
        self.emitted |= !bytes.is_empty();
        for &b in bytes {
            self.push_byte(b);
        }
        &self.out
    }

    /// Ends the text: an incomplete trailing sequence becomes one U+FFFD. The
    /// decoder then continues as if at the end of a text (call `reset` to start over).
    pub fn finish(&mut self) -> &str {
        self.out.clear();
        if self.pending_len > 0 {
            self.pending_len = 0;
            self.out.push(char::REPLACEMENT_CHARACTER);
        }
        &self.out
    }

    /// Forgets all state: the next id starts a new text.
    pub fn reset(&mut self) {
        self.pending_len = 0;
        self.out.clear();
        self.prev = None;
        self.emitted = false;
    }

    fn push_byte(&mut self, b: u8) {
        // Invariant: pending holds a proper prefix of a valid sequence, so ≤ 3 bytes.
        self.pending[self.pending_len] = b;
        self.pending_len += 1;
        loop {
            match std::str::from_utf8(&self.pending[..self.pending_len]) {
                Ok(s) => {
                    self.out.push_str(s);
                    self.pending_len = 0;
                    return;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    if let Ok(s) = std::str::from_utf8(&self.pending[..valid]) {
                        self.out.push_str(s);
                    }
                    match e.error_len() {
                        // Incomplete: keep the tail for the next byte.
                        None => {
                            self.pending.copy_within(valid..self.pending_len, 0);
                            self.pending_len -= valid;
                            return;
                        }
                        // Invalid: one U+FFFD for the maximal invalid prefix, then
                        // re-examine what follows it.
                        Some(n) => {
                            self.out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.copy_within(valid + n..self.pending_len, 0);
                            self.pending_len -= valid + n;
                            if self.pending_len == 0 {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}
