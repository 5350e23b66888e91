//! A decoding session: the per-conversation state over a shared model. Every
//! buffer (activations, KV cache, RoPE table, logits) is allocated once in
//! `Session::new`; `forward` never allocates.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::HyperParams;
use crate::forward::{forward, ForwardBuffers};
use crate::kv_cache::KvCache;
use crate::model::Model;

/// Session settings fixed at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Maximum number of positions (tokens) held in the KV cache; 1..=the model's
    /// `max_context`.
    pub context: usize,
}

/// Per-conversation state: position, KV cache and activation buffers.
pub struct Session {
    model: Arc<Model>,
    config: SessionConfig,
    /// Next position to be written.
    pos: usize,
    buffers: ForwardBuffers,
    kv: KvCache,
}

impl Session {
    /// Creates a session with every buffer allocated up front.
    pub fn new(model: Arc<Model>, config: SessionConfig) -> Result<Self> {
        let hp = *model.hparams();
        if config.context == 0 || config.context > hp.max_context as usize {
            return Err(Error::InvalidArgument(format!(
                "context {} must be in 1..={} (the model's maximum)",
                config.context, hp.max_context
            )));
        }
        Ok(Self {
            config,
            pos: 0,
            buffers: ForwardBuffers::new(&hp, config.context),
            kv: KvCache::new(&hp, config.context),
            model,
        })
    }

    /// Bytes this session allocates for a model with `hp` and `config`.
    pub fn memory_required(hp: &HyperParams, config: &SessionConfig) -> usize {
        ForwardBuffers::bytes_required(hp, config.context)
            + KvCache::bytes_required(hp, config.context)
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }
    /// Number of tokens processed so far (= the position of the next token).
    pub fn pos(&self) -> usize {
        self.pos
    }
    /// Logits of the last `forward` call.
    pub fn logits(&self) -> &[f32] {
        self.buffers.logits()
    }
    /// Forgets every token (the cache is overwritten lazily).
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Feeds `token` at the next position and returns the logits predicting the
    /// token after it. Errors (without changing state) if the token id is out of
    /// range or the context is full.
    pub fn forward(&mut self, token: u32) -> Result<&[f32]> {
        let vocab = self.model.hparams().vocab_size;
        if token >= vocab {
            return Err(Error::TokenOutOfRange { id: token, vocab });
        }
        if self.pos >= self.config.context {
            return Err(Error::ContextFull {
                needed: self.pos + 1,
                capacity: self.config.context,
            });
        }
        forward(
            &self.model,
            &mut self.buffers,
            &mut self.kv,
            token,
            self.pos,
        );
        self.pos += 1;
        Ok(self.buffers.logits())
    }
}

/// Index of the largest logit (the first one on ties); 0 for an empty slice.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}
