//! Kernel micro-benchmarks: every matrix-vector kernel on every tier this CPU has,
//! against scalar, at the matrix shapes of the benchmark models. No external
//! harness (criterion is not a dependency yet): each case runs for about 0.3 s
//! after a warm-up and reports the median time of its batches and the weight
//! bytes per second. Run: `cargo bench --bench kernels [-- FILTER]`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ember_kernels::arch::{kernels_for, Kernels, Tier};
use ember_kernels::blocks::{BlockQ4_0, BlockQ8_0, QK};
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
        let mut a = vec![
            BlockQ8_0 {
                d: [0; 2],
                qs: [0; QK]
            };
            cols / QK
        ];
        scalar::quantize_row_q8_0(&x, &mut a);
        let mut out = vec![0.0f32; rows];
        for k in &tiers {
            let ops = [
                ("matvec_f32_f32", wf.len() * 4),
                ("matvec_f16_f32", wh.len() * 2),
                ("matvec_q8_0_q8_0", w8.len() * 34),
                ("matvec_q4_0_q8_0", w4.len() * 18),
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
                    _ => (k.matvec_q4_0_q8_0)(black_box(&w4), &a, &mut out),
                });
                report(&case, k.tier, bytes, t);
            }
        }
    }
}
