//! The forward pass: the scalar f32 reference for the Llama family, one
//! commented step per block.
//! ```text
//! x = embed[token]
//! for each layer:
//!     h = rmsnorm(x) * attn_norm
//!     q, k, v = Wq h (+bq), Wk h (+bk), Wv h (+bv);  rope(q, k, pos)
//!     cache[pos] = k, v
//!     per query head: softmax(q . K[window..=pos] / sqrt(head_dim)) . V   (its KV group)
//!     x += Wo attn (+bo)
//!     h = rmsnorm(x) * ffn_norm
//!     x += W_down (act(W_gate h) * (W_up h))
//! logits = W_out rmsnorm(x) * norm
//! ```

use ember_kernels::scalar::{self as k, RopeLayout};

mod batch;
pub use batch::{forward_batch, BatchBuffers, MAX_BATCH};

use crate::error::Result;
use crate::format::{Activation, HyperParams, RopePairing};
use crate::kv_cache::KvCache;
use crate::lora::{lora_hook, LoraTarget, MatrixHooks};
use crate::model::{Input, Model, Weights};
use crate::pool::Pool;
use crate::rope::inverse_frequencies;
use crate::session::arena::{Alloc, Slab};
use ember_kernels::arch::Kernels;
use ember_kernels::blocks::{BlockQ8_0, QK};

/// Activation buffers of one forward pass, sized once from the hyperparameters.
pub struct ForwardBuffers<'a> {
    /// `[dim]` residual stream.
    x: Slab<'a, f32>,
    /// `[dim]` normalised input of the current sub-block.
    xn: Slab<'a, f32>,
    /// `[q_dim + 2 * kv_dim]` queries, then the key and value of the current
    /// position (computed together, then copied into the cache).
    qkv: Slab<'a, f32>,
    /// `[q_dim]` attention output (all heads).
    att_out: Slab<'a, f32>,
    /// `[dim]` projection output before the residual add.
    proj: Slab<'a, f32>,
    /// `[attend_heads * context]` attention scores of one call's heads.
    scores: Slab<'a, f32>,
    /// `[2 * ffn]` gate activations, then up activations (computed together).
    gate_up: Slab<'a, f32>,
    /// `[vocab]` output.
    pub(crate) logits: Slab<'a, f32>,
    /// `[rope_dim / 2]` RoPE inverse frequencies (after scaling).
    inv_freq: Slab<'a, f32>,
    /// `[2 * (rope_dim / 2)]` the RoPE table of the current position: cosines,
    /// then sines (`scalar::rope_angles_f32`), shared by every layer and head.
    rope_cs: Slab<'a, f32>,
    /// `[max(dim, q_dim, ffn) / QK]` the current matrix input quantized to Q8_0
    /// (used when the model has quantized matrices).
    xq: Slab<'a, BlockQ8_0>,
    /// The attached LoRA adapter and input observer, if any
    /// (`Session::set_lora`, `Session::set_observer`); heap-owned, not part of
    /// `buffer_sizes`.
    pub(crate) hooks: MatrixHooks,
}

/// Blocks needed to quantize the widest matrix input.
fn xq_blocks(hp: &HyperParams) -> usize {
    (hp.dim as usize).max(hp.q_dim()).max(hp.ffn_dim as usize) / QK
}

/// The matrix input for `x`: quantized into `xq` (rotated first when the
/// matrices reading it are stored rotated, `rotate`) when the model has
/// quantized matrices (the loader guarantees their row length is a multiple of
/// `QK`).
fn input<'a>(
    kern: &Kernels,
    x: &'a [f32],
    xq: &'a mut [BlockQ8_0],
    quantize: bool,
    rotate: bool,
) -> Input<'a> {
    if quantize && x.len() % QK == 0 {
        Input::quantized_for(kern, x, xq, rotate)
    } else {
        Input::f32(x)
    }
}

impl<'a> ForwardBuffers<'a> {
    /// Takes every buffer from `alloc` (the heap, or a session arena), zeroed, in
    /// the order of [`ForwardBuffers::buffer_sizes`].
    pub(crate) fn new_with(
        hp: &HyperParams,
        context: usize,
        alloc: &mut Alloc<'_, 'a>,
    ) -> Result<Self> {
        let dim = hp.dim as usize;
        let mut inv_freq: Slab<'a, f32> = alloc.zeroed(hp.rope_dim as usize / 2)?;
        inv_freq.copy_from_slice(&inverse_frequencies(hp));
        Ok(Self {
            x: alloc.zeroed(dim)?,
            xn: alloc.zeroed(dim)?,
            qkv: alloc.zeroed(hp.q_dim() + 2 * hp.kv_dim())?,
            att_out: alloc.zeroed(hp.q_dim())?,
            proj: alloc.zeroed(dim)?,
            scores: alloc.zeroed(attend_heads(hp) * context)?,
            gate_up: alloc.zeroed(2 * hp.ffn_dim as usize)?,
            logits: alloc.zeroed(hp.vocab_size as usize)?,
            inv_freq,
            xq: alloc.zeroed(xq_blocks(hp))?,
            rope_cs: alloc.zeroed(2 * (hp.rope_dim as usize / 2))?,
            hooks: MatrixHooks::default(),
        })
    }

    /// Byte sizes of the buffers `new_with` takes, in the order it takes them.
    pub(crate) fn buffer_sizes(hp: &HyperParams, context: usize) -> [usize; 11] {
        let f = std::mem::size_of::<f32>();
        let dim = hp.dim as usize;
        [
            f * (hp.rope_dim as usize / 2),
            f * dim,
            f * dim,
            f * (hp.q_dim() + 2 * hp.kv_dim()),
            f * hp.q_dim(),
            f * dim,
            f * attend_heads(hp) * context,
            f * 2 * hp.ffn_dim as usize,
            f * hp.vocab_size as usize,
            std::mem::size_of::<BlockQ8_0>() * xq_blocks(hp),
            f * 2 * (hp.rope_dim as usize / 2),
        ]
    }

    /// Bytes `new_with` takes in total (unpadded: what the heap allocates).
    pub fn bytes_required(hp: &HyperParams, context: usize) -> usize {
        Self::buffer_sizes(hp, context).iter().sum()
    }

    pub fn logits(&self) -> &[f32] {
        &self.logits
    }
}

/// Query heads per key/value head (the grouped-query group).
fn group_size(hp: &HyperParams) -> usize {
    (hp.n_heads / hp.n_kv_heads.max(1)).max(1) as usize
}

/// Most query heads per attention call: each key/value head's group of query
/// heads is split into the kernels' passes (`scalar::attend_passes`: at most
/// `ATTEND_GROUP_MAX`, as even as possible, 8 = 3 + 3 + 2), one call per
/// pass. The attention scores scratch holds this many rows of the context.
pub(crate) fn attend_heads(hp: &HyperParams) -> usize {
    k::attend_passes(group_size(hp))
        .map(|(_, heads)| heads)
        .max()
        .unwrap_or(1)
}

/// The attention calls of one token, as `(kv_head, first query head, heads)`:
/// consecutive query heads of one key/value head, one kernel pass each.
pub(crate) fn attend_calls(hp: &HyperParams) -> impl Iterator<Item = (usize, usize, usize)> {
    let group = group_size(hp);
    (0..hp.n_kv_heads as usize).flat_map(move |kvh| {
        k::attend_passes(group).map(move |(g, heads)| (kvh, kvh * group + g, heads))
    })
}

/// First position the query at `pos` attends to: positions `j` with
/// `pos - j < sliding_window` (all of `0..=pos` without a window).
fn window_start(hp: &HyperParams, pos: usize) -> usize {
    match hp.sliding_window {
        0 => 0,
        w => (pos + 1).saturating_sub(w as usize),
    }
}

/// Runs `token` at position `pos` through the model, writing its keys and values
/// into `kv` and the next-token logits into `buf.logits`.
///
/// Contract (checked by the caller): `token < vocab_size`, `pos < kv.context()`,
/// positions `0..pos` of `kv` hold this sequence's earlier tokens.
///
/// Large matrix-vector products are split over the threads of `pool`
/// (`Weights::matvec_input_threaded`); the results do not depend on it.
pub fn forward(
    model: &Model,
    buf: &mut ForwardBuffers<'_>,
    kv: &mut KvCache,
    pool: &mut Pool,
    token: u32,
    pos: usize,
) {
    let hp = model.hparams();
    let kern = &model.kernels;
    let quant = model.has_quantized;
    let dim = hp.dim as usize;
    let (q_dim, kv_dim, ffn) = (hp.q_dim(), hp.kv_dim(), hp.ffn_dim as usize);
    let head_dim = hp.head_dim as usize;
    let eps = hp.norm_eps;
    let layout = match RopePairing::from_u32(hp.rope_pairing) {
        Some(RopePairing::Half) => RopeLayout::Half,
        _ => RopeLayout::Interleaved,
    };
    let scale = 1.0 / (head_dim as f32).sqrt();
    let first = window_start(hp, pos);

    // x = embedding row of the token.
    model.embed(token as usize, &mut buf.x);

    // RoPE table of this position: cos/sin computed once for all layers and heads.
    let (cos, sin) = buf.rope_cs.split_at_mut(buf.inv_freq.len());
    k::rope_angles_f32(pos, &buf.inv_freq, cos, sin);

    for (l, li) in model.layers.iter().enumerate() {
        // --- attention block ---
        (kern.rmsnorm_f32)(&mut buf.xn, &buf.x, model.vector(li.attn_norm), eps);
        let xin = input(kern, &buf.xn, &mut buf.xq, quant, li.rotate_qkv);
        let qkv_w = [
            model.weights(li.wq),
            model.weights(li.wk),
            model.weights(li.wv),
        ];
        Weights::matvec_many_input_threaded(&qkv_w, kern, &xin, &mut buf.qkv, pool);
        let (q, kv_new) = buf.qkv.split_at_mut(q_dim);
        let (k_new, v_new) = kv_new.split_at_mut(kv_dim);
        lora_hook(&mut buf.hooks, l, LoraTarget::Q, &buf.xn, q);
        lora_hook(&mut buf.hooks, l, LoraTarget::K, &buf.xn, k_new);
        lora_hook(&mut buf.hooks, l, LoraTarget::V, &buf.xn, v_new);
        if let (Some(bq), Some(bk), Some(bv)) = (li.bq, li.bk, li.bv) {
            (kern.add_f32)(q, model.vector(bq));
            (kern.add_f32)(k_new, model.vector(bk));
            (kern.add_f32)(v_new, model.vector(bv));
        }
        let (cos, sin) = buf.rope_cs.split_at(buf.inv_freq.len());
        (kern.rope_f32)(q, head_dim, cos, sin, layout);
        (kern.rope_f32)(k_new, head_dim, cos, sin, layout);
        let (k_row, v_row) = kv.rows_mut(l, pos);
        k_row.copy_from_slice(k_new);
        v_row.copy_from_slice(v_new);
        let q = &buf.qkv[..q_dim];

        for (kv_head, h, heads) in attend_calls(hp) {
            let heads_q = &q[h * head_dim..][..heads * head_dim];
            let out = &mut buf.att_out[h * head_dim..][..heads * head_dim];
            kv.attend(
                kern,
                l,
                kv_head,
                heads_q,
                first,
                pos,
                scale,
                &mut buf.scores,
                out,
            );
        }
        let ain = input(kern, &buf.att_out, &mut buf.xq, quant, li.rotate_wo);
        model
            .weights(li.wo)
            .matvec_input_threaded(kern, &ain, &mut buf.proj, pool);
        lora_hook(
            &mut buf.hooks,
            l,
            LoraTarget::O,
            &buf.att_out,
            &mut buf.proj,
        );
        if let Some(bo) = li.bo {
            (kern.add_f32)(&mut buf.proj, model.vector(bo));
        }
        (kern.add_f32)(&mut buf.x, &buf.proj);

        // --- feed-forward block ---
        (kern.rmsnorm_f32)(&mut buf.xn, &buf.x, model.vector(li.ffn_norm), eps);
        let xin = input(kern, &buf.xn, &mut buf.xq, quant, li.rotate_gate_up);
        let gate_up_w = [model.weights(li.w_gate), model.weights(li.w_up)];
        Weights::matvec_many_input_threaded(&gate_up_w, kern, &xin, &mut buf.gate_up, pool);
        let (gate, up) = buf.gate_up.split_at_mut(ffn);
        lora_hook(&mut buf.hooks, l, LoraTarget::Gate, &buf.xn, gate);
        lora_hook(&mut buf.hooks, l, LoraTarget::Up, &buf.xn, up);
        if let (Some(bg), Some(bu)) = (li.b_gate, li.b_up) {
            (kern.add_f32)(gate, model.vector(bg));
            (kern.add_f32)(up, model.vector(bu));
        }
        match Activation::from_u32(hp.activation) {
            Some(Activation::GeluTanh) => (kern.gelu_gate_f32)(gate, up),
            _ => (kern.silu_gate_f32)(gate, up),
        }
        let gate = &buf.gate_up[..ffn];
        let gin = input(kern, gate, &mut buf.xq, quant, li.rotate_down);
        model
            .weights(li.w_down)
            .matvec_input_threaded(kern, &gin, &mut buf.proj[..dim], pool);
        lora_hook(
            &mut buf.hooks,
            l,
            LoraTarget::Down,
            gate,
            &mut buf.proj[..dim],
        );
        if let Some(bd) = li.b_down {
            (kern.add_f32)(&mut buf.proj, model.vector(bd));
        }
        (kern.add_f32)(&mut buf.x, &buf.proj);
    }

    (kern.rmsnorm_f32)(&mut buf.xn, &buf.x, model.vector(model.norm), eps);
    let xin = input(kern, &buf.xn, &mut buf.xq, quant, model.rotate_output);
    model
        .weights(model.output)
        .matvec_input_threaded(kern, &xin, &mut buf.logits, pool);
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let hp = HyperParams {
                n_heads,
                n_kv_heads,
                ..Default::default()
            };
            let calls: Vec<_> = attend_calls(&hp).collect();
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
                assert!(heads <= attend_heads(&hp) && heads <= k::ATTEND_GROUP_MAX);
                next += heads;
            }
            assert_eq!(
                next, n_heads as usize,
                "{n_heads}/{n_kv_heads}: heads served"
            );
        }
    }
}
