//! Quantized models: SmolLM2-135M-Instruct at q8_0 (answer, rotated by default
//! and with the bit-exact GGUF block import of `--no-rotate`) and stories260K
//! at q8_0 / q4_0 (agreement of the greedy story with llama2.c's). Skips with a
//! message when the models are absent.

mod common;

use std::sync::Arc;

use ember_converter::writer::Rotation;
use ember_converter::{convert, tiled_if_possible, ConvertOptions, DTypeChoice};
use ember_kernels::blocks::{interleave_rows, BlockQ8_0, QK};
use ember_runtime::format::{names, DType};
use ember_runtime::generate::generate_greedy;
use ember_runtime::{Model, Session, SessionConfig};

/// Greedy tokens of stories260K at q8_0 that must equal llama2.c's f32 story.
/// The issue asks for 100 "or the measured agreement": q8_0 follows the story
/// for 72 tokens, then a step whose two best tokens are nearly tied goes the
/// other way. Every tier now sums the q8_0 blocks in the scalar kernel's order
/// (bit-identical results), and that order diverges at token 72 on x86 and on
/// every ARM tier alike; the earlier AVX2 order happened to pass the tie
/// (benches/RESULTS.md, "Calibrated quantization").
const STORIES_Q8_0_AGREEMENT: usize = 72;

fn convert_with(
    input: &std::path::Path,
    dtype: DType,
    tokenizer: Option<std::path::PathBuf>,
    rotation: Rotation,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    ember_converter::WriteSummary,
) {
    let dir = common::scratch();
    let out = dir.path().join(format!("m-{}.ember", dtype.name()));
    let opts = ConvertOptions {
        dtype: DTypeChoice::Fixed(dtype),
        tokenizer,
        rotation,
        ..Default::default()
    };
    let s = convert(input, &out, &opts).expect("convert");
    (dir, out, s.write)
}

#[test]
fn smollm2_q8_0_answers_paris_and_copies_gguf_blocks() {
    let Some(gguf) = common::smollm2_gguf() else {
        return;
    };
    let (_dir, out, summary) = convert_with(&gguf, DType::Q8_0, None, Rotation::None);
    // The PyPI GGUF stores its (tied) token embeddings as Q8_0.
    assert_eq!(summary.raw_copies, 1);
    let model = Arc::new(Model::load(&out).unwrap());
    model.verify_checksums().unwrap();

    // Bit-exact: the stored bytes are the GGUF's bytes.
    let ir = ember_converter::gguf::load(&gguf).unwrap();
    let src = ir
        .tensors
        .iter()
        .find(|t| t.name == names::TOK_EMBEDDINGS)
        .unwrap();
    let raw = src.source.raw_as(DType::Q8_0).unwrap().unwrap();
    let idx = model
        .tensors()
        .iter()
        .position(|t| t.name == names::TOK_EMBEDDINGS)
        .unwrap();
    // Stored row-interleaved: the same blocks, permuted into tiles of 4 rows.
    assert_eq!(model.tensors()[idx].dtype, DType::Q8_0X4);
    let cols = model.tensors()[idx].shape[1] as usize;
    let plain: &[BlockQ8_0] = bytemuck::cast_slice(&raw);
    let mut tiled = plain.to_vec();
    interleave_rows(plain, cols / QK, &mut tiled);
    assert!(
        model.tensor_bytes(idx) == bytemuck::cast_slice::<BlockQ8_0, u8>(&tiled),
        "blocks copied bit for bit"
    );
    // Every other matrix is quantized, vectors stay f32.
    for t in model.tensors() {
        let want = if t.shape.len() == 1 {
            DType::F32
        } else {
            tiled_if_possible(DType::Q8_0, &t.shape)
        };
        assert_eq!(t.dtype, want, "{}", t.name);
    }

    assert_eq!(paris_answer(model), "The capital of France is Paris.");

    // The default conversion: every matrix rotated, the GGUF embeddings
    // re-quantized in the rotated basis; same answer. Its scale search takes
    // minutes under qemu; the rotated products on every tier are checked by
    // quant_gguf's tiny model, which the emulated runs include.
    if common::skip_under_emulation("rotated SmolLM2 q8_0 conversion") {
        return;
    }
    let (_dir, out, summary) = convert_with(&gguf, DType::Q8_0, None, Rotation::All);
    assert_eq!(summary.raw_copies, 0);
    let model = Arc::new(Model::load(&out).unwrap());
    assert!(model
        .tensors()
        .iter()
        .all(|t| t.rotated == (t.shape.len() == 2)));
    assert_eq!(paris_answer(model), "The capital of France is Paris.");
}

/// SmolLM2's greedy answer to the capital question (ChatML).
fn paris_answer(model: Arc<Model>) -> String {
    let tok = model.tokenizer();
    let prompt =
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let ids = tok.encode(prompt, tok.default_encode_options());
    let mut session = Session::new(model.clone(), SessionConfig::new(128)).unwrap();
    let mut text = String::new();
    generate_greedy(&mut session, &ids, 64, |_, piece| {
        text.push_str(piece);
        true
    })
    .unwrap();
    text
}

#[test]
fn smollm2_q4_0_keeps_embeddings_at_q8_0() {
    let Some(gguf) = common::smollm2_gguf() else {
        return;
    };
    let (_dir, out, _) = convert_with(&gguf, DType::Q4_0, None, Rotation::None);
    let model = Model::load(&out).unwrap();
    for t in model.tensors() {
        let want = match (t.shape.len(), t.name.as_str()) {
            (1, _) => DType::F32,
            (_, names::TOK_EMBEDDINGS) => tiled_if_possible(DType::Q8_0, &t.shape),
            _ => tiled_if_possible(DType::Q4_0, &t.shape),
        };
        assert_eq!(t.dtype, want, "{}", t.name);
    }
}

fn stories_greedy(path: &std::path::Path, steps: usize) -> String {
    let model = Arc::new(Model::load(path).expect("load"));
    let tok = model.tokenizer();
    let prompt = tok.encode("", tok.default_encode_options());
    let mut session = Session::new(model.clone(), SessionConfig::new(steps)).unwrap();
    let mut text = String::new();
    generate_greedy(&mut session, &prompt[..1], steps, |_, piece| {
        text.push_str(piece);
        true
    })
    .unwrap();
    text
}

#[test]
fn stories260k_q8_0_keeps_the_greedy_story() {
    let (Some(bin), Some(tok), Some(expected)) = (
        common::shared_file("models/stories260K/stories260K.bin"),
        common::shared_file("models/stories260K/tok512.bin"),
        common::shared_file("models/stories260K/expected_greedy_t0_n200.txt"),
    ) else {
        return;
    };
    let (_dir, out, _) = convert_with(&bin, DType::Q8_0, Some(tok), Rotation::All);
    let model = Model::load(&out).unwrap();
    // dim 64 quantizes; w_down's rows (ffn 172) are not whole blocks: f32.
    for t in model.tensors() {
        let want = match (t.shape.len(), t.shape.last()) {
            (1, _) => DType::F32,
            (_, Some(172)) => DType::F32,
            _ => tiled_if_possible(DType::Q8_0, &t.shape),
        };
        assert_eq!(t.dtype, want, "{}", t.name);
    }
    let expected = std::fs::read_to_string(expected).unwrap();
    let text = stories_greedy(&out, 200);
    // Compare token by token through the tokenizer of the model.
    let m = Model::load(&out).unwrap();
    let t = m.tokenizer();
    let (a, b) = (
        t.encode(&expected, t.default_encode_options()),
        t.encode(&text, t.default_encode_options()),
    );
    let agree = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    eprintln!("stories260K q8_0: {agree} leading tokens agree with llama2.c");
    assert!(
        agree >= STORIES_Q8_0_AGREEMENT,
        "only {agree} tokens agree:\n{text}\nvs\n{expected}"
    );
}

/// Mean KLD bound of iq4_nl against the f32 model: llama.cpp's Q4_0 on the same
/// model (0.2845, BASELINES.md: 40,000 characters of tiny-shakespeare), the
/// issue's quality bar. The test scores a shorter sample (`KLD_WINDOWS`).
const IQ4_NL_KLD_BOUND: f64 = 0.2845;
/// iq4_nl must beat q4_0 clearly on the same tokens (measured ratio 0.70 on
/// 6,000 characters and 0.72 on this test's windows: benches/RESULTS.md, "A
/// better 4-bit type").
const IQ4_NL_VS_Q4_0_KLD: f64 = 0.85;
/// Windows of 256 tokens scored (every position but the last, as `ember kld`).
const KLD_WINDOWS: usize = 2;

#[test]
fn smollm2_iq4_nl_kld_beats_q4_0_and_llama_cpp_q4_0() {
    // 3 x 510 forward passes (one of them f32): far over the emulated budget.
    // The quantizer is scalar code and every tier's iq4_nl / q4_0 products are
    // bit-identical to the scalar kernels (kernel tests, every CPU model), so
    // the KLD differs from the native run's by f32 rounding only.
    if common::skip_under_emulation("iq4_nl KLD: 3 x 510 SmolLM2 forward passes") {
        return;
    }
    let (Some(gguf), Some(text)) = (
        common::smollm2_gguf(),
        common::shared_file("corpus/tinyshakespeare.txt"),
    ) else {
        return;
    };
    let dir = common::scratch();
    let mut models = Vec::new();
    for d in [None, Some(DType::Q4_0), Some(DType::Iq4Nl)] {
        let out = dir
            .path()
            .join(format!("m-{}.ember", d.map_or("f32", |d| d.name())));
        let opts = ConvertOptions {
            dtype: d.map_or(DTypeChoice::Auto, DTypeChoice::Fixed),
            ..Default::default()
        };
        convert(&gguf, &out, &opts).expect("convert");
        models.push(Arc::new(Model::load(&out).unwrap()));
    }
    // Matrices are iq4_nl (row-interleaved), embeddings q8_0.
    for t in models[2].tensors() {
        let want = match (t.shape.len(), t.name.as_str()) {
            (1, _) => DType::F32,
            (_, names::TOK_EMBEDDINGS) => tiled_if_possible(DType::Q8_0, &t.shape),
            _ => tiled_if_possible(DType::Iq4Nl, &t.shape),
        };
        assert_eq!(t.dtype, want, "{}", t.name);
    }
    let text = std::fs::read_to_string(text).unwrap();
    let tok = models[0].tokenizer();
    let mut opts = tok.default_encode_options();
    opts.add_bos = false;
    let ids = tok.encode(&text[..20_000], opts);
    let (kld, n) = common::mean_kld_vs_first(&models, &ids, KLD_WINDOWS);
    let [q4_0, iq4_nl] = [kld[0], kld[1]];
    eprintln!("mean KLD vs f32 over {n} predictions: q4_0 {q4_0:.4}, iq4_nl {iq4_nl:.4}");
    assert!(iq4_nl <= IQ4_NL_KLD_BOUND, "iq4_nl mean KLD {iq4_nl}");
    assert!(
        iq4_nl <= IQ4_NL_VS_Q4_0_KLD * q4_0,
        "iq4_nl {iq4_nl} vs q4_0 {q4_0}"
    );
}
