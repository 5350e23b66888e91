//! Kernel micro-benchmarks: every matrix-vector kernel on every tier this CPU has,
//! against scalar, at the matrix shapes of the benchmark models; then the
//! non-matvec kernels (norm, softmax, activations, RoPE, attention helpers) at
//! SmolLM2-135M's sizes, in nanoseconds per call. No external
//! harness (criterion is not a dependency yet): each case runs for about 0.3 s
//! after a warm-up and reports the median time of its batches and the weight
//! bytes per second. Run: `cargo bench --bench kernels [-- FILTER]`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytemuck::Zeroable;
use ember_kernels::arch::{kernels_for, Kernels, Tier};
use ember_kernels::blocks::{interleave_rows, BlockQ4_0, BlockQ8_0, QK};
use ember_kernels::scalar;
use half::f16;

/// (name, rows, cols): SmolLM-135M's FFN and output, TinyLlama-1.1B's FFN.
const SHAPES: [(&str, usize, usize); 3] = [
    ("135m.w_up", 1536, 576),
    ("135m.output", 49152, 576),
    ("1.1b.w_up", 5632, 2048),
];

fn median_time(mut f: impl FnMut()) -> Duration {
    for _ in 0..3 {
        f();
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(300) || times.len() < 5 {
        let t = Instant::now();
        f();
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

fn report(case: &str, tier: Tier, bytes: usize, t: Duration) {
    println!(
        "{case:<28} {:<7} {:>9.1} us {:>7.2} GB/s",
        tier.name(),
        t.as_secs_f64() * 1e6,
        bytes as f64 / t.as_secs_f64() / 1e9
    );
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let tiers: Vec<Kernels> = Tier::ALL.into_iter().filter_map(kernels_for).collect();
    for (shape, rows, cols) in SHAPES {
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let wf: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 504.0)
            .collect();
        let wh: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
        let mut w8 = vec![
            BlockQ8_0 {
                d: [0; 2],
                qs: [0; QK]
            };
            rows * cols / QK
        ];
        let mut w4 = vec![
            BlockQ4_0 {
                d: [0; 2],
                qs: [0; QK / 2]
            };
            rows * cols / QK
        ];
        scalar::quantize_row_q8_0(&wf, &mut w8);
        scalar::quantize_row_q4_0(&wf, &mut w4);
        let (mut t8, mut t4) = (w8.clone(), w4.clone());
        interleave_rows(&w8, cols / QK, &mut t8);
        interleave_rows(&w4, cols / QK, &mut t4);
        let mut a = vec![
            BlockQ8_0 {
                d: [0; 2],
                qs: [0; QK]
            };
            cols / QK
        ];
        scalar::quantize_row_q8_0(&x, &mut a);
        let mut out = vec![0.0f32; rows];
        // IQ4_NL, row-interleaved (what `convert --dtype iq4_nl` writes).
        let mut wi = vec![ember_kernels::blocks::BlockIq4Nl::zeroed(); rows * cols / QK];
        scalar::quantize_row_iq4_nl(&wf, &mut wi);
        let mut ti = wi.clone();
        interleave_rows(&wi, cols / QK, &mut ti);
        for k in &tiers {
            let ops = [
                ("matvec_f32_f32", wf.len() * 4),
                ("matvec_f16_f32", wh.len() * 2),
                ("matvec_q8_0_q8_0", w8.len() * 34),
                ("matvec_q4_0_q8_0", w4.len() * 18),
                ("matvec_q8_0x4_q8_0", t8.len() * 34),
                ("matvec_q4_0x4_q8_0", t4.len() * 18),
            ];
            for (op_index, (op, bytes)) in ops.into_iter().enumerate() {
                let case = format!("{op} {shape}");
                if filter.as_deref().is_some_and(|p| !case.contains(p)) {
                    continue;
                }
                let t = median_time(|| match op_index {
                    0 => (k.matvec_f32_f32)(black_box(&wf), &x, &mut out),
                    1 => (k.matvec_f16_f32)(black_box(&wh), &x, &mut out),
                    2 => (k.matvec_q8_0_q8_0)(black_box(&w8), &a, &mut out),
                    3 => (k.matvec_q4_0_q8_0)(black_box(&w4), &a, &mut out),
                    4 => (k.matvec_q8_0x4_q8_0)(black_box(&t8), &a, &mut out),
                    _ => (k.matvec_q4_0x4_q8_0)(black_box(&t4), &a, &mut out),
                });
                report(&case, k.tier, bytes, t);
            }
            // Prefill: 32 tokens per call; reported per token (weight bytes are
            // read once per call, so "GB/s" is per-token equivalent traffic).
            let n = MATMUL_TOKENS;
            let a32: Vec<BlockQ8_0> = (0..n).flat_map(|_| a.iter().copied()).collect();
            let mut out32 = vec![0.0f32; n * rows];
            for (op, bytes) in [
                ("matmul_q8_0x4_q8_0", t8.len() * 34),
                ("matmul_q4_0x4_q8_0", t4.len() * 18),
            ] {
                let case = format!("{op} {shape} /tok");
                if filter.as_deref().is_some_and(|p| !case.contains(p)) {
                    continue;
                }
                let t = median_time(|| {
                    if op.starts_with("matmul_q8") {
                        (k.matmul_q8_0x4_q8_0)(black_box(&t8), &a32, n, &mut out32)
                    } else {
                        (k.matmul_q4_0x4_q8_0)(black_box(&t4), &a32, n, &mut out32)
                    }
                });
                report(&case, k.tier, bytes, t / n as u32);
            }
            for (op, per_call) in [("matvec_iq4_nlx4_q8_0", 1), ("matmul_iq4_nlx4_q8_0", n)] {
                let case = format!("{op} {shape}{}", if per_call > 1 { " /tok" } else { "" });
                if filter.as_deref().is_some_and(|p| !case.contains(p)) {
                    continue;
                }
                let t = median_time(|| {
                    if per_call == 1 {
                        (k.matvec_iq4_nlx4_q8_0)(black_box(&ti), &a, &mut out)
                    } else {
                        (k.matmul_iq4_nlx4_q8_0)(black_box(&ti), &a32, n, &mut out32)
                    }
                });
                report(&case, k.tier, ti.len() * 18, t / per_call as u32);
            }
        }
    }
    ops(filter.as_deref(), &tiers);
}

/// Tokens per matrix-matrix call (the prefill batch, `forward::MAX_BATCH`).
const MATMUL_TOKENS: usize = 32;

/// SmolLM2-135M's shapes for the non-matvec kernels.
const DIM: usize = 576;
const HEAD_DIM: usize = 64;
const N_HEADS: usize = 9;
const N_KV_HEADS: usize = 3;
const FFN: usize = 1536;
const N_LAYERS: usize = 30;
const CONTEXTS: [usize; 2] = [256, 1024];

/// Median nanoseconds per call of `f`, timed in batches of `reps` calls (the
/// small kernels run for tens of nanoseconds, below a clock read's resolution).
fn ns_per_call(reps: usize, mut f: impl FnMut()) -> f64 {
    median_time(|| {
        for _ in 0..reps {
            f();
        }
    })
    .as_secs_f64()
        * 1e9
        / reps as f64
}

/// One query head's attention over `t` cached f16 positions (rows `kv_dim`
/// apart), as `KvCache::attend` does it with `k`'s kernels.
#[allow(clippy::too_many_arguments)]
fn attend_f16(
    k: &Kernels,
    kc: &[f16],
    vc: &[f16],
    q: &[f32],
    t: usize,
    s: &mut [f32],
    out: &mut [f32],
) {
    let kv_dim = N_KV_HEADS * HEAD_DIM;
    out.fill(0.0);
    for (j, sc) in s[..t].iter_mut().enumerate() {
        *sc = (k.dot_f16_f32)(&kc[j * kv_dim..][..HEAD_DIM], q) * 0.125;
    }
    (k.softmax_f32)(&mut s[..t]);
    for (j, &p) in s[..t].iter().enumerate() {
        (k.axpy_f16_f32)(out, p, &vc[j * kv_dim..][..HEAD_DIM]);
    }
}

/// The same head as the runtime did it before these slots existed: scalar dot,
/// softmax, and each value row widened into scratch, then `axpy_f32`.
fn attend_f16_before(kc: &[f16], vc: &[f16], q: &[f32], t: usize, s: &mut [f32], out: &mut [f32]) {
    let kv_dim = N_KV_HEADS * HEAD_DIM;
    let mut tmp = [0.0f32; HEAD_DIM];
    out.fill(0.0);
    for (j, sc) in s[..t].iter_mut().enumerate() {
        *sc = scalar::dot_f16_f32(&kc[j * kv_dim..][..HEAD_DIM], q) * 0.125;
    }
    scalar::softmax_f32(&mut s[..t]);
    for (j, &p) in s[..t].iter().enumerate() {
        scalar::f16_to_f32(&vc[j * kv_dim..][..HEAD_DIM], &mut tmp);
        scalar::axpy_f32(out, p, &tmp);
    }
}

/// The non-matvec kernels at SmolLM2-135M's sizes, every tier, and the
/// per-token total of everything outside the matrix products (30 layers: two
/// RMSNorms, RoPE of q and k, 9 heads of f16 attention, two residual adds and
/// SwiGLU per layer; the final RMSNorm; the RoPE table once per token).
fn ops(filter: Option<&str>, tiers: &[Kernels]) {
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
    let x = vals(DIM, 2.0);
    let w = vals(DIM, 1.0);
    let gate0 = vals(FFN, 4.0);
    let up = vals(FFN, 1.0);
    let q0 = vals(N_HEADS * HEAD_DIM, 1.0);
    let kv_dim = N_KV_HEADS * HEAD_DIM;
    let max_t = CONTEXTS[CONTEXTS.len() - 1];
    let kc: Vec<f16> = vals(max_t * kv_dim, 1.0)
        .iter()
        .map(|&v| f16::from_f32(v))
        .collect();
    let vc: Vec<f16> = vals(max_t * kv_dim, 1.0)
        .iter()
        .map(|&v| f16::from_f32(v))
        .collect();
    let inv: Vec<f32> = (0..HEAD_DIM / 2)
        .map(|i| 1.0 / 100000f32.powf(2.0 * i as f32 / HEAD_DIM as f32))
        .collect();
    let (mut cos, mut sin) = (vec![0.0; HEAD_DIM / 2], vec![0.0; HEAD_DIM / 2]);
    scalar::rope_angles_f32(200, &inv, &mut cos, &mut sin);
    let logits0 = vals(max_t, 8.0);
    let mut out = vec![0.0f32; DIM];
    let mut buf = vec![0.0f32; FFN.max(max_t)];
    let mut scores = vec![0.0f32; max_t];
    let mut head = [0.0f32; HEAD_DIM];
    let skip = |case: &str| filter.is_some_and(|p| !case.contains(p));
    let show = |case: &str, tier: &str, ns: f64| println!("{case:<28} {tier:<10} {ns:>10.1} ns");

    if !skip("rope_angles_f32") {
        let ns = ns_per_call(200, || {
            scalar::rope_angles_f32(black_box(200), &inv, &mut cos, &mut sin)
        });
        show("rope_angles_f32 (32 pairs)", "scalar", ns);
    }
    let angles_ns = ns_per_call(200, || {
        scalar::rope_angles_f32(black_box(200), &inv, &mut cos, &mut sin)
    });
    for k in tiers {
        let tier = k.tier.name();
        let time = |case: &str, reps: usize, f: &mut dyn FnMut()| -> f64 {
            let ns = ns_per_call(reps, f);
            if !skip(case) {
                show(case, tier, ns);
            }
            ns
        };
        let rms = time("rmsnorm_f32 576", 200, &mut || {
            (k.rmsnorm_f32)(&mut out, black_box(&x), &w, 1e-5)
        });
        let add = time("add_f32 576", 500, &mut || {
            (k.add_f32)(&mut out, black_box(&x))
        });
        let silu = time("silu_gate_f32 1536", 50, &mut || {
            buf[..FFN].copy_from_slice(&gate0);
            (k.silu_gate_f32)(&mut buf[..FFN], black_box(&up))
        });
        time("gelu_gate_f32 1536", 50, &mut || {
            buf[..FFN].copy_from_slice(&gate0);
            (k.gelu_gate_f32)(&mut buf[..FFN], black_box(&up))
        });
        let mut qb = q0.clone();
        let rope_q = time("rope_f32 q 9x64 half", 200, &mut || {
            (k.rope_f32)(
                black_box(&mut qb),
                HEAD_DIM,
                &cos,
                &sin,
                scalar::RopeLayout::Half,
            )
        });
        time("rope_f32 q 9x64 interleaved", 200, &mut || {
            (k.rope_f32)(
                black_box(&mut qb),
                HEAD_DIM,
                &cos,
                &sin,
                scalar::RopeLayout::Interleaved,
            )
        });
        let rope_k = time("rope_f32 k 3x64 half", 200, &mut || {
            (k.rope_f32)(
                black_box(&mut qb[..kv_dim]),
                HEAD_DIM,
                &cos,
                &sin,
                scalar::RopeLayout::Half,
            )
        });
        let qh = &q0[..HEAD_DIM];
        time("dot_f16_f32 64", 1000, &mut || {
            black_box((k.dot_f16_f32)(black_box(&kc[..HEAD_DIM]), qh));
        });
        time("dot_f32 64", 1000, &mut || {
            black_box((k.dot_f32)(black_box(&x[..HEAD_DIM]), qh));
        });
        time("axpy_f16_f32 64", 1000, &mut || {
            (k.axpy_f16_f32)(&mut head, 0.01, black_box(&vc[..HEAD_DIM]))
        });
        time("axpy_f32 64", 1000, &mut || {
            (k.axpy_f32)(&mut head, 0.01, black_box(qh))
        });
        time("f16_to_f32 64", 1000, &mut || {
            (k.f16_to_f32)(black_box(&kc[..HEAD_DIM]), &mut head)
        });
        let mut attn = Vec::new();
        for t in CONTEXTS {
            time(&format!("softmax_f32 {t}"), 20, &mut || {
                buf[..t].copy_from_slice(&logits0[..t]);
                (k.softmax_f32)(black_box(&mut buf[..t]))
            });
            attn.push(time(&format!("attend head f16 ctx {t}"), 2, &mut || {
                attend_f16(k, &kc, &vc, black_box(qh), t, &mut scores, &mut head)
            }));
        }
        // The runtime's previous code path (scalar, rope angles per head).
        let before = k.tier == Tier::Scalar;
        if before {
            for t in CONTEXTS {
                let ns = ns_per_call(2, || {
                    attend_f16_before(&kc, &vc, black_box(qh), t, &mut scores, &mut head)
                });
                if !skip("attend head f16 ctx") {
                    show(&format!("attend head f16 ctx {t}"), "before", ns);
                }
            }
        }
        for (t, a) in CONTEXTS.iter().zip(&attn) {
            let per_layer = 2.0 * rms + rope_q + rope_k + N_HEADS as f64 * a + 2.0 * add + silu;
            let total = N_LAYERS as f64 * per_layer + rms + angles_ns;
            if !skip("per-token") {
                println!(
                    "{:<28} {tier:<10} {:>10.1} us",
                    format!("per-token non-matvec ctx {t}"),
                    total / 1e3
                );
            }
        }
    }
}
