//! The training forward and backward pass: the loss of one token sequence under
//! the frozen base model plus a LoRA adapter, and its gradient with respect to
//! the adapter's `A` and `B` matrices, computed by hand (no autograd).
//!
//! The forward pass is the same computation as `ember_runtime::forward` (read it
//! side by side), over a whole sequence with causal attention, driven by the
//! same `ModelConfig` (parenthesised steps are the config's options):
//! ```text
//! x = embed[tokens] (* embed_scale)                       [T, dim]
//! for each layer:
//!     h = rmsnorm(x) * attn_norm
//!     q, k, v = lin_q(h), lin_k(h), lin_v(h)              lin(x) = W x + b + s B A drop(x)
//!     (q, k = per head rmsnorm(q) * q_norm, rmsnorm(k) * k_norm)
//!     rope(q, k) with the layer's RoPE kind
//!     o = per head: softmax(attn_scale q k^T, causal [, the layer's window]) v
//!     x_mid = x + (post_attn_norm)(lin_o(o))
//!     h2 = rmsnorm(x_mid) * ffn_norm
//!     x' = x_mid + (post_ffn_norm)(lin_down(act(lin_gate(h2)) * lin_up(h2)))
//! loss = sum over masked t of CE((softcap)(W_out rmsnorm(x_L[t]) * norm), tokens[t + 1])
//! ```
//! Blocks with LayerNorm or a plain MLP are refused by [`Base::new`] (their
//! backward pass is not written).
//! Differences from inference, by design: matrix products take the f32 input
//! as is (inference quantizes it to q8_0 for q8_0/q4_0 weights), and `sin`/`cos`
//! come from `std` rather than `libm`.
//!
//! **Frozen weights in their stored type.** `W x` and `W^T dy` read one weight
//! row at a time (`Matrix::row_to_f32`: a copy, a widening or a dequantisation of
//! that row) and apply it to all `T` positions before reading the next, so no
//! full-precision matrix is ever materialised and each row is decoded once per
//! product.
//!
//! **Activation memory** (per sequence, per worker thread) is bounded by
//! recomputation: the forward pass keeps only each layer's input residual,
//! `(n_layers + 1) * T * dim` values; the backward pass recomputes one layer's
//! internals at a time from its input (the last layer's are still in the cache
//! from the forward pass), so one layer's activations are live:
//! `T * (3 dim + 2 q_dim + 2 kv_dim + 3 ffn + sum of adapted inputs + 7 rank)`
//! plus the attention probabilities `n_heads * T * T`. The output projection is
//! processed `HEAD_CHUNK` positions at a time (`HEAD_CHUNK * vocab` logits live).
//! See [`Workspace::bytes`].
//!
//! **Dropout** on the LoRA path (PEFT semantics: `B A drop(x)`, the base path
//! sees `x`) uses masks derived from `(Dropout::seed, layer, target)`, so the
//! recomputation regenerates exactly the masks of the forward pass.
//!
//! Generic over [`Float`]: training runs in `f32`; the finite-difference check
//! runs the same code in `f64`.

use ember_kernels::scalar::RopeLayout;
use ember_runtime::config::{Mlp, ModelConfig};
use ember_runtime::format::{names, Activation, HyperParams, NormKind};
use ember_runtime::lora::LoraTarget;
use ember_runtime::{Model, Weights};

use crate::error::{Result, TrainError};
use crate::float::{axpy, dot, Float};
use crate::params::{Layout, Slot};
use ember_runtime::sampler::{mix64, Rng};

/// Positions of the output projection processed together (each weight row is
/// decoded once per chunk).
pub const HEAD_CHUNK: usize = 32;

/// One frozen decoder layer: norms, the seven matrices and their optional biases
/// (both indexed by `LoraTarget::index`).
pub struct BaseLayer<'m> {
    pub attn_norm: &'m [f32],
    pub ffn_norm: &'m [f32],
    /// Per-head query and key norms `[head_dim]` (QK norm models).
    pub q_norm: Option<&'m [f32]>,
    pub k_norm: Option<&'m [f32]>,
    /// Norms of the attention and feed-forward outputs before their residual
    /// adds (Gemma).
    pub post_attn_norm: Option<&'m [f32]>,
    pub post_ffn_norm: Option<&'m [f32]>,
    pub w: [Matrix<'m>; 7],
    pub bias: [Option<&'m [f32]>; 7],
}

/// The frozen base model as the training pass reads it.
pub struct Base<'m> {
    pub hp: HyperParams,
    pub embed: Matrix<'m>,
    /// Output projection (the embeddings when tied).
    pub output: Matrix<'m>,
    pub norm: &'m [f32],
    pub layers: Vec<BaseLayer<'m>>,
    /// The model's architecture description (the block this pass trains through).
    pub cfg: ModelConfig,
    /// `rope_dim / 2` inverse frequencies of each RoPE kind
    /// (`ModelConfig::ropes` order), scaled, as inference uses them.
    pub inv_freq: Vec<Vec<f32>>,
    /// RoPE pairs `(i, i + rot/2)` (else `(2i, 2i + 1)`).
    pub rope_half: bool,
}

fn vector<'m>(model: &'m Model, name: &str) -> Result<&'m [f32]> {
    match model.weights_by_name(name) {
        Some(Weights::F32(v)) => Ok(v),
        Some(_) => Err(TrainError::Config(format!(
            "{name}: expected an f32 vector"
        ))),
        None => Err(TrainError::Config(format!(
            "the model has no tensor {name}"
        ))),
    }
}

/// A matrix of the frozen base: its stored view, and whether its rows are
/// stored rotated (`ember_runtime::format::tensor_flags::ROTATED`: decoded
/// rows are rotated back before use, so training sees the true weights).
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'m> {
    pub w: Weights<'m>,
    pub rotated: bool,
}

impl Matrix<'_> {
    /// Row `r` (`out.len()` wide) as f32, in the true basis.
    fn row_to_f32(&self, r: usize, out: &mut [f32]) {
        self.w.row_to_f32(r, out);
        if self.rotated {
            ember_kernels::scalar::hadamard32(out);
        }
    }
}

fn matrix<'m>(model: &'m Model, name: &str) -> Result<Matrix<'m>> {
    let missing = || TrainError::Config(format!("the model has no tensor {name}"));
    let i = model
        .file()
        .by_name
        .get(name)
        .copied()
        .ok_or_else(missing)?;
    Ok(Matrix {
        w: model.weights(i),
        rotated: model.tensors()[i].rotated,
    })
}

impl<'m> Base<'m> {
    /// Views of `model`'s weights. Errors for block features whose backward
    /// pass is not written yet (named in the message).
    pub fn new(model: &'m Model) -> Result<Self> {
        let hp = *model.hparams();
        let cfg = model.config().clone();
        let unsupported = [
            (cfg.norm != NormKind::RmsNorm, "LayerNorm"),
            (cfg.mlp != Mlp::Gated, "a plain (ungated) MLP"),
        ];
        if let Some((_, what)) = unsupported.iter().find(|(on, _)| *on) {
            return Err(TrainError::Config(format!(
                "fine-tuning does not support {what} yet (inference does)"
            )));
        }
        let mut layers = Vec::with_capacity(hp.n_layers as usize);
        for l in 0..hp.n_layers as usize {
            let n = |s: &str| names::layer(l, s);
            let mat = |s: &str| matrix(model, &n(s));
            let opt = |s: &str| match model.weights_by_name(&n(s)) {
                Some(Weights::F32(v)) => Ok(Some(v)),
                Some(_) => Err(TrainError::Config(format!("{}: expected f32", n(s)))),
                None => Ok(None),
            };
            let optional = |on: bool, s: &str| on.then(|| vector(model, &n(s))).transpose();
            layers.push(BaseLayer {
                attn_norm: vector(model, &n(names::ATTN_NORM))?,
                ffn_norm: vector(model, &n(names::FFN_NORM))?,
                q_norm: optional(cfg.qk_norm, names::Q_NORM)?,
                k_norm: optional(cfg.qk_norm, names::K_NORM)?,
                post_attn_norm: optional(cfg.post_attn_norm, names::POST_ATTN_NORM)?,
                post_ffn_norm: optional(cfg.post_ffn_norm, names::POST_FFN_NORM)?,
                w: [
                    mat(names::WQ)?,
                    mat(names::WK)?,
                    mat(names::WV)?,
                    mat(names::WO)?,
                    mat(names::W_GATE)?,
                    mat(names::W_UP)?,
                    mat(names::W_DOWN)?,
                ],
                bias: [
                    opt(names::BQ)?,
                    opt(names::BK)?,
                    opt(names::BV)?,
                    opt(names::BO)?,
                    opt(names::B_GATE)?,
                    opt(names::B_UP)?,
                    opt(names::B_DOWN)?,
                ],
            });
        }
        let embed = matrix(model, names::TOK_EMBEDDINGS)?;
        let output = if hp.tied_output() {
            embed
        } else {
            matrix(model, names::OUTPUT)?
        };
        Ok(Self {
            hp,
            embed,
            output,
            norm: vector(model, names::NORM)?,
            layers,
            inv_freq: ember_runtime::inverse_frequencies(model),
            rope_half: cfg.rope_layout() == RopeLayout::Half,
            cfg,
        })
    }
}

/// One training sequence: `tokens` (`T + 1` ids) and which of the `T`
/// next-token predictions count: `loss_mask[t]` covers predicting `tokens[t + 1]`
/// at position `t`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub loss_mask: Vec<bool>,
}

impl Example {
    /// Positions (predictions) in the sequence.
    pub fn len(&self) -> usize {
        self.tokens.len().saturating_sub(1)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Number of predictions that count in the loss.
    pub fn loss_tokens(&self) -> usize {
        self.loss_mask.iter().filter(|&&m| m).count()
    }
}

/// LoRA dropout for one sequence: probability `p` of zeroing an input element
/// of the LoRA path (survivors scaled by `1 / (1 - p)`), masks derived from
/// `seed`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    pub p: f32,
    pub seed: u64,
}

/// Writes the dropout multipliers (0 or `1 / (1 - p)`) of `(layer, target)` for
/// `out.len()` input elements (position-major).
fn dropout_scales<F: Float>(d: &Dropout, layer: usize, target: LoraTarget, out: &mut [F]) {
    let mut rng = Rng::seed(mix64(
        d.seed ^ mix64(((layer as u64) << 8) | target.index() as u64),
    ));
    let keep = F::from_f64(1.0 / (1.0 - d.p as f64));
    for v in out {
        *v = if rng.next_f32() < d.p { F::ZERO } else { keep };
    }
}

/// The summed loss of one sequence and the number of predictions it covers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SeqLoss {
    /// Sum of the cross-entropies (nats) of the counted predictions.
    pub sum: f64,
    pub count: usize,
}

/// One layer's activations, kept for its backward pass.
struct LayerCache<F> {
    inv1: Vec<F>,
    h: Vec<F>,
    q: Vec<F>,
    k: Vec<F>,
    v: Vec<F>,
    /// `[n_heads, T, T]`, row `t` holds positions `0..=t` (zeros elsewhere).
    probs: Vec<F>,
    o: Vec<F>,
    x_mid: Vec<F>,
    inv2: Vec<F>,
    h2: Vec<F>,
    g: Vec<F>,
    u: Vec<F>,
    a: Vec<F>,
    /// Per target: the LoRA input after dropout `[T, in]` and `A drop(x)` `[T, rank]`.
    xd: [Vec<F>; 7],
    z: [Vec<F>; 7],
    /// QK norm: queries and keys before it `[T, q_dim]`, `[T, kv_dim]`, and the
    /// inverse RMS of every head `[T, n_heads]`, `[T, n_kv_heads]` (empty
    /// without QK norms).
    q_pre: Vec<F>,
    k_pre: Vec<F>,
    q_inv: Vec<F>,
    k_inv: Vec<F>,
    /// Post-norms: the attention and feed-forward outputs before them `[T,
    /// dim]` and their inverse RMS `[T]` (empty without post-norms).
    attn_out: Vec<F>,
    attn_out_inv: Vec<F>,
    ffn_out: Vec<F>,
    ffn_out_inv: Vec<F>,
}

/// Gradient scratch of the backward pass.
struct GradScratch<F> {
    dx: Vec<F>,
    dxm: Vec<F>,
    dh: Vec<F>,
    da: Vec<F>,
    dg: Vec<F>,
    du: Vec<F>,
    d_o: Vec<F>,
    dq: Vec<F>,
    dk: Vec<F>,
    dv: Vec<F>,
    dz: Vec<F>,
    dp: Vec<F>,
    /// `[T, max(dim, q_dim)]`: the gradient before a post-norm or QK norm.
    dnorm: Vec<F>,
}

/// Every buffer the pass needs for sequences up to `t_max` positions, allocated
/// once and reused. One per worker thread.
pub struct Workspace<F> {
    t_max: usize,
    /// `[n_layers + 1, T, dim]` input residual of every layer, then the last output.
    resid: Vec<F>,
    c: LayerCache<F>,
    gs: GradScratch<F>,
    /// `[kinds, T, rope_dim / 2]` cos and sin of the RoPE angles of each kind.
    cos: Vec<F>,
    sin: Vec<F>,
    /// Output projection chunk: normalised inputs, their inverse RMS, logits.
    head_x: Vec<F>,
    head_inv: Vec<F>,
    head_logits: Vec<F>,
    head_dx: Vec<F>,
    /// Dropout multipliers `[T, max in]`.
    mask: Vec<F>,
    /// One weight row as f32 and as `F`.
    row32: Vec<f32>,
    rowf: Vec<F>,
    /// Linear output scratch `[T, max(out)]`.
    tmp: Vec<F>,
}

impl<F: Float> Workspace<F> {
    /// Buffers for sequences of at most `t_max` positions on `base` with
    /// `layout`. Panics when memory runs out ([`Workspace::try_new`] does not).
    pub fn new(base: &Base, layout: &Layout, t_max: usize) -> Self {
        Self::try_new(base, layout, t_max)
            .unwrap_or_else(|bytes| panic!("cannot allocate a {bytes}-byte training workspace"))
    }

    /// [`Workspace::new`], or the bytes it asked for when an allocation
    /// failed (sizes come from the data and --seq-len: a request beyond the
    /// memory is an error, not an abort).
    pub fn try_new(base: &Base, layout: &Layout, t_max: usize) -> Result<Self, usize> {
        let hp = &base.hp;
        let (dim, qd, kvd, ffn) = (
            hp.dim as usize,
            hp.q_dim(),
            hp.kv_dim(),
            hp.ffn_dim as usize,
        );
        let vocab = hp.vocab_size as usize;
        let nh = hp.n_heads as usize;
        let rank = layout.rank;
        let widest = dim.max(qd).max(ffn).max(vocab);
        // Every buffer is requested even after a failure, so the error can
        // report the whole size; failed ones are empty.
        let requested = std::cell::Cell::new(0usize);
        let failed = std::cell::Cell::new(false);
        let z = |n: usize| -> Vec<F> {
            requested.set(
                requested
                    .get()
                    .saturating_add(n.saturating_mul(size_of::<F>())),
            );
            let mut v = Vec::new();
            if failed.get() || v.try_reserve_exact(n).is_err() {
                failed.set(true);
                return v;
            }
            v.resize(n, F::ZERO);
            v
        };
        let adapted = |t: LoraTarget| layout.slots.iter().any(|s| s.target == t);
        let lora = |f: &dyn Fn(LoraTarget) -> usize| -> [Vec<F>; 7] {
            LoraTarget::ALL.map(|t| if adapted(t) { z(f(t)) } else { Vec::new() })
        };
        let half = base.cfg.rope_pairs() * base.inv_freq.len();
        let cfg = &base.cfg;
        let ws = Self {
            t_max,
            resid: z((hp.n_layers as usize + 1) * t_max * dim),
            c: LayerCache {
                inv1: z(t_max),
                h: z(t_max * dim),
                q: z(t_max * qd),
                k: z(t_max * kvd),
                v: z(t_max * kvd),
                probs: z(nh * t_max * t_max),
                o: z(t_max * qd),
                x_mid: z(t_max * dim),
                inv2: z(t_max),
                h2: z(t_max * dim),
                g: z(t_max * ffn),
                u: z(t_max * ffn),
                a: z(t_max * ffn),
                xd: lora(&|t| t_max * t.dims(hp).0),
                z: lora(&|_| t_max * rank),
                q_pre: z(if cfg.qk_norm { t_max * qd } else { 0 }),
                k_pre: z(if cfg.qk_norm { t_max * kvd } else { 0 }),
                q_inv: z(if cfg.qk_norm { t_max * nh } else { 0 }),
                k_inv: z(if cfg.qk_norm {
                    t_max * cfg.n_kv_heads
                } else {
                    0
                }),
                attn_out: z(if cfg.post_attn_norm { t_max * dim } else { 0 }),
                attn_out_inv: z(if cfg.post_attn_norm { t_max } else { 0 }),
                ffn_out: z(if cfg.post_ffn_norm { t_max * dim } else { 0 }),
                ffn_out_inv: z(if cfg.post_ffn_norm { t_max } else { 0 }),
            },
            gs: GradScratch {
                dx: z(t_max * dim),
                dxm: z(t_max * dim),
                dh: z(t_max * dim),
                da: z(t_max * ffn),
                dg: z(t_max * ffn),
                du: z(t_max * ffn),
                d_o: z(t_max * qd),
                dq: z(t_max * qd),
                dk: z(t_max * kvd),
                dv: z(t_max * kvd),
                dz: z(t_max * rank),
                dp: z(t_max),
                dnorm: z(t_max * dim.max(qd)),
            },
            cos: z(t_max * half),
            sin: z(t_max * half),
            head_x: z(HEAD_CHUNK * dim),
            head_inv: z(HEAD_CHUNK),
            head_logits: z(HEAD_CHUNK * vocab),
            head_dx: z(HEAD_CHUNK * dim),
            mask: z(t_max * dim.max(qd).max(ffn)),
            row32: vec![0.0; widest.max(ROW_BLOCK_BYTES / 4)],
            rowf: z(widest.max(ROW_BLOCK_BYTES / 4)),
            tmp: z(t_max * dim.max(qd).max(ffn)),
        };
        if failed.get() {
            return Err(requested.get());
        }
        Ok(ws)
    }

    /// Longest sequence (positions) this workspace takes.
    pub fn t_max(&self) -> usize {
        self.t_max
    }

    /// Bytes held: the activation-memory bound of one worker.
    pub fn bytes(&self) -> usize {
        let c = &self.c;
        let g = &self.gs;
        let n: usize = [
            &self.resid,
            &c.inv1,
            &c.h,
            &c.q,
            &c.k,
            &c.v,
            &c.probs,
            &c.o,
            &c.x_mid,
            &c.inv2,
            &c.h2,
            &c.g,
            &c.u,
            &c.a,
            &g.dx,
            &g.dxm,
            &g.dh,
            &g.da,
            &g.dg,
            &g.du,
            &g.d_o,
            &g.dq,
            &g.dk,
            &g.dv,
            &g.dz,
            &g.dp,
            &g.dnorm,
            &c.q_pre,
            &c.k_pre,
            &c.q_inv,
            &c.k_inv,
            &c.attn_out,
            &c.attn_out_inv,
            &c.ffn_out,
            &c.ffn_out_inv,
            &self.cos,
            &self.sin,
            &self.head_x,
            &self.head_inv,
            &self.head_logits,
            &self.head_dx,
            &self.mask,
            &self.rowf,
            &self.tmp,
        ]
        .iter()
        .map(|v| v.len())
        .sum::<usize>()
            + c.xd.iter().chain(&c.z).map(Vec::len).sum::<usize>();
        n * std::mem::size_of::<F>() + self.row32.len() * 4
    }
}

/// Bytes of decoded weight rows processed together by [`linear_fwd`] and
/// [`linear_bwd`]: a block of rows stays in the L1 cache (beside one position's
/// input) while every position is multiplied with it, and is decoded once per
/// product. On SmolLM2, 12 KiB blocks train 11 % faster than 32 KiB ones
/// (benches/RESULTS.md).
const ROW_BLOCK_BYTES: usize = 12 << 10;

/// Buffers for reading blocks of weight rows.
struct Rows<'a, F> {
    row32: &'a mut [f32],
    rowf: &'a mut [F],
}

impl<F: Float> Rows<'_, F> {
    /// Rows `r0..r0 + n` of `w` (`cols` wide) as `F`, row-major.
    fn get_block(&mut self, w: &Matrix, r0: usize, n: usize, cols: usize) -> &[F] {
        for i in 0..n {
            w.row_to_f32(r0 + i, &mut self.row32[i * cols..(i + 1) * cols]);
        }
        for (d, &s) in self.rowf[..n * cols]
            .iter_mut()
            .zip(&self.row32[..n * cols])
        {
            *d = F::from_f32(s);
        }
        &self.rowf[..n * cols]
    }

    /// Row `r` of `w` (`cols` wide) as `F`.
    fn get(&mut self, w: &Matrix, r: usize, cols: usize) -> &[F] {
        self.get_block(w, r, 1, cols)
    }

    /// Rows per block for matrices `cols` wide (at least 1).
    fn block_rows(&self, cols: usize) -> usize {
        let fit = ROW_BLOCK_BYTES / (cols * std::mem::size_of::<F>()).max(1);
        fit.clamp(1, self.rowf.len() / cols.max(1))
    }
}

/// `y[t] = W x[t] + b` for `W: [out, inp]` in its stored type, `x: [T, inp]`,
/// `y: [T, out]`. Each output is one dot product of a decoded row with an
/// input row, so the result does not depend on the blocking.
#[allow(clippy::too_many_arguments)]
fn linear_fwd<F: Float>(
    w: &Matrix,
    bias: Option<&[f32]>,
    x: &[F],
    t_len: usize,
    inp: usize,
    out: usize,
    y: &mut [F],
    rows: &mut Rows<F>,
) {
    let rb = rows.block_rows(inp);
    let mut part = [F::ZERO; 64];
    let mut r0 = 0;
    while r0 < out {
        let n = rb.min(out - r0).min(part.len());
        let block = rows.get_block(w, r0, n, inp);
        for t in 0..t_len {
            F::matvec(block, &x[t * inp..(t + 1) * inp], &mut part[..n]);
            let yt = &mut y[t * out + r0..t * out + r0 + n];
            match bias {
                Some(b) => {
                    for ((o, &p), &bi) in yt.iter_mut().zip(&part[..n]).zip(&b[r0..r0 + n]) {
                        *o = p + F::from_f32(bi);
                    }
                }
                None => yt.copy_from_slice(&part[..n]),
            }
        }
        r0 += n;
    }
}

/// `dx[t] += W^T dy[t]` for `W: [out, inp]`, `dy: [T, out]`, `dx: [T, inp]`.
/// Each `dx[t][c]` sums over rows in row order (independent of the blocking).
fn linear_bwd<F: Float>(
    w: &Matrix,
    dy: &[F],
    t_len: usize,
    inp: usize,
    out: usize,
    dx: &mut [F],
    rows: &mut Rows<F>,
) {
    let rb = rows.block_rows(inp);
    let mut r0 = 0;
    while r0 < out {
        let n = rb.min(out - r0);
        let block = rows.get_block(w, r0, n, inp);
        for t in 0..t_len {
            let dxt = &mut dx[t * inp..(t + 1) * inp];
            for (i, row) in block.chunks_exact(inp).enumerate() {
                let g = dy[t * out + r0 + i];
                if g != F::ZERO {
                    axpy(dxt, g, row);
                }
            }
        }
        r0 += n;
    }
}

/// The LoRA term of one matrix: `y[t] += s B A drop(x[t])`, keeping `drop(x)`
/// in `xd` and `A drop(x)` in `z` for the backward pass.
#[allow(clippy::too_many_arguments)]
fn lora_fwd<F: Float>(
    slot: &Slot,
    rank: usize,
    scale: F,
    params: &[F],
    dropout: Option<&Dropout>,
    x: &[F],
    t_len: usize,
    xd: &mut [F],
    z: &mut [F],
    y: &mut [F],
    mask: &mut [F],
) {
    let (inp, out) = (slot.inp, slot.out);
    let n = t_len * inp;
    match dropout {
        Some(d) if d.p > 0.0 => {
            dropout_scales(d, slot.layer, slot.target, &mut mask[..n]);
            for ((o, &xi), &m) in xd[..n].iter_mut().zip(&x[..n]).zip(&mask[..n]) {
                *o = xi * m;
            }
        }
        _ => xd[..n].copy_from_slice(&x[..n]),
    }
    let a = &params[slot.a..slot.a + rank * inp];
    let b = &params[slot.b..slot.b + out * rank];
    for t in 0..t_len {
        let xt = &xd[t * inp..(t + 1) * inp];
        let zt = &mut z[t * rank..(t + 1) * rank];
        for (r, zr) in zt.iter_mut().enumerate() {
            *zr = dot(&a[r * inp..(r + 1) * inp], xt);
        }
        let zt = &z[t * rank..(t + 1) * rank];
        for o in 0..out {
            y[t * out + o] += scale * dot(&b[o * rank..(o + 1) * rank], zt);
        }
    }
}

/// Backward of [`lora_fwd`] given `dy: [T, out]`: accumulates `dA`, `dB` into
/// `grads` and, when `dx` is given, `d drop(x) / dx` times the LoRA path's input
/// gradient into `dx: [T, inp]`.
#[allow(clippy::too_many_arguments)]
fn lora_bwd<F: Float>(
    slot: &Slot,
    rank: usize,
    scale: F,
    params: &[F],
    grads: &mut [F],
    dropout: Option<&Dropout>,
    xd: &[F],
    z: &[F],
    dy: &[F],
    t_len: usize,
    dz: &mut [F],
    dx: Option<&mut [F]>,
    mask: &mut [F],
) {
    let (inp, out) = (slot.inp, slot.out);
    let a = &params[slot.a..slot.a + rank * inp];
    let b = &params[slot.b..slot.b + out * rank];
    // dz[t] = s B^T dy[t];  dB[o] += s dy[t][o] z[t]
    {
        let gb = &mut grads[slot.b..slot.b + out * rank];
        for t in 0..t_len {
            let dzt = &mut dz[t * rank..(t + 1) * rank];
            dzt.fill(F::ZERO);
            let zt = &z[t * rank..(t + 1) * rank];
            for o in 0..out {
                let g = dy[t * out + o];
                if g == F::ZERO {
                    continue;
                }
                axpy(dzt, scale * g, &b[o * rank..(o + 1) * rank]);
                axpy(&mut gb[o * rank..(o + 1) * rank], scale * g, zt);
            }
        }
    }
    // dA[r] += dz[t][r] drop(x)[t]
    {
        let ga = &mut grads[slot.a..slot.a + rank * inp];
        for t in 0..t_len {
            let xt = &xd[t * inp..(t + 1) * inp];
            for r in 0..rank {
                let g = dz[t * rank + r];
                if g != F::ZERO {
                    axpy(&mut ga[r * inp..(r + 1) * inp], g, xt);
                }
            }
        }
    }
    // dx[t] += (A^T dz[t]) * dropout multipliers
    if let Some(dx) = dx {
        let n = t_len * inp;
        let masked = match dropout {
            Some(d) if d.p > 0.0 => {
                dropout_scales(d, slot.layer, slot.target, &mut mask[..n]);
                true
            }
            _ => false,
        };
        for t in 0..t_len {
            let dxt = &mut dx[t * inp..(t + 1) * inp];
            for r in 0..rank {
                let g = dz[t * rank + r];
                if g == F::ZERO {
                    continue;
                }
                let ar = &a[r * inp..(r + 1) * inp];
                if masked {
                    let m = &mask[t * inp..(t + 1) * inp];
                    for ((d, &av), &mv) in dxt.iter_mut().zip(ar).zip(m) {
                        *d += g * av * mv;
                    }
                } else {
                    axpy(dxt, g, ar);
                }
            }
        }
    }
}

/// `out = x / rms(x) * w` for one row; returns the inverse RMS. The mean square
/// is accumulated in f64, as the inference kernel does.
fn rmsnorm_row<F: Float>(out: &mut [F], x: &[F], w: &[f32], eps: f32) -> F {
    let ss: f64 = x.iter().map(|&v| v.to_f64() * v.to_f64()).sum::<f64>() / x.len() as f64;
    let inv = F::from_f64(1.0 / (ss + eps as f64).sqrt());
    for ((o, &xi), &wi) in out.iter_mut().zip(x).zip(w) {
        *o = xi * inv * F::from_f32(wi);
    }
    inv
}

/// Backward of [`rmsnorm_row`]: `dx += inv gw - x inv^3 (gw . x) / n` with
/// `gw = dy * w`.
fn rmsnorm_row_bwd<F: Float>(dx: &mut [F], x: &[F], w: &[f32], inv: F, dy: &[F]) {
    let n = F::from_usize(x.len());
    let mut c = F::ZERO;
    for ((&d, &wi), &xi) in dy.iter().zip(w).zip(x) {
        c += d * F::from_f32(wi) * xi;
    }
    let k = inv * inv * inv * c / n;
    for (((o, &d), &wi), &xi) in dx.iter_mut().zip(dy).zip(w).zip(x) {
        *o += inv * d * F::from_f32(wi) - xi * k;
    }
}

/// `out[r] = rmsnorm(x[r]) * w` on every `w.len()`-wide row `r` of `out`, with
/// the inverse RMS in `inv[r]`.
fn norm_rows<F: Float>(out: &mut [F], x: &[F], w: &[f32], eps: f32, inv: &mut [F]) {
    let n = w.len();
    for ((o, xr), i) in out
        .chunks_exact_mut(n)
        .zip(x.chunks_exact(n))
        .zip(inv.iter_mut())
    {
        *i = rmsnorm_row(o, xr, w, eps);
    }
}

/// [`norm_rows`] in place on `y`, keeping its input in `pre[..y.len()]` for
/// the backward pass.
fn norm_rows_in_place<F: Float>(y: &mut [F], pre: &mut [F], w: &[f32], eps: f32, inv: &mut [F]) {
    let pre = &mut pre[..y.len()];
    pre.copy_from_slice(y);
    norm_rows(y, pre, w, eps, inv);
}

/// `dx += d norm(x) / dx . dy` on every `w.len()`-wide row of `x` (inverse
/// RMS `inv[row]`): the backward pass of [`norm_rows`], accumulated.
fn norm_rows_bwd_add<F: Float>(dx: &mut [F], x: &[F], w: &[f32], inv: &[F], dy: &[F]) {
    let n = w.len();
    for (((o, xr), &i), d) in dx
        .chunks_exact_mut(n)
        .zip(x.chunks_exact(n))
        .zip(inv)
        .zip(dy.chunks_exact(n))
    {
        rmsnorm_row_bwd(o, xr, w, i, d);
    }
}

/// The backward pass of [`norm_rows`]: `d norm(x) / dx . dy` into `out`
/// (zeroed first), which it returns.
fn norm_rows_bwd<'a, F: Float>(
    out: &'a mut [F],
    x: &[F],
    w: &[f32],
    inv: &[F],
    dy: &[F],
) -> &'a [F] {
    out.fill(F::ZERO);
    norm_rows_bwd_add(out, x, w, inv, dy);
    out
}

/// Rotates every head of row `x` (`[heads * head_dim]`) for position `t` using
/// the tables; `inverse` rotates back (the backward pass of a rotation).
fn rope_row<F: Float>(
    x: &mut [F],
    head_dim: usize,
    cos: &[F],
    sin: &[F],
    half_layout: bool,
    inverse: bool,
) {
    let half = cos.len();
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let (a, b) = if half_layout {
                (i, i + half)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (c, s) = (cos[i], if inverse { -sin[i] } else { sin[i] });
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * c - x1 * s;
            head[b] = x0 * s + x1 * c;
        }
    }
}

fn silu<F: Float>(g: F) -> (F, F) {
    // value, derivative
    let sig = F::ONE / (F::ONE + (-g).exp());
    (g * sig, sig * (F::ONE + g * (F::ONE - sig)))
}

/// The activation's value and derivative at `v`.
fn activation<F: Float>(act: Activation, v: F) -> (F, F) {
    match act {
        Activation::Silu => silu(v),
        Activation::GeluTanh => gelu_tanh(v),
        Activation::GeluErf => gelu_erf(v),
    }
}

/// Exact GELU `0.5 v (1 + erf(v / sqrt 2))` and its derivative
/// `0.5 (1 + erf(v / sqrt 2)) + v exp(-v^2 / 2) / sqrt(2 pi)`.
fn gelu_erf<F: Float>(v: F) -> (F, F) {
    let half = F::from_f32(0.5);
    let e = (v * F::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf();
    let pdf = (-(v * v) * half).exp() * F::from_f64(0.398_942_280_401_432_7);
    (half * v * (F::ONE + e), half * (F::ONE + e) + v * pdf)
}

fn gelu_tanh<F: Float>(v: F) -> (F, F) {
    let c = F::from_f32(0.797_884_6);
    let k = F::from_f32(0.044_715);
    let half = F::from_f32(0.5);
    let th = (c * (v + k * v * v * v)).tanh();
    let val = half * v * (F::ONE + th);
    let d = half * (F::ONE + th)
        + half * v * (F::ONE - th * th) * c * (F::ONE + F::from_f32(3.0) * k * v * v);
    (val, d)
}

/// The attention score scale: `1 / sqrt(head_dim)` in `F`, or the model's own
/// (Gemma's `query_pre_attn_scalar^-0.5`).
fn attention_scale<F: Float>(cfg: &ModelConfig) -> F {
    let default = 1.0 / (cfg.head_dim as f32).sqrt();
    if cfg.attn_scale == default {
        F::ONE / F::from_usize(cfg.head_dim).sqrt()
    } else {
        F::from_f32(cfg.attn_scale)
    }
}

/// Everything a layer pass needs besides the buffers.
struct Ctx<'a, 'm, F> {
    base: &'a Base<'m>,
    layout: &'a Layout,
    params: &'a [F],
    dropout: Option<&'a Dropout>,
    t_len: usize,
    scale: F,
}

impl<F: Float> Ctx<'_, '_, F> {
    fn slot(&self, l: usize, t: LoraTarget) -> Option<&Slot> {
        self.layout.slot(l, t)
    }
}

/// `y = lin_target(x)`: the frozen product plus the LoRA term (if adapted).
#[allow(clippy::too_many_arguments)]
fn lin_fwd<F: Float>(
    cx: &Ctx<F>,
    l: usize,
    t: LoraTarget,
    x: &[F],
    y: &mut [F],
    c_xd: &mut [Vec<F>; 7],
    c_z: &mut [Vec<F>; 7],
    mask: &mut [F],
    rows: &mut Rows<F>,
) {
    let (inp, out) = t.dims(&cx.base.hp);
    let bl = &cx.base.layers[l];
    linear_fwd(
        &bl.w[t.index()],
        bl.bias[t.index()],
        x,
        cx.t_len,
        inp,
        out,
        y,
        rows,
    );
    if let Some(slot) = cx.slot(l, t) {
        lora_fwd(
            slot,
            cx.layout.rank,
            cx.scale,
            cx.params,
            cx.dropout,
            x,
            cx.t_len,
            &mut c_xd[t.index()],
            &mut c_z[t.index()],
            y,
            mask,
        );
    }
}

/// Forward of layer `l` from `x_in` to `x_out`, filling the cache.
fn layer_fwd<F: Float>(
    cx: &Ctx<F>,
    l: usize,
    x_in: &[F],
    x_out: &mut [F],
    c: &mut LayerCache<F>,
    ws: &mut WsRest<F>,
) {
    attention_fwd(cx, l, x_in, c, ws);
    ffn_fwd(cx, l, x_out, c, ws);
}

/// The attention block of layer `l`:
/// `c.x_mid = x_in + (post_attn_norm)(lin_o(attention(x_in)))`, caching its
/// activations.
fn attention_fwd<F: Float>(
    cx: &Ctx<F>,
    l: usize,
    x_in: &[F],
    c: &mut LayerCache<F>,
    ws: &mut WsRest<F>,
) {
    let hp = &cx.base.hp;
    let bl = &cx.base.layers[l];
    let tl = cx.t_len;
    let (dim, qd) = (hp.dim as usize, hp.q_dim());
    qkv_fwd(cx, l, x_in, c, ws);
    rope_rows(cx, l, &mut c.q, &mut c.k, ws.cos, ws.sin, false);
    attention_scores_fwd(cx, l, c);
    let mut rows = Rows {
        row32: &mut *ws.row32,
        rowf: &mut *ws.rowf,
    };
    let proj = &mut ws.tmp[..tl * dim];
    lin_fwd(
        cx,
        l,
        LoraTarget::O,
        &c.o[..tl * qd],
        proj,
        &mut c.xd,
        &mut c.z,
        ws.mask,
        &mut rows,
    );
    if let Some(w) = bl.post_attn_norm {
        norm_rows_in_place(proj, &mut c.attn_out, w, hp.norm_eps, &mut c.attn_out_inv);
    }
    for ((m, &x), &p) in c.x_mid[..tl * dim]
        .iter_mut()
        .zip(&x_in[..tl * dim])
        .zip(proj.iter())
    {
        *m = x + p;
    }
}

/// `c.h = rmsnorm(x_in) * attn_norm` and `c.q, c.k, c.v = lin_q(h), lin_k(h),
/// lin_v(h)`, queries and keys through their per-head norms (QK norm models).
fn qkv_fwd<F: Float>(cx: &Ctx<F>, l: usize, x_in: &[F], c: &mut LayerCache<F>, ws: &mut WsRest<F>) {
    let hp = &cx.base.hp;
    let bl = &cx.base.layers[l];
    let tl = cx.t_len;
    let (dim, qd, kvd) = (hp.dim as usize, hp.q_dim(), hp.kv_dim());
    let eps = hp.norm_eps;
    let mut rows = Rows {
        row32: &mut *ws.row32,
        rowf: &mut *ws.rowf,
    };
    norm_rows(
        &mut c.h[..tl * dim],
        &x_in[..tl * dim],
        bl.attn_norm,
        eps,
        &mut c.inv1,
    );
    let h = &c.h[..tl * dim];
    lin_fwd(
        cx,
        l,
        LoraTarget::Q,
        h,
        &mut c.q,
        &mut c.xd,
        &mut c.z,
        ws.mask,
        &mut rows,
    );
    lin_fwd(
        cx,
        l,
        LoraTarget::K,
        h,
        &mut c.k,
        &mut c.xd,
        &mut c.z,
        ws.mask,
        &mut rows,
    );
    lin_fwd(
        cx,
        l,
        LoraTarget::V,
        h,
        &mut c.v,
        &mut c.xd,
        &mut c.z,
        ws.mask,
        &mut rows,
    );
    if let (Some(qw), Some(kw)) = (bl.q_norm, bl.k_norm) {
        norm_rows_in_place(&mut c.q[..tl * qd], &mut c.q_pre, qw, eps, &mut c.q_inv);
        norm_rows_in_place(&mut c.k[..tl * kvd], &mut c.k_pre, kw, eps, &mut c.k_inv);
    }
}

/// Rotates every head of the `T` rows of `q` (`[T, q_dim]`) and `k`
/// (`[T, kv_dim]`) by their positions with layer `l`'s RoPE tables; `inverse`
/// rotates back (the backward pass of the rotation).
fn rope_rows<F: Float>(
    cx: &Ctx<F>,
    l: usize,
    q: &mut [F],
    k: &mut [F],
    cos: &[F],
    sin: &[F],
    inverse: bool,
) {
    let hp = &cx.base.hp;
    let (qd, kvd, hd) = (hp.q_dim(), hp.kv_dim(), hp.head_dim as usize);
    let tl = cx.t_len;
    let half = cx.base.cfg.rope_pairs();
    let table = cx.base.cfg.layers[l].rope * tl * half;
    for t in 0..tl {
        let (cs, sn) = (
            &cos[table + t * half..][..half],
            &sin[table + t * half..][..half],
        );
        rope_row(
            &mut q[t * qd..(t + 1) * qd],
            hd,
            cs,
            sn,
            cx.base.rope_half,
            inverse,
        );
        rope_row(
            &mut k[t * kvd..(t + 1) * kvd],
            hd,
            cs,
            sn,
            cx.base.rope_half,
            inverse,
        );
    }
}

/// Causal softmax attention of layer `l` (within its window) for every query
/// head: `c.probs = softmax(attn_scale q k^T)` and `c.o = c.probs v` from the
/// rotated `c.q`, `c.k` and `c.v`.
// The loops index the probabilities and the key/value rows by position.
#[allow(clippy::needless_range_loop)]
fn attention_scores_fwd<F: Float>(cx: &Ctx<F>, l: usize, c: &mut LayerCache<F>) {
    let hp = &cx.base.hp;
    let tl = cx.t_len;
    let (qd, kvd, hd) = (hp.q_dim(), hp.kv_dim(), hp.head_dim as usize);
    let nh = hp.n_heads as usize;
    let group = nh / hp.n_kv_heads as usize;
    let scale = attention_scale::<F>(&cx.base.cfg);
    let kind = cx.base.cfg.layers[l];
    for hh in 0..nh {
        let g = hh / group;
        for t in 0..tl {
            let first = kind.window_start(t);
            let q = &c.q[t * qd + hh * hd..][..hd];
            let p = &mut c.probs[(hh * tl + t) * tl..][..tl];
            p.fill(F::ZERO);
            let mut m = F::from_f32(f32::NEG_INFINITY);
            for j in first..=t {
                let s = dot(q, &c.k[j * kvd + g * hd..][..hd]) * scale;
                p[j] = s;
                m = m.max(s);
            }
            let mut sum = F::ZERO;
            for pj in &mut p[first..=t] {
                *pj = (*pj - m).exp();
                sum += *pj;
            }
            let inv = F::ONE / sum;
            let o = &mut c.o[t * qd + hh * hd..][..hd];
            o.fill(F::ZERO);
            for j in first..=t {
                p[j] *= inv;
                axpy(o, p[j], &c.v[j * kvd + g * hd..][..hd]);
            }
        }
    }
}

/// The feed-forward block of layer `l`: `x_out = c.x_mid +
/// (post_ffn_norm)(lin_down(act(lin_gate(h2)) * lin_up(h2)))` with
/// `h2 = rmsnorm(c.x_mid) * ffn_norm`, caching its activations.
fn ffn_fwd<F: Float>(
    cx: &Ctx<F>,
    l: usize,
    x_out: &mut [F],
    c: &mut LayerCache<F>,
    ws: &mut WsRest<F>,
) {
    let hp = &cx.base.hp;
    let bl = &cx.base.layers[l];
    let tl = cx.t_len;
    let (dim, ffn) = (hp.dim as usize, hp.ffn_dim as usize);
    let eps = hp.norm_eps;
    let mut rows = Rows {
        row32: &mut *ws.row32,
        rowf: &mut *ws.rowf,
    };
    norm_rows(
        &mut c.h2[..tl * dim],
        &c.x_mid[..tl * dim],
        bl.ffn_norm,
        eps,
        &mut c.inv2,
    );
    let h2 = &c.h2[..tl * dim];
    lin_fwd(
        cx,
        l,
        LoraTarget::Gate,
        h2,
        &mut c.g,
        &mut c.xd,
        &mut c.z,
        ws.mask,
        &mut rows,
    );
    lin_fwd(
        cx,
        l,
        LoraTarget::Up,
        h2,
        &mut c.u,
        &mut c.xd,
        &mut c.z,
        ws.mask,
        &mut rows,
    );
    for i in 0..tl * ffn {
        let act = activation(cx.base.cfg.activation, c.g[i]).0;
        c.a[i] = act * c.u[i];
    }
    let down = &mut ws.tmp[..tl * dim];
    lin_fwd(
        cx,
        l,
        LoraTarget::Down,
        &c.a[..tl * ffn],
        down,
        &mut c.xd,
        &mut c.z,
        ws.mask,
        &mut rows,
    );
    if let Some(w) = bl.post_ffn_norm {
        norm_rows_in_place(down, &mut c.ffn_out, w, eps, &mut c.ffn_out_inv);
    }
    for ((o, &m), &d) in x_out[..tl * dim]
        .iter_mut()
        .zip(&c.x_mid[..tl * dim])
        .zip(down.iter())
    {
        *o = m + d;
    }
}

/// Backward of `lin_target`: LoRA gradients, and `dx += d lin / dx` when `dx` is
/// given.
#[allow(clippy::too_many_arguments)]
fn lin_bwd<F: Float>(
    cx: &Ctx<F>,
    l: usize,
    t: LoraTarget,
    c: &LayerCache<F>,
    dy: &[F],
    mut dx: Option<&mut [F]>,
    grads: &mut [F],
    dz: &mut [F],
    mask: &mut [F],
    rows: &mut Rows<F>,
) {
    let (inp, out) = t.dims(&cx.base.hp);
    if let Some(slot) = cx.slot(l, t) {
        lora_bwd(
            slot,
            cx.layout.rank,
            cx.scale,
            cx.params,
            grads,
            cx.dropout,
            &c.xd[t.index()],
            &c.z[t.index()],
            dy,
            cx.t_len,
            dz,
            dx.as_deref_mut(),
            mask,
        );
    }
    if let Some(dx) = dx {
        linear_bwd(
            &cx.base.layers[l].w[t.index()],
            dy,
            cx.t_len,
            inp,
            out,
            dx,
            rows,
        );
    }
}

/// Backward of layer `l`: from `dx_out` (`gs.dx`, overwritten by `dx_in` when
/// `need_dx_in`), accumulating LoRA gradients into `grads`.
#[allow(clippy::too_many_arguments)]
fn layer_bwd<F: Float>(
    cx: &Ctx<F>,
    l: usize,
    x_in: &[F],
    c: &LayerCache<F>,
    gs: &mut GradScratch<F>,
    grads: &mut [F],
    need_dx_in: bool,
    ws: &mut WsRest<F>,
) {
    ffn_bwd(cx, l, c, gs, grads, ws);
    attention_bwd(cx, l, x_in, c, gs, grads, need_dx_in, ws);
}

/// Backward of [`ffn_fwd`]: from `gs.dx = d loss / d x_out`, the LoRA
/// gradients of down, gate and up into `grads` and `gs.dxm = d loss / d x_mid`.
fn ffn_bwd<F: Float>(
    cx: &Ctx<F>,
    l: usize,
    c: &LayerCache<F>,
    gs: &mut GradScratch<F>,
    grads: &mut [F],
    ws: &mut WsRest<F>,
) {
    let hp = &cx.base.hp;
    let bl = &cx.base.layers[l];
    let tl = cx.t_len;
    let (dim, ffn) = (hp.dim as usize, hp.ffn_dim as usize);
    let mut rows = Rows {
        row32: &mut *ws.row32,
        rowf: &mut *ws.rowf,
    };
    let dout = match bl.post_ffn_norm {
        Some(w) => norm_rows_bwd(
            &mut gs.dnorm[..tl * dim],
            &c.ffn_out[..tl * dim],
            w,
            &c.ffn_out_inv[..tl],
            &gs.dx[..tl * dim],
        ),
        None => &gs.dx[..tl * dim],
    };
    let da = &mut gs.da[..tl * ffn];
    da.fill(F::ZERO);
    lin_bwd(
        cx,
        l,
        LoraTarget::Down,
        c,
        dout,
        Some(da),
        grads,
        &mut gs.dz,
        ws.mask,
        &mut rows,
    );
    for i in 0..tl * ffn {
        let (act, dact) = activation(cx.base.cfg.activation, c.g[i]);
        gs.du[i] = gs.da[i] * act;
        gs.dg[i] = gs.da[i] * c.u[i] * dact;
    }
    let dh2 = &mut gs.dh[..tl * dim];
    dh2.fill(F::ZERO);
    lin_bwd(
        cx,
        l,
        LoraTarget::Gate,
        c,
        &gs.dg[..tl * ffn],
        Some(&mut *dh2),
        grads,
        &mut gs.dz,
        ws.mask,
        &mut rows,
    );
    lin_bwd(
        cx,
        l,
        LoraTarget::Up,
        c,
        &gs.du[..tl * ffn],
        Some(&mut *dh2),
        grads,
        &mut gs.dz,
        ws.mask,
        &mut rows,
    );
    // dx_mid = dx' + rmsnorm backward
    gs.dxm[..tl * dim].copy_from_slice(&gs.dx[..tl * dim]);
    norm_rows_bwd_add(
        &mut gs.dxm[..tl * dim],
        &c.x_mid[..tl * dim],
        bl.ffn_norm,
        &c.inv2[..tl],
        &gs.dh[..tl * dim],
    );
}

/// Backward of [`attention_fwd`]: from `gs.dxm = d loss / d x_mid`, the LoRA
/// gradients of o, q, k and v into `grads` and, when `need_dx_in`,
/// `gs.dx = d loss / d x_in`.
#[allow(clippy::too_many_arguments)]
fn attention_bwd<F: Float>(
    cx: &Ctx<F>,
    l: usize,
    x_in: &[F],
    c: &LayerCache<F>,
    gs: &mut GradScratch<F>,
    grads: &mut [F],
    need_dx_in: bool,
    ws: &mut WsRest<F>,
) {
    let hp = &cx.base.hp;
    let bl = &cx.base.layers[l];
    let tl = cx.t_len;
    let (dim, qd) = (hp.dim as usize, hp.q_dim());
    let mut rows = Rows {
        row32: &mut *ws.row32,
        rowf: &mut *ws.rowf,
    };
    let d_proj = match bl.post_attn_norm {
        Some(w) => norm_rows_bwd(
            &mut gs.dnorm[..tl * dim],
            &c.attn_out[..tl * dim],
            w,
            &c.attn_out_inv[..tl],
            &gs.dxm[..tl * dim],
        ),
        None => &gs.dxm[..tl * dim],
    };
    let d_o = &mut gs.d_o[..tl * qd];
    d_o.fill(F::ZERO);
    lin_bwd(
        cx,
        l,
        LoraTarget::O,
        c,
        d_proj,
        Some(d_o),
        grads,
        &mut gs.dz,
        ws.mask,
        &mut rows,
    );
    attention_scores_bwd(cx, l, c, gs);
    rope_rows(cx, l, &mut gs.dq, &mut gs.dk, ws.cos, ws.sin, true);
    qkv_bwd(cx, l, x_in, c, gs, grads, need_dx_in, ws);
}

/// Backward of [`attention_scores_fwd`]: `gs.dq`, `gs.dk` and `gs.dv`
/// (overwritten) from `gs.d_o`, through the value products and the softmax.
// The loops index the probabilities and the key/value rows by position.
#[allow(clippy::needless_range_loop)]
fn attention_scores_bwd<F: Float>(
    cx: &Ctx<F>,
    l: usize,
    c: &LayerCache<F>,
    gs: &mut GradScratch<F>,
) {
    let hp = &cx.base.hp;
    let tl = cx.t_len;
    let (qd, kvd, hd) = (hp.q_dim(), hp.kv_dim(), hp.head_dim as usize);
    let nh = hp.n_heads as usize;
    let group = nh / hp.n_kv_heads as usize;
    gs.dq[..tl * qd].fill(F::ZERO);
    gs.dk[..tl * kvd].fill(F::ZERO);
    gs.dv[..tl * kvd].fill(F::ZERO);
    let scale = attention_scale::<F>(&cx.base.cfg);
    let kind = cx.base.cfg.layers[l];
    for hh in 0..nh {
        let g = hh / group;
        for t in 0..tl {
            let first = kind.window_start(t);
            let p = &c.probs[(hh * tl + t) * tl..][..tl];
            let dot_t = &gs.d_o[t * qd + hh * hd..][..hd];
            // dp[j] = do . v[j];  dv[j] += p[j] do
            let mut sum = F::ZERO;
            for j in first..=t {
                let dpj = dot(dot_t, &c.v[j * kvd + g * hd..][..hd]);
                gs.dp[j] = dpj;
                sum += p[j] * dpj;
                axpy(&mut gs.dv[j * kvd + g * hd..][..hd], p[j], dot_t);
            }
            // ds[j] = p[j] (dp[j] - sum);  dq += scale ds[j] k[j];  dk[j] += scale ds[j] q
            let q = &c.q[t * qd + hh * hd..][..hd];
            for j in first..=t {
                let ds = p[j] * (gs.dp[j] - sum) * scale;
                if ds == F::ZERO {
                    continue;
                }
                axpy(
                    &mut gs.dq[t * qd + hh * hd..][..hd],
                    ds,
                    &c.k[j * kvd + g * hd..][..hd],
                );
                axpy(&mut gs.dk[j * kvd + g * hd..][..hd], ds, q);
            }
        }
    }
}

/// Backward of [`qkv_fwd`]: from `gs.dq`, `gs.dk` (unrotated) and `gs.dv`,
/// through the QK norms, the LoRA gradients of q, k and v into `grads` and,
/// when `need_dx_in`, `gs.dx = gs.dxm + d(attention norm) / dx_in . dh`.
#[allow(clippy::too_many_arguments)]
fn qkv_bwd<F: Float>(
    cx: &Ctx<F>,
    l: usize,
    x_in: &[F],
    c: &LayerCache<F>,
    gs: &mut GradScratch<F>,
    grads: &mut [F],
    need_dx_in: bool,
    ws: &mut WsRest<F>,
) {
    let hp = &cx.base.hp;
    let bl = &cx.base.layers[l];
    let tl = cx.t_len;
    let (dim, qd, kvd, hd) = (
        hp.dim as usize,
        hp.q_dim(),
        hp.kv_dim(),
        hp.head_dim as usize,
    );
    let nh = hp.n_heads as usize;
    let mut rows = Rows {
        row32: &mut *ws.row32,
        rowf: &mut *ws.rowf,
    };
    if let (Some(qw), Some(kw)) = (bl.q_norm, bl.k_norm) {
        // Through the per-head norms: d(pre-norm) from d(post-norm).
        let dq = norm_rows_bwd(
            &mut gs.dnorm[..tl * qd],
            &c.q_pre[..tl * qd],
            qw,
            &c.q_inv[..tl * nh],
            &gs.dq[..tl * qd],
        );
        gs.dq[..tl * qd].copy_from_slice(dq);
        let dk = norm_rows_bwd(
            &mut gs.dnorm[..tl * kvd],
            &c.k_pre[..tl * kvd],
            kw,
            &c.k_inv[..tl * kvd / hd],
            &gs.dk[..tl * kvd],
        );
        gs.dk[..tl * kvd].copy_from_slice(dk);
    }
    let dh = &mut gs.dh[..tl * dim];
    dh.fill(F::ZERO);
    let mut dh_opt = if need_dx_in { Some(dh) } else { None };
    lin_bwd(
        cx,
        l,
        LoraTarget::Q,
        c,
        &gs.dq[..tl * qd],
        dh_opt.as_deref_mut(),
        grads,
        &mut gs.dz,
        ws.mask,
        &mut rows,
    );
    lin_bwd(
        cx,
        l,
        LoraTarget::K,
        c,
        &gs.dk[..tl * kvd],
        dh_opt.as_deref_mut(),
        grads,
        &mut gs.dz,
        ws.mask,
        &mut rows,
    );
    lin_bwd(
        cx,
        l,
        LoraTarget::V,
        c,
        &gs.dv[..tl * kvd],
        dh_opt,
        grads,
        &mut gs.dz,
        ws.mask,
        &mut rows,
    );
    if need_dx_in {
        gs.dx[..tl * dim].copy_from_slice(&gs.dxm[..tl * dim]);
        norm_rows_bwd_add(
            &mut gs.dx[..tl * dim],
            &x_in[..tl * dim],
            bl.attn_norm,
            &c.inv1[..tl],
            &gs.dh[..tl * dim],
        );
    }
}

/// The workspace buffers other than the residuals, the cache and the gradient
/// scratch (split so they can be borrowed alongside them).
struct WsRest<'a, F> {
    cos: &'a [F],
    sin: &'a [F],
    mask: &'a mut [F],
    row32: &'a mut [f32],
    rowf: &'a mut [F],
    tmp: &'a mut [F],
}

/// Output projection and cross-entropy over the counted positions, `HEAD_CHUNK`
/// at a time; with `dx`, also `dx[t] = d loss / d x_L[t]` (zero elsewhere).
#[allow(clippy::too_many_arguments)]
fn head<F: Float>(
    base: &Base,
    ex: &Example,
    x_last: &[F],
    hx: &mut [F],
    hinv: &mut [F],
    logits: &mut [F],
    hdx: &mut [F],
    mut dx: Option<&mut [F]>,
    rows: &mut Rows<F>,
) -> SeqLoss {
    let hp = &base.hp;
    let dim = hp.dim as usize;
    let vocab = hp.vocab_size as usize;
    let positions: Vec<usize> = (0..ex.len()).filter(|&t| ex.loss_mask[t]).collect();
    if let Some(dx) = dx.as_deref_mut() {
        dx[..ex.len() * dim].fill(F::ZERO);
    }
    let mut loss = SeqLoss::default();
    for chunk in positions.chunks(HEAD_CHUNK) {
        let n = chunk.len();
        for (c, &t) in chunk.iter().enumerate() {
            hinv[c] = rmsnorm_row(
                &mut hx[c * dim..(c + 1) * dim],
                &x_last[t * dim..(t + 1) * dim],
                base.norm,
                hp.norm_eps,
            );
        }
        // logits[c] = W_out hx[c]: the output rows a block at a time.
        let rb = rows.block_rows(dim);
        let mut r0 = 0;
        while r0 < vocab {
            let nr = rb.min(vocab - r0);
            let block = rows.get_block(&base.output, r0, nr, dim);
            for c in 0..n {
                F::matvec(
                    block,
                    &hx[c * dim..(c + 1) * dim],
                    &mut logits[c * vocab + r0..c * vocab + r0 + nr],
                );
            }
            r0 += nr;
        }
        for (c, &t) in chunk.iter().enumerate() {
            let lg = &mut logits[c * vocab..(c + 1) * vocab];
            let target = ex.tokens[t + 1] as usize;
            if let Some(cap) = base.cfg.logit_softcap {
                let cap = F::from_f32(cap);
                lg.iter_mut().for_each(|v| *v = (*v / cap).tanh() * cap);
            }
            let m = lg
                .iter()
                .fold(F::from_f32(f32::NEG_INFINITY), |a, &b| a.max(b));
            let mut sum = F::ZERO;
            for v in lg.iter() {
                sum += (*v - m).exp();
            }
            let lse = m + sum.ln();
            loss.sum += (lse - lg[target]).to_f64();
            loss.count += 1;
            // d CE / d logits = softmax - onehot; through the soft-cap
            // c tanh(z / c): times 1 - tanh^2 = 1 - (capped / c)^2.
            let inv = F::ONE / sum;
            let cap = base.cfg.logit_softcap.map(F::from_f32);
            for (i, v) in lg.iter_mut().enumerate() {
                let capped = *v;
                let onehot = if i == target { F::ONE } else { F::ZERO };
                let g = (capped - m).exp() * inv - onehot;
                *v = match cap {
                    Some(c) => g * (F::ONE - (capped / c) * (capped / c)),
                    None => g,
                };
            }
        }
        let Some(dx) = dx.as_deref_mut() else {
            continue;
        };
        let hdx = &mut hdx[..n * dim];
        hdx.fill(F::ZERO);
        linear_bwd(&base.output, logits, n, dim, vocab, hdx, rows);
        for (c, &t) in chunk.iter().enumerate() {
            rmsnorm_row_bwd(
                &mut dx[t * dim..(t + 1) * dim],
                &x_last[t * dim..(t + 1) * dim],
                base.norm,
                hinv[c],
                &hdx[c * dim..(c + 1) * dim],
            );
        }
    }
    loss
}

/// `cos`, `sin` `[kinds, T, rope_dim / 2]`: the RoPE angles of positions
/// `0..t_len` for each RoPE kind, times its attention factor.
fn rope_tables<F: Float>(base: &Base, t_len: usize, cos: &mut [F], sin: &mut [F]) {
    let half = base.cfg.rope_pairs();
    for (kind, (inv_freq, rope)) in base.inv_freq.iter().zip(&base.cfg.ropes).enumerate() {
        let m = F::from_f32(rope.attn_factor);
        for t in 0..t_len {
            let at = (kind * t_len + t) * half;
            for (i, &f) in inv_freq.iter().enumerate() {
                let angle = F::from_usize(t) * F::from_f32(f);
                cos[at + i] = angle.cos() * m;
                sin[at + i] = angle.sin() * m;
            }
        }
    }
}

/// The summed cross-entropy of `ex` under `base` + the adapter `params`
/// (laid out by `layout`), and, when `grads` is given, its gradient with
/// respect to `params` **added** into `grads`.
///
/// Contract: `ex.len() <= ws.t_max()`, `ex.loss_mask.len() == ex.len()`, every
/// token `< vocab_size`, `params.len() == grads.len() == layout.len`.
pub fn sequence_loss<F: Float>(
    base: &Base,
    layout: &Layout,
    params: &[F],
    ex: &Example,
    dropout: Option<&Dropout>,
    grads: Option<&mut [F]>,
    ws: &mut Workspace<F>,
) -> SeqLoss {
    let hp = &base.hp;
    let tl = ex.len();
    assert!(tl <= ws.t_max, "sequence longer than the workspace");
    assert_eq!(ex.loss_mask.len(), tl, "loss mask length");
    assert_eq!(params.len(), layout.len, "parameter vector length");
    if tl == 0 {
        return SeqLoss::default();
    }
    let dim = hp.dim as usize;
    let nl = hp.n_layers as usize;
    rope_tables(base, tl, &mut ws.cos, &mut ws.sin);
    let cx = Ctx {
        base,
        layout,
        params,
        dropout,
        t_len: tl,
        scale: F::from_f32(layout.scale),
    };
    let Workspace {
        resid,
        c,
        gs,
        cos,
        sin,
        head_x,
        head_inv,
        head_logits,
        head_dx,
        mask,
        row32,
        rowf,
        tmp,
        t_max,
    } = ws;
    let stride = *t_max * dim;
    let mut rest = WsRest {
        cos,
        sin,
        mask,
        row32,
        rowf,
        tmp,
    };

    // x_0 = embedding rows.
    {
        let mut rows = Rows {
            row32: &mut *rest.row32,
            rowf: &mut *rest.rowf,
        };
        for t in 0..tl {
            let row = rows.get(&base.embed, ex.tokens[t] as usize, dim);
            resid[t * dim..(t + 1) * dim].copy_from_slice(row);
        }
        if let Some(s) = base.cfg.embed_scale {
            let s = F::from_f32(s);
            resid[..tl * dim].iter_mut().for_each(|v| *v *= s);
        }
    }
    for l in 0..nl {
        let (before, after) = resid.split_at_mut((l + 1) * stride);
        layer_fwd(&cx, l, &before[l * stride..], after, c, &mut rest);
    }
    let x_last = &resid[nl * stride..];
    let mut rows = Rows {
        row32: &mut *rest.row32,
        rowf: &mut *rest.rowf,
    };
    let Some(grads) = grads else {
        return head(
            base,
            ex,
            x_last,
            head_x,
            head_inv,
            head_logits,
            head_dx,
            None,
            &mut rows,
        );
    };
    let loss = head(
        base,
        ex,
        x_last,
        head_x,
        head_inv,
        head_logits,
        head_dx,
        Some(&mut gs.dx[..]),
        &mut rows,
    );
    for l in (0..nl).rev() {
        let (before, after) = resid.split_at_mut((l + 1) * stride);
        let x_in = &before[l * stride..];
        if l + 1 < nl {
            // Recompute this layer's internals (the cache holds the last layer's).
            layer_fwd(&cx, l, x_in, after, c, &mut rest);
        }
        layer_bwd(&cx, l, x_in, c, gs, grads, l > 0, &mut rest);
    }
    loss
}
