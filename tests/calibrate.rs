//! Calibrated quantization (`ember convert --calibrate`) and rotation:
//! smoothing leaves the model's function unchanged (stories260K at f32), q8_0
//! SmolLM2 meets the KLD target by default (rotated) and calibrated, while the
//! unrotated q8_0 misses it, and bad calibration input is a clear error that
//! writes nothing. Skips with a message when the
//! shared models are absent.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ember_converter::calibrate::CalibrateOptions;
use ember_converter::writer::Rotation;
use ember_converter::{convert, ConvertOptions, DTypeChoice};
use ember_runtime::format::DType;
use ember_runtime::{KvType, Model, Session, SessionConfig};

/// Largest logit difference between stories260K with and without smoothing,
/// both f32 with an f32 KV cache: the rescaling is exact in real arithmetic, so
/// only f32 rounding of the scaled weights and norms (a few ulp per product)
/// remains.
const SMOOTHED_F32_MAX_LOGIT_DIFF: f32 = 1e-4;
/// Mean KLD target for q8_0 against f32 (the x86 kernel issue's acceptance).
const Q8_0_KLD_TARGET: f64 = 0.002;
/// 256-token windows of tiny-shakespeare scored in the SmolLM2 test.
const KLD_WINDOWS: usize = 2;
/// Where the calibration text starts in tiny-shakespeare: far from the
/// scored text at the start, so the test does not grade on its own sample.
const CALIBRATION_OFFSET: usize = 200_000;

fn calibration_text(len: usize) -> Option<String> {
    let path = common::shared_file("corpus/tinyshakespeare.txt")?;
    let text = std::fs::read_to_string(path).unwrap();
    Some(text[CALIBRATION_OFFSET..CALIBRATION_OFFSET + len].to_string())
}

fn convert_to(input: &Path, out: PathBuf, opts: &ConvertOptions) -> Arc<Model> {
    let s = convert(input, &out, opts).expect("convert");
    if let Some(c) = &opts.calibrate {
        let (tokens, smoothed) = s.calibration.expect("calibration summary");
        assert!(tokens > 100, "{tokens} calibration tokens");
        if c.alpha > 0.0 {
            assert!(smoothed > 0, "nothing smoothed");
        }
    }
    Arc::new(Model::load(&out).expect("load"))
}

#[test]
fn smoothing_preserves_the_function() {
    let (Some(bin), Some(tok), Some(text)) = (
        common::shared_file("models/stories260K/stories260K.bin"),
        common::shared_file("models/stories260K/tok512.bin"),
        calibration_text(20_000),
    ) else {
        return;
    };
    let dir = common::scratch();
    let base = ConvertOptions {
        dtype: DTypeChoice::Fixed(DType::F32),
        tokenizer: Some(tok.clone()),
        ..Default::default()
    };
    let plain = convert_to(&bin, dir.path().join("plain.ember"), &base);
    let calibrated = ConvertOptions {
        dtype: DTypeChoice::Fixed(DType::F32),
        tokenizer: Some(tok),
        calibrate: Some(CalibrateOptions::new(text.clone())),
        ..Default::default()
    };
    let smoothed = convert_to(&bin, dir.path().join("smoothed.ember"), &calibrated);
    // The weights did change (smoothing rescaled them) ...
    let name = "layers.0.wq";
    let idx = |m: &Model| m.tensors().iter().position(|t| t.name == name).unwrap();
    assert_ne!(
        plain.tensor_bytes(idx(&plain)),
        smoothed.tensor_bytes(idx(&smoothed))
    );
    // ... but not the function.
    let tk = plain.tokenizer();
    let ids = tk.encode(
        "Once upon a time, a little girl",
        tk.default_encode_options(),
    );
    // f32 KV: an f16 cache would turn last-bit differences into f16 roundings.
    let config = SessionConfig {
        kv_type: KvType::F32,
        ..SessionConfig::new(64)
    };
    let mut a = Session::new(plain.clone(), config).unwrap();
    let mut b = Session::new(smoothed.clone(), config).unwrap();
    let mut worst = 0.0f32;
    for &t in &ids {
        let la = a.forward(t).unwrap().to_vec();
        let lb = b.forward(t).unwrap();
        for (x, y) in la.iter().zip(lb) {
            worst = worst.max((x - y).abs());
        }
    }
    assert!(
        worst <= SMOOTHED_F32_MAX_LOGIT_DIFF,
        "max |logit difference| {worst}"
    );
}

#[test]
fn q8_0_smollm2_meets_the_kld_target_rotated_and_calibrated() {
    // Calibration alone runs 2048 f32 tokens through SmolLM2, then 4 x 510
    // scored passes: far over the emulated budget. Calibration, rotation and
    // quantization are tier-independent code and the q8_0 products are
    // bit-identical to the scalar kernel on every tier (kernel tests), so the
    // KLD differs from the native run's by f32 rounding only.
    if common::skip_under_emulation("q8_0 KLD: 2048 + 4 x 510 SmolLM2 passes") {
        return;
    }
    let (Some(gguf), Some(eval), Some(calib)) = (
        common::smollm2_gguf(),
        common::shared_file("corpus/tinyshakespeare.txt"),
        calibration_text(60_000),
    ) else {
        return;
    };
    let dir = common::scratch();
    let reference = convert_to(&gguf, dir.path().join("f32.ember"), &Default::default());
    let q8 = |name: &str, opts: ConvertOptions| {
        let opts = ConvertOptions {
            dtype: DTypeChoice::Fixed(DType::Q8_0),
            ..opts
        };
        convert_to(&gguf, dir.path().join(name), &opts)
    };
    let rotated = q8("q8_0.ember", Default::default());
    let unrotated = q8(
        "q8_0-unrotated.ember",
        ConvertOptions {
            rotation: Rotation::None,
            ..Default::default()
        },
    );
    let calibrated = q8(
        "q8_0-cal.ember",
        ConvertOptions {
            embed_dtype: Some(DType::F16),
            calibrate: Some(CalibrateOptions::new(calib)),
            ..Default::default()
        },
    );
    assert!(rotated.tensors().iter().any(|t| t.rotated));
    assert!(unrotated.tensors().iter().all(|t| !t.rotated));
    let text = std::fs::read_to_string(eval).unwrap();
    let tok = reference.tokenizer();
    let mut opts = tok.default_encode_options();
    opts.add_bos = false;
    let ids = tok.encode(&text[..20_000], opts);
    let models = [reference, rotated, unrotated, calibrated];
    let (kld, n) = common::mean_kld_vs_first(&models, &ids, KLD_WINDOWS);
    let [rotated_kld, unrotated_kld, calibrated_kld] = [kld[0], kld[1], kld[2]];
    eprintln!(
        "mean KLD vs f32 over {n} predictions: q8_0 {rotated_kld:.5}, unrotated \
         {unrotated_kld:.5}, calibrated {calibrated_kld:.5}"
    );
    for (what, k) in [("q8_0", rotated_kld), ("calibrated q8_0", calibrated_kld)] {
        assert!(k <= Q8_0_KLD_TARGET, "{what} mean KLD {k}");
    }
    // Rotation is what meets it: the unrotated file misses by a wide margin.
    assert!(
        unrotated_kld > 2.0 * rotated_kld,
        "{unrotated_kld} vs {rotated_kld}"
    );
}

#[test]
fn bad_calibration_input_is_a_clear_error_and_writes_nothing() {
    let (Some(bin), Some(tok)) = (
        common::shared_file("models/stories260K/stories260K.bin"),
        common::shared_file("models/stories260K/tok512.bin"),
    ) else {
        return;
    };
    let dir = common::scratch();
    let bad_utf8 = dir.path().join("bad.txt");
    std::fs::write(&bad_utf8, b"Once upon \xff\xfe a time").unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    let missing = dir.path().join("missing.txt");
    for (text, want) in [
        (&bad_utf8, "not UTF-8"),
        (&empty, "fewer than 2 tokens"),
        (&missing, "missing.txt"),
    ] {
        let out = dir.path().join("out.ember");
        let o = common::ember_command()
            .arg("convert")
            .arg(&bin)
            .arg("--tokenizer")
            .arg(&tok)
            .args(["--dtype", "q8_0", "--calibrate"])
            .arg(text)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{want}: succeeded");
        assert!(err.contains(want), "{want}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists(), "{want}: output written");
    }
    let out = dir.path().join("alpha.ember");
    let opts = ConvertOptions {
        dtype: DTypeChoice::Fixed(DType::Q8_0),
        tokenizer: Some(tok),
        calibrate: Some(CalibrateOptions {
            alpha: 1.5,
            ..CalibrateOptions::new("Once upon a time".into())
        }),
        ..Default::default()
    };
    let err = convert(&bin, &out, &opts).expect_err("alpha 1.5 refused");
    assert!(err.to_string().contains("smooth-alpha"), "{err}");
    assert!(!out.exists());
}
