//! A decoding session: the per-conversation state over a shared model. Every
//! buffer (activations, KV cache, RoPE table, logits) is allocated once in
//! `Session::new`; `forward` never allocates.
//!
//! The forward pass is the scalar f32 reference for the Llama family:
//! ```text
//! x = embed[token]
//! for each layer:
//!     h = rmsnorm(x) * attn_norm
//!     q, k, v = Wq h (+bq), Wk h (+bk), Wv h (+bv);  rope(q, k, pos)
//!     cache[pos] = k, v
//!     per query head: softmax(q . K[0..=pos] / sqrt(head_dim)) . V   (its KV group)
//!     x += Wo attn (+bo)
//!     h = rmsnorm(x) * ffn_norm
//!     x += W_down (act(W_gate h) * (W_up h))
//! logits = W_out rmsnorm(x) * norm
//! ```

use std::sync::Arc;

use ember_kernels::scalar::{self as k, RopeLayout};

use crate::error::{Error, Result};
use crate::format::{Activation, HyperParams, RopePairing};
use crate::model::Model;
use crate::rope::inverse_frequencies;

/// Session settings fixed at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Maximum number of positions (tokens) held in the KV cache; 1..=the model's
    /// `max_context`.
    pub context: usize,
}

/// Per-conversation state: position, KV cache and scratch buffers.
pub struct Session {
    model: Arc<Model>,
    config: SessionConfig,
    /// Next position to be written.
    pos: usize,
    /// `[dim]` residual stream.
    x: Vec<f32>,
    /// `[dim]` normalised input of the current sub-block.
    xn: Vec<f32>,
    /// `[q_dim]` queries, then the attention output.
    q: Vec<f32>,
    att_out: Vec<f32>,
    /// `[dim]` projection output before the residual add.
    proj: Vec<f32>,
    /// `[context]` attention scores of one head.
    scores: Vec<f32>,
    /// `[ffn]` gate and up activations.
    gate: Vec<f32>,
    up: Vec<f32>,
    /// `[vocab]`.
    logits: Vec<f32>,
    /// `[n_layers, context, kv_dim]` keys and values (f32 in the reference pass).
    key_cache: Vec<f32>,
    value_cache: Vec<f32>,
    /// `[rope_dim / 2]` RoPE inverse frequencies (after scaling).
    inv_freq: Vec<f32>,
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
        let dim = hp.dim as usize;
        let kv = hp.kv_dim() * hp.n_layers as usize * config.context;
        Ok(Self {
            config,
            pos: 0,
            x: vec![0.0; dim],
            xn: vec![0.0; dim],
            q: vec![0.0; hp.q_dim()],
            att_out: vec![0.0; hp.q_dim()],
            proj: vec![0.0; dim],
            scores: vec![0.0; config.context],
            gate: vec![0.0; hp.ffn_dim as usize],
            up: vec![0.0; hp.ffn_dim as usize],
            logits: vec![0.0; hp.vocab_size as usize],
            key_cache: vec![0.0; kv],
            value_cache: vec![0.0; kv],
            inv_freq: inverse_frequencies(&hp),
            model,
        })
    }

    /// Bytes this session allocates for a model with `hp` and `config`.
    pub fn memory_required(hp: &HyperParams, config: &SessionConfig) -> usize {
        let f = std::mem::size_of::<f32>();
        let dim = hp.dim as usize;
        let kv = 2 * hp.kv_dim() * hp.n_layers as usize * config.context;
        f * (3 * dim
            + 2 * hp.q_dim()
            + config.context
            + 2 * hp.ffn_dim as usize
            + hp.vocab_size as usize
            + kv
            + hp.rope_dim as usize / 2)
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
        &self.logits
    }
    /// Forgets every token (the cache is overwritten lazily).
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Feeds `token` at the next position and returns the logits predicting the
    /// token after it. Errors (without changing state) if the token id is out of
    /// range or the context is full.
    pub fn forward(&mut self, token: u32) -> Result<&[f32]> {
        let hp = *self.model.hparams();
        if token >= hp.vocab_size {
            return Err(Error::TokenOutOfRange {
                id: token,
                vocab: hp.vocab_size,
            });
        }
        if self.pos >= self.config.context {
            return Err(Error::ContextFull {
                needed: self.pos + 1,
                capacity: self.config.context,
            });
        }
        self.forward_unchecked(token, &hp);
        self.pos += 1;
        Ok(&self.logits)
    }

    fn forward_unchecked(&mut self, token: u32, hp: &HyperParams) {
        let model = &*self.model;
        let pos = self.pos;
        let dim = hp.dim as usize;
        let head_dim = hp.head_dim as usize;
        let kv_dim = hp.kv_dim();
        let group = (hp.n_heads / hp.n_kv_heads) as usize;
        let ctx = self.config.context;
        let eps = hp.norm_eps;
        let layout = match RopePairing::from_u32(hp.rope_pairing) {
            Some(RopePairing::Half) => RopeLayout::Half,
            _ => RopeLayout::Interleaved,
        };
        let scale = 1.0 / (head_dim as f32).sqrt();
        // Attention window: positions j with pos - j < window.
        let first = match hp.sliding_window {
            0 => 0,
            w => (pos + 1).saturating_sub(w as usize),
        };

        // x = embedding row of the token.
        model
            .weights(model.tok_embeddings)
            .row_to_f32(token as usize, &mut self.x);

        for (l, li) in model.layers.iter().enumerate() {
            // --- attention block ---
            k::rmsnorm_f32(&mut self.xn, &self.x, model.vector(li.attn_norm), eps);
            let layer_off = l * ctx * kv_dim;
            let k_row = &mut self.key_cache[layer_off + pos * kv_dim..][..kv_dim];
            let v_row = &mut self.value_cache[layer_off + pos * kv_dim..][..kv_dim];
            model.weights(li.wq).matvec(&self.xn, &mut self.q);
            model.weights(li.wk).matvec(&self.xn, k_row);
            model.weights(li.wv).matvec(&self.xn, v_row);
            if let (Some(bq), Some(bk), Some(bv)) = (li.bq, li.bk, li.bv) {
                k::add_f32(&mut self.q, model.vector(bq));
                k::add_f32(k_row, model.vector(bk));
                k::add_f32(v_row, model.vector(bv));
            }
            k::rope_f32(&mut self.q, head_dim, pos, &self.inv_freq, layout);
            k::rope_f32(k_row, head_dim, pos, &self.inv_freq, layout);

            let keys = &self.key_cache[layer_off..][..ctx * kv_dim];
            let values = &self.value_cache[layer_off..][..ctx * kv_dim];
            for h in 0..hp.n_heads as usize {
                let q_head = &self.q[h * head_dim..][..head_dim];
                let kv_off = (h / group) * head_dim;
                let scores = &mut self.scores[first..=pos];
                for (j, s) in (first..=pos).zip(scores.iter_mut()) {
                    let k_head = &keys[j * kv_dim + kv_off..][..head_dim];
                    *s = k::dot_f32(q_head, k_head) * scale;
                }
                k::softmax_f32(scores);
                let out = &mut self.att_out[h * head_dim..][..head_dim];
                out.fill(0.0);
                for (j, &p) in (first..=pos).zip(scores.iter()) {
                    k::axpy_f32(out, p, &values[j * kv_dim + kv_off..][..head_dim]);
                }
            }
            model.weights(li.wo).matvec(&self.att_out, &mut self.proj);
            if let Some(bo) = li.bo {
                k::add_f32(&mut self.proj, model.vector(bo));
            }
            k::add_f32(&mut self.x, &self.proj);

            // --- feed-forward block ---
            k::rmsnorm_f32(&mut self.xn, &self.x, model.vector(li.ffn_norm), eps);
            model.weights(li.w_gate).matvec(&self.xn, &mut self.gate);
            model.weights(li.w_up).matvec(&self.xn, &mut self.up);
            if let (Some(bg), Some(bu)) = (li.b_gate, li.b_up) {
                k::add_f32(&mut self.gate, model.vector(bg));
                k::add_f32(&mut self.up, model.vector(bu));
            }
            match Activation::from_u32(hp.activation) {
                Some(Activation::GeluTanh) => k::gelu_gate_f32(&mut self.gate, &self.up),
                _ => k::silu_gate_f32(&mut self.gate, &self.up),
            }
            model
                .weights(li.w_down)
                .matvec(&self.gate, &mut self.proj[..dim]);
            if let Some(bd) = li.b_down {
                k::add_f32(&mut self.proj, model.vector(bd));
            }
            k::add_f32(&mut self.x, &self.proj);
        }

        k::rmsnorm_f32(&mut self.xn, &self.x, model.vector(model.norm), eps);
        model
            .weights(model.output)
            .matvec(&self.xn, &mut self.logits);
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
