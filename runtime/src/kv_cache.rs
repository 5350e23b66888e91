//! The key/value cache of one session: `[n_layers, context, kv_dim]` keys and
//! values, plus attention over the cached positions. Allocated once.

use ember_kernels::scalar as k;

use crate::format::HyperParams;

/// Keys and values for every layer and position (f32 in the reference pass).
pub struct KvCache {
    context: usize,
    kv_dim: usize,
    head_dim: usize,
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl KvCache {
    /// A cache for `context` positions of a model with `hp`.
    pub fn new(hp: &HyperParams, context: usize) -> Self {
        let kv_dim = hp.kv_dim();
        let n = hp.n_layers as usize * context * kv_dim;
        Self {
            context,
            kv_dim,
            head_dim: hp.head_dim as usize,
            keys: vec![0.0; n],
            values: vec![0.0; n],
        }
    }

    /// Bytes a cache for `context` positions needs.
    pub fn bytes_required(hp: &HyperParams, context: usize) -> usize {
        2 * hp.n_layers as usize * context * hp.kv_dim() * std::mem::size_of::<f32>()
    }

    /// Number of positions it holds.
    pub fn context(&self) -> usize {
        self.context
    }

    /// The key and value rows (`[kv_dim]` each) of `layer` at `pos`, for writing.
    pub fn rows_mut(&mut self, layer: usize, pos: usize) -> (&mut [f32], &mut [f32]) {
        let at = (layer * self.context + pos) * self.kv_dim;
        (
            &mut self.keys[at..at + self.kv_dim],
            &mut self.values[at..at + self.kv_dim],
        )
    }

    /// Attention of one query head over positions `first..=last` of `layer`,
    /// using KV head `kv_head`:
    /// `out = sum_j softmax_j(q . K_j * scale) V_j`. `scores` is scratch of at
    /// least `last - first + 1` elements; `out` has `head_dim` elements.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &self,
        layer: usize,
        kv_head: usize,
        q: &[f32],
        first: usize,
        last: usize,
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let base = layer * self.context * self.kv_dim + kv_head * self.head_dim;
        let row = |j: usize| base + j * self.kv_dim;
        let scores = &mut scores[..=last - first];
        for (j, s) in (first..=last).zip(scores.iter_mut()) {
            *s = k::dot_f32(q, &self.keys[row(j)..row(j) + self.head_dim]) * scale;
        }
        k::softmax_f32(scores);
        out.fill(0.0);
        for (j, &p) in (first..=last).zip(scores.iter()) {
            k::axpy_f32(out, p, &self.values[row(j)..row(j) + self.head_dim]);
        }
    }
}
