//! WordPiece (BERT): the BERT normalizer, the BERT pre-tokenizer and greedy
//! longest-match-first segmentation, as Hugging Face `tokenizers` runs them.
//!
//! Character classes follow HF: whitespace is tab, newline, carriage return or
//! Unicode White_Space; control is general category Cc, Cf or Co except tab,
//! newline and carriage return (unassigned code points are kept, as in HF);
//! punctuation is ASCII punctuation or category P*; CJK ideographs are the
//! blocks BERT lists (`is_chinese_char`).

use unicode_general_category::{get_general_category, GeneralCategory as G};
use unicode_normalization::UnicodeNormalization;

use super::WordPieceOptions;

/// The prefix marking a piece that continues a word.
pub(crate) const CONTINUATION: &str = "##";

fn is_bert_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

fn is_bert_control(c: char) -> bool {
    if matches!(c, '\t' | '\n' | '\r') {
        return false;
    }
    matches!(
        get_general_category(c),
        G::Control | G::Format | G::PrivateUse | G::Surrogate
    )
}

/// ASCII punctuation or Unicode punctuation (P*).
pub(crate) fn is_bert_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(
            get_general_category(c),
            G::ConnectorPunctuation
                | G::DashPunctuation
                | G::ClosePunctuation
                | G::FinalPunctuation
                | G::InitialPunctuation
                | G::OtherPunctuation
                | G::OpenPunctuation
        )
}

/// The CJK Unified Ideograph blocks BERT isolates (its `_is_chinese_char`).
fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B820..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

/// Applies the BERT normalizer to `text`, writing the result into `out` (cleared first).
/// Steps, in HF's order: clean text, pad CJK ideographs, strip accents, lowercase.
pub(crate) fn normalize(text: &str, o: &WordPieceOptions, out: &mut String, tmp: &mut String) {
    out.clear();
    for c in text.chars() {
        if o.clean_text && (c == '\0' || c == '\u{FFFD}' || is_bert_control(c)) {
            continue;
        }
        let c = if o.clean_text && is_bert_whitespace(c) {
            ' '
        } else {
            c
        };
        if o.handle_chinese_chars && is_chinese_char(c) {
            out.push(' ');
            out.push(c);
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    if o.strip_accents {
        tmp.clear();
        tmp.extend(
            out.nfd()
                .filter(|&c| get_general_category(c) != G::NonspacingMark),
        );
        std::mem::swap(out, tmp);
    }
    if o.lowercase && !out.is_ascii() {
        tmp.clear();
        tmp.extend(out.chars().flat_map(char::to_lowercase));
        std::mem::swap(out, tmp);
    } else if o.lowercase {
        out.make_ascii_lowercase();
    }
}

/// Iterator over BERT pre-tokenizer words: maximal runs of characters that are
/// neither whitespace nor punctuation, and single punctuation characters.
pub(crate) struct BertSplit<'a> {
    rest: &'a str,
}

impl<'a> BertSplit<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self { rest: text }
    }
}

impl<'a> Iterator for BertSplit<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.rest = self.rest.trim_start_matches(is_bert_whitespace);
        let c = self.rest.chars().next()?;
        let len = if is_bert_punctuation(c) {
            c.len_utf8()
        } else {
            self.rest
                .find(|c| is_bert_whitespace(c) || is_bert_punctuation(c))
                .unwrap_or(self.rest.len())
        };
        let (word, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(word)
    }
}

/// Segments one word greedily, longest piece first, appending ids to `out`.
/// `lookup` maps a piece (continuations with the `##` prefix) to its id. The word
/// becomes `unk` (or nothing, without one) if it has more than `max_chars`
/// characters or some position has no matching piece.
pub(crate) fn segment_word(
    word: &str,
    max_chars: usize,
    unk: Option<u32>,
    lookup: impl Fn(&str) -> Option<u32>,
    scratch: &mut String,
    out: &mut Vec<u32>,
) {
    if word.chars().nth(max_chars).is_some() {
        out.extend(unk);
        return;
    }
    let first = out.len();
    let mut start = 0;
    while start < word.len() {
        let rest = &word[start..];
        // Candidate ends, longest first.
        let found = rest
            .char_indices()
            .map(|(i, c)| i + c.len_utf8())
            .rev()
            .find_map(|end| {
                let piece = &rest[..end];
                let id = if start == 0 {
                    lookup(piece)
                } else {
                    scratch.clear();
                    scratch.push_str(CONTINUATION);
                    scratch.push_str(piece);
                    lookup(scratch)
                };
                id.map(|id| (end, id))
            });
        match found {
            Some((end, id)) => {
                out.push(id);
                start += end;
            }
            None => {
                out.truncate(first);
                out.extend(unk);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> WordPieceOptions {
        WordPieceOptions {
            clean_text: true,
            handle_chinese_chars: true,
            strip_accents: true,
            lowercase: true,
            max_input_chars_per_word: 100,
            cleanup: true,
        }
    }

    fn norm(s: &str) -> String {
        let (mut out, mut tmp) = (String::new(), String::new());
        normalize(s, &opts(), &mut out, &mut tmp);
        out
    }

    #[test]
    fn normalizer_steps() {
        assert_eq!(norm("Héllo\tWörld\u{0}\u{200B}\u{7}"), "hello world");
        assert_eq!(norm("你好a"), " 你  好 a");
        assert_eq!(norm("ÅNGSTRÖM"), "angstrom");
        assert_eq!(norm("e\u{301}"), "e");
    }

    #[test]
    fn split_words_and_punctuation() {
        let words: Vec<&str> = BertSplit::new("  hello, world!! a-b ").collect();
        assert_eq!(words, ["hello", ",", "world", "!", "!", "a", "-", "b"]);
        assert_eq!(BertSplit::new(" \n ").count(), 0);
    }

    #[test]
    fn greedy_longest_match() {
        let vocab = ["un", "##aff", "##able", "[UNK]", "u", "##n", "##a"];
        let lookup = |p: &str| vocab.iter().position(|v| *v == p).map(|i| i as u32);
        let mut out = Vec::new();
        let mut s = String::new();
        segment_word("unaffable", 100, Some(3), lookup, &mut s, &mut out);
        assert_eq!(out, [0, 1, 2]);
        out.clear();
        segment_word("unax", 100, Some(3), lookup, &mut s, &mut out);
        assert_eq!(out, [3]);
        out.clear();
        segment_word("unaffable", 8, Some(3), lookup, &mut s, &mut out);
        assert_eq!(out, [3]);
    }
}
