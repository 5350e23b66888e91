//! Splitting a matrix-vector product over threads gives the same bits as one
//! thread, on every kernel tier and for every weight type with a SIMD kernel.

use ember_kernels::arch::{kernels_for, Tier};
use ember_kernels::blocks::{BlockQ4_0, BlockQ8_0, QK};
use ember_kernels::scalar;
use ember_runtime::model::{Input, Weights, PARALLEL_MIN_BYTES};
use half::f16;

#[test]
fn threaded_matvec_is_bit_identical() {
    // Rows not a multiple of 4; every matrix above the parallel threshold.
    let (rows, cols) = (12_003usize, 640usize);
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
    let mut xq = vec![
        BlockQ8_0 {
            d: [0; 2],
            qs: [0; QK]
        };
        cols / QK
    ];
    let input = Input::quantized(&x, &mut xq);
    let views = [
        Weights::F32(&wf),
        Weights::F16(&wh),
        Weights::Q8_0(&w8),
        Weights::Q4_0(&w4),
    ];
    for k in Tier::ALL.into_iter().filter_map(kernels_for) {
        for w in views {
            let bytes = w.dtype().bytes_for(w.len() as u64).unwrap();
            assert!(
                bytes >= PARALLEL_MIN_BYTES,
                "{:?} must take the threaded path",
                w.dtype()
            );
            let mut one = vec![0.0f32; rows];
            w.matvec_input(&k, &input, &mut one);
            for threads in [2usize, 3, 4] {
                let mut many = vec![f32::NAN; rows];
                w.matvec_input_threaded(&k, &input, &mut many, threads);
                assert!(
                    one.iter()
                        .zip(&many)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{} {:?} threads {threads} (matrix {bytes} B, threshold {PARALLEL_MIN_BYTES})",
                    k.tier.name(),
                    w.dtype()
                );
            }
        }
    }
}
