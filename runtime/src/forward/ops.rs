//! The row-wise operations of the block over `n` rows: norms, bias and
//! residual adds, activations, matrix products (the one place that picks a
//! matrix-vector or matrix-matrix path) and LoRA hooks. Rows are independent,
//! so splitting them over the pool gives the same bits on any thread count.

use ember_kernels::blocks::{BlockQ8_0, QK};
use ember_kernels::scalar as k;

use crate::format::{Activation, NormKind};
use crate::lora::{lora_hook, LoraTarget, MatrixHooks};
use crate::model::{quantize_input, Input, Model, NormIndex, Weights};
use crate::pool::Pool;

/// One norm of the model: its weight and, for LayerNorm, its bias.
#[derive(Clone, Copy)]
pub(super) struct Norm<'m> {
    kind: NormKind,
    eps: f32,
    weight: &'m [f32],
    bias: Option<&'m [f32]>,
}

impl<'m> Norm<'m> {
    pub(super) fn new(model: &'m Model, idx: NormIndex) -> Self {
        let cfg = model.config();
        Self {
            kind: cfg.norm,
            eps: cfg.norm_eps,
            weight: model.vector(idx.weight),
            bias: idx.bias.map(|b| model.vector(b)),
        }
    }

    /// `out = norm(x)` for one row (`out`, `x` as wide as the weight).
    pub(super) fn row(&self, model: &Model, out: &mut [f32], x: &[f32]) {
        match (self.kind, self.bias) {
            (NormKind::LayerNorm, Some(b)) => k::layernorm_f32(out, x, self.weight, b, self.eps),
            _ => (model.kernels.rmsnorm_f32)(out, x, self.weight, self.eps),
        }
    }

    /// `out[t] = norm(x[t])` for every row of `x`, split over the pool.
    pub(super) fn rows(&self, model: &Model, pool: &mut Pool, out: &mut [f32], x: &[f32]) {
        let dim = self.weight.len();
        pool.split_rows(out, dim, &|first, part| {
            let x = &x[first..first + part.len()];
            for (o, xr) in part.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
                self.row(model, o, xr);
            }
        });
    }

    /// Every head (`weight.len()` wide) of every row of `x`, in place, through
    /// `tmp` (one head of scratch).
    pub(super) fn heads_in_place(&self, model: &Model, x: &mut [f32], tmp: &mut [f32]) {
        for head in x.chunks_exact_mut(self.weight.len()) {
            self.row(model, tmp, head);
            head.copy_from_slice(tmp);
        }
    }
}

/// `x[t] += b` for every row of `x` (`b.len()` wide), split over the pool.
pub(super) fn add_bias_rows(model: &Model, pool: &mut Pool, x: &mut [f32], b: &[f32]) {
    let kern = &model.kernels;
    let w = b.len();
    pool.split_rows(x, w, &|_, part| {
        part.chunks_exact_mut(w).for_each(|r| (kern.add_f32)(r, b))
    });
}

/// The residual add `x[t] += y[t]`, split over the pool.
pub(super) fn add_rows(model: &Model, pool: &mut Pool, x: &mut [f32], y: &[f32]) {
    let kern = &model.kernels;
    let dim = model.config().dim;
    pool.split_rows(x, dim, &|first, part| {
        let y = &y[first..first + part.len()];
        for (xr, yr) in part.chunks_exact_mut(dim).zip(y.chunks_exact(dim)) {
            (kern.add_f32)(xr, yr);
        }
    });
}

/// The gated activation's kernel: `gate[i] = act(gate[i]) * up[i]`.
pub(super) fn gate_kernel(model: &Model) -> fn(&mut [f32], &[f32]) {
    match model.config().activation {
        Activation::Silu => model.kernels.silu_gate_f32,
        Activation::GeluTanh => model.kernels.gelu_gate_f32,
        Activation::GeluErf => k::gelu_erf_gate_f32,
    }
}

/// The activation of a plain MLP, elementwise.
pub(super) fn activate_rows(model: &Model, pool: &mut Pool, x: &mut [f32]) {
    let act: fn(f32) -> f32 = match model.config().activation {
        Activation::Silu => k::silu,
        Activation::GeluTanh => k::gelu_tanh,
        Activation::GeluErf => k::gelu_erf,
    };
    let w = model.config().ffn_dim;
    pool.split_rows(x, w, &|_, part| part.iter_mut().for_each(|v| *v = act(*v)));
}

/// Blocks of a pass's input below which its quantization runs on the calling
/// thread: one token's input of a small model (576 values on 135M is 18
/// blocks), where a pool hand-off would cost about as much as the work.
const PARALLEL_QUANT_MIN_BLOCKS: usize = 512;

/// `out = [W_0 x | W_1 x | ...]` for the `n` rows of `x` (`[n, cols]`), the
/// matrices `mats` all reading `x` (stored rotated when `rotate`); `out` is
/// their outputs one after another, each `[n, rows_i]` token-major.
///
/// One row: the matrix-vector kernels, all matrices in one pooled job
/// (`Weights::matvec_many_input_threaded`). More rows: each matrix once
/// through the matrix-matrix kernels where its type has one (per-token
/// results identical to the matrix-vector kernels'), else one product per
/// row. The input is quantized to Q8_0 once for every matrix when the model
/// has quantized matrices and the rows are whole blocks.
#[allow(clippy::too_many_arguments)]
pub(super) fn products(
    model: &Model,
    mats: &[Weights<'_>],
    rotate: bool,
    x: &[f32],
    n: usize,
    xq: &mut [BlockQ8_0],
    out: &mut [f32],
    pool: &mut Pool,
) {
    let kern = &model.kernels;
    let cols = x.len() / n;
    let quantized = model.has_quantized && cols.is_multiple_of(QK);
    let blocks = cols / QK;
    if n == 1 {
        let input = if quantized {
            Input::quantized_for(kern, x, xq, rotate)
        } else {
            Input::f32(x)
        };
        return match mats {
            [w] => w.matvec_input_threaded(kern, &input, out, pool),
            _ => Weights::matvec_many_input_threaded(mats, kern, &input, out, pool),
        };
    }
    let xq = &mut xq[..n * blocks];
    if quantized {
        if xq.len() < PARALLEL_QUANT_MIN_BLOCKS {
            quantize_input(kern, x, xq, rotate);
        } else {
            pool.split(xq, 1, &|b0, part| {
                let xs = &x[b0 * QK..(b0 + part.len()) * QK];
                quantize_input(kern, xs, part, rotate)
            });
        }
    }
    let xq = &*xq;
    let mut rest = out;
    for w in mats {
        let rows = w.len() / cols;
        let (o, tail) = rest.split_at_mut(n * rows);
        rest = tail;
        if w.matmul_f32_input_threaded(kern, x, n, o, pool) {
            continue;
        }
        if quantized && w.matmul_input_threaded(kern, xq, n, o, pool) {
            continue;
        }
        for (t, ot) in o.chunks_exact_mut(rows).enumerate() {
            let xr = &x[t * cols..(t + 1) * cols];
            let inp = if quantized {
                Input {
                    x: xr,
                    q8: &xq[t * blocks..(t + 1) * blocks],
                }
            } else {
                Input::f32(xr)
            };
            w.matvec_input_threaded(kern, &inp, ot, pool);
        }
    }
}

/// The LoRA / observer hook of target `t` in `layer` for each of the `n` rows.
pub(super) fn hook_rows(
    hooks: &mut MatrixHooks,
    layer: usize,
    t: LoraTarget,
    x: &[f32],
    out: &mut [f32],
    n: usize,
) {
    if hooks.is_none() {
        return;
    }
    let (cols, rows) = (x.len() / n, out.len() / n);
    for (xr, o) in x.chunks_exact(cols).zip(out.chunks_exact_mut(rows)) {
        lora_hook(hooks, layer, t, xr, o);
    }
}

/// Final-logit soft-capping `c * tanh(v / c)`, elementwise.
pub(super) fn softcap(logits: &mut [f32], c: f32) {
    for v in logits {
        *v = libm::tanhf(*v / c) * c;
    }
}
