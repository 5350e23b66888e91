//! The batched forward pass for prompt prefill: `n` consecutive tokens go
//! through each layer together, so every weight matrix is read once per batch
//! instead of once per token (f16 and row-interleaved quantized matrices use
//! the matrix-matrix kernels; other types fall back to one product per token).
//!
//! Each token's arithmetic is exactly the single-token pass's (`forward`): the
//! same kernels on the same rows in the same order, and the matrix-matrix
//! kernels promise per-token results identical to their matrix-vector
//! counterparts. So a prompt prefilled in batches leaves the same cache and
//! logits, bit for bit, as one fed token by token.

use ember_kernels::blocks::{BlockQ8_0, QK};
use ember_kernels::scalar::{self as k, RopeLayout};

use super::{attend_calls, attend_heads, input, window_start, xq_blocks, ForwardBuffers};
use crate::error::Result;
use crate::format::{Activation, HyperParams, RopePairing};
use crate::kv_cache::KvCache;
use crate::lora::{lora_hook, LoraTarget};
use crate::model::{quantize_input, Input, Model, Weights};
use crate::pool::Pool;
use crate::session::arena::{Alloc, Slab};

/// Most tokens one batch holds. Each matrix is read once per batch (per
/// thread's share of it), and buffers grow linearly with it: about 125 KiB per
/// token on a 1.1B model at context 2048, 53 KiB on 135M (24 KiB of each are
/// the attention scores of up to three heads, `12 * context` bytes: 24 MiB
/// for a batch at context 32768). 64 prefilled 512
/// tokens of the 1.1B shape 5-13 % faster than 32 on one thread; 128 and 256
/// gained nothing over 64 and 135M did not change (`benches/RESULTS.md`,
/// session 5).
pub const MAX_BATCH: usize = 64;

/// Activation buffers for up to `cap` tokens, token-major (`[cap, width]`).
pub struct BatchBuffers<'a> {
    cap: usize,
    /// `[cap, dim]` residual streams.
    x: Slab<'a, f32>,
    /// `[cap, dim]` normalised inputs.
    xn: Slab<'a, f32>,
    /// `[cap, q_dim]` queries, then attention outputs in `att`.
    q: Slab<'a, f32>,
    att: Slab<'a, f32>,
    /// `[cap, kv_dim]` keys and values before they enter the cache.
    k: Slab<'a, f32>,
    v: Slab<'a, f32>,
    /// `[cap, dim]` projection outputs.
    proj: Slab<'a, f32>,
    /// `[cap, ffn]` gate and up activations.
    gate: Slab<'a, f32>,
    up: Slab<'a, f32>,
    /// `[cap, max_in / QK]` the current inputs quantized to Q8_0.
    xq: Slab<'a, BlockQ8_0>,
    /// `[cap, attn_stride]` per-token attention workspace: the token's
    /// attention output (`q_dim`), the scores of one attention call's heads
    /// (`attend_heads * context`) and a widened key/value row (`head_dim`).
    /// One row per token lets the tokens of a batch attend on different
    /// threads without sharing scratch.
    attn: Slab<'a, f32>,
    /// Elements per `attn` row.
    attn_stride: usize,
}

impl<'a> BatchBuffers<'a> {
    /// Tokens per batch for a prefill batch setting: `min(batch, MAX_BATCH)`.
    pub fn capacity(batch: usize) -> usize {
        batch.clamp(1, MAX_BATCH)
    }

    /// Takes every buffer from `alloc`, zeroed, in the order of `buffer_sizes`.
    pub(crate) fn new_with(
        hp: &HyperParams,
        cap: usize,
        context: usize,
        alloc: &mut Alloc<'_, 'a>,
    ) -> Result<Self> {
        let [x, xn, q, att, kk, v, proj, gate, up, xq, attn] = Self::elements(hp, cap, context);
        Ok(Self {
            cap,
            x: alloc.zeroed(x)?,
            xn: alloc.zeroed(xn)?,
            q: alloc.zeroed(q)?,
            att: alloc.zeroed(att)?,
            k: alloc.zeroed(kk)?,
            v: alloc.zeroed(v)?,
            proj: alloc.zeroed(proj)?,
            gate: alloc.zeroed(gate)?,
            up: alloc.zeroed(up)?,
            xq: alloc.zeroed(xq)?,
            attn: alloc.zeroed(attn)?,
            attn_stride: Self::attn_stride(hp, context),
        })
    }

    /// Elements of one token's attention workspace row.
    fn attn_stride(hp: &HyperParams, context: usize) -> usize {
        hp.q_dim() + attend_heads(hp) * context + hp.head_dim as usize
    }

    /// Element counts of the buffers, in the order `new_with` takes them.
    fn elements(hp: &HyperParams, cap: usize, context: usize) -> [usize; 11] {
        let (dim, ffn) = (hp.dim as usize, hp.ffn_dim as usize);
        [
            cap * dim,
            cap * dim,
            cap * hp.q_dim(),
            cap * hp.q_dim(),
            cap * hp.kv_dim(),
            cap * hp.kv_dim(),
            cap * dim,
            cap * ffn,
            cap * ffn,
            cap * xq_blocks(hp),
            cap * Self::attn_stride(hp, context),
        ]
    }

    /// Byte sizes of the buffers `new_with` takes, in the order it takes them.
    pub(crate) fn buffer_sizes(hp: &HyperParams, cap: usize, context: usize) -> [usize; 11] {
        let e = Self::elements(hp, cap, context);
        let f = std::mem::size_of::<f32>();
        let mut s = e.map(|n| n * f);
        s[9] = e[9] * std::mem::size_of::<BlockQ8_0>();
        s
    }

    /// Tokens one batch holds.
    pub fn cap(&self) -> usize {
        self.cap
    }
}

/// Blocks of a batch's input below which its quantization runs on the calling
/// thread: one token's input of a small model (576 values on 135M is 18
/// blocks), where a pool hand-off would cost about as much as the work; a
/// full 64-token batch of that model (1152 blocks) is above it.
const PARALLEL_QUANT_MIN_BLOCKS: usize = 512;

/// Quantizes the `n` rows of `x` (`[n, cols]`) into `xq` (each block rotated
/// first when the matrices reading it are stored rotated, `rotate`) when the
/// model has quantized matrices and the rows are whole blocks; returns whether
/// it did. One quantization serves every matrix that reads this input. Each
/// block is quantized on its own, so splitting the blocks over the threads of
/// `pool` gives the same bits on any thread count.
fn quantize_rows(
    model: &Model,
    x: &[f32],
    xq: &mut [BlockQ8_0],
    quant: bool,
    rotate: bool,
    n: usize,
    pool: &mut Pool,
) -> bool {
    let cols = x.len() / n;
    if !(quant && cols % QK == 0) {
        return false;
    }
    let xq = &mut xq[..n * cols / QK];
    if xq.len() < PARALLEL_QUANT_MIN_BLOCKS {
        quantize_input(&model.kernels, x, xq, rotate);
    } else {
        pool.split(xq, 1, &|b0, part| {
            let xs = &x[b0 * QK..(b0 + part.len()) * QK];
            quantize_input(&model.kernels, xs, part, rotate)
        });
    }
    true
}

/// `out[t] = W x[t]` for the `n` rows of `x` (`[n, cols]`); `xq` holds them
/// quantized when `quantized` (`quantize_rows`).
#[allow(clippy::too_many_arguments)]
fn project(
    model: &Model,
    w: Weights<'_>,
    x: &[f32],
    xq: &[BlockQ8_0],
    quantized: bool,
    n: usize,
    out: &mut [f32],
    pool: &mut Pool,
) {
    let cols = x.len() / n;
    let rows = out.len() / n;
    let kern = &model.kernels;
    let blocks = cols / QK;
    if w.matmul_f32_input_threaded(kern, x, n, out, pool) {
        return;
    }
    if quantized && w.matmul_input_threaded(kern, &xq[..n * blocks], n, out, pool) {
        return;
    }
    for (t, o) in out.chunks_exact_mut(rows).enumerate() {
        let xr = &x[t * cols..(t + 1) * cols];
        let inp = if quantized {
            Input {
                x: xr,
                q8: &xq[t * blocks..(t + 1) * blocks],
            }
        } else {
            Input::f32(xr)
        };
        w.matvec_input_threaded(kern, &inp, o, pool);
    }
}

/// The LoRA hook of `t` for each of the `n` tokens.
fn lora_rows(
    buf: &mut ForwardBuffers<'_>,
    layer: usize,
    t: LoraTarget,
    x: &[f32],
    out: &mut [f32],
    n: usize,
) {
    if buf.hooks.is_none() {
        return;
    }
    let (cols, rows) = (x.len() / n, out.len() / n);
    for (xr, o) in x.chunks_exact(cols).zip(out.chunks_exact_mut(rows)) {
        lora_hook(&mut buf.hooks, layer, t, xr, o);
    }
}

/// The attention of the `n` tokens of a batch at positions `pos..pos + n` of
/// `layer` (queries in `bb.q`, keys and values stored in `kv`), into `bb.att`:
/// per token and head, exactly `forward`'s `attend`, split by token over the
/// pool. Workspace row `r` serves token `zigzag(r, n)`: token `t` attends to
/// `pos + t + 1` positions, so consecutive rows pair a short token with a long
/// one and every chunk of rows the pool hands out gets about the same work.
#[allow(clippy::too_many_arguments)]
fn attend_batch(
    model: &Model,
    bb: &mut BatchBuffers<'_>,
    kv: &KvCache,
    pool: &mut Pool,
    layer: usize,
    n: usize,
    pos: usize,
    scale: f32,
) {
    let hp = model.hparams();
    let kern = &model.kernels;
    let q_dim = hp.q_dim();
    let head_dim = hp.head_dim as usize;
    let stride = bb.attn_stride;
    let q = &bb.q[..n * q_dim];
    let work = &mut bb.attn[..n * stride];
    pool.split_rows(work, stride, &|first, rows| {
        for (i, row) in rows.chunks_exact_mut(stride).enumerate() {
            let t = zigzag(first / stride + i, n);
            let p = pos + t;
            let from = window_start(hp, p);
            let (out, rest) = row.split_at_mut(q_dim);
            let (scores, widened) = rest.split_at_mut(stride - q_dim - head_dim);
            for (kv_head, h, heads) in attend_calls(hp) {
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
    for (r, row) in bb.attn.chunks_exact(stride).take(n).enumerate() {
        bb.att[zigzag(r, n) * q_dim..][..q_dim].copy_from_slice(&row[..q_dim]);
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

/// `out[t] = rmsnorm(x[t]) * weight` for each row of `x`, split over the
/// pool's threads (rows are independent: the same bits on any thread count).
fn rmsnorm_rows(model: &Model, pool: &mut Pool, out: &mut [f32], x: &[f32], weight: &[f32]) {
    let (kern, dim) = (&model.kernels, weight.len());
    let eps = model.hparams().norm_eps;
    pool.split_rows(out, dim, &|first, part| {
        let x = &x[first..first + part.len()];
        for (o, xr) in part.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
            (kern.rmsnorm_f32)(o, xr, weight, eps);
        }
    });
}

/// The residual add `x[t] += proj[t]` for each row, after `proj[t] += bias`
/// when there is a bias (the single-token path's roundings), split over the
/// pool's threads (rows are independent: the same bits on any thread count).
fn add_rows(model: &Model, pool: &mut Pool, x: &mut [f32], proj: &mut [f32], bias: Option<&[f32]>) {
    let kern = &model.kernels;
    let dim = model.hparams().dim as usize;
    if let Some(bias) = bias {
        pool.split_rows(proj, dim, &|_, part| {
            part.chunks_exact_mut(dim)
                .for_each(|p| (kern.add_f32)(p, bias))
        });
    }
    let proj = &*proj;
    pool.split_rows(x, dim, &|first, part| {
        let proj = &proj[first..first + part.len()];
        for (xr, pr) in part.chunks_exact_mut(dim).zip(proj.chunks_exact(dim)) {
            (kern.add_f32)(xr, pr);
        }
    });
}

/// Runs `tokens` (1..=`bb.cap()` of them) at positions `pos..pos + n`,
/// writing their keys and values into `kv` and the logits after the last token
/// into `buf.logits`. Same contract as `forward` for each token (ids in range,
/// `pos + n <= kv.context()`, earlier positions hold the sequence).
pub fn forward_batch(
    model: &Model,
    buf: &mut ForwardBuffers<'_>,
    bb: &mut BatchBuffers<'_>,
    kv: &mut KvCache,
    pool: &mut Pool,
    tokens: &[u32],
    pos: usize,
) {
    let n = tokens.len();
    assert!(
        n >= 1 && n <= bb.cap,
        "batch of {n} tokens, capacity {}",
        bb.cap
    );
    let hp = model.hparams();
    let kern = &model.kernels;
    let quant = model.has_quantized;
    let (dim, ffn) = (hp.dim as usize, hp.ffn_dim as usize);
    let (q_dim, kv_dim) = (hp.q_dim(), hp.kv_dim());
    let head_dim = hp.head_dim as usize;
    let eps = hp.norm_eps;
    let layout = match RopePairing::from_u32(hp.rope_pairing) {
        Some(RopePairing::Half) => RopeLayout::Half,
        _ => RopeLayout::Interleaved,
    };
    let scale = 1.0 / (head_dim as f32).sqrt();
    let half = buf.inv_freq.len();

    let x = &mut bb.x[..n * dim];
    for (&tok, xr) in tokens.iter().zip(x.chunks_exact_mut(dim)) {
        model.embed(tok as usize, xr);
    }

    for (l, li) in model.layers.iter().enumerate() {
        // --- attention block ---
        let (x, xn) = (&bb.x[..n * dim], &mut bb.xn[..n * dim]);
        rmsnorm_rows(model, pool, xn, x, model.vector(li.attn_norm));
        let xn = &bb.xn[..n * dim];
        let (q, kk, v) = (
            &mut bb.q[..n * q_dim],
            &mut bb.k[..n * kv_dim],
            &mut bb.v[..n * kv_dim],
        );
        let qd = quantize_rows(model, xn, &mut bb.xq, quant, li.rotate_qkv, n, pool);
        project(model, model.weights(li.wq), xn, &bb.xq, qd, n, q, pool);
        lora_rows(buf, l, LoraTarget::Q, xn, q, n);
        // The quantized input is reused by the K and V products.
        project(model, model.weights(li.wk), xn, &bb.xq, qd, n, kk, pool);
        lora_rows(buf, l, LoraTarget::K, xn, kk, n);
        project(model, model.weights(li.wv), xn, &bb.xq, qd, n, v, pool);
        lora_rows(buf, l, LoraTarget::V, xn, v, n);
        if let (Some(bq), Some(bk), Some(bv)) = (li.bq, li.bk, li.bv) {
            for t in 0..n {
                (kern.add_f32)(&mut q[t * q_dim..][..q_dim], model.vector(bq));
                (kern.add_f32)(&mut kk[t * kv_dim..][..kv_dim], model.vector(bk));
                (kern.add_f32)(&mut v[t * kv_dim..][..kv_dim], model.vector(bv));
            }
        }
        for t in 0..n {
            let p = pos + t;
            let (cos, sin) = buf.rope_cs.split_at_mut(half);
            k::rope_angles_f32(p, &buf.inv_freq, cos, sin);
            let (cos, sin) = (&*cos, &*sin);
            let qt = &mut q[t * q_dim..][..q_dim];
            let kt = &mut kk[t * kv_dim..][..kv_dim];
            (kern.rope_f32)(qt, head_dim, cos, sin, layout);
            (kern.rope_f32)(kt, head_dim, cos, sin, layout);
            let (k_row, v_row) = kv.rows_mut(l, p);
            k_row.copy_from_slice(kt);
            v_row.copy_from_slice(&v[t * kv_dim..][..kv_dim]);
        }
        // Every token's key and value is in the cache; each token attends to
        // positions up to its own, so the tokens are independent: they run on
        // the pool, one workspace row each.
        kv.flush();
        attend_batch(model, bb, kv, pool, l, n, pos, scale);
        let (att, proj) = (&bb.att[..n * q_dim], &mut bb.proj[..n * dim]);
        let qd = quantize_rows(model, att, &mut bb.xq, quant, li.rotate_wo, n, pool);
        project(model, model.weights(li.wo), att, &bb.xq, qd, n, proj, pool);
        lora_rows(buf, l, LoraTarget::O, att, proj, n);
        let x = &mut bb.x[..n * dim];
        add_rows(model, pool, x, proj, li.bo.map(|b| model.vector(b)));

        // --- feed-forward block ---
        let xn = &mut bb.xn[..n * dim];
        rmsnorm_rows(model, pool, xn, x, model.vector(li.ffn_norm));
        let xn = &bb.xn[..n * dim];
        let (gate, up) = (&mut bb.gate[..n * ffn], &mut bb.up[..n * ffn]);
        let qd = quantize_rows(model, xn, &mut bb.xq, quant, li.rotate_gate_up, n, pool);
        project(
            model,
            model.weights(li.w_gate),
            xn,
            &bb.xq,
            qd,
            n,
            gate,
            pool,
        );
        lora_rows(buf, l, LoraTarget::Gate, xn, gate, n);
        project(model, model.weights(li.w_up), xn, &bb.xq, qd, n, up, pool);
        lora_rows(buf, l, LoraTarget::Up, xn, up, n);
        let biases = li.b_gate.zip(li.b_up);
        if let Some((_, bu)) = biases {
            let bu = model.vector(bu);
            pool.split_rows(up, ffn, &|_, part| {
                part.chunks_exact_mut(ffn)
                    .for_each(|u| (kern.add_f32)(u, bu))
            });
        }
        let gated = match Activation::from_u32(hp.activation) {
            Some(Activation::GeluTanh) => kern.gelu_gate_f32,
            _ => kern.silu_gate_f32,
        };
        let up = &*up;
        pool.split_rows(gate, ffn, &|first, part| {
            let up = &up[first..first + part.len()];
            for (g, u) in part.chunks_exact_mut(ffn).zip(up.chunks_exact(ffn)) {
                if let Some((bg, _)) = biases {
                    (kern.add_f32)(g, model.vector(bg));
                }
                gated(g, u);
            }
        });
        let gate = &bb.gate[..n * ffn];
        let proj = &mut bb.proj[..n * dim];
        let qd = quantize_rows(model, gate, &mut bb.xq, quant, li.rotate_down, n, pool);
        project(
            model,
            model.weights(li.w_down),
            gate,
            &bb.xq,
            qd,
            n,
            proj,
            pool,
        );
        lora_rows(buf, l, LoraTarget::Down, gate, proj, n);
        let x = &mut bb.x[..n * dim];
        add_rows(model, pool, x, proj, li.b_down.map(|b| model.vector(b)));
    }

    // Logits of the last token only (the others are never read).
    let last = &bb.x[(n - 1) * dim..n * dim];
    (kern.rmsnorm_f32)(&mut buf.xn, last, model.vector(model.norm), eps);
    let xin = input(kern, &buf.xn, &mut buf.xq, quant, model.rotate_output);
    model
        .weights(model.output)
        .matvec_input_threaded(kern, &xin, &mut buf.logits, pool);
    // The single-token buffers now describe the last token, as after `forward`.
    buf.x.copy_from_slice(last);
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
