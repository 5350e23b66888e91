//! Evaluation: perplexity of a model on a token sequence; multiple-choice
//! scoring in [`choice`].

pub mod choice;

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
/// from an empty cache and predicts its tokens 1.. from their prefixes. Each
/// window runs as one prefill ([`Session::prefill_with_logits`]): batched
/// passes on the session's threads, the logits of every position from
/// matrix-matrix products.
pub fn perplexity(session: &mut Session, tokens: &[u32], window: usize) -> Result<Perplexity> {
    perplexity_with_progress(session, tokens, window, &mut |_| {})
}

/// [`perplexity`], calling `progress(tokens_done)` as positions are scored,
/// with the number of tokens of `tokens` evaluated so far (each window's last
/// token counts when the window is done).
pub fn perplexity_with_progress(
    session: &mut Session,
    tokens: &[u32],
    window: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Perplexity> {
    if window < 2 || window > session.config().context {
        return Err(Error::InvalidArgument(format!(
            "window {window} must be in 2..={} (the session context)",
            session.config().context
        )));
    }
    let mut nll = 0.0;
    let mut n = 0usize;
    let mut done = 0usize;
    for chunk in tokens.chunks(window) {
        if chunk.len() >= 2 {
            session.reset();
            session.prefill_with_logits(&chunk[..chunk.len() - 1], &mut |i, logits| {
                nll += negative_log_likelihood(logits, chunk[i + 1]);
                n += 1;
                progress(done + i + 1);
            })?;
        }
        done += chunk.len();
        progress(done);
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
