//! Scores of generated outputs against references in one call: corpus BLEU,
//! mean ROUGE F1 and exact match, as `ember eval generate` reports them and a
//! training loop can reuse.

use crate::bleu::{BleuConfig, BleuScore, BleuStats};
use crate::rouge::{RougeScorer, RougeScores};

/// The scores of a set of outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputScores {
    /// Outputs scored.
    pub items: usize,
    /// Corpus BLEU with sacreBLEU's defaults (13a, mixed case), each output
    /// against its own references (any number per output).
    pub bleu: BleuScore,
    /// Mean over outputs of rouge-score's scores without stemming; with
    /// several references, the best F1 per measure (`score_multi`).
    pub rouge: RougeScores,
    /// Per output: whether it equals one of its references once leading and
    /// trailing whitespace is stripped from both.
    pub exact: Vec<bool>,
    /// Fraction of outputs that match exactly.
    pub exact_match: f64,
}

/// Why outputs cannot be scored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScoreError {
    /// `hyps` and `refs` differ in length.
    LengthMismatch { hyps: usize, refs: usize },
    /// Output `index` has no reference.
    NoReference { index: usize },
}

impl std::fmt::Display for ScoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScoreError::LengthMismatch { hyps, refs } => write!(
                f,
                "{hyps} outputs but {refs} reference lists: need one list per output"
            ),
            ScoreError::NoReference { index } => {
                write!(f, "output {index} has no reference")
            }
        }
    }
}

impl std::error::Error for ScoreError {}

/// Scores `hyps[i]` against its references `refs[i]` (at least one each).
/// An empty corpus scores 0 everywhere.
pub fn score_outputs<H: AsRef<str>, R: AsRef<str>>(
    hyps: &[H],
    refs: &[Vec<R>],
) -> Result<OutputScores, ScoreError> {
    if hyps.len() != refs.len() {
        return Err(ScoreError::LengthMismatch {
            hyps: hyps.len(),
            refs: refs.len(),
        });
    }
    if let Some(index) = refs.iter().position(Vec::is_empty) {
        return Err(ScoreError::NoReference { index });
    }
    let config = BleuConfig::default();
    let scorer = RougeScorer::new(false);
    let mut stats = BleuStats::default();
    let mut rouge = Vec::with_capacity(hyps.len());
    let mut exact = Vec::with_capacity(hyps.len());
    for (hyp, r) in hyps.iter().zip(refs) {
        let hyp = hyp.as_ref();
        stats.add_segment(&config, hyp, r);
        rouge.push(scorer.score_multi(r, hyp));
        exact.push(r.iter().any(|t| t.as_ref().trim() == hyp.trim()));
    }
    let matched = exact.iter().filter(|&&e| e).count();
    Ok(OutputScores {
        items: hyps.len(),
        bleu: stats.score(),
        rouge: RougeScores::mean(&rouge),
        exact_match: if exact.is_empty() {
            0.0
        } else {
            matched as f64 / exact.len() as f64
        },
        exact,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bleu::corpus_bleu;

    #[test]
    fn scores_equal_the_separate_measures() {
        let hyps = ["the cat sat on the mat", " Paris ", "a b c d e"];
        let refs = vec![
            vec!["the cat sat on a mat".to_string()],
            vec!["paris".to_string(), "Paris".to_string()],
            vec!["a b c d f".to_string()],
        ];
        let s = score_outputs(&hyps, &refs).unwrap();
        assert_eq!(s.exact, [false, true, false]);
        assert!((s.exact_match - 1.0 / 3.0).abs() < 1e-15);
        // One reference each for items 0 and 2; BLEU as two streams would be
        // different (ref lengths), so compare on single-reference items only.
        let single =
            score_outputs(&[hyps[0], hyps[2]], &[refs[0].clone(), refs[2].clone()]).unwrap();
        let want = corpus_bleu(
            &BleuConfig::default(),
            &[hyps[0], hyps[2]],
            &[vec![refs[0][0].clone(), refs[2][0].clone()]],
        )
        .unwrap();
        assert_eq!(single.bleu, want);
        let scorer = RougeScorer::new(false);
        let r1 = scorer.score(&refs[0][0], hyps[0]).rouge1.fmeasure;
        let r2 = scorer.score_multi(&refs[1], hyps[1]).rouge1.fmeasure;
        let r3 = scorer.score(&refs[2][0], hyps[2]).rouge1.fmeasure;
        assert!((s.rouge.rouge1.fmeasure - (r1 + r2 + r3) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let r: Vec<Vec<&str>> = vec![vec!["x"]];
        assert_eq!(
            score_outputs(&["a", "b"], &r),
            Err(ScoreError::LengthMismatch { hyps: 2, refs: 1 })
        );
        let none: Vec<Vec<&str>> = vec![vec![]];
        assert_eq!(
            score_outputs(&["a"], &none),
            Err(ScoreError::NoReference { index: 0 })
        );
        let empty: Vec<Vec<&str>> = Vec::new();
        assert_eq!(score_outputs::<&str, &str>(&[], &empty).unwrap().items, 0);
    }
}
