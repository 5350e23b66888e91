//! Multiple-choice scoring as lm-evaluation-harness scores HellaSwag-style
//! tasks (`output_type: multiple_choice`): each ending is a continuation of
//! the context, scored by the sum of its tokens' log-probabilities.
//!
//! Tokenisation follows the harness's causal-model `_encode_pair`: the
//! continuation is `delimiter + ending` (its default `target_delimiter` is one
//! space); whitespace at the end of the context moves to the start of the
//! continuation; the context is encoded alone, `context + continuation` is
//! encoded whole, and the continuation's tokens are the whole encoding past
//! the context's token count. An empty context is the BOS token (EOS when the
//! model has none), as the harness's `prefix_token_id`. Both encodings use
//! the tokenizer's default options (as `tokenizer.encode` with its defaults).
//!
//! The predictions are the harness's: `acc` takes the ending with the highest
//! summed log-likelihood, `acc_norm` divides it by the ending's length in
//! characters (Python's `len`, Unicode scalar values, delimiter excluded) and
//! `acc_bytes` by its UTF-8 length; ties go to the first ending (`np.argmax`).

use crate::error::{Error, Result};
use crate::eval::negative_log_likelihood;
use crate::session::Session;
use crate::tokenizer::Tokenizer;

/// The harness's default `target_delimiter`: put between context and ending.
pub const DEFAULT_DELIMITER: &str = " ";

/// One multiple-choice item: a context, its candidate endings and the index
/// of the correct one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChoiceItem {
    /// The text the endings continue (may be empty).
    pub context: String,
    /// At least one ending, each non-empty.
    pub endings: Vec<String>,
    /// Index into `endings` of the correct ending.
    pub label: usize,
}

impl ChoiceItem {
    /// Checks the contract: endings present and non-empty, label in range.
    pub fn validate(&self) -> Result<()> {
        if self.endings.is_empty() {
            return Err(Error::InvalidArgument("the item has no endings".into()));
        }
        if let Some(i) = self.endings.iter().position(|e| e.is_empty()) {
            return Err(Error::InvalidArgument(format!("ending {i} is empty")));
        }
        if self.label >= self.endings.len() {
            return Err(Error::InvalidArgument(format!(
                "label {} is out of range: the item has {} endings (labels 0..={})",
                self.label,
                self.endings.len(),
                self.endings.len() - 1
            )));
        }
        Ok(())
    }
}

/// The scores of one item.
#[derive(Clone, Debug, PartialEq)]
pub struct ChoiceScore {
    /// Per ending: the summed log-probability (nats) of its tokens given the context.
    pub loglikelihoods: Vec<f64>,
    /// Per ending: how many tokens were scored.
    pub tokens: Vec<usize>,
    /// Tokens of the context (shared by every ending).
    pub context_tokens: usize,
    /// Index of the highest summed log-likelihood (`acc`).
    pub pred: usize,
    /// Index of the highest log-likelihood per character of the ending (`acc_norm`).
    pub pred_norm: usize,
    /// Index of the highest log-likelihood per UTF-8 byte of the ending (`acc_bytes`).
    pub pred_bytes: usize,
}

/// Index of the first largest value (`np.argmax`); NaN never wins.
fn first_argmax(values: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

impl ChoiceScore {
    /// The predictions from per-ending log-likelihoods and the endings' texts.
    pub fn from_loglikelihoods(
        loglikelihoods: Vec<f64>,
        tokens: Vec<usize>,
        context_tokens: usize,
        endings: &[String],
    ) -> ChoiceScore {
        let lls = &loglikelihoods;
        let pred = first_argmax(lls.iter().copied());
        let pred_norm = first_argmax(
            lls.iter()
                .zip(endings)
                .map(|(ll, e)| ll / e.chars().count() as f64),
        );
        let pred_bytes = first_argmax(lls.iter().zip(endings).map(|(ll, e)| ll / e.len() as f64));
        ChoiceScore {
            loglikelihoods,
            tokens,
            context_tokens,
            pred,
            pred_norm,
            pred_bytes,
        }
    }
}

/// The token ids of `(context, continuation)` as the harness's `_encode_pair`
/// makes them (see the module doc); `continuation` already carries the
/// delimiter. Errors when the context (whitespace aside) or the
/// continuation encodes to no token.
pub fn encode_pair(
    tokenizer: &Tokenizer,
    context: &str,
    continuation: &str,
) -> Result<(Vec<u32>, Vec<u32>)> {
    let opts = tokenizer.default_encode_options();
    let (ctx_ids, cont_ids) = if context.is_empty() {
        let prefix = tokenizer.bos().or(tokenizer.eos()).ok_or_else(|| {
            Error::InvalidArgument(
                "an empty context needs a BOS or EOS token to condition on".into(),
            )
        })?;
        let mut plain = opts;
        plain.add_bos = false;
        let cont = tokenizer.try_encode(continuation, plain)?;
        if cont.first() == Some(&prefix) {
            (cont[..1].to_vec(), cont[1..].to_vec())
        } else {
            (vec![prefix], cont)
        }
    } else {
        let trimmed = context.trim_end();
        let (context, continuation) = if trimmed.len() < context.len() {
            (
                trimmed,
                format!("{}{continuation}", &context[trimmed.len()..]),
            )
        } else {
            (context, continuation.to_string())
        };
        let whole = tokenizer.try_encode(&format!("{context}{continuation}"), opts)?;
        let ctx = tokenizer.try_encode(context, opts)?;
        let cont = whole.get(ctx.len()..).unwrap_or_default().to_vec();
        (ctx, cont)
    };
    if ctx_ids.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "the context {context:?} encodes to no token (an empty context conditions on BOS)"
        )));
    }
    if cont_ids.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "the continuation {continuation:?} encodes to no token after the context"
        )));
    }
    Ok((ctx_ids, cont_ids))
}

/// Scores every ending of `item` (validated first) with `session`, whose
/// cache is reset: the context is fed by a batched prefill (its last token
/// together with the first ending, through [`Session::prefill_with_logits`]),
/// then every other ending's tokens (all but the last, which is only
/// predicted) after rewinding to the context; a one-token ending after the
/// first needs no pass. The
/// continuation is `delimiter + ending`. Errors: an invalid item, a context
/// plus ending longer than the session's context, or a session error.
pub fn score_choices(
    session: &mut Session,
    item: &ChoiceItem,
    delimiter: &str,
) -> Result<ChoiceScore> {
    item.validate()?;
    let model = session.model().clone();
    let tokenizer = model.tokenizer();
    let mut context_ids: Option<Vec<u32>> = None;
    let mut conts = Vec::with_capacity(item.endings.len());
    for ending in &item.endings {
        let (ctx, cont) = encode_pair(tokenizer, &item.context, &format!("{delimiter}{ending}"))?;
        // The context's encoding does not depend on the ending.
        debug_assert!(context_ids.as_ref().is_none_or(|c| *c == ctx));
        context_ids.get_or_insert(ctx);
        conts.push(cont);
    }
    let ctx = context_ids.expect("validate: at least one ending");
    let capacity = session.config().context;
    let longest = conts.iter().map(Vec::len).max().unwrap_or(0);
    // The last continuation token is predicted, never fed.
    if ctx.len() + longest - 1 > capacity {
        return Err(Error::ContextFull {
            needed: ctx.len() + longest - 1,
            capacity,
        });
    }

    // The context but its last token is fed without logits; its last token
    // and the first ending then go through one prefill with logits, whose
    // first row (the first continuation token's distribution) is kept for
    // the other endings, which rewind to the context and feed only their own
    // tokens.
    session.reset();
    let (head, last) = ctx.split_at(ctx.len() - 1);
    if !head.is_empty() {
        session.prefill(head)?;
    }
    let mut first: Vec<f32> = Vec::new();
    let mut lls = Vec::with_capacity(conts.len());
    for (k, cont) in conts.iter().enumerate() {
        let mut nll = 0.0;
        if k == 0 {
            let fed: Vec<u32> = last
                .iter()
                .chain(&cont[..cont.len() - 1])
                .copied()
                .collect();
            session.prefill_with_logits(&fed, &mut |i, logits| {
                if i == 0 {
                    first = logits.to_vec();
                }
                nll += negative_log_likelihood(logits, cont[i]);
            })?;
        } else {
            nll += negative_log_likelihood(&first, cont[0]);
            if cont.len() > 1 {
                if session.can_rewind_to(ctx.len()) {
                    session.truncate(ctx.len())?;
                } else {
                    session.reset();
                    session.prefill(&ctx)?;
                }
                let fed = &cont[..cont.len() - 1];
                session.prefill_with_logits(fed, &mut |i, logits| {
                    nll += negative_log_likelihood(logits, cont[i + 1]);
                })?;
            }
        }
        lls.push(-nll);
    }
    Ok(ChoiceScore::from_loglikelihoods(
        lls,
        conts.iter().map(Vec::len).collect(),
        ctx.len(),
        &item.endings,
    ))
}

/// An accuracy over items with its uncertainty as lm-evaluation-harness
/// reports it: `stderr` is the sample standard deviation of the 0/1 outcomes
/// (`n - 1` in the denominator) over `sqrt(n)`, and the 95 % interval is the
/// normal one, `acc ± 1.96 stderr`, clipped to `[0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Accuracy {
    /// Items predicted right.
    pub correct: usize,
    /// Items scored.
    pub total: usize,
    /// `correct / total` (0 when there is no item).
    pub value: f64,
    /// Standard error of the mean (0 with fewer than two items).
    pub stderr: f64,
    /// Lower end of the 95 % normal interval.
    pub ci95_low: f64,
    /// Upper end of the 95 % normal interval.
    pub ci95_high: f64,
}

/// The two-sided 95 % quantile of the standard normal distribution.
const Z95: f64 = 1.959_963_984_540_054;

impl Accuracy {
    /// The accuracy of `correct` right out of `total` (`correct <= total`).
    pub fn new(correct: usize, total: usize) -> Accuracy {
        assert!(correct <= total, "{correct} correct out of {total}");
        if total == 0 {
            return Accuracy {
                correct,
                total,
                value: 0.0,
                stderr: 0.0,
                ci95_low: 0.0,
                ci95_high: 0.0,
            };
        }
        let n = total as f64;
        let p = correct as f64 / n;
        // Sum of squared deviations of `correct` ones and `total - correct` zeros.
        let ss = correct as f64 * (1.0 - p).powi(2) + (n - correct as f64) * p * p;
        let stderr = if total > 1 {
            (ss / (n - 1.0)).sqrt() / n.sqrt()
        } else {
            0.0
        };
        Accuracy {
            correct,
            total,
            value: p,
            stderr,
            ci95_low: (p - Z95 * stderr).max(0.0),
            ci95_high: (p + Z95 * stderr).min(1.0),
        }
    }
}

/// The accuracies of a set of scored items (`scores[i]` for `items[i]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChoiceAccuracy {
    /// By summed log-likelihood (`acc`).
    pub acc: Accuracy,
    /// By log-likelihood per character (`acc_norm`).
    pub acc_norm: Accuracy,
    /// By log-likelihood per UTF-8 byte (`acc_bytes`).
    pub acc_bytes: Accuracy,
}

/// `acc`, `acc_norm` and `acc_bytes` of `scores` against `items`' labels
/// (same length).
pub fn accuracy(items: &[ChoiceItem], scores: &[ChoiceScore]) -> ChoiceAccuracy {
    assert_eq!(items.len(), scores.len(), "one score per item");
    let count = |f: fn(&ChoiceScore) -> usize| {
        let right = items
            .iter()
            .zip(scores)
            .filter(|(i, s)| f(s) == i.label)
            .count();
        Accuracy::new(right, items.len())
    };
    ChoiceAccuracy {
        acc: count(|s| s.pred),
        acc_norm: count(|s| s.pred_norm),
        acc_bytes: count(|s| s.pred_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_follow_the_harness() {
        let endings: Vec<String> = ["ab", "abcdef", "é"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s =
            ChoiceScore::from_loglikelihoods(vec![-4.0, -6.0, -3.0], vec![1, 2, 1], 5, &endings);
        assert_eq!(s.pred, 2);
        // Per character: -2, -1, -3; per byte: -2, -1, -1.5.
        assert_eq!(s.pred_norm, 1);
        assert_eq!(s.pred_bytes, 1);
        // Ties go to the first, as np.argmax.
        let t = ChoiceScore::from_loglikelihoods(vec![-1.0, -1.0], vec![1, 1], 1, &endings[..2]);
        assert_eq!(t.pred, 0);
    }

    #[test]
    fn accuracy_stderr_is_the_harness_mean_stderr() {
        // Outcomes 1,1,0,0,0: mean 0.4, sample stddev sqrt(0.3), stderr sqrt(0.3/5).
        let a = Accuracy::new(2, 5);
        assert_eq!(a.value, 0.4);
        assert!((a.stderr - (0.3f64 / 5.0).sqrt()).abs() < 1e-15);
        assert!((a.ci95_high - (0.4 + Z95 * a.stderr)).abs() < 1e-15);
        // 0.4 - 1.96 * 0.245 is below 0: clipped.
        assert_eq!(a.ci95_low, 0.0);
        let all = Accuracy::new(3, 3);
        assert_eq!((all.stderr, all.ci95_low, all.ci95_high), (0.0, 1.0, 1.0));
        assert_eq!(Accuracy::new(0, 0).value, 0.0);
        assert_eq!(Accuracy::new(1, 1).stderr, 0.0);
    }

    #[test]
    fn items_are_validated() {
        let item = |endings: &[&str], label| ChoiceItem {
            context: "c".into(),
            endings: endings.iter().map(|s| s.to_string()).collect(),
            label,
        };
        assert!(item(&["a", "b"], 1).validate().is_ok());
        assert!(item(&[], 0)
            .validate()
            .unwrap_err()
            .to_string()
            .contains("no endings"));
        assert!(item(&["a", ""], 0)
            .validate()
            .unwrap_err()
            .to_string()
            .contains("ending 1"));
        let e = item(&["a", "b"], 2).validate().unwrap_err().to_string();
        assert!(e.contains("label 2") && e.contains("2 endings"), "{e}");
    }
}
