//! Evaluation: perplexity of a model on a token sequence.

use crate::error::{Error, Result};
use crate::session::Session;

/// Result of a perplexity run.
#[derive(Clone, Debug, PartialEq)]
pub struct Perplexity {
    /// Number of predicted tokens (each window of `n` tokens predicts `n - 1`).
    pub predictions: usize,
    /// Mean negative log-likelihood in nats.
    pub mean_nll: f64,
    /// `exp(mean_nll)`.
    pub perplexity: f64,
}

/// `-log softmax(logits)[target]`, computed in f64.
pub fn negative_log_likelihood(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    -(logits[target as usize] as f64 - max - sum.ln())
}

/// Perplexity of `tokens` split into consecutive, non-overlapping windows of at
/// most `window` tokens (the session's context bounds it); each window starts
/// from an empty cache and predicts its tokens 1.. from their prefixes.
pub fn perplexity(session: &mut Session, tokens: &[u32], window: usize) -> Result<Perplexity> {
    if window < 2 || window > session.config().context {
        return Err(Error::InvalidArgument(format!(
            "window {window} must be in 2..={} (the session context)",
            session.config().context
        )));
    }
    let mut nll = 0.0;
    let mut n = 0usize;
    for chunk in tokens.chunks(window) {
        if chunk.len() < 2 {
            continue;
        }
        session.reset();
        for (i, &t) in chunk[..chunk.len() - 1].iter().enumerate() {
            let logits = session.forward(t)?;
            nll += negative_log_likelihood(logits, chunk[i + 1]);
            n += 1;
        }
    }
    if n == 0 {
        return Err(Error::InvalidArgument("need at least 2 tokens".into()));
    }
    let mean_nll = nll / n as f64;
    Ok(Perplexity {
        predictions: n,
        mean_nll,
        perplexity: mean_nll.exp(),
    })
}
