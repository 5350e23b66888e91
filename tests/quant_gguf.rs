//! GGUF Q8_0 / Q4_0 tensors are imported bit for bit when the target dtype
//! matches and rotation is off (`--no-rotate`: no dequantize-requantize), and
//! `.ember`'s block decoding of them equals the GGUF reader's (ggml's)
//! dequantization exactly. With rotation (the default) they are re-quantized
//! in the rotated basis and still decode to the source's values closely. Uses the tiny
//! fixture written by gguf-py (`tests/fixtures/gguf/tiny-llama.gguf`), which holds
//! Q8_0, Q4_0, Q4_1, F16, BF16 and F32 matrices.

mod common;

use std::path::Path;
use std::sync::Arc;

use ember_converter::writer::Rotation;
use ember_converter::{convert, tiled_if_possible, ConvertOptions, DTypeChoice};
use ember_kernels::blocks::{interleave_rows, BlockQ4_0, BlockQ8_0, QK};
use ember_runtime::format::{names, DType};
use ember_runtime::{Model, Session, SessionConfig};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/gguf/tiny-llama.gguf"
);

fn check(dtype: DType, want_copies: usize) {
    let dir = common::scratch();
    let out = dir.path().join("tiny.ember");
    let opts = ConvertOptions {
        dtype: DTypeChoice::Fixed(dtype),
        rotation: Rotation::None,
        ..Default::default()
    };
    let s = convert(Path::new(FIXTURE), &out, &opts).unwrap();
    assert_eq!(s.write.raw_copies, want_copies, "{}", dtype.name());
    assert_eq!(s.write.rotated, 0);
    assert!(model_is_unrotated(&out));
    let model = Arc::new(Model::load(&out).unwrap());
    model.verify_checksums().unwrap();
    let ir = ember_converter::gguf::load(Path::new(FIXTURE)).unwrap();
    let mut copied = 0;
    for (i, t) in model.tensors().iter().enumerate() {
        let src = &ir.tensors.iter().find(|s| s.name == t.name).unwrap().source;
        // The mixed policy: vectors f32, embeddings q8_0 under q4_0.
        // Matrices whose row count is a multiple of 4 are stored row-interleaved.
        let want = match (t.shape.len(), t.name.as_str(), dtype) {
            (1, _, _) => DType::F32,
            (_, names::TOK_EMBEDDINGS, DType::Q4_0 | DType::Iq4Nl) => {
                tiled_if_possible(DType::Q8_0, &t.shape)
            }
            _ => tiled_if_possible(dtype, &t.shape),
        };
        assert_eq!(t.dtype, want, "{}", t.name);
        if let Some(raw) = src.raw_as(t.dtype.untiled()) {
            copied += 1;
            let raw = raw.unwrap();
            let cols = t.shape[t.shape.len() - 1] as usize;
            let stored = if t.dtype.is_tiled() {
                permuted(&raw, t.dtype, cols)
            } else {
                raw
            };
            assert!(model.tensor_bytes(i) == stored.as_slice(), "{}", t.name);
            // Same values as the GGUF reader's dequantization, bit for bit.
            let values = src.to_f32().unwrap();
            let cols = t.shape[t.shape.len() - 1] as usize;
            let w = model.weights(i);
            let mut row = vec![0.0f32; cols];
            for (r, want) in values.chunks_exact(cols).enumerate() {
                w.row_to_f32(r, &mut row);
                let same = row
                    .iter()
                    .zip(want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{} row {r}", t.name);
            }
        }
    }
    assert_eq!(copied, want_copies);
    // The converted model runs.
    let mut session = Session::new(model.clone(), SessionConfig::new(8)).unwrap();
    let logits = session.forward(1).unwrap();
    assert!(logits.iter().all(|v| v.is_finite()));
}

/// `raw` (plain row-major blocks) permuted into the row-interleaved layout.
fn permuted(raw: &[u8], dtype: DType, cols: usize) -> Vec<u8> {
    fn go<B: bytemuck::Pod>(raw: &[u8], nb: usize) -> Vec<u8> {
        let src: &[B] = bytemuck::cast_slice(raw);
        let mut dst = src.to_vec();
        interleave_rows(src, nb, &mut dst);
        bytemuck::cast_slice(&dst).to_vec()
    }
    match dtype {
        DType::Q8_0X4 => go::<BlockQ8_0>(raw, cols / QK),
        _ => go::<BlockQ4_0>(raw, cols / QK),
    }
}

#[test]
fn q8_0_blocks_are_copied_bit_for_bit() {
    // token_embd, blk.0.ffn_{gate,up,down}, blk.1.ffn_up.
    check(DType::Q8_0, 5);
}

#[test]
fn q4_0_blocks_are_copied_bit_for_bit() {
    // blk.1.attn_v and blk.1.ffn_down (Q4_0), plus token_embd kept at q8_0.
    check(DType::Q4_0, 3);
}

#[test]
fn iq4_nl_conversion_keeps_q8_0_embeddings_and_runs() {
    // The fixture has no IQ4_NL tensors (its IQ4_NL decoding is checked against
    // gguf-py in converter/tests/gguf_dequant.rs); token_embd (Q8_0) is copied.
    check(DType::Iq4Nl, 1);
}

fn model_is_unrotated(path: &Path) -> bool {
    Model::load(path)
        .unwrap()
        .tensors()
        .iter()
        .all(|t| !t.rotated)
}

/// The default conversion rotates every block-quantized matrix: GGUF blocks
/// are re-quantized, each row rotated back decodes to the source's values
/// within the quantization step, and the model computes nearly the same logits
/// as the bit-exact import.
#[test]
fn rotated_q8_0_conversion_decodes_to_the_source_values() {
    let dir = common::scratch();
    let (rot, plain) = (dir.path().join("rot.ember"), dir.path().join("plain.ember"));
    let opts = |rotation| ConvertOptions {
        dtype: DTypeChoice::Fixed(DType::Q8_0),
        rotation,
        ..Default::default()
    };
    let s = convert(Path::new(FIXTURE), &rot, &opts(Rotation::All)).unwrap();
    assert_eq!(s.write.raw_copies, 0);
    convert(Path::new(FIXTURE), &plain, &opts(Rotation::None)).unwrap();
    let model = Arc::new(Model::load(&rot).unwrap());
    model.verify_checksums().unwrap();
    let ir = ember_converter::gguf::load(Path::new(FIXTURE)).unwrap();
    let mut rotated = 0;
    for (i, t) in model.tensors().iter().enumerate() {
        assert_eq!(t.rotated, t.shape.len() == 2, "{}", t.name);
        if !t.rotated {
            continue;
        }
        rotated += 1;
        let values = ir
            .tensors
            .iter()
            .find(|s| s.name == t.name)
            .unwrap()
            .source
            .to_f32()
            .unwrap();
        let cols = t.shape[1] as usize;
        let mut row = vec![0.0f32; cols];
        for (r, want) in values.chunks_exact(cols).enumerate() {
            model.row_to_f32(i, r, &mut row);
            // Q8_0 of a rotated block errs by at most half a step, d / 2 with
            // d = max|H b| / 127, per element (the scale search keeps the
            // total no larger); rotating back keeps the block's L2 norm.
            for (got, want) in row.chunks_exact(QK).zip(want.chunks_exact(QK)) {
                let mut hb = want.to_vec();
                ember_kernels::scalar::hadamard32(&mut hb);
                let d = hb.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
                let err = got
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
                    .sqrt();
                let bound = 0.55 * d * (QK as f32).sqrt() + 1e-6;
                assert!(err <= bound, "{} row {r}: error {err} > {bound}", t.name);
            }
        }
    }
    assert_eq!(rotated, s.write.rotated);
    let logits = |path: &Path| {
        let m = Arc::new(Model::load(path).unwrap());
        let mut session = Session::new(m, SessionConfig::new(8)).unwrap();
        let mut out = Vec::new();
        for tok in [1, 5, 9] {
            out = session.forward(tok).unwrap().to_vec();
        }
        out
    };
    let (a, b) = (logits(&rot), logits(&plain));
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        diff <= 0.05 * scale,
        "max logit difference {diff} (scale {scale})"
    );
}
