//! One transformer layer over the `n` rows of a pass, as the model's
//! [`ModelConfig`](crate::config::ModelConfig) describes it: the attention
//! block, then the feed-forward block, each `x += post_norm(f(norm(x)))`.

use super::ops::{self, Norm};
use super::{attend_calls, Activations};
use crate::kv_cache::KvCache;
use crate::lora::LoraTarget;
use crate::model::{LayerIndex, Model};
use crate::pool::Pool;

/// Runs layer `l` (weights `li`) for the `n` rows of `act` at positions
/// `pos..pos + n`.
#[allow(clippy::too_many_arguments)]
pub(super) fn layer(
    model: &Model,
    l: usize,
    li: &LayerIndex,
    act: &mut Activations<'_>,
    kv: &mut KvCache,
    pool: &mut Pool,
    n: usize,
    pos: usize,
) {
    attention_block(model, l, li, act, kv, pool, n, pos);
    feed_forward_block(model, l, li, act, pool, n);
}

/// `x += post_attn_norm(Wo attention(rope(qk_norm(W{q,k,v} norm(x)))) + bo)`.
#[allow(clippy::too_many_arguments)]
fn attention_block(
    model: &Model,
    l: usize,
    li: &LayerIndex,
    act: &mut Activations<'_>,
    kv: &mut KvCache,
    pool: &mut Pool,
    n: usize,
    pos: usize,
) {
    let cfg = model.config();
    let (dim, q_dim, kv_dim) = (cfg.dim, cfg.q_dim(), cfg.kv_dim());
    let x = &act.x[..n * dim];
    let xn = &mut act.xn[..n * dim];
    Norm::new(model, li.attn_norm).rows(model, pool, xn, x);

    // Queries, keys and values: [n * q_dim | n * kv_dim | n * kv_dim].
    let qkv = &mut act.qkv[..n * (q_dim + 2 * kv_dim)];
    let mats = [li.wq, li.wk, li.wv].map(|i| model.weights(i));
    ops::products(model, &mats, li.rotate_qkv, xn, n, &mut act.xq, qkv, pool);
    let (q, kv_new) = qkv.split_at_mut(n * q_dim);
    let (k, v) = kv_new.split_at_mut(n * kv_dim);
    let hooks = &mut act.hooks;
    ops::hook_rows(hooks, l, LoraTarget::Q, xn, q, n);
    ops::hook_rows(hooks, l, LoraTarget::K, xn, k, n);
    ops::hook_rows(hooks, l, LoraTarget::V, xn, v, n);
    for (out, bias) in [(&mut *q, li.bq), (&mut *k, li.bk), (&mut *v, li.bv)] {
        if let Some(b) = bias {
            ops::add_bias_rows(model, pool, out, model.vector(b));
        }
    }
    if let (Some(qn), Some(kn)) = (li.q_norm, li.k_norm) {
        Norm::new(model, qn).heads_in_place(model, q, &mut act.head);
        Norm::new(model, kn).heads_in_place(model, k, &mut act.head);
    }

    // RoPE with the layer's kind, then the keys and values enter the cache.
    let pairs = cfg.rope_pairs();
    let per_token = cfg.ropes.len() * 2 * pairs;
    let kind = cfg.layers[l].rope;
    let (head_dim, layout) = (cfg.head_dim, cfg.rope_layout());
    for t in 0..n {
        let table = &act.rope[t * per_token + kind * 2 * pairs..][..2 * pairs];
        let (cos, sin) = table.split_at(pairs);
        let qt = &mut q[t * q_dim..][..q_dim];
        let kt = &mut k[t * kv_dim..][..kv_dim];
        (model.kernels.rope_f32)(qt, head_dim, cos, sin, layout);
        (model.kernels.rope_f32)(kt, head_dim, cos, sin, layout);
        let (k_row, v_row) = kv.rows_mut(l, pos + t);
        k_row.copy_from_slice(kt);
        v_row.copy_from_slice(&v[t * kv_dim..][..kv_dim]);
    }
    // Every row's key and value is in the cache; each row attends to
    // positions up to its own, so the rows are independent.
    kv.flush();
    attend_rows(model, act, kv, pool, l, n, pos);

    let att = &act.att[..n * q_dim];
    let proj = &mut act.proj[..n * dim];
    let wo = [model.weights(li.wo)];
    ops::products(model, &wo, li.rotate_wo, att, n, &mut act.xq, proj, pool);
    ops::hook_rows(&mut act.hooks, l, LoraTarget::O, att, proj, n);
    residual(model, act, pool, n, li.bo, li.post_attn_norm);
}

/// `x += post_norm(proj + bias)` for the `n` rows (`proj` holds a block's
/// output; `xn` is free by then and takes the normalised output).
fn residual(
    model: &Model,
    act: &mut Activations<'_>,
    pool: &mut Pool,
    n: usize,
    bias: Option<usize>,
    post_norm: Option<crate::model::NormIndex>,
) {
    let dim = model.config().dim;
    let proj = &mut act.proj[..n * dim];
    if let Some(b) = bias {
        ops::add_bias_rows(model, pool, proj, model.vector(b));
    }
    let x = &mut act.x[..n * dim];
    match post_norm {
        Some(norm) => {
            let out = &mut act.xn[..n * dim];
            Norm::new(model, norm).rows(model, pool, out, proj);
            ops::add_rows(model, pool, x, out);
        }
        None => ops::add_rows(model, pool, x, proj),
    }
}

/// `x += post_ffn_norm(W_down act(W_gate h) * W_up h + b_down)`, `h =
/// ffn_norm(x)` (plain MLP: `W_down act(W_up h)`).
fn feed_forward_block(
    model: &Model,
    l: usize,
    li: &LayerIndex,
    act: &mut Activations<'_>,
    pool: &mut Pool,
    n: usize,
) {
    let cfg = model.config();
    let (dim, ffn) = (cfg.dim, cfg.ffn_dim);
    let x = &act.x[..n * dim];
    let xn = &mut act.xn[..n * dim];
    Norm::new(model, li.ffn_norm).rows(model, pool, xn, x);

    // [n * ffn gate | n * ffn up], or [n * ffn up] without a gate.
    let up_w = model.weights(li.w_up);
    let gate_up;
    let mats = match li.w_gate {
        Some(g) => {
            gate_up = [model.weights(g), up_w];
            &gate_up[..]
        }
        None => std::slice::from_ref(&up_w),
    };
    let width = mats.len() * n * ffn;
    let hidden = &mut act.ffn[..width];
    ops::products(
        model,
        mats,
        li.rotate_gate_up,
        xn,
        n,
        &mut act.xq,
        hidden,
        pool,
    );
    let (gate, up) = hidden.split_at_mut(width - n * ffn);
    let hooks = &mut act.hooks;
    if li.w_gate.is_some() {
        ops::hook_rows(hooks, l, LoraTarget::Gate, xn, gate, n);
    }
    ops::hook_rows(hooks, l, LoraTarget::Up, xn, up, n);
    if let Some(bu) = li.b_up {
        ops::add_bias_rows(model, pool, up, model.vector(bu));
    }
    let activated: &[f32] = if li.w_gate.is_some() {
        let kern = &model.kernels;
        let gated = ops::gate_kernel(model);
        let bg = li.b_gate.map(|b| model.vector(b));
        let up = &*up;
        pool.split_rows(gate, ffn, &|first, part| {
            let up = &up[first..first + part.len()];
            for (g, u) in part.chunks_exact_mut(ffn).zip(up.chunks_exact(ffn)) {
                if let Some(bg) = bg {
                    (kern.add_f32)(g, bg);
                }
                gated(g, u);
            }
        });
        gate
    } else {
        ops::activate_rows(model, pool, up);
        up
    };

    let proj = &mut act.proj[..n * dim];
    let down = [model.weights(li.w_down)];
    ops::products(
        model,
        &down,
        li.rotate_down,
        activated,
        n,
        &mut act.xq,
        proj,
        pool,
    );
    ops::hook_rows(&mut act.hooks, l, LoraTarget::Down, activated, proj, n);
    residual(model, act, pool, n, li.b_down, li.post_ffn_norm);
}

/// The attention of the `n` rows at positions `pos..pos + n` of `layer`
/// (queries in `act.qkv`, keys and values stored in `kv`), into `act.att`:
/// per token and head over the layer's window, split by token over the
/// pool. Workspace row `r` serves token `zigzag(r, n)`: token `t` attends to
/// up to `pos + t + 1` positions, so consecutive rows pair a short token with
/// a long one and every chunk of rows the pool hands out gets about the same
/// work.
fn attend_rows(
    model: &Model,
    act: &mut Activations<'_>,
    kv: &KvCache,
    pool: &mut Pool,
    layer: usize,
    n: usize,
    pos: usize,
) {
    let cfg = model.config();
    let kern = &model.kernels;
    let (q_dim, head_dim) = (cfg.q_dim(), cfg.head_dim);
    let kind = cfg.layers[layer];
    let scale = cfg.attn_scale;
    let stride = act.attn_stride;
    let q = &act.qkv[..n * q_dim];
    let work = &mut act.attn[..n * stride];
    pool.split_rows(work, stride, &|first, rows| {
        for (i, row) in rows.chunks_exact_mut(stride).enumerate() {
            let t = zigzag(first / stride + i, n);
            let p = pos + t;
            let from = kind.window_start(p);
            let (out, rest) = row.split_at_mut(q_dim);
            let (scores, widened) = rest.split_at_mut(stride - q_dim - head_dim);
            for (kv_head, h, heads) in attend_calls(cfg) {
                kv.attend_shared(
                    kern,
                    layer,
                    kv_head,
                    &q[t * q_dim + h * head_dim..][..heads * head_dim],
                    from,
                    p,
                    scale,
                    scores,
                    widened,
                    &mut out[h * head_dim..][..heads * head_dim],
                );
            }
        }
    });
    for (r, row) in act.attn.chunks_exact(stride).take(n).enumerate() {
        act.att[zigzag(r, n) * q_dim..][..q_dim].copy_from_slice(&row[..q_dim]);
    }
}

/// The token served by row `r` of `n`: 0, n - 1, 1, n - 2, 2, ... (a
/// permutation of `0..n`).
fn zigzag(r: usize, n: usize) -> usize {
    match r % 2 {
        0 => r / 2,
        _ => n - 1 - r / 2,
    }
}

/// The logits after the last of the `n` rows (the others are never read):
/// `W_out norm(x)`, soft-capped when the model says so.
pub(super) fn logits(model: &Model, act: &mut Activations<'_>, pool: &mut Pool, n: usize) {
    let dim = model.config().dim;
    let last = &act.x[(n - 1) * dim..n * dim];
    let xn = &mut act.xn[..dim];
    Norm::new(model, model.norm).row(model, xn, last);
    let out = [model.weights(model.output)];
    let logits = &mut act.logits[..];
    ops::products(
        model,
        &out,
        model.rotate_output,
        xn,
        1,
        &mut act.xq,
        logits,
        pool,
    );
    if let Some(c) = model.config().logit_softcap {
        ops::softcap(logits, c);
    }
}

/// The logits after rows `first..first + k` of the pass into `out`
/// (`[k, vocab]`): the final norm of each row, then one matrix-matrix product
/// with the output matrix (soft-capped when the model asks).
pub(super) fn logits_rows(
    model: &Model,
    act: &mut Activations<'_>,
    pool: &mut Pool,
    first: usize,
    k: usize,
    out: &mut [f32],
) {
    let dim = model.config().dim;
    let rows = &act.x[first * dim..(first + k) * dim];
    let xn = &mut act.xn[..k * dim];
    Norm::new(model, model.norm).rows(model, pool, xn, rows);
    let mats = [model.weights(model.output)];
    ops::products(
        model,
        &mats,
        model.rotate_output,
        xn,
        k,
        &mut act.xq,
        out,
        pool,
    );
    if let Some(c) = model.config().logit_softcap {
        for row in out.chunks_exact_mut(model.config().vocab_size) {
            ops::softcap(row, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::zigzag;

    /// Rows map to every token once, pairing short and long attention rows.
    #[test]
    fn zigzag_is_a_balanced_permutation() {
        for n in 1..=70 {
            let mut seen = vec![false; n];
            for r in 0..n {
                let t = zigzag(r, n);
                assert!(t < n && !seen[t], "n {n}: row {r} -> token {t}");
                seen[t] = true;
                if r % 2 == 1 {
                    assert_eq!(zigzag(r - 1, n) + t, n - 1, "n {n}: pair {r}");
                }
            }
        }
        assert_eq!(
            (0..6).map(|r| zigzag(r, 6)).collect::<Vec<_>>(),
            [0, 5, 1, 4, 2, 3]
        );
    }
}
