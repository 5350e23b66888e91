//! Pre-tokenizer splits, hand-written (no regex engine in the runtime): GPT-2's
//! pattern ([`Gpt2Split`]) and Llama 3's / Qwen2's ([`Llama3Split`]).
//!
//! GPT-2's pattern is
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//! with leftmost-first alternation, as Oniguruma / Python `regex` run it:
//! `\p{L}` is general category L*, `\p{N}` is N*, `\s` is the Unicode White_Space
//! property (which is exactly `char::is_whitespace`). Every character falls in
//! exactly one of whitespace / letter / number / other, so the split covers the
//! whole input: concatenating the pieces gives the text back.

use unicode_general_category::{get_general_category, GeneralCategory as G};

/// Which alternative of the pattern a character can start or continue.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    Space,
    Letter,
    Number,
    Other,
}

fn class(c: char) -> Class {
    if c.is_whitespace() {
        return Class::Space;
    }
    match get_general_category(c) {
        G::UppercaseLetter
        | G::LowercaseLetter
        | G::TitlecaseLetter
        | G::ModifierLetter
        | G::OtherLetter => Class::Letter,
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => Class::Number,
        _ => Class::Other,
    }
}

/// The contraction suffixes after `'`, in pattern order (all case-sensitive).
const CONTRACTIONS: [&str; 7] = ["s", "t", "re", "ve", "m", "ll", "d"];

/// Iterator over the GPT-2 pre-tokenizer pieces of a text. Pieces are non-empty
/// and concatenate back to the input.
pub(crate) struct Gpt2Split<'a> {
    rest: &'a str,
}

impl<'a> Gpt2Split<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self { rest: text }
    }
}

impl<'a> Iterator for Gpt2Split<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let len = match_len(self.rest);
        let (piece, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(piece)
    }
}

/// Byte length of the run of characters of class `cls` at the start of `s`.
fn run_len(s: &str, cls: Class) -> usize {
    s.char_indices()
        .find(|&(_, c)| class(c) != cls)
        .map_or(s.len(), |(i, _)| i)
}

/// Byte length of the pattern's match at the start of non-empty `s` (always > 0).
fn match_len(s: &str) -> usize {
    let mut chars = s.chars();
    let Some(c0) = chars.next() else { return 0 };
    // 's 't 're 've 'm 'll 'd
    if c0 == '\'' {
        let after = &s[1..];
        if let Some(suffix) = CONTRACTIONS.iter().find(|suf| after.starts_with(**suf)) {
            return 1 + suffix.len();
        }
    }
    // ` ?X+` for X in letter / number / other: an optional single ASCII space glued
    // to the run that follows it.
    let (prefix, c) = match (c0, chars.next()) {
        (' ', Some(c1)) if class(c1) != Class::Space => (1, c1),
        _ => (0, c0),
    };
    let cls = class(c);
    if cls != Class::Space {
        let start = prefix + c.len_utf8();
        return start + run_len(&s[start..], cls);
    }
    // `\s+(?!\S)|\s+`: a whitespace run that ends the text is taken whole; one that
    // is followed by a non-space leaves its last character for the next piece
    // (where a final ' ' glues to the word), unless the run is a single character.
    let ws = run_len(s, Class::Space);
    if ws == s.len() {
        return ws;
    }
    match s[..ws].char_indices().next_back() {
        Some((last, _)) if last > 0 => last,
        _ => ws,
    }
}

/// Iterator over the Llama 3 (`max_digits` 3) or Qwen2 (`max_digits` 1)
/// pre-tokenizer pieces of a text:
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
/// with leftmost-first alternation as Oniguruma runs it (`(?i)` folds `s` with `S`
/// and U+017F `ſ`). Pieces are non-empty and concatenate back to the input.
pub(crate) struct Llama3Split<'a> {
    rest: &'a str,
    max_digits: usize,
}

impl<'a> Llama3Split<'a> {
    pub(crate) fn new(text: &'a str, max_digits: usize) -> Self {
        Self {
            rest: text,
            max_digits: max_digits.max(1),
        }
    }
}

impl<'a> Iterator for Llama3Split<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let len = llama3_match_len(self.rest, self.max_digits);
        let (piece, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(piece)
    }
}

/// Length of a case-insensitive contraction suffix (`s t re ve m ll d`) at the start
/// of `s`, which follows an apostrophe.
fn contraction_len_ci(s: &str) -> Option<usize> {
    let mut it = s.chars();
    let c1 = it.next()?;
    let fold = |c: char| match c {
        '\u{17F}' => 's',
        c => c.to_ascii_lowercase(),
    };
    let c2 = it.next().map(fold);
    match (fold(c1), c2) {
        ('r', Some('e')) | ('v', Some('e')) | ('l', Some('l')) => Some(c1.len_utf8() + 1),
        ('s' | 't' | 'm' | 'd', _) => Some(c1.len_utf8()),
        _ => None,
    }
}

fn is_cr_lf(c: char) -> bool {
    c == '\r' || c == '\n'
}

/// Byte length of the Llama 3 pattern's match at the start of non-empty `s`.
fn llama3_match_len(s: &str, max_digits: usize) -> usize {
    let mut chars = s.chars();
    let Some(c0) = chars.next() else { return 0 };
    let c1 = chars.next();
    let cls0 = class(c0);
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if c0 == '\'' {
        if let Some(n) = contraction_len_ci(&s[1..]) {
            return 1 + n;
        }
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if cls0 == Class::Letter {
        return c0.len_utf8() + run_len(&s[c0.len_utf8()..], Class::Letter);
    }
    if !is_cr_lf(c0) && cls0 != Class::Number && c1.is_some_and(|c| class(c) == Class::Letter) {
        let start = c0.len_utf8();
        return start + run_len(&s[start..], Class::Letter);
    }
    // \p{N}{1,max_digits}
    if cls0 == Class::Number {
        return s
            .char_indices()
            .take(max_digits + 1)
            .find(|&(i, c)| i > 0 && class(c) != Class::Number)
            .or_else(|| s.char_indices().nth(max_digits))
            .map_or(s.len(), |(i, _)| i);
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*
    let prefix = match (c0, c1) {
        (' ', Some(c)) if class(c) == Class::Other => 1,
        _ if cls0 == Class::Other => 0,
        _ => usize::MAX,
    };
    if prefix != usize::MAX {
        let mut end = prefix + run_len(&s[prefix..], Class::Other);
        end += s[end..]
            .find(|c: char| !is_cr_lf(c))
            .unwrap_or(s.len() - end);
        return end;
    }
    // Here c0 is whitespace. \s*[\r\n]+ : up to the last CR/LF of the run.
    let ws = run_len(s, Class::Space);
    if let Some(last) = s[..ws].rfind(is_cr_lf) {
        return last + 1;
    }
    // \s+(?!\S)|\s+
    if ws == s.len() {
        return ws;
    }
    match s[..ws].char_indices().next_back() {
        Some((last, _)) if last > 0 => last,
        _ => ws,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<&str> {
        Gpt2Split::new(s).collect()
    }

    #[test]
    fn contractions_and_words() {
        assert_eq!(split("don't I'll"), ["don", "'t", " I", "'ll"]);
        assert_eq!(
            split("we're they've I'm he'd it's"),
            ["we", "'re", " they", "'ve", " I", "'m", " he", "'d", " it", "'s"]
        );
        // Upper-case contractions are not in the pattern.
        assert_eq!(split("DON'T"), ["DON", "'", "T"]);
        assert_eq!(split("''s"), ["''", "s"]);
        assert_eq!(split(" 's"), [" '", "s"]);
    }

    #[test]
    fn whitespace_runs() {
        assert_eq!(split("   x\n\n y"), ["  ", " x", "\n\n", " y"]);
        assert_eq!(split("\n\nhello"), ["\n", "\n", "hello"]);
        assert_eq!(split("a  "), ["a", "  "]);
        assert_eq!(split("a \t b"), ["a", " \t", " b"]);
        assert_eq!(split("\t\tx"), ["\t", "\t", "x"]);
        assert_eq!(split(" "), [" "]);
        assert_eq!(split(""), Vec::<&str>::new());
        // NBSP is White_Space but not ' ', so it never glues to a word.
        assert_eq!(split("a\u{a0}b"), ["a", "\u{a0}", "b"]);
    }

    #[test]
    fn numbers_punctuation_and_scripts() {
        assert_eq!(split("12345 abc"), ["12345", " abc"]);
        assert_eq!(split("x1 a2b"), ["x", "1", " a", "2", "b"]);
        assert_eq!(
            split("foo(bar, 3.14);"),
            ["foo", "(", "bar", ",", " 3", ".", "14", ");"]
        );
        assert_eq!(split("你好，世界"), ["你好", "，", "世界"]);
        assert_eq!(split(" 👋🏽!"), [" 👋🏽!"]);
        // Combining marks (Mn) are "other", so they split off letters.
        assert_eq!(split("e\u{301}t"), ["e", "\u{301}", "t"]);
    }

    fn split3(s: &str) -> Vec<&str> {
        Llama3Split::new(s, 3).collect()
    }

    #[test]
    fn llama3_split() {
        assert_eq!(split3("DON'T we're"), ["DON", "'T", " we", "'re"]);
        assert_eq!(split3("x'ſ'Ll"), ["x", "'ſ", "'Ll"]);
        assert_eq!(split3("1234567 a"), ["123", "456", "7", " a"]);
        assert_eq!(split3("(foo) bar"), ["(foo", ")", " bar"]);
        assert_eq!(split3("\tfoo"), ["\tfoo"]);
        assert_eq!(split3("a.\n\nb"), ["a", ".\n\n", "b"]);
        assert_eq!(split3("  \n  x"), ["  \n", " ", " x"]);
        assert_eq!(split3("x  "), ["x", "  "]);
        assert_eq!(split3(" !!x"), [" !!", "x"]);
        assert_eq!(split3("\n\nx"), ["\n\n", "x"]);
        assert_eq!(split3("١٢٣٤"), ["١٢٣", "٤"]);
        let q: Vec<&str> = Llama3Split::new("x 2024", 1).collect();
        assert_eq!(q, ["x", " ", "2", "0", "2", "4"]);
    }

    #[test]
    fn pieces_cover_input() {
        for s in [
            "",
            "a",
            "  \n\t x",
            "it's   over 9000!!!\r\n",
            "ﾟ･✿ヾ╲(｡◕‿◕｡)╱✿･ﾟ",
        ] {
            assert_eq!(split(s).concat(), s);
            assert!(split(s).iter().all(|p| !p.is_empty()));
            assert_eq!(split3(s).concat(), s);
            assert!(split3(s).iter().all(|p| !p.is_empty()));
        }
    }
}
