//! ROUGE-N, ROUGE-L and ROUGE-Lsum (Lin, 2004) exactly as Google's
//! `rouge-score` package computes them with its default tokenizer:
//! lowercase, every run of characters other than `a`-`z` / `0`-`9` becomes a
//! separator, and with stemming every token longer than three characters goes
//! through NLTK's Porter stemmer ([`crate::porter`]).
//!
//! - ROUGE-N: clipped n-gram overlap; precision over the prediction's n-grams,
//!   recall over the target's.
//! - ROUGE-L: the longest common subsequence of the two token sequences.
//! - ROUGE-Lsum: summary-level LCS; both texts are split into sentences at
//!   `\n`, each target sentence takes the union of its LCS with every predicted
//!   sentence, and a token counts at most as often as it occurs in both texts.
//!
//! F1 is `2 * p * r / (p + r)` (0 when both are 0). Reference behaviour:
//! rouge-score 0.1.2, `rouge_score/{rouge_scorer,tokenize,scoring}.py`.

use std::collections::{BTreeSet, HashMap};

use crate::porter;

/// Precision, recall and F1, each in 0..=1.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Score {
    /// Matches over the prediction's size.
    pub precision: f64,
    /// Matches over the target's size.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub fmeasure: f64,
}

impl Score {
    /// The score of this precision and recall, F1 computed as rouge-score does.
    pub fn new(precision: f64, recall: f64) -> Score {
        let fmeasure = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Score {
            precision,
            recall,
            fmeasure,
        }
    }
}

/// The four measures `rouge-score` users ask for.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RougeScores {
    /// ROUGE-1 (unigrams).
    pub rouge1: Score,
    /// ROUGE-2 (bigrams).
    pub rouge2: Score,
    /// ROUGE-L (longest common subsequence).
    pub rouge_l: Score,
    /// ROUGE-Lsum (summary-level LCS over `\n`-separated sentences).
    pub rouge_lsum: Score,
}

impl RougeScores {
    /// The measures with rouge-score's names (`rouge1`, `rouge2`, `rougeL`, `rougeLsum`).
    pub fn named(&self) -> [(&'static str, Score); 4] {
        [
            ("rouge1", self.rouge1),
            ("rouge2", self.rouge2),
            ("rougeL", self.rouge_l),
            ("rougeLsum", self.rouge_lsum),
        ]
    }

    /// The arithmetic mean of each number over `scores` (all zero when empty).
    pub fn mean(scores: &[RougeScores]) -> RougeScores {
        if scores.is_empty() {
            return RougeScores::default();
        }
        let n = scores.len() as f64;
        let avg = |get: fn(&RougeScores) -> Score| {
            let (mut p, mut r, mut f) = (0.0, 0.0, 0.0);
            for s in scores {
                let s = get(s);
                p += s.precision;
                r += s.recall;
                f += s.fmeasure;
            }
            Score {
                precision: p / n,
                recall: r / n,
                fmeasure: f / n,
            }
        };
        RougeScores {
            rouge1: avg(|s| s.rouge1),
            rouge2: avg(|s| s.rouge2),
            rouge_l: avg(|s| s.rouge_l),
            rouge_lsum: avg(|s| s.rouge_lsum),
        }
    }
}

/// rouge-score's `RougeScorer(['rouge1', 'rouge2', 'rougeL', 'rougeLsum'],
/// use_stemmer=stem)` with its default tokenizer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RougeScorer {
    /// Porter-stem tokens longer than three characters.
    pub stem: bool,
}

impl RougeScorer {
    /// A scorer, stemming or not.
    pub fn new(stem: bool) -> RougeScorer {
        RougeScorer { stem }
    }

    /// The tokens of `text`: lowercased, split at every character other than
    /// ASCII letters and digits, stemmed if asked.
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        let lower = text.to_lowercase();
        lower
            .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
            .filter(|t| !t.is_empty())
            .map(|t| {
                if self.stem && t.len() > 3 {
                    porter::stem(t)
                } else {
                    t.to_string()
                }
            })
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// All four measures of `prediction` against `target` (rouge-score's
    /// `score(target, prediction)`: note the order).
    pub fn score(&self, target: &str, prediction: &str) -> RougeScores {
        let t = self.tokenize(target);
        let p = self.tokenize(prediction);
        let sentences = |text: &str| -> Vec<Vec<String>> {
            text.split('\n')
                .filter(|s| !s.is_empty())
                .map(|s| self.tokenize(s))
                .collect()
        };
        RougeScores {
            rouge1: rouge_n(&t, &p, 1),
            rouge2: rouge_n(&t, &p, 2),
            rouge_l: rouge_l(&t, &p),
            rouge_lsum: rouge_lsum(&sentences(target), &sentences(prediction)),
        }
    }

    /// The best score over several targets, per measure the one with the
    /// highest F1 (the first on a tie), as rouge-score's `score_multi`. With
    /// no target every score is zero.
    pub fn score_multi<S: AsRef<str>>(&self, targets: &[S], prediction: &str) -> RougeScores {
        let all: Vec<RougeScores> = targets
            .iter()
            .map(|t| self.score(t.as_ref(), prediction))
            .collect();
        let best = |get: fn(&RougeScores) -> Score| {
            all.iter()
                .map(get)
                .fold(None, |best: Option<Score>, s| match best {
                    Some(b) if b.fmeasure >= s.fmeasure => Some(b),
                    _ => Some(s),
                })
        };
        RougeScores {
            rouge1: best(|s| s.rouge1).unwrap_or_default(),
            rouge2: best(|s| s.rouge2).unwrap_or_default(),
            rouge_l: best(|s| s.rouge_l).unwrap_or_default(),
            rouge_lsum: best(|s| s.rouge_lsum).unwrap_or_default(),
        }
    }
}

/// How often each n-gram of `tokens` occurs.
fn ngram_counts<S: AsRef<str>>(tokens: &[S], n: usize) -> HashMap<Vec<&str>, u64> {
    let mut m: HashMap<Vec<&str>, u64> = HashMap::new();
    for w in tokens.windows(n) {
        *m.entry(w.iter().map(|t| t.as_ref()).collect()).or_insert(0) += 1;
    }
    m
}

/// How often each token occurs in `sentences`.
fn token_counts<S: AsRef<str>>(sentences: &[Vec<S>]) -> HashMap<&str, u64> {
    let mut c: HashMap<&str, u64> = HashMap::new();
    for t in sentences.iter().flatten() {
        *c.entry(t.as_ref()).or_insert(0) += 1;
    }
    c
}

/// ROUGE-N over token lists. `n` must be at least 1.
pub fn rouge_n<S: AsRef<str>>(target: &[S], prediction: &[S], n: usize) -> Score {
    assert!(n >= 1, "ROUGE-N needs n >= 1");
    let (t, p) = (ngram_counts(target, n), ngram_counts(prediction, n));
    let overlap: u64 = t
        .iter()
        .map(|(g, &c)| c.min(p.get(g).copied().unwrap_or(0)))
        .sum();
    let t_total: u64 = t.values().sum();
    let p_total: u64 = p.values().sum();
    Score::new(
        overlap as f64 / p_total.max(1) as f64,
        overlap as f64 / t_total.max(1) as f64,
    )
}

/// The length of a longest common subsequence of `a` and `b` (the last entry
/// of rouge-score's LCS table), in O(len(b)) memory.
fn lcs_len<S: AsRef<str>>(a: &[S], b: &[S]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x.as_ref() == y.as_ref() {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// ROUGE-L over token lists (zero if either is empty). O(len(target) *
/// len(prediction)) time, O(len(prediction)) memory.
pub fn rouge_l<S: AsRef<str>>(target: &[S], prediction: &[S]) -> Score {
    if target.is_empty() || prediction.is_empty() {
        return Score::default();
    }
    let lcs = lcs_len(target, prediction) as f64;
    Score::new(lcs / prediction.len() as f64, lcs / target.len() as f64)
}

/// Indices into `r` of one longest common subsequence with `c`: the one
/// rouge-score's backtrack over its LCS table `t` picks (from the end: a match
/// steps diagonally; otherwise left if `t[i][j-1] > t[i-1][j]`, else up).
/// Instead of the table, one bit per cell keeps that left-or-up decision:
/// len(r) * len(c) / 8 bytes.
fn lcs_indices<S: AsRef<str>>(r: &[S], c: &[S]) -> Vec<usize> {
    let cols = c.len();
    let mut left = vec![0u64; (r.len() * cols).div_ceil(64)];
    let mut prev = vec![0usize; cols + 1];
    let mut cur = vec![0usize; cols + 1];
    for (i, x) in r.iter().enumerate() {
        for (j, y) in c.iter().enumerate() {
            cur[j + 1] = if x.as_ref() == y.as_ref() {
                prev[j] + 1
            } else {
                if cur[j] > prev[j + 1] {
                    let bit = i * cols + j;
                    left[bit / 64] |= 1 << (bit % 64);
                }
                prev[j + 1].max(cur[j])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    let (mut i, mut j) = (r.len(), cols);
    let mut out = Vec::new();
    while i > 0 && j > 0 {
        let bit = (i - 1) * cols + (j - 1);
        if r[i - 1].as_ref() == c[j - 1].as_ref() {
            out.push(i - 1);
            i -= 1;
            j -= 1;
        } else if left[bit / 64] >> (bit % 64) & 1 == 1 {
            j -= 1;
        } else {
            i -= 1;
        }
    }
    out
}

/// ROUGE-Lsum over tokenized sentences (zero if either side has no token).
pub fn rouge_lsum<S: AsRef<str>>(target: &[Vec<S>], prediction: &[Vec<S>]) -> Score {
    let m: usize = target.iter().map(Vec::len).sum();
    let n: usize = prediction.iter().map(Vec::len).sum();
    if m == 0 || n == 0 {
        return Score::default();
    }
    if target.len() == 1 && prediction.len() == 1 {
        // One sentence each: the union is that one LCS, whose tokens occur in
        // both texts, so every one is a hit and the result is ROUGE-L's.
        return rouge_l(&target[0], &prediction[0]);
    }
    let (mut left_t, mut left_p) = (token_counts(target), token_counts(prediction));
    let mut hits = 0u64;
    for r in target {
        let union: BTreeSet<usize> = prediction.iter().flat_map(|c| lcs_indices(r, c)).collect();
        for i in union {
            let tok = r[i].as_ref();
            let (Some(ct), Some(cp)) = (left_t.get_mut(tok), left_p.get_mut(tok)) else {
                continue;
            };
            if *ct > 0 && *cp > 0 {
                *ct -= 1;
                *cp -= 1;
                hits += 1;
            }
        }
    }
    Score::new(hits as f64 / n as f64, hits as f64 / m as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn tokenizer_is_rouge_scores() {
        let s = RougeScorer::new(false);
        assert_eq!(
            s.tokenize("The Cat's 3.5kg, naïve!"),
            ["the", "cat", "s", "3", "5kg", "na", "ve"]
        );
        assert!(s.tokenize("日本語 — ✓").is_empty());
        let s = RougeScorer::new(true);
        assert_eq!(s.tokenize("running dogs ran"), ["run", "dog", "ran"]);
    }

    #[test]
    fn rouge_score_readme_example() {
        // rouge-score's README: score('The quick brown fox jumps over the lazy dog',
        // 'The quick brown dog jumps on the log.').
        let s = RougeScorer::new(true).score(
            "The quick brown fox jumps over the lazy dog",
            "The quick brown dog jumps on the log.",
        );
        assert!(close(s.rouge1.precision, 0.75));
        assert!(close(s.rouge1.recall, 2.0 / 3.0));
        assert!(close(s.rouge_l.precision, 0.625));
        assert!(close(s.rouge_l.recall, 5.0 / 9.0));
        assert_eq!(s.rouge_l, s.rouge_lsum);
    }

    #[test]
    fn lsum_counts_union_lcs_once() {
        let sc = RougeScorer::new(false);
        let s = sc.score("a b c d\ne f", "a b\nc d e\nf");
        // Every target token is covered: hits 6 of 6.
        assert_eq!(s.rouge_lsum, Score::new(1.0, 1.0));
        // Every predicted sentence's LCS picks the same target position, so the
        // union holds one token (rouge-score gives 1/3, 1/2).
        let s = sc.score("a a", "a\na\na");
        assert_eq!(s.rouge_lsum, Score::new(1.0 / 3.0, 0.5));
        assert_eq!(s.rouge_l, Score::new(2.0 / 3.0, 1.0));
    }

    /// rouge-score's backtrack over the full LCS table: the reference for
    /// [`lcs_indices`], which keeps one bit per cell instead.
    fn lcs_indices_from_table(r: &[&str], c: &[&str]) -> Vec<usize> {
        let mut t = vec![vec![0usize; c.len() + 1]; r.len() + 1];
        for i in 1..=r.len() {
            for j in 1..=c.len() {
                t[i][j] = if r[i - 1] == c[j - 1] {
                    t[i - 1][j - 1] + 1
                } else {
                    t[i - 1][j].max(t[i][j - 1])
                };
            }
        }
        let (mut i, mut j) = (r.len(), c.len());
        let mut out = Vec::new();
        while i > 0 && j > 0 {
            if r[i - 1] == c[j - 1] {
                out.push(i - 1);
                i -= 1;
                j -= 1;
            } else if t[i][j - 1] > t[i - 1][j] {
                j -= 1;
            } else {
                i -= 1;
            }
        }
        assert_eq!(out.len(), t[r.len()][c.len()]);
        out
    }

    #[test]
    fn lcs_backtrack_matches_the_full_table() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let words = ["a", "b", "c"];
        for _ in 0..2000 {
            let mut seq = |max: u64| -> Vec<&str> {
                (0..next(max + 1))
                    .map(|_| words[next(3) as usize])
                    .collect()
            };
            let (r, c) = (seq(70), seq(70));
            assert_eq!(
                lcs_indices(&r, &c),
                lcs_indices_from_table(&r, &c),
                "{r:?} {c:?}"
            );
            assert_eq!(lcs_len(&r, &c), lcs_indices(&r, &c).len());
        }
    }

    #[test]
    fn empty_texts_score_zero() {
        let sc = RougeScorer::new(false);
        assert_eq!(sc.score("", "a"), RougeScores::default());
        assert_eq!(sc.score("a", "!!"), RougeScores::default());
    }

    #[test]
    fn multi_picks_best_f_per_measure() {
        let sc = RougeScorer::new(false);
        let s = sc.score_multi(&["x y z", "a b c", "a b"], "a b c");
        assert_eq!(s.rouge1, Score::new(1.0, 1.0));
        assert_eq!(sc.score_multi::<&str>(&[], "a"), RougeScores::default());
    }
}
