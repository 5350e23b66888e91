//! Greedy generation with streaming text output.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::session::{argmax, Session};
use crate::tokenizer::StreamDecoder;

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `max_new_tokens` were generated.
    MaxTokens,
    /// The model produced an end-of-generation token (not emitted as text).
    EndOfGeneration,
    /// The session's context is full.
    ContextFull,
    /// The caller's callback asked to stop.
    Cancelled,
}

impl StopReason {
    pub fn name(self) -> &'static str {
        match self {
            Self::MaxTokens => "max_tokens",
            Self::EndOfGeneration => "end_of_generation",
            Self::ContextFull => "context_full",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Timings and counts of one generation.
#[derive(Clone, Debug)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Time to process the prompt (up to the first generated token's logits).
    pub prefill: Duration,
    /// Time spent generating after the prompt.
    pub decode: Duration,
    pub stop: StopReason,
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
    pub fn prefill_tokens_per_second(&self) -> f64 {
        let s = self.prefill.as_secs_f64();
        if s > 0.0 {
            self.prompt_tokens as f64 / s
        } else {
            0.0
        }
    }
}

/// Feeds `prompt` (non-empty) into `session`, then greedily generates up to
/// `max_new_tokens`. `on_text(id, text)` receives each generated token and the
/// complete UTF-8 text it adds (possibly empty while a multi-byte character is
/// incomplete); returning `false` stops generation. End-of-generation tokens stop
/// without being passed on.
pub fn generate_greedy(
    session: &mut Session,
    prompt: &[u32],
    max_new_tokens: usize,
    mut on_text: impl FnMut(u32, &str) -> bool,
) -> Result<GenerationStats> {
    if prompt.is_empty() {
        return Err(Error::InvalidArgument(
            "the prompt encodes to no tokens".into(),
        ));
    }
    let capacity = session.config().context;
    if session.pos() + prompt.len() > capacity {
        return Err(Error::ContextFull {
            needed: session.pos() + prompt.len(),
            capacity,
        });
    }
    let model = session.model().clone();
    let tokenizer = model.tokenizer();
    let start = Instant::now();
    for &t in prompt {
        session.forward(t)?;
    }
    let prefill = start.elapsed();
    let mut decoder = StreamDecoder::for_tokenizer(tokenizer);
    // Generated text continues the prompt: feed its last token (discarding its
    // text) so the decoder applies its mid-text rules (llama2.c strips the
    // leading space only of the first piece after BOS).
    decoder.push(tokenizer, *prompt.last().expect("prompt is non-empty"));
    let start = Instant::now();
    let mut generated = 0;
    let stop = loop {
        if generated == max_new_tokens {
            break StopReason::MaxTokens;
        }
        let next = argmax(session.logits());
        if tokenizer.is_end_of_generation(next) {
            break StopReason::EndOfGeneration;
        }
        generated += 1;
        if !on_text(next, decoder.push(tokenizer, next)) {
            break StopReason::Cancelled;
        }
        if generated == max_new_tokens {
            break StopReason::MaxTokens;
        }
        if session.pos() >= capacity {
            break StopReason::ContextFull;
        }
        session.forward(next)?;
    };
    let tail = decoder.finish();
    if !tail.is_empty() {
        on_text(u32::MAX, tail);
    }
    Ok(GenerationStats {
        prompt_tokens: prompt.len(),
        generated_tokens: generated,
        prefill,
        decode: start.elapsed(),
        stop,
    })
}
