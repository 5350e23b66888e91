//! The forward pass: one transformer block over `n` rows (consecutive tokens),
//! driven by the model's [`ModelConfig`]. Decoding is `n = 1`; prompt prefill
//! runs up to [`MAX_BATCH`] tokens per pass, so every weight matrix is read
//! once per batch (f16 and row-interleaved quantized matrices use the
//! matrix-matrix kernels, whose per-token results are bit-identical to the
//! matrix-vector kernels'). A prompt prefilled in batches therefore leaves
//! exactly the cache and logits of one fed token by token.
//!
//! ```text
//! x = embed[token] (* embed_scale)
//! for each layer:
//!     h = norm(x) * attn_norm
//!     q, k, v = Wq h (+bq), Wk h (+bk), Wv h (+bv)
//!     (q, k = per-head norm(q) * q_norm, norm(k) * k_norm)
//!     rope(q, k, pos) with the layer's RoPE kind;  cache[pos] = k, v
//!     per query head: softmax(scale * q . K[window..=pos]) . V   (its KV group)
//!     a = Wo attn (+bo);  (a = norm(a) * post_attn_norm);  x += a
//!     h = norm(x) * ffn_norm
//!     m = W_down (act(W_gate h (+b)) * (W_up h (+b)))   or  W_down act(W_up h)
//!     (+b_down);  (m = norm(m) * post_ffn_norm);  x += m
//! logits = W_out norm(x) * norm   (then softcap * tanh(logits / softcap))
//! ```

mod block;
mod ops;

use ember_kernels::blocks::{BlockQ8_0, QK};
use ember_kernels::scalar as k;

use crate::config::ModelConfig;
use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::lora::MatrixHooks;
use crate::model::Model;
use crate::pool::Pool;
use crate::session::arena::{Alloc, Slab};

/// Most tokens one pass holds. Each matrix is read once per pass (per
/// thread's share of it), and buffers grow linearly with it; 64 is where
/// larger batches stopped paying (`benches/RESULTS.md`, "f16 kernels and batch
/// size").
pub const MAX_BATCH: usize = 64;

/// Every activation buffer of the forward pass, for up to `cap` rows
/// (tokens), sized once from the [`ModelConfig`] and the session's context.
/// Row-major per tensor (`[n, width]`); buffers holding several products'
/// outputs are carved per call as `[n * rows_0 | n * rows_1 | ...]`, so for
/// one token they are one contiguous vector (one pooled job for all of them).
pub struct Activations<'a> {
    cap: usize,
    /// `[cap, dim]` residual streams.
    x: Slab<'a, f32>,
    /// `[cap, dim]` normalised inputs (and normalised block outputs).
    xn: Slab<'a, f32>,
    /// `[cap * (q_dim + 2 kv_dim)]` queries, keys and values.
    qkv: Slab<'a, f32>,
    /// `[cap, q_dim]` attention outputs.
    att: Slab<'a, f32>,
    /// `[cap, dim]` projection outputs before the residual add.
    proj: Slab<'a, f32>,
    /// `[cap * 2 * ffn]` gate then up activations (plain MLP: up only).
    ffn: Slab<'a, f32>,
    /// `[cap, max_in / QK]` the current matrix inputs quantized to Q8_0.
    xq: Slab<'a, BlockQ8_0>,
    /// `[cap, attn_stride]` per-token attention workspace: the token's output
    /// (`q_dim`), the scores of one attention call's heads (`attend_heads *
    /// context`) and a widened key/value row (`head_dim`), so the tokens of a
    /// pass attend on different threads without sharing scratch.
    attn: Slab<'a, f32>,
    attn_stride: usize,
    /// `[head_dim]` one head's normalised query or key (QK norm).
    head: Slab<'a, f32>,
    /// `[kinds * pairs]` RoPE inverse frequencies of each kind (after scaling).
    inv_freq: Slab<'a, f32>,
    /// `[cap, kinds * 2 * pairs]` the RoPE tables of the pass's positions:
    /// per token and kind, cosines then sines (`scalar::rope_angles_f32`,
    /// times YaRN's attention factor), shared by every layer and head.
    rope: Slab<'a, f32>,
    /// `[vocab]` the logits after the last row.
    pub(crate) logits: Slab<'a, f32>,
    /// The attached LoRA adapter and input observer, if any
    /// (`Session::set_lora`, `Session::set_observer`); heap-owned, not part of
    /// `buffer_sizes`.
    pub(crate) hooks: MatrixHooks,
}

/// Blocks needed to quantize the widest matrix input of one row.
fn xq_blocks(cfg: &ModelConfig) -> usize {
    cfg.dim.max(cfg.q_dim()).max(cfg.ffn_dim) / QK
}

/// Elements of one token's attention workspace row.
fn attn_stride(cfg: &ModelConfig, context: usize) -> usize {
    cfg.q_dim() + attend_heads(cfg) * context + cfg.head_dim
}

impl<'a> Activations<'a> {
    /// Rows per pass for a prefill batch setting: `min(batch, MAX_BATCH)`.
    pub fn capacity(batch: usize) -> usize {
        batch.clamp(1, MAX_BATCH)
    }

    /// Element counts of the buffers, in the order `new_with` takes them
    /// (`xq` counts blocks).
    fn elements(cfg: &ModelConfig, cap: usize, context: usize) -> [usize; 12] {
        let kinds = cfg.ropes.len();
        let pairs = cfg.rope_pairs();
        [
            cap * cfg.dim,
            cap * cfg.dim,
            cap * (cfg.q_dim() + 2 * cfg.kv_dim()),
            cap * cfg.q_dim(),
            cap * cfg.dim,
            cap * 2 * cfg.ffn_dim,
            cap * xq_blocks(cfg),
            cap * attn_stride(cfg, context),
            cfg.head_dim,
            kinds * pairs,
            cap * kinds * 2 * pairs,
            cfg.vocab_size,
        ]
    }

    /// Byte sizes of the buffers `new_with` takes, in the order it takes them.
    pub(crate) fn buffer_sizes(cfg: &ModelConfig, cap: usize, context: usize) -> [usize; 12] {
        let e = Self::elements(cfg, cap, context);
        let mut s = e.map(|n| n * std::mem::size_of::<f32>());
        s[6] = e[6] * std::mem::size_of::<BlockQ8_0>();
        s
    }

    /// Takes every buffer from `alloc` (the heap, or a session arena), zeroed,
    /// and fills the RoPE frequencies (`inv_freq`: one vector per kind).
    pub(crate) fn new_with(
        cfg: &ModelConfig,
        cap: usize,
        context: usize,
        inv_freq: &[Vec<f32>],
        alloc: &mut Alloc<'_, 'a>,
    ) -> Result<Self> {
        let [x, xn, qkv, att, proj, ffn, xq, attn, head, freqs, rope, logits] =
            Self::elements(cfg, cap, context);
        let mut act = Self {
            cap,
            x: alloc.zeroed(x)?,
            xn: alloc.zeroed(xn)?,
            qkv: alloc.zeroed(qkv)?,
            att: alloc.zeroed(att)?,
            proj: alloc.zeroed(proj)?,
            ffn: alloc.zeroed(ffn)?,
            xq: alloc.zeroed(xq)?,
            attn: alloc.zeroed(attn)?,
            attn_stride: attn_stride(cfg, context),
            head: alloc.zeroed(head)?,
            inv_freq: alloc.zeroed(freqs)?,
            rope: alloc.zeroed(rope)?,
            logits: alloc.zeroed(logits)?,
            hooks: MatrixHooks::default(),
        };
        for (dst, src) in act
            .inv_freq
            .chunks_exact_mut(cfg.rope_pairs())
            .zip(inv_freq)
        {
            dst.copy_from_slice(src);
        }
        Ok(act)
    }

    /// Rows one pass holds.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The logits after the last row of the latest pass.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Fills the RoPE table of every kind for positions `pos..pos + n`.
    fn rope_tables(&mut self, cfg: &ModelConfig, pos: usize, n: usize) {
        let pairs = cfg.rope_pairs();
        let per_token = cfg.ropes.len() * 2 * pairs;
        for (t, table) in self.rope.chunks_exact_mut(per_token).take(n).enumerate() {
            for ((rope, inv), cs) in cfg
                .ropes
                .iter()
                .zip(self.inv_freq.chunks_exact(pairs))
                .zip(table.chunks_exact_mut(2 * pairs))
            {
                let (cos, sin) = cs.split_at_mut(pairs);
                k::rope_angles_f32(pos + t, inv, cos, sin);
                if rope.attn_factor != 1.0 {
                    cs.iter_mut().for_each(|v| *v *= rope.attn_factor);
                }
            }
        }
    }
}

/// Most query heads per attention call: each key/value head's group of query
/// heads is split into the kernels' passes (`scalar::attend_passes`: at most
/// `ATTEND_GROUP_MAX`, as even as possible, 8 = 3 + 3 + 2), one call per
/// pass. The attention scores scratch holds this many rows of the context.
pub(crate) fn attend_heads(cfg: &ModelConfig) -> usize {
    k::attend_passes(cfg.group_size())
        .map(|(_, heads)| heads)
        .max()
        .unwrap_or(1)
}

/// The attention calls of one token, as `(kv_head, first query head, heads)`:
/// consecutive query heads of one key/value head, one kernel pass each.
pub(crate) fn attend_calls(cfg: &ModelConfig) -> impl Iterator<Item = (usize, usize, usize)> {
    let group = cfg.group_size();
    (0..cfg.n_kv_heads).flat_map(move |kvh| {
        k::attend_passes(group).map(move |(g, heads)| (kvh, kvh * group + g, heads))
    })
}

/// Runs `tokens` (1..=`act.cap()` of them) at positions `pos..pos + n`
/// through every layer, writing their keys and values into `kv` and the
/// logits after the last token into `act.logits`.
///
/// Contract (checked by the session): ids below `vocab_size`,
/// `pos + n <= kv.context()`, positions `0..pos` of `kv` hold this
/// sequence's earlier tokens. Large products are split over the threads of
/// `pool`; the results do not depend on the thread count or on how a prompt
/// is cut into passes.
pub fn forward_rows(
    model: &Model,
    act: &mut Activations<'_>,
    kv: &mut KvCache,
    pool: &mut Pool,
    tokens: &[u32],
    pos: usize,
) {
    run_layers(model, act, kv, pool, tokens, pos);
    block::logits(model, act, pool, tokens.len());
}

/// Rows of logits one product computes in [`forward_rows_with_logits`]: its
/// scratch holds this many rows of the vocabulary.
pub const LOGIT_ROWS: usize = 16;

/// [`forward_rows`], also passing the logits after every token to
/// `on_logits(i, logits)`, in order (`i` indexes `tokens`), for evaluation.
/// They are computed [`LOGIT_ROWS`] at a time by matrix-matrix products into
/// `scratch` (at least `LOGIT_ROWS.min(n) * vocab` floats); `act.logits` ends
/// as [`forward_rows`] leaves it.
#[allow(clippy::too_many_arguments)] // forward_rows' arguments plus the output
pub fn forward_rows_with_logits(
    model: &Model,
    act: &mut Activations<'_>,
    kv: &mut KvCache,
    pool: &mut Pool,
    tokens: &[u32],
    pos: usize,
    scratch: &mut [f32],
    on_logits: &mut dyn FnMut(usize, &[f32]),
) {
    run_layers(model, act, kv, pool, tokens, pos);
    let (n, vocab) = (tokens.len(), model.config().vocab_size);
    for first in (0..n).step_by(LOGIT_ROWS) {
        let k = LOGIT_ROWS.min(n - first);
        let out = &mut scratch[..k * vocab];
        block::logits_rows(model, act, pool, first, k, out);
        for (r, row) in out.chunks_exact(vocab).enumerate() {
            on_logits(first + r, row);
        }
        if first + k == n {
            act.logits.copy_from_slice(&out[(k - 1) * vocab..]);
        }
    }
}

/// Embeds `tokens` and runs them through every layer (the body of
/// [`forward_rows`] before the logits).
fn run_layers(
    model: &Model,
    act: &mut Activations<'_>,
    kv: &mut KvCache,
    pool: &mut Pool,
    tokens: &[u32],
    pos: usize,
) {
    let n = tokens.len();
    assert!(
        n >= 1 && n <= act.cap,
        "pass of {n} tokens, capacity {}",
        act.cap
    );
    let cfg = model.config();
    let dim = cfg.dim;
    kv.make_room(pos, n);
    for (&tok, xr) in tokens.iter().zip(act.x.chunks_exact_mut(dim)) {
        model.embed(tok as usize, xr);
    }
    act.rope_tables(cfg, pos, n);
    for (l, li) in model.layers.iter().enumerate() {
        block::layer(model, l, li, act, kv, pool, n, pos);
    }
}

/// [`forward_rows`] for one token.
pub fn forward(
    model: &Model,
    act: &mut Activations<'_>,
    kv: &mut KvCache,
    pool: &mut Pool,
    token: u32,
    pos: usize,
) {
    forward_rows(model, act, kv, pool, &[token], pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::HyperParams;

    fn config(n_heads: u32, n_kv_heads: u32) -> ModelConfig {
        ModelConfig::decode(&HyperParams {
            architecture: 1,
            activation: 1,
            dim: 64,
            n_layers: 1,
            n_heads,
            n_kv_heads,
            head_dim: 8,
            ffn_dim: 64,
            vocab_size: 16,
            max_context: 16,
            rope_pairing: 1,
            rope_dim: 8,
            rope_theta: 10000.0,
            norm: 1,
            ..Default::default()
        })
        .unwrap()
    }

    /// Every query head is served exactly once, in order, by a call over its
    /// own key/value head, with at most `ATTEND_GROUP_MAX` heads per call and
    /// the calls of a group as even as possible.
    #[test]
    fn attend_calls_cover_each_group_evenly() {
        let cases = [
            (1, 1, vec![1]),
            (4, 4, vec![1]),
            (4, 2, vec![2]),
            (9, 3, vec![3]),
            (8, 2, vec![2, 2]),
            (5, 1, vec![3, 2]),
            (7, 1, vec![3, 2, 2]),
            (32, 4, vec![3, 3, 2]),
            (32, 2, vec![3, 3, 3, 3, 2, 2]),
        ];
        for (n_heads, n_kv_heads, per_group) in cases {
            let cfg = config(n_heads, n_kv_heads);
            let calls: Vec<_> = attend_calls(&cfg).collect();
            let group = (n_heads / n_kv_heads) as usize;
            let mut next = 0;
            for (i, &(kv_head, h, heads)) in calls.iter().enumerate() {
                assert_eq!(
                    h, next,
                    "{n_heads}/{n_kv_heads}: call {i} starts at head {h}"
                );
                assert_eq!(kv_head, h / group, "{n_heads}/{n_kv_heads}: call {i}");
                assert_eq!((h + heads - 1) / group, kv_head, "call {i} crosses groups");
                assert_eq!(
                    heads,
                    per_group[i % per_group.len()],
                    "{n_heads}/{n_kv_heads}"
                );
                assert!(heads <= attend_heads(&cfg) && heads <= k::ATTEND_GROUP_MAX);
                next += heads;
            }
            assert_eq!(
                next, n_heads as usize,
                "{n_heads}/{n_kv_heads}: heads served"
            );
        }
    }
}
