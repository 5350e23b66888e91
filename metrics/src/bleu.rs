//! Corpus BLEU (Papineni et al., 2002) exactly as sacreBLEU 2.x computes it with
//! its defaults: a segment is right-stripped, optionally lowercased, tokenized
//! (`13a` unless asked otherwise) and split on whitespace; n-grams of order 1..=4
//! are clipped by their largest count in any one reference; the brevity penalty
//! uses, per segment, the reference length closest to the hypothesis length (the
//! shorter on a tie); orders without a match are smoothed with `exp` (NIST's
//! method: the k-th such order gets precision 1 / (2^k * total)).
//!
//! Reference behaviour: sacreBLEU 2.6.0, `sacrebleu/metrics/bleu.py` and
//! `sacrebleu/tokenizers/tokenizer_{13a,re,intl,char,none}.py`; the floating-point
//! steps follow its order of operations, so scores agree to the last bit.

use std::collections::HashMap;
use std::fmt;

use unicode_general_category::get_general_category;

use crate::pystr;

/// The highest n-gram order counted (sacreBLEU's `MAX_NGRAM_ORDER`).
pub const MAX_NGRAM_ORDER: usize = 4;

/// The sacreBLEU release whose default BLEU this module reproduces; it is the
/// `version` of [`BleuConfig::signature`], so that a signature printed here compares
/// equal to sacreBLEU's for the same settings.
pub const SACREBLEU_VERSION: &str = "2.6.0";

/// sacreBLEU's tokenizers that need no external model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Tokenize {
    /// `none`: the text as it is (split on whitespace).
    None,
    /// `13a`: mteval-v13a.pl's tokenization, sacreBLEU's default.
    #[default]
    V13a,
    /// `intl`: mteval-v14.pl's international tokenization (Unicode punctuation
    /// and symbols).
    Intl,
    /// `char`: every character is a token.
    Char,
}

impl Tokenize {
    /// Every tokenizer this module implements.
    pub const ALL: [Tokenize; 4] = [
        Tokenize::None,
        Tokenize::V13a,
        Tokenize::Intl,
        Tokenize::Char,
    ];

    /// The name sacreBLEU gives it (`--tokenize` value and signature `tok:`).
    pub fn name(self) -> &'static str {
        match self {
            Tokenize::None => "none",
            Tokenize::V13a => "13a",
            Tokenize::Intl => "intl",
            Tokenize::Char => "char",
        }
    }

    /// The tokenizer named `name` (see [`Tokenize::name`]).
    pub fn from_name(name: &str) -> Option<Tokenize> {
        Tokenize::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The tokenized line, tokens separated by single spaces (for `none`, the
    /// line unchanged).
    pub fn apply(self, line: &str) -> String {
        match self {
            Tokenize::None => line.to_string(),
            Tokenize::V13a => tokenize_13a(line),
            Tokenize::Intl => tokenize_intl(line),
            Tokenize::Char => {
                let mut out = String::with_capacity(line.len() * 2);
                for (i, c) in line.chars().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push(c);
                }
                out
            }
        }
    }
}

impl fmt::Display for Tokenize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How segments are prepared before counting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BleuConfig {
    /// The tokenizer (default `13a`).
    pub tokenize: Tokenize,
    /// Lowercase hypotheses and references first (sacreBLEU's `-lc`).
    pub lowercase: bool,
}

impl BleuConfig {
    /// A segment as sacreBLEU counts it: right-stripped, lowercased if asked,
    /// tokenized.
    pub fn preprocess(&self, segment: &str) -> String {
        if self.lowercase {
            self.tokenize.apply(pystr::rstrip(&segment.to_lowercase()))
        } else {
            self.tokenize.apply(pystr::rstrip(segment))
        }
    }

    /// sacreBLEU's signature for these settings with `nrefs` references per
    /// segment, e.g. `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`.
    pub fn signature(&self, nrefs: usize) -> String {
        format!(
            "nrefs:{nrefs}|case:{}|eff:no|tok:{}|smooth:exp|version:{SACREBLEU_VERSION}",
            if self.lowercase { "lc" } else { "mixed" },
            self.tokenize.name()
        )
    }
}

/// The corpus totals BLEU is computed from; segments can be added one at a
/// time and totals merged, so a caller can score as it generates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BleuStats {
    /// Hypothesis tokens.
    pub hyp_len: u64,
    /// Per segment, the reference length closest to the hypothesis length, summed.
    pub ref_len: u64,
    /// Clipped n-gram matches per order 1..=4.
    pub correct: [u64; MAX_NGRAM_ORDER],
    /// Hypothesis n-grams per order 1..=4.
    pub total: [u64; MAX_NGRAM_ORDER],
}

/// The score and what it is made of, as sacreBLEU's `BLEUScore` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct BleuScore {
    /// BLEU in 0..=100.
    pub score: f64,
    /// The statistics the score came from.
    pub stats: BleuStats,
    /// n-gram precisions in percent, orders 1..=4 (smoothed where no match).
    pub precisions: [f64; MAX_NGRAM_ORDER],
    /// Brevity penalty in 0..=1.
    pub bp: f64,
    /// hyp_len / ref_len (0 when there is no reference token).
    pub ratio: f64,
}

impl BleuScore {
    /// sacreBLEU's text line: `BLEU|<signature> = 12.34 45.6/20.1/10.0/5.2 (BP = 1.000
    /// ratio = 1.000 hyp_len = 10 ref_len = 10)`; the signature part is left
    /// out when `signature` is empty.
    pub fn format(&self, signature: &str) -> String {
        let name = if signature.is_empty() {
            "BLEU".to_string()
        } else {
            format!("BLEU|{signature}")
        };
        format!(
            "{name} = {:.2} {} {}",
            self.score,
            self.precisions_str(),
            self.verbose_tail()
        )
    }

    /// The precisions as sacreBLEU prints them: `45.6/20.1/10.0/5.2`.
    pub fn precisions_str(&self) -> String {
        self.precisions.map(|p| format!("{p:.1}")).join("/")
    }

    /// `(BP = 1.000 ratio = 1.000 hyp_len = 10 ref_len = 10)`.
    pub fn verbose_tail(&self) -> String {
        format!(
            "(BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            self.bp, self.ratio, self.stats.hyp_len, self.stats.ref_len
        )
    }
}

/// n-gram counts of a token sequence, orders 1..=4.
fn ngram_counts<'a, 'b>(tokens: &'b [&'a str]) -> HashMap<&'b [&'a str], u64> {
    let mut counts = HashMap::new();
    for n in 1..=MAX_NGRAM_ORDER.min(tokens.len()) {
        for gram in tokens.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// The reference length closest to `hyp_len`, the shortest on a tie.
fn closest_ref_len(hyp_len: u64, ref_lens: &[u64]) -> u64 {
    let mut best: Option<(u64, u64)> = None; // (distance, length)
    for &len in ref_lens {
        let d = hyp_len.abs_diff(len);
        if best.is_none_or(|(bd, bl)| d < bd || (d == bd && len < bl)) {
            best = Some((d, len));
        }
    }
    best.map_or(0, |(_, len)| len)
}

impl BleuStats {
    /// Adds one segment: a hypothesis and its references, raw (`config`
    /// preprocesses them). With no reference the segment counts its
    /// hypothesis n-grams and a reference length of 0.
    pub fn add_segment<S: AsRef<str>>(&mut self, config: &BleuConfig, hyp: &str, refs: &[S]) {
        let ref_texts: Vec<String> = refs.iter().map(|r| config.preprocess(r.as_ref())).collect();
        let ref_tokens: Vec<Vec<&str>> = ref_texts
            .iter()
            .map(|r| pystr::split(r).collect())
            .collect();
        // Each n-gram's largest count in any one reference: its clipping limit.
        let mut ref_max: HashMap<&[&str], u64> = HashMap::new();
        let mut ref_lens = Vec::with_capacity(refs.len());
        for tokens in &ref_tokens {
            ref_lens.push(tokens.len() as u64);
            for (gram, count) in ngram_counts(tokens) {
                let slot = ref_max.entry(gram).or_insert(0);
                *slot = (*slot).max(count);
            }
        }
        let hyp_text = config.preprocess(hyp);
        let hyp_tokens: Vec<&str> = pystr::split(&hyp_text).collect();
        let hyp_len = hyp_tokens.len() as u64;
        for (gram, count) in ngram_counts(&hyp_tokens) {
            let order = gram.len() - 1;
            self.total[order] += count;
            if let Some(&r) = ref_max.get(gram) {
                self.correct[order] += count.min(r);
            }
        }
        self.hyp_len += hyp_len;
        self.ref_len += closest_ref_len(hyp_len, &ref_lens);
    }

    /// Adds another corpus part's totals.
    pub fn merge(&mut self, other: &BleuStats) {
        self.hyp_len += other.hyp_len;
        self.ref_len += other.ref_len;
        for n in 0..MAX_NGRAM_ORDER {
            self.correct[n] += other.correct[n];
            self.total[n] += other.total[n];
        }
    }

    /// BLEU with `exp` smoothing (sacreBLEU's `compute_bleu`): 0 when nothing
    /// matches or when some order has no hypothesis n-gram at all.
    pub fn score(&self) -> BleuScore {
        let (sys_len, ref_len) = (self.hyp_len as f64, self.ref_len as f64);
        let bp = if self.hyp_len < self.ref_len {
            if self.hyp_len > 0 {
                (1.0 - ref_len / sys_len).exp()
            } else {
                0.0
            }
        } else {
            1.0
        };
        let ratio = if self.ref_len > 0 {
            sys_len / ref_len
        } else {
            0.0
        };
        let mut precisions = [0.0; MAX_NGRAM_ORDER];
        let mut score = 0.0;
        if self.correct.iter().any(|&c| c > 0) {
            let mut smooth = 1.0;
            // Orders after the first without any hypothesis n-gram keep precision 0.
            for ((p, &correct), &total) in precisions.iter_mut().zip(&self.correct).zip(&self.total)
            {
                if total == 0 {
                    break;
                }
                *p = if correct == 0 {
                    smooth *= 2.0;
                    100.0 / (smooth * total as f64)
                } else {
                    100.0 * correct as f64 / total as f64
                };
            }
            // sacreBLEU floors log(0) at -9999999999, which makes the score 0.
            let log_sum = precisions
                .iter()
                .map(|&p| if p == 0.0 { -9_999_999_999.0 } else { p.ln() })
                .fold(0.0, |acc, l| acc + l);
            score = bp * (log_sum / MAX_NGRAM_ORDER as f64).exp();
        }
        BleuScore {
            score,
            stats: self.clone(),
            precisions,
            bp,
            ratio,
        }
    }
}

/// Why a corpus cannot be scored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BleuError {
    /// No reference stream was given.
    NoReferences,
    /// A reference stream's segment count differs from the hypotheses'.
    LengthMismatch {
        /// Index of the reference stream.
        stream: usize,
        /// Its segment count.
        refs: usize,
        /// The hypotheses' segment count.
        hyps: usize,
    },
}

impl fmt::Display for BleuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BleuError::NoReferences => write!(f, "no reference given"),
            BleuError::LengthMismatch { stream, refs, hyps } => write!(
                f,
                "reference stream {} has {refs} segments but there are {hyps} hypotheses",
                stream + 1
            ),
        }
    }
}

impl std::error::Error for BleuError {}

/// Corpus BLEU of `hyps` against one or more reference streams (`refs[k][i]`
/// is the k-th reference of segment i), as `sacrebleu.BLEU(...).corpus_score(hyps, refs)`.
pub fn corpus_bleu<H: AsRef<str>, R: AsRef<str>>(
    config: &BleuConfig,
    hyps: &[H],
    refs: &[Vec<R>],
) -> Result<BleuScore, BleuError> {
    if refs.is_empty() {
        return Err(BleuError::NoReferences);
    }
    if let Some((stream, r)) = refs.iter().enumerate().find(|(_, r)| r.len() != hyps.len()) {
        return Err(BleuError::LengthMismatch {
            stream,
            refs: r.len(),
            hyps: hyps.len(),
        });
    }
    let mut stats = BleuStats::default();
    let mut seg_refs: Vec<&str> = Vec::with_capacity(refs.len());
    for (i, hyp) in hyps.iter().enumerate() {
        seg_refs.clear();
        seg_refs.extend(refs.iter().map(|r| r[i].as_ref()));
        stats.add_segment(config, hyp.as_ref(), &seg_refs);
    }
    Ok(stats.score())
}

/// Python `re.sub` of a two-character pattern `(A)(B)`: scanning left to right,
/// each non-overlapping pair with `first(a)` and `second(b)` is replaced by
/// `emit(a, b)`.
fn sub_pairs(
    s: &[char],
    first: impl Fn(char) -> bool,
    second: impl Fn(char) -> bool,
    emit: impl Fn(&mut Vec<char>, char, char),
) -> Vec<char> {
    let mut out = Vec::with_capacity(s.len() * 2);
    let mut i = 0;
    while i < s.len() {
        if i + 1 < s.len() && first(s[i]) && second(s[i + 1]) {
            emit(&mut out, s[i], s[i + 1]);
            i += 2;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// The ASCII punctuation 13a always splits off: `[{-~[-\` -&(-+:-@/]` (all of
/// it but `'`, `,`, `-` and `.`, which depend on their neighbours).
fn is_13a_symbol(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

fn is_dot_or_comma(c: char) -> bool {
    c == '.' || c == ','
}

/// mteval-v13a's tokenization (sacreBLEU `Tokenizer13a` + `TokenizerRegexp`).
fn tokenize_13a(line: &str) -> String {
    let mut s = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if s.contains('&') {
        s = s
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let mut chars = Vec::with_capacity(s.len() * 2 + 2);
    chars.push(' ');
    for c in s.chars() {
        if is_13a_symbol(c) {
            chars.extend([' ', c, ' ']);
        } else {
            chars.push(c);
        }
    }
    chars.push(' ');
    let not_digit = |c: char| !c.is_ascii_digit();
    // Period and comma split unless preceded by a digit, then unless followed by one.
    let chars = sub_pairs(&chars, not_digit, is_dot_or_comma, |o, a, b| {
        o.extend([a, ' ', b, ' '])
    });
    let chars = sub_pairs(&chars, is_dot_or_comma, not_digit, |o, a, b| {
        o.extend([' ', a, ' ', b])
    });
    // A dash after a digit.
    let chars = sub_pairs(
        &chars,
        |c| c.is_ascii_digit(),
        |c| c == '-',
        |o, a, b| o.extend([a, ' ', b, ' ']),
    );
    pystr::collapse_spaces(&chars.into_iter().collect::<String>())
}

/// Unicode general category starts with `major` (`N`, `P`, `S`).
fn in_category(c: char, major: char) -> bool {
    get_general_category(c).abbreviation().starts_with(major)
}

/// mteval-v14's international tokenization (sacreBLEU `TokenizerV14International`):
/// punctuation split off unless between digits, every symbol split off. General
/// categories are Unicode 16's (`unicode-general-category`); sacreBLEU's `regex`
/// module carries its own tables, so characters assigned in a later Unicode
/// version may tokenize differently.
fn tokenize_intl(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let not_number = |c: char| !in_category(c, 'N');
    let punct = |c: char| in_category(c, 'P');
    let chars = sub_pairs(&chars, not_number, punct, |o, a, b| {
        o.extend([a, ' ', b, ' '])
    });
    let chars = sub_pairs(&chars, punct, not_number, |o, a, b| {
        o.extend([' ', a, ' ', b])
    });
    let mut out = String::with_capacity(chars.len() * 2);
    for c in chars {
        if in_category(c, 'S') {
            out.push(' ');
            out.push(c);
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    pystr::collapse_spaces(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizers_match_sacrebleu_examples() {
        // Outputs of sacreBLEU 2.6.0's tokenizers on the same input.
        let line = "Hello, world! It's 3.14 & 1,000-2 \"quoted\" (x) a.b. &amp; end.";
        assert_eq!(
            Tokenize::V13a.apply(line),
            "Hello , world ! It's 3.14 & 1,000 - 2 \" quoted \" ( x ) a . b . & end ."
        );
        assert_eq!(
            Tokenize::Intl.apply(line),
            "Hello , world ! It ' s 3.14 & 1,000-2 \" quoted \" ( x ) a . b . & amp ; end ."
        );
        assert_eq!(Tokenize::Char.apply("ab c"), "a b   c");
        assert_eq!(Tokenize::None.apply(" a  b "), " a  b ");
    }

    #[test]
    fn perfect_match_scores_100() {
        let hyps = ["the cat sat on the mat"];
        let refs = vec![vec!["the cat sat on the mat"]];
        let s = corpus_bleu(&BleuConfig::default(), &hyps, &refs).unwrap();
        // sacreBLEU's own float steps give 100.00000000000004 here too.
        assert!((s.score - 100.0).abs() < 1e-12);
        assert_eq!(s.bp, 1.0);
        assert_eq!(s.stats.correct, [6, 5, 4, 3]);
    }

    #[test]
    fn short_corpus_has_no_four_grams_and_scores_zero() {
        let s = corpus_bleu(&BleuConfig::default(), &["a b c"], &[vec!["a b c"]]).unwrap();
        assert_eq!(s.score, 0.0);
        assert_eq!(s.stats.total, [3, 2, 1, 0]);
    }

    #[test]
    fn closest_reference_length_prefers_the_shorter_on_a_tie() {
        assert_eq!(closest_ref_len(5, &[7, 3]), 3);
        assert_eq!(closest_ref_len(5, &[7, 3, 6]), 6);
        assert_eq!(closest_ref_len(5, &[]), 0);
    }

    #[test]
    fn mismatched_streams_are_errors() {
        let e = corpus_bleu(&BleuConfig::default(), &["a", "b"], &[vec!["a"]]).unwrap_err();
        assert_eq!(
            e,
            BleuError::LengthMismatch {
                stream: 0,
                refs: 1,
                hyps: 2
            }
        );
        let none: &[Vec<&str>] = &[];
        assert_eq!(
            corpus_bleu(&BleuConfig::default(), &["a"], none).unwrap_err(),
            BleuError::NoReferences
        );
    }

    #[test]
    fn signature_is_sacrebleus() {
        let c = BleuConfig {
            tokenize: Tokenize::Intl,
            lowercase: true,
        };
        assert_eq!(
            c.signature(2),
            "nrefs:2|case:lc|eff:no|tok:intl|smooth:exp|version:2.6.0"
        );
    }
}
