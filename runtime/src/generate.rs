//! Generation: a prompt, a sampler chain, streaming detokenization and stop
//! sequences, in a loop that allocates nothing per token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sampler::{Sampler, SamplerConfig};
use crate::session::{ContextPolicy, Session};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `max_tokens` were generated.
    MaxTokens,
    /// The model produced an end-of-generation token (not emitted as text).
    EndOfGeneration,
    /// The generated text reached a stop sequence (not emitted).
    StopSequence,
    /// The session's context is full and its policy is `ContextPolicy::Error`.
    ContextFull,
    /// The caller's callback asked to stop.
    Cancelled,
}

impl StopReason {
    pub fn name(self) -> &'static str {
        match self {
            Self::MaxTokens => "max_tokens",
            Self::EndOfGeneration => "end_of_generation",
            Self::StopSequence => "stop_sequence",
            Self::ContextFull => "context_full",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Timings and counts of one generation.
#[derive(Clone, Debug)]
pub struct GenerationStats {
    /// Tokens of the prompt given (reused ones included).
    pub prompt_tokens: usize,
    /// Leading prompt tokens the session already held ([`PrefillOptions::reuse_cached`]).
    pub reused_tokens: usize,
    pub generated_tokens: usize,
    /// Time to process the prompt (up to the first generated token's logits).
    pub prefill: Duration,
    /// Time spent generating after the prompt.
    pub decode: Duration,
    pub stop: StopReason,
    /// Context shifts the session performed during this call.
    pub context_shifts: usize,
}

impl GenerationStats {
    /// Generated tokens per second of decode time (excluding the prompt).
    pub fn decode_tokens_per_second(&self) -> f64 {
        let s = self.decode.as_secs_f64();
        if s > 0.0 {
            self.generated_tokens as f64 / s
        } else {
            0.0
        }
    }
    /// Prompt tokens fed (not reused) per second of prefill time.
    pub fn prefill_tokens_per_second(&self) -> f64 {
        let s = self.prefill.as_secs_f64();
        if s > 0.0 {
            (self.prompt_tokens - self.reused_tokens) as f64 / s
        } else {
            0.0
        }
    }
}

/// Finds stop sequences in streamed text that may span token boundaries. Text
/// that could still be the start of a stop sequence is held back, so a stop
/// sequence is never emitted, and everything before it is.
#[derive(Clone, Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text not yet released: always shorter than the longest stop sequence
    /// between calls.
    held: String,
    /// Text released by the last call.
    out: String,
}

impl StopMatcher {
    /// A matcher for `stops` (each non-empty) fed pieces of at most
    /// `max_piece_bytes` bytes (larger pieces work but may allocate).
    pub fn new(stops: &[String], max_piece_bytes: usize) -> Result<Self> {
        if let Some(i) = stops.iter().position(|s| s.is_empty()) {
            return Err(Error::InvalidArgument(format!(
                "stop sequence {i} is empty"
            )));
        }
        let longest = stops.iter().map(String::len).max().unwrap_or(0);
        let capacity = longest + max_piece_bytes + 8;
        Ok(Self {
            stops: stops.to_vec(),
            held: String::with_capacity(capacity),
            out: String::with_capacity(capacity),
        })
    }

    /// Forgets held text.
    pub fn reset(&mut self) {
        self.held.clear();
        self.out.clear();
    }

    /// Adds `text`; returns the text now safe to emit and whether a stop
    /// sequence was found (then the returned text is everything before it and the
    /// rest is discarded).
    pub fn push(&mut self, text: &str) -> (&str, bool) {
        self.out.clear();
        self.held.push_str(text);
        if self.stops.is_empty() {
            std::mem::swap(&mut self.out, &mut self.held);
            return (&self.out, false);
        }
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = found {
            self.out.push_str(&self.held[..at]);
            self.held.clear();
            return (&self.out, true);
        }
        // Hold the longest suffix that is a proper prefix of some stop sequence.
        let keep_from = (0..self.held.len())
            .filter(|&i| self.held.is_char_boundary(i))
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        self.out.push_str(&self.held[..keep_from]);
        self.held.drain(..keep_from);
        (&self.out, false)
    }

    /// Releases the held text (at the end of generation).
    pub fn flush(&mut self) -> &str {
        self.out.clear();
        std::mem::swap(&mut self.out, &mut self.held);
        &self.out
    }
}

/// Settings of a [`Generator`] besides the sampler.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateConfig {
    /// Tokens to generate at most per call.
    pub max_tokens: usize,
    /// Stop sequences, matched on the decoded text.
    pub stop: Vec<String>,
    /// Keep going past end-of-generation tokens (they are then emitted as text).
    pub ignore_eos: bool,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// Sampler, streaming decoder and stop matcher with every buffer allocated at
/// creation: [`Generator::generate`] never allocates.
#[derive(Clone, Debug)]
pub struct Generator {
    sampler: Sampler,
    decoder: StreamDecoder,
    stops: StopMatcher,
    config: GenerateConfig,
}

impl Generator {
    /// A generator for `tokenizer`'s model using `sampler`.
    pub fn new(tokenizer: &Tokenizer, sampler: Sampler, config: GenerateConfig) -> Result<Self> {
        // A decoded piece: the largest token, worst-case U+FFFD expansion, carry.
        let max_piece = (tokenizer.max_token_bytes() + 4) * 3;
        Ok(Self {
            stops: StopMatcher::new(&config.stop, max_piece)?,
            decoder: StreamDecoder::for_tokenizer(tokenizer),
            sampler,
            config,
        })
    }

    /// The settings.
    pub fn config(&self) -> &GenerateConfig {
        &self.config
    }

    /// Changes the token limit of later calls.
    pub fn set_max_tokens(&mut self, n: usize) {
        self.config.max_tokens = n;
    }

    /// The sampler (e.g. to reset or reseed it).
    pub fn sampler_mut(&mut self) -> &mut Sampler {
        &mut self.sampler
    }

    /// Feeds `prompt` into `session` (may be empty when the session already has
    /// logits, e.g. after `load_state`), then samples up to `max_tokens` tokens:
    /// [`Generator::prefill`] with default options, then [`Generator::decode`].
    /// `on_text(id, text)` receives each generated token with the text it
    /// releases (possibly empty: an incomplete character, or text held back
    /// because it may start a stop sequence); returning `false` stops. The
    /// final call after the loop carries id `u32::MAX` with the remaining text.
    /// End-of-generation tokens and stop sequences are not emitted, and the token
    /// that ends generation is not fed to the session.
    ///
    /// Errors: a bad token id, or a prompt that does not fit under
    /// `ContextPolicy::Error`.
    pub fn generate(
        &mut self,
        session: &mut Session,
        prompt: &[u32],
        on_text: impl FnMut(u32, &str) -> bool,
    ) -> Result<GenerationStats> {
        let prefill = self.prefill(session, prompt, &PrefillOptions::default())?;
        self.decode(session, &prefill, on_text)
    }

    /// Brings `session` to the state after `prompt` and records the prompt
    /// for the sampler's penalties. Without [`PrefillOptions::reuse_cached`]
    /// the prompt is appended to what the session holds; with it, `prompt` is
    /// the whole context: the session keeps its tokens up to the first
    /// difference ([`reusable_prefix`]), feeds the rest, and the penalty
    /// history restarts from the prompt. Feeds in chunks of the session's
    /// batch, polling [`PrefillOptions::cancel`] between them.
    pub fn prefill(
        &mut self,
        session: &mut Session,
        prompt: &[u32],
        opts: &PrefillOptions,
    ) -> Result<Prefill> {
        let start = Instant::now();
        let reused = if opts.reuse_cached {
            let keep = reusable_prefix(session, prompt);
            session.truncate(keep)?;
            self.sampler.clear_history();
            keep
        } else {
            0
        };
        let rest = &prompt[reused..];
        if rest.is_empty() && !session.has_logits() {
            return Err(Error::InvalidArgument(
                "the prompt encodes to no tokens".into(),
            ));
        }
        let cancelled = || opts.cancel.is_some_and(|c| c.load(Ordering::SeqCst));
        let chunk = match (opts.cancel, opts.progress) {
            (Some(_), _) => PREFILL_CANCEL_CHUNK.min(session.config().batch).max(1),
            (None, Some(_)) => session.config().batch.max(1),
            (None, None) => rest.len().max(1),
        };
        let report = |fed: usize| {
            if let Some(p) = opts.progress {
                p(fed, rest.len());
            }
        };
        let mut fed = 0;
        report(0);
        for part in rest.chunks(chunk) {
            if cancelled() {
                break;
            }
            session.prefill(part)?;
            fed += part.len();
            report(fed);
        }
        for &t in prompt {
            self.sampler.accept(t);
        }
        Ok(Prefill {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            elapsed: start.elapsed(),
            cancelled: fed < rest.len() || cancelled(),
        })
    }

    /// Samples up to `max_tokens` tokens after a [`Generator::prefill`] (see
    /// [`Generator::generate`] for `on_text`); a cancelled prefill stops at once
    /// with [`StopReason::Cancelled`].
    pub fn decode(
        &mut self,
        session: &mut Session,
        prefill: &Prefill,
        mut on_text: impl FnMut(u32, &str) -> bool,
    ) -> Result<GenerationStats> {
        let model = session.model().clone();
        let tokenizer = model.tokenizer();
        let shifts0 = session.context_shifts();
        let stats = |generated, decode, stop, session: &Session| GenerationStats {
            prompt_tokens: prefill.prompt_tokens,
            reused_tokens: prefill.reused_tokens,
            generated_tokens: generated,
            prefill: prefill.elapsed,
            decode,
            stop,
            context_shifts: session.context_shifts() - shifts0,
        };
        if prefill.cancelled {
            return Ok(stats(0, Duration::ZERO, StopReason::Cancelled, session));
        }
        self.decoder.reset();
        self.stops.reset();
        // Generated text continues the cached text: feed its last token (discarding
        // its text) so the decoder applies its mid-text rules (llama2.c strips the
        // leading space only of the first piece after BOS).
        if let Some(&last) = session.tokens().last() {
            self.decoder.push(tokenizer, last);
        }
        let may_fill = session.config().context_policy == ContextPolicy::Error;
        let start = Instant::now();
        let mut generated = 0;
        let max = self.config.max_tokens;
        let mut stopped = false;
        let stop = loop {
            if generated == max {
                break StopReason::MaxTokens;
            }
            let next = self.sampler.sample(session.logits());
            if !self.config.ignore_eos && tokenizer.is_end_of_generation(next) {
                break StopReason::EndOfGeneration;
            }
            generated += 1;
            self.sampler.accept(next);
            let piece = self.decoder.push(tokenizer, next);
            let (text, hit) = self.stops.push(piece);
            if !on_text(next, text) {
                break StopReason::Cancelled;
            }
            if hit {
                stopped = true;
                break StopReason::StopSequence;
            }
            if generated == max {
                break StopReason::MaxTokens;
            }
            if may_fill && session.pos() >= session.config().context {
                break StopReason::ContextFull;
            }
            session.step(next)?;
        };
        if !stopped {
            let tail = self.decoder.finish();
            let (text, hit) = self.stops.push(tail);
            if !text.is_empty() {
                on_text(u32::MAX, text);
            }
            if !hit {
                let rest = self.stops.flush();
                if !rest.is_empty() {
                    on_text(u32::MAX, rest);
                }
            }
        }
        Ok(stats(generated, start.elapsed(), stop, session))
    }
}

/// Prefill granularity between cancellation checks, in tokens.
const PREFILL_CANCEL_CHUNK: usize = 32;

/// How [`Generator::prefill`] feeds a prompt.
#[derive(Clone, Copy, Default)]
pub struct PrefillOptions<'a> {
    /// The prompt is the whole context: keep the session's tokens up to the
    /// first difference and feed only the rest (chat turns, prompt caches).
    pub reuse_cached: bool,
    /// Set by another thread to stop the prefill early (checked every 32 tokens).
    pub cancel: Option<&'a AtomicBool>,
    /// Called as `progress(fed, to_feed)` after every batch of the session
    /// (and once before the first), for a progress report on long prompts.
    pub progress: Option<&'a dyn Fn(usize, usize)>,
}

impl std::fmt::Debug for PrefillOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefillOptions")
            .field("reuse_cached", &self.reuse_cached)
            .field("cancel", &self.cancel)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What [`Generator::prefill`] did; [`Generator::decode`] continues from it.
#[derive(Clone, Copy, Debug)]
pub struct Prefill {
    pub prompt_tokens: usize,
    pub reused_tokens: usize,
    pub elapsed: Duration,
    /// The cancel flag stopped feeding before the prompt's end.
    pub cancelled: bool,
}

/// How many leading tokens of `prompt` the session can keep: its tokens up to
/// the first difference, all of them only when the session holds exactly the
/// prompt with its logits (else one is left to feed, for fresh logits), and
/// none when sliding-window layers no longer hold what that position attends to.
pub fn reusable_prefix(session: &Session, prompt: &[u32]) -> usize {
    let common = session
        .tokens()
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count();
    let full_hit = common == prompt.len() && session.pos() == common && session.has_logits();
    let keep = if full_hit {
        common
    } else {
        common.min(prompt.len().saturating_sub(1))
    };
    if session.can_rewind_to(keep) {
        keep
    } else {
        0
    }
}

/// Feeds `prompt` (non-empty) into `session`, then greedily generates up to
/// `max_new_tokens` (see [`Generator::generate`] for `on_text`).
pub fn generate_greedy(
    session: &mut Session,
    prompt: &[u32],
    max_new_tokens: usize,
    on_text: impl FnMut(u32, &str) -> bool,
) -> Result<GenerationStats> {
    if prompt.is_empty() {
        return Err(Error::InvalidArgument(
            "the prompt encodes to no tokens".into(),
        ));
    }
    let model = session.model().clone();
    let sampler = Sampler::new(
        model.hparams().vocab_size as usize,
        &SamplerConfig::greedy(),
    )?;
    let config = GenerateConfig {
        max_tokens: max_new_tokens,
        ..GenerateConfig::default()
    };
    Generator::new(model.tokenizer(), sampler, config)?.generate(session, prompt, on_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops, 16).unwrap();
        let mut out = String::new();
        for p in pieces {
            let (t, hit) = m.push(p);
            out.push_str(t);
            if hit {
                return (out, true);
            }
        }
        out.push_str(m.flush());
        (out, false)
    }

    #[test]
    fn stop_spanning_pieces_is_never_emitted() {
        assert_eq!(run(&["<end>"], &["ab<e", "n", "d>zz"]), ("ab".into(), true));
        assert_eq!(run(&["\n\n"], &["a\n", "\nb"]), ("a".into(), true));
        assert_eq!(run(&["xyz"], &["x", "y", "q"]), ("xyq".into(), false));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        // The earliest of several matches wins.
        assert_eq!(run(&["cd", "bc"], &["abcd"]), ("a".into(), true));
        // Multi-byte text is held on character boundaries.
        assert_eq!(run(&["é!"], &["caf", "é", "?"]), ("café?".into(), false));
    }

    #[test]
    fn empty_stop_is_rejected() {
        assert!(StopMatcher::new(&["".into()], 4).is_err());
    }
}
