//! stories260K (llama2.c): convert, then greedy decoding must reproduce the
//! reference C implementation's output byte for byte.

mod common;

use std::sync::Arc;

use ember_converter::{convert, ConvertOptions, DTypeChoice};
use ember_runtime::format::DType;
use ember_runtime::generate::{generate_greedy, StopReason};
use ember_runtime::{Model, Session, SessionConfig};

/// llama2.c's `-n 200`: with a one-token (BOS) prompt, run.c runs 200 forward
/// passes and prints the 200 tokens they predict.
const STEPS: usize = 200;

fn convert_stories(dtype: DTypeChoice) -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    let bin = common::shared_file("models/stories260K/stories260K.bin")?;
    let tok = common::shared_file("models/stories260K/tok512.bin")?;
    let dir = common::scratch();
    let out = dir.path().join("stories260K.ember");
    let opts = ConvertOptions {
        dtype,
        tokenizer: Some(tok),
        ..Default::default()
    };
    convert(&bin, &out, &opts).expect("convert stories260K");
    Some((dir, out))
}

fn greedy_text(path: &std::path::Path) -> String {
    let model = Arc::new(Model::load(path).expect("load"));
    let tok = model.tokenizer();
    let mut prompt = tok.encode("", tok.default_encode_options());
    assert_eq!(prompt, vec![1], "an empty prompt is just BOS");
    prompt.truncate(1);
    let mut session = Session::new(model.clone(), SessionConfig::new(STEPS)).unwrap();
    let mut text = String::new();
    let stats = generate_greedy(&mut session, &prompt, STEPS, |_, piece| {
        text.push_str(piece);
        true
    })
    .unwrap();
    assert_eq!(stats.stop, StopReason::MaxTokens);
    text
}

#[test]
fn greedy_output_matches_llama2c_exactly() {
    let Some(expected) = common::shared_file("models/stories260K/expected_greedy_t0_n200.txt")
    else {
        return;
    };
    let Some((_dir, out)) = convert_stories(DTypeChoice::Auto) else {
        return;
    };
    let expected = std::fs::read_to_string(expected).unwrap();
    assert_eq!(greedy_text(&out), expected);
}

#[test]
fn converted_file_is_valid_and_mapped() {
    let Some((_dir, out)) = convert_stories(DTypeChoice::Auto) else {
        return;
    };
    let model = Model::load(&out).unwrap();
    assert!(model.is_mapped());
    model.verify_checksums().unwrap();
    let hp = model.hparams();
    assert_eq!(
        (hp.dim, hp.ffn_dim, hp.n_layers, hp.n_heads, hp.n_kv_heads),
        (64, 172, 5, 8, 4)
    );
    assert_eq!((hp.vocab_size, hp.max_context, hp.head_dim), (512, 512, 8));
    assert!(hp.tied_output());
}

#[test]
fn f16_weights_keep_the_story_start() {
    // f16 rounding may eventually change a near-tie, so only the opening is pinned.
    let Some(expected) = common::shared_file("models/stories260K/expected_greedy_t0_n200.txt")
    else {
        return;
    };
    let Some((_dir, out)) = convert_stories(DTypeChoice::Fixed(DType::F16)) else {
        return;
    };
    let expected = std::fs::read_to_string(expected).unwrap();
    let got = greedy_text(&out);
    let prefix: String = expected.chars().take(100).collect();
    assert!(
        got.starts_with(&prefix),
        "f16 output diverged early:\n{got}"
    );
}
