//! Kernel micro-benchmarks (criterion): every matrix-vector and matrix-matrix
//! kernel slot on every tier this CPU has, against scalar, at the matrix shapes
//! of the benchmark models; then the non-matvec kernels (norm, softmax,
//! activations, RoPE, attention helpers) at SmolLM2-135M's sizes, and the whole
//! per-token work outside the matrix products.
//!
//! One benchmark group per kernel and shape, one function per tier (scalar
//! first), so each group's lines compare the tiers:
//! `matvec_q8_0_q8_0/135m.output/{scalar,avx2,...}`. Matrix groups report
//! decimal GB/s of weight bytes (`Throughput::BytesDecimal`). The matmul groups
//! run `MATMUL_TOKENS` tokens per call and count the weight bytes once per
//! token, so their GB/s is the rate a matvec would need to keep up; their time
//! is per call. Short warm-up and measurement (`config`) keep a full run to a
//! few minutes; non-matrix groups report time per call only.
//!
//! Run: `cargo bench --bench kernels [-- FILTER]` (FILTER is a regex on the
//! benchmark id, e.g. `q8_0`, `135m.output`, `/avx2`); criterion's own flags
//! apply (`--save-baseline NAME`, `--baseline NAME`, `--list`).

use std::hint::black_box;
use std::time::Duration;

use bytemuck::Zeroable;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use ember_kernels::arch::{kernels_for, Kernels, Tier};
use ember_kernels::blocks::{interleave_rows, BlockIq4Nl, BlockQ4_0, BlockQ8_0, QK};
use ember_kernels::scalar;
use half::f16;

/// Short runs: the kernels take 10 ns to 100 ms per call, and criterion's
/// default (3 s warm-up, 5 s measurement, 100 samples) would make a full run of
/// all groups on all tiers take most of an hour. Command-line flags override.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10)
}

criterion_group! {
    name = benches;
    config = config();
    targets = matrix_kernels, other_kernels
}
criterion_main!(benches);

/// Every tier this CPU can run, scalar first.
fn tiers() -> Vec<Kernels> {
    Tier::ALL.into_iter().filter_map(kernels_for).collect()
}

/// (name, rows, cols): SmolLM-135M's FFN and output, TinyLlama-1.1B's FFN.
const SHAPES: [(&str, usize, usize); 3] = [
    ("135m.w_up", 1536, 576),
    ("135m.output", 49152, 576),
    ("1.1b.w_up", 5632, 2048),
];

/// Tokens per matrix-matrix call (a thread's share of a prefill batch of
/// `forward::MAX_BATCH` = 64 on two threads).
const MATMUL_TOKENS: usize = 32;

/// One shape's matrix in every layout the kernels read, and its activations.
struct Matrix {
    /// f32 activations `[cols]` and `[MATMUL_TOKENS, cols]`.
    x: Vec<f32>,
    x32: Vec<f32>,
    /// `[rows, cols]` row-major f32 and f16.
    wf: Vec<f32>,
    wh: Vec<f16>,
    /// Q8_0 / Q4_0 / IQ4_NL blocks, plain row-major.
    w8: Vec<BlockQ8_0>,
    w4: Vec<BlockQ4_0>,
    wi: Vec<BlockIq4Nl>,
    /// The same, row-interleaved in tiles of four rows (what `ember convert` writes).
    t8: Vec<BlockQ8_0>,
    t4: Vec<BlockQ4_0>,
    ti: Vec<BlockIq4Nl>,
    /// Quantized activations `[cols / QK]` and `[MATMUL_TOKENS, cols / QK]`.
    a: Vec<BlockQ8_0>,
    a32: Vec<BlockQ8_0>,
}

impl Matrix {
    fn new(rows: usize, cols: usize) -> Self {
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let wf: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 504.0)
            .collect();
        let wh: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
        let blocks = rows * cols / QK;
        let mut w8 = vec![BlockQ8_0::zeroed(); blocks];
        let mut w4 = vec![BlockQ4_0::zeroed(); blocks];
        let mut wi = vec![BlockIq4Nl::zeroed(); blocks];
        scalar::quantize_row_q8_0(&wf, &mut w8);
        scalar::quantize_row_q4_0(&wf, &mut w4);
        scalar::quantize_row_iq4_nl(&wf, &mut wi);
        let (mut t8, mut t4, mut ti) = (w8.clone(), w4.clone(), wi.clone());
        interleave_rows(&w8, cols / QK, &mut t8);
        interleave_rows(&w4, cols / QK, &mut t4);
        interleave_rows(&wi, cols / QK, &mut ti);
        let mut a = vec![BlockQ8_0::zeroed(); cols / QK];
        scalar::quantize_row_q8_0(&x, &mut a);
        let x32 = x.repeat(MATMUL_TOKENS);
        let a32 = a.repeat(MATMUL_TOKENS);
        Matrix {
            x,
            x32,
            wf,
            wh,
            w8,
            w4,
            wi,
            t8,
            t4,
            ti,
            a,
            a32,
        }
    }
}

/// A matrix kernel case: slot name, weight bytes, tokens per call, and the call
/// (`out` holds `tokens * rows` results).
type MatrixCase = (
    &'static str,
    usize,
    usize,
    fn(&Kernels, &Matrix, &mut [f32]),
);

fn matrix_cases(m: &Matrix) -> [MatrixCase; 12] {
    let n = MATMUL_TOKENS;
    [
        ("matvec_f32_f32", m.wf.len() * 4, 1, |k, m, out| {
            (k.matvec_f32_f32)(black_box(&m.wf), &m.x, out)
        }),
        ("matvec_f16_f32", m.wh.len() * 2, 1, |k, m, out| {
            (k.matvec_f16_f32)(black_box(&m.wh), &m.x, out)
        }),
        ("matvec_q8_0_q8_0", m.w8.len() * 34, 1, |k, m, out| {
            (k.matvec_q8_0_q8_0)(black_box(&m.w8), &m.a, out)
        }),
        ("matvec_q4_0_q8_0", m.w4.len() * 18, 1, |k, m, out| {
            (k.matvec_q4_0_q8_0)(black_box(&m.w4), &m.a, out)
        }),
        ("matvec_iq4_nl_q8_0", m.wi.len() * 18, 1, |k, m, out| {
            (k.matvec_iq4_nl_q8_0)(black_box(&m.wi), &m.a, out)
        }),
        ("matvec_q8_0x4_q8_0", m.t8.len() * 34, 1, |k, m, out| {
            (k.matvec_q8_0x4_q8_0)(black_box(&m.t8), &m.a, out)
        }),
        ("matvec_q4_0x4_q8_0", m.t4.len() * 18, 1, |k, m, out| {
            (k.matvec_q4_0x4_q8_0)(black_box(&m.t4), &m.a, out)
        }),
        ("matvec_iq4_nlx4_q8_0", m.ti.len() * 18, 1, |k, m, out| {
            (k.matvec_iq4_nlx4_q8_0)(black_box(&m.ti), &m.a, out)
        }),
        ("matmul_f16_f32", m.wh.len() * 2, n, |k, m, out| {
            (k.matmul_f16_f32)(black_box(&m.wh), &m.x32, MATMUL_TOKENS, out)
        }),
        ("matmul_q8_0x4_q8_0", m.t8.len() * 34, n, |k, m, out| {
            (k.matmul_q8_0x4_q8_0)(black_box(&m.t8), &m.a32, MATMUL_TOKENS, out)
        }),
        ("matmul_q4_0x4_q8_0", m.t4.len() * 18, n, |k, m, out| {
            (k.matmul_q4_0x4_q8_0)(black_box(&m.t4), &m.a32, MATMUL_TOKENS, out)
        }),
        ("matmul_iq4_nlx4_q8_0", m.ti.len() * 18, n, |k, m, out| {
            (k.matmul_iq4_nlx4_q8_0)(black_box(&m.ti), &m.a32, MATMUL_TOKENS, out)
        }),
    ]
}

/// Every matrix kernel slot x shape, one group each, one function per tier.
fn matrix_kernels(c: &mut Criterion) {
    let tiers = tiers();
    for (shape, rows, cols) in SHAPES {
        let m = Matrix::new(rows, cols);
        let mut out = vec![0.0f32; MATMUL_TOKENS * rows];
        for (op, bytes, tokens, call) in matrix_cases(&m) {
            let mut g = c.benchmark_group(format!("{op}/{shape}"));
            // Decimal GB/s, as bandwidths are quoted (and `ember bench` reports).
            g.throughput(Throughput::BytesDecimal((bytes * tokens) as u64));
            // Scalar calls take up to seconds; flat sampling needs 10 of them
            // where linear sampling needs 55.
            g.sampling_mode(SamplingMode::Flat);
            for k in &tiers {
                let out = &mut out[..tokens * rows];
                g.bench_function(k.tier.name(), |b| b.iter(|| call(k, &m, out)));
            }
            g.finish();
        }
    }
}

/// SmolLM2-135M's shapes for the non-matvec kernels.
const DIM: usize = 576;
const HEAD_DIM: usize = 64;
const N_HEADS: usize = 9;
const N_KV_HEADS: usize = 3;
const KV_DIM: usize = N_KV_HEADS * HEAD_DIM;
/// Query heads per key/value head.
const GROUP: usize = N_HEADS / N_KV_HEADS;
const FFN: usize = 1536;
const N_LAYERS: usize = 30;
const CONTEXTS: [usize; 2] = [256, 1024];
const NORM_EPS: f32 = 1e-5;
/// `1 / sqrt(HEAD_DIM)`, the attention score scale.
const SCORE_SCALE: f32 = 0.125;

/// Inputs and scratch of the non-matvec kernels at SmolLM2-135M's sizes.
struct Ops {
    x: Vec<f32>,
    w: Vec<f32>,
    gate0: Vec<f32>,
    up: Vec<f32>,
    q0: Vec<f32>,
    q: Vec<f32>,
    /// f16 K and V caches `[max context, KV_DIM]`.
    kc: Vec<f16>,
    vc: Vec<f16>,
    /// The same caches widened (an f32 KV cache).
    kf: Vec<f32>,
    vf: Vec<f32>,
    inv_freq: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    logits0: Vec<f32>,
    out: Vec<f32>,
    buf: Vec<f32>,
    /// Scores of up to `N_HEADS` heads over the longest context.
    scores: Vec<f32>,
    head: [f32; HEAD_DIM],
    /// Attention outputs of all query heads.
    heads_out: [f32; N_HEADS * HEAD_DIM],
}

impl Ops {
    fn new() -> Self {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut vals = |n: usize, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    ((rng >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
                })
                .collect()
        };
        let max_t = CONTEXTS[CONTEXTS.len() - 1];
        let to_f16 = |v: Vec<f32>| v.iter().map(|&v| f16::from_f32(v)).collect();
        let q0 = vals(N_HEADS * HEAD_DIM, 1.0);
        let (kc, vc): (Vec<f16>, Vec<f16>) = (
            to_f16(vals(max_t * KV_DIM, 1.0)),
            to_f16(vals(max_t * KV_DIM, 1.0)),
        );
        let widen = |v: &[f16]| v.iter().map(|x| x.to_f32()).collect();
        let (kf, vf) = (widen(&kc), widen(&vc));
        let inv_freq: Vec<f32> = (0..HEAD_DIM / 2)
            .map(|i| 1.0 / 100000f32.powf(2.0 * i as f32 / HEAD_DIM as f32))
            .collect();
        let (mut cos, mut sin) = (vec![0.0; HEAD_DIM / 2], vec![0.0; HEAD_DIM / 2]);
        scalar::rope_angles_f32(200, &inv_freq, &mut cos, &mut sin);
        Ops {
            x: vals(DIM, 2.0),
            w: vals(DIM, 1.0),
            gate0: vals(FFN, 4.0),
            up: vals(FFN, 1.0),
            q: q0.clone(),
            q0,
            kc,
            vc,
            kf,
            vf,
            inv_freq,
            cos,
            sin,
            logits0: vals(max_t, 8.0),
            out: vec![0.0; DIM],
            buf: vec![0.0; FFN.max(max_t)],
            scores: vec![0.0; N_HEADS * max_t],
            head: [0.0; HEAD_DIM],
            heads_out: [0.0; N_HEADS * HEAD_DIM],
        }
    }

    /// Query heads `h..h + heads` (of one grouped-query group: they share the
    /// key/value head `h / GROUP`) over the first `t` cached positions, as
    /// `KvCache::attend` does it with `k`'s kernels: one call of the fused
    /// `attend_f16` over rows `KV_DIM` apart.
    fn attend_f16(&mut self, k: &Kernels, h: usize, heads: usize, t: usize) {
        let q = &self.q[h * HEAD_DIM..][..heads * HEAD_DIM];
        let (off, len) = (h / GROUP * HEAD_DIM, (t - 1) * KV_DIM + HEAD_DIM);
        (k.attend_f16)(
            heads,
            q,
            &self.kc[off..][..len],
            &self.vc[off..][..len],
            KV_DIM,
            SCORE_SCALE,
            &mut self.scores[..heads * t],
            &mut self.heads_out[h * HEAD_DIM..][..heads * HEAD_DIM],
        );
    }

    /// `attend_f16` over the widened (f32) cache.
    fn attend_f32(&mut self, k: &Kernels, t: usize) {
        let q = &self.q[..HEAD_DIM];
        let len = (t - 1) * KV_DIM + HEAD_DIM;
        (k.attend_f32)(
            1,
            q,
            &self.kf[..len],
            &self.vf[..len],
            KV_DIM,
            SCORE_SCALE,
            &mut self.scores[..t],
            &mut self.head,
        );
    }

    /// An f32 cache's head as the runtime did it before the fused `attend_f32`:
    /// the tier's `dot_f32` per position, softmax, `axpy_f32` per position.
    fn attend_f32_composed(&mut self, k: &Kernels, t: usize) {
        let q = &self.q[..HEAD_DIM];
        let s = &mut self.scores[..t];
        self.head.fill(0.0);
        for (j, sc) in s.iter_mut().enumerate() {
            *sc = (k.dot_f32)(q, &self.kf[j * KV_DIM..][..HEAD_DIM]) * SCORE_SCALE;
        }
        (k.softmax_f32)(s);
        for (j, &p) in s.iter().enumerate() {
            (k.axpy_f32)(&mut self.head, p, &self.vf[j * KV_DIM..][..HEAD_DIM]);
        }
    }

    /// The same head as the runtime did it before these slots existed: scalar
    /// dot, softmax, and each value row widened into scratch, then `axpy_f32`.
    fn attend_f16_before(&mut self, t: usize) {
        let q = &self.q[..HEAD_DIM];
        let s = &mut self.scores[..t];
        let mut tmp = [0.0f32; HEAD_DIM];
        self.head.fill(0.0);
        for (j, sc) in s.iter_mut().enumerate() {
            *sc = scalar::dot_f16_f32(&self.kc[j * KV_DIM..][..HEAD_DIM], q) * SCORE_SCALE;
        }
        scalar::softmax_f32(s);
        for (j, &p) in s.iter().enumerate() {
            scalar::f16_to_f32(&self.vc[j * KV_DIM..][..HEAD_DIM], &mut tmp);
            scalar::axpy_f32(&mut self.head, p, &tmp);
        }
    }

    /// Everything outside the matrix products for one decoded token at context
    /// `t`: per layer two RMSNorms, RoPE of q and k, every head's f16
    /// attention, two residual adds and SwiGLU; then the final RMSNorm and the
    /// RoPE table (once per token).
    fn non_matvec_token(&mut self, k: &Kernels, t: usize) {
        for _ in 0..N_LAYERS {
            (k.rmsnorm_f32)(&mut self.out, &self.x, &self.w, NORM_EPS);
            let layout = scalar::RopeLayout::Half;
            (k.rope_f32)(&mut self.q, HEAD_DIM, &self.cos, &self.sin, layout);
            (k.rope_f32)(
                &mut self.q[..KV_DIM],
                HEAD_DIM,
                &self.cos,
                &self.sin,
                layout,
            );
            for h in (0..N_HEADS).step_by(GROUP) {
                self.attend_f16(k, h, GROUP, t);
            }
            (k.add_f32)(&mut self.out, &self.x);
            (k.rmsnorm_f32)(&mut self.out, &self.x, &self.w, NORM_EPS);
            // Fresh gate values: SwiGLU applied to its own output decays to
            // subnormals, which would time something the model never does.
            self.buf[..FFN].copy_from_slice(&self.gate0);
            (k.silu_gate_f32)(&mut self.buf[..FFN], &self.up);
            (k.add_f32)(&mut self.out, &self.x);
        }
        (k.rmsnorm_f32)(&mut self.out, &self.x, &self.w, NORM_EPS);
        scalar::rope_angles_f32(200, &self.inv_freq, &mut self.cos, &mut self.sin);
    }
}

/// Benchmarks `f` on every tier as one group named `name`.
fn per_tier(c: &mut Criterion, name: &str, tiers: &[Kernels], mut f: impl FnMut(&Kernels)) {
    let mut g = c.benchmark_group(name);
    for k in tiers {
        g.bench_function(k.tier.name(), |b| b.iter(|| f(k)));
    }
    g.finish();
}

/// The non-matvec kernels at SmolLM2-135M's sizes, every tier.
fn other_kernels(c: &mut Criterion) {
    let tiers = tiers();
    let s = &mut Ops::new();
    // The input quantization of every quantized product, plain and for rotated
    // matrices (each block through `hadamard32_block` first, as
    // `runtime::model::quantize_input` does): the rotation's cost per input.
    {
        let x = s.gate0.clone();
        let mut q = vec![BlockQ8_0::zeroed(); FFN / QK];
        let mut g = c.benchmark_group(format!("quantize_input_q8_0/{FFN}"));
        for k in &tiers {
            g.bench_function(k.tier.name(), |b| {
                b.iter(|| (k.quantize_row_q8_0)(black_box(&x), &mut q))
            });
            g.bench_function(format!("{}+hadamard32", k.tier.name()), |b| {
                b.iter(|| {
                    for (xs, qb) in black_box(&x).chunks_exact(QK).zip(q.chunks_exact_mut(1)) {
                        let mut block: [f32; QK] = xs.try_into().unwrap();
                        scalar::hadamard32_block(&mut block);
                        (k.quantize_row_q8_0)(&block, qb);
                    }
                })
            });
        }
        g.finish();
    }

    // Scalar only: the runtime computes the table once per token.
    let mut g = c.benchmark_group("rope_angles_f32/32pairs");
    g.bench_function(Tier::Scalar.name(), |b| {
        b.iter(|| scalar::rope_angles_f32(black_box(200), &s.inv_freq, &mut s.cos, &mut s.sin))
    });
    g.finish();
    per_tier(c, "rmsnorm_f32/576", &tiers, |k| {
        (k.rmsnorm_f32)(&mut s.out, black_box(&s.x), &s.w, NORM_EPS)
    });
    per_tier(c, "add_f32/576", &tiers, |k| {
        (k.add_f32)(&mut s.out, black_box(&s.x))
    });
    // Each call starts from fresh gate values (see `non_matvec_token`); the
    // 6 KiB copy is part of the time.
    per_tier(c, "silu_gate_f32/1536", &tiers, |k| {
        s.buf[..FFN].copy_from_slice(&s.gate0);
        (k.silu_gate_f32)(&mut s.buf[..FFN], black_box(&s.up))
    });
    per_tier(c, "gelu_gate_f32/1536", &tiers, |k| {
        s.buf[..FFN].copy_from_slice(&s.gate0);
        (k.gelu_gate_f32)(&mut s.buf[..FFN], black_box(&s.up))
    });
    for (name, n, layout) in [
        ("rope_f32/q_9x64_half", N_HEADS, scalar::RopeLayout::Half),
        (
            "rope_f32/q_9x64_interleaved",
            N_HEADS,
            scalar::RopeLayout::Interleaved,
        ),
        ("rope_f32/k_3x64_half", N_KV_HEADS, scalar::RopeLayout::Half),
    ] {
        per_tier(c, name, &tiers, |k| {
            let q = black_box(&mut s.q[..n * HEAD_DIM]);
            (k.rope_f32)(q, HEAD_DIM, &s.cos, &s.sin, layout)
        });
    }
    let qh = &s.q0[..HEAD_DIM];
    per_tier(c, "dot_f16_f32/64", &tiers, |k| {
        black_box((k.dot_f16_f32)(black_box(&s.kc[..HEAD_DIM]), qh));
    });
    per_tier(c, "dot_f32/64", &tiers, |k| {
        black_box((k.dot_f32)(black_box(&s.x[..HEAD_DIM]), qh));
    });
    per_tier(c, "axpy_f16_f32/64", &tiers, |k| {
        (k.axpy_f16_f32)(&mut s.head, 0.01, black_box(&s.vc[..HEAD_DIM]))
    });
    per_tier(c, "axpy_f32/64", &tiers, |k| {
        (k.axpy_f32)(&mut s.head, 0.01, black_box(qh))
    });
    per_tier(c, "f16_to_f32/64", &tiers, |k| {
        (k.f16_to_f32)(black_box(&s.kc[..HEAD_DIM]), &mut s.head)
    });
    for t in CONTEXTS {
        per_tier(c, &format!("softmax_f32/{t}"), &tiers, |k| {
            s.buf[..t].copy_from_slice(&s.logits0[..t]);
            (k.softmax_f32)(black_box(&mut s.buf[..t]))
        });
    }
    for t in CONTEXTS {
        let mut g = c.benchmark_group(format!("attend_head_f16/ctx{t}"));
        for k in &tiers {
            g.bench_function(k.tier.name(), |b| {
                b.iter(|| s.attend_f16(k, 0, 1, black_box(t)))
            });
        }
        // The runtime's previous code path (scalar, widening each value row).
        g.bench_function("before", |b| b.iter(|| s.attend_f16_before(black_box(t))));
        g.finish();
    }
    // One grouped-query group (three query heads over one key/value head):
    // one call for the group against one call per head.
    for t in CONTEXTS {
        let mut g = c.benchmark_group(format!("attend_group_f16/ctx{t}"));
        for k in &tiers {
            g.bench_function(k.tier.name(), |b| {
                b.iter(|| s.attend_f16(k, 0, GROUP, black_box(t)))
            });
            let per_head = format!("{} per head", k.tier.name());
            g.bench_function(per_head, |b| {
                b.iter(|| (0..GROUP).for_each(|h| s.attend_f16(k, h, 1, black_box(t))))
            });
        }
        g.finish();
    }
    for t in CONTEXTS {
        let mut g = c.benchmark_group(format!("attend_head_f32/ctx{t}"));
        for k in &tiers {
            g.bench_function(k.tier.name(), |b| b.iter(|| s.attend_f32(k, black_box(t))));
            let composed = format!("{} composed", k.tier.name());
            g.bench_function(composed, |b| {
                b.iter(|| s.attend_f32_composed(k, black_box(t)))
            });
        }
        g.finish();
    }
    for t in CONTEXTS {
        let mut g = c.benchmark_group(format!("per_token_non_matvec/ctx{t}"));
        // Tens of milliseconds per call on scalar: 10 calls, not 55.
        g.sampling_mode(SamplingMode::Flat);
        for k in &tiers {
            g.bench_function(k.tier.name(), |b| {
                b.iter(|| s.non_matvec_token(k, black_box(t)))
            });
        }
        g.finish();
    }
}
