//! Targets for the files a model arrives in: `.ember` (the runtime's loader) and
//! the converter's inputs (GGUF, a Hugging Face directory, llama2.c).
//!
//! Each converter target runs the reader's parts on their own (so that a broken
//! weights file still lets the tokenizer reader see its input; an imported
//! tokenizer is built and used), then the reader as `ember convert` calls it;
//! an accepted input is checked (every tensor decodes to exactly its shape's
//! element count) and, when the mode byte's bit 0 is set, written as
//! `.ember`, loaded and run ([`write_and_run`]).

use std::sync::Arc;

use ember_converter::gguf::{self, GgufFile, GgufValue};
use ember_converter::ir::ModelIr;
use ember_converter::tokenizer_import;
use ember_runtime::tokenizer::{Tokenizer, TokenizerSpec};
use ember_runtime::Model;

use super::fixtures::{present, run_model, run_tokenizer, with_files, write_and_run};
use super::frame;
use super::state::crc32;

/// `.ember` loader. Input: a mode byte, then a whole `.ember` file. Mode bit
/// 0: the header checksum is recomputed first (FORMAT.md, *Checksums*), so
/// that mutated headers, directories, tokenizers and metadata reach the
/// validation after it. A file the loader accepts has its tensor checksums
/// verified and is run ([`run_model`]).
pub fn ember_load(data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let mut fixed;
    let bytes = if mode & 1 != 0 {
        fixed = bytes.to_vec();
        fix_header_checksum(&mut fixed);
        &fixed[..]
    } else {
        bytes
    };
    let Ok(model) = Model::from_bytes(bytes) else {
        return;
    };
    let _ = model.verify_checksums();
    run_model(Arc::new(model));
}

/// Byte offset of `header_checksum` in an `.ember` header.
const EMBER_CHECKSUM_AT: usize = 24;
/// Byte offset of the data section's `offset` field in an `.ember` header.
const EMBER_DATA_OFFSET_AT: usize = 112;

/// Sets an `.ember` file's `header_checksum` to the CRC-32 of `[0, data.offset)`
/// with the checksum bytes as zero, when that range is inside the file.
fn fix_header_checksum(bytes: &mut [u8]) {
    let Some(field) = bytes.get(EMBER_DATA_OFFSET_AT..EMBER_DATA_OFFSET_AT + 8) else {
        return;
    };
    let end = u64::from_le_bytes(field.try_into().expect("8 bytes"));
    let Some(end) = usize::try_from(end)
        .ok()
        .filter(|&e| e <= bytes.len() && e >= EMBER_CHECKSUM_AT + 4)
    else {
        return;
    };
    bytes[EMBER_CHECKSUM_AT..EMBER_CHECKSUM_AT + 4].fill(0);
    let crc = crc32(&bytes[..end]);
    bytes[EMBER_CHECKSUM_AT..EMBER_CHECKSUM_AT + 4].copy_from_slice(&crc.to_le_bytes());
}

/// GGUF reader. Input: a mode byte, then a whole GGUF file. Runs the container
/// parser, the tokenizer import from the metadata, the mapping onto `.ember`
/// hyperparameters and tensors, and the dequantization of every tensor.
pub fn gguf(data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let Ok(file) = GgufFile::from_bytes(bytes.to_vec()) else {
        return;
    };
    let tokenizer = tokenizer_import::gguf::from_gguf_metadata(&file.metadata);
    if let Ok(spec) = &tokenizer {
        check_spec(spec, None);
    }
    let weights = match gguf::map_weights(&file, Some("fuzz.gguf")) {
        Ok(w) => w,
        Err(_) => {
            // Not a model: the dequantizers still run on every tensor.
            for t in &file.tensors {
                if let Ok(v) = file.tensor_f32(t) {
                    assert_eq!(v.len() as u64, t.n_elements(), "GGUF tensor {}", t.name);
                }
            }
            return;
        }
    };
    // `GgufWeights::hparams` is documented as validated.
    weights
        .hparams
        .validate()
        .expect("map_weights returns validated hyperparameters");
    let chat_template = match file.metadata.get("tokenizer.chat_template") {
        Some(GgufValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let Ok(tokenizer) = tokenizer else {
        return;
    };
    let ir = ModelIr {
        hparams: weights.hparams,
        tensors: weights.tensors,
        tokenizer,
        chat_template,
        metadata: weights.metadata,
    };
    check_ir(&ir, mode);
}

/// Files of a Hugging Face directory, in the order of the `hf_import` parts.
pub const HF_FILES: [&str; 9] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "model.safetensors.index.json",
    "model-00001-of-00003.safetensors",
    "model-00002-of-00003.safetensors",
    "model-00003-of-00003.safetensors",
];

/// Hugging Face import. Input: a mode byte, then the parts of [`HF_FILES`]
/// ([`frame`]); an empty part is an absent file. Runs `config.json` parsing,
/// the safetensors reader (single file or index + shards), the
/// `tokenizer.json` import and the chat-template lookup, then the whole
/// directory reader.
pub fn hf_import(data: &[u8]) {
    let ([mode], parts) = frame::split::<1>(data, HF_FILES.len());
    let files: Vec<(&str, Option<&[u8]>)> = HF_FILES
        .iter()
        .zip(&parts)
        .map(|(&name, part)| (name, present(part)))
        .collect();
    with_files(&files, |dir| {
        use ember_converter::hf;
        let config = hf::read_config(dir);
        let tensors = config.as_ref().map(|cfg| hf::load_tensors(dir, cfg));
        let tokenizer_config = dir.join("tokenizer_config.json");
        let tokenizer_config = tokenizer_config.is_file().then_some(tokenizer_config);
        let spec = tokenizer_import::hf_json::from_hf_files(
            &dir.join("tokenizer.json"),
            tokenizer_config.as_deref(),
        );
        if let Ok(spec) = &spec {
            check_spec(spec, None);
        }
        let template = hf::read_chat_template(dir, tokenizer_config.as_deref());
        if matches!(tensors, Ok(Ok(_))) && spec.is_ok() && template.is_ok() {
            if let Ok(ir) = hf::load(dir) {
                check_ir(&ir, mode);
            }
        }
    });
}

/// Largest checkpoint the `llama2c` target pads to its header's size.
const LLAMA2C_PAD_LIMIT: u64 = 256 << 10;

/// llama2.c reader. Input: a mode byte, then two parts ([`frame`]): the
/// checkpoint and the tokenizer file. Mode bit 1: the checkpoint is padded
/// with zeros to the size its header describes (up to 256 KiB), so that
/// header mutations reach the weight reader; bit 2: the tokenizer is named
/// `tokenizer.model` (read as a SentencePiece model) instead of
/// `tokenizer.bin`.
pub fn llama2c(data: &[u8]) {
    let ([mode], parts) = frame::split::<1>(data, 2);
    let mut checkpoint = parts[0].to_vec();
    if mode & 2 != 0 {
        if let Some(size) = llama2c_size(&checkpoint) {
            if size <= LLAMA2C_PAD_LIMIT && size > checkpoint.len() as u64 {
                checkpoint.resize(size as usize, 0);
            }
        }
    }
    let tok_name = if mode & 4 != 0 {
        "tokenizer.model"
    } else {
        "tokenizer.bin"
    };
    let other = if mode & 4 != 0 {
        "tokenizer.bin"
    } else {
        "tokenizer.model"
    };
    let files = [
        ("model.bin", Some(&checkpoint[..])),
        (tok_name, Some(parts[1])),
        (other, None),
    ];
    with_files(&files, |dir| {
        let (ckpt, tok) = (dir.join("model.bin"), dir.join(tok_name));
        // The tokenizer reader alone, for the vocabulary the header names (or
        // tok512's when the header is unusable).
        let vocab = header_field(&checkpoint, 5)
            .map(i32::unsigned_abs)
            .filter(|v| (3..=1 << 16).contains(v))
            .unwrap_or(512);
        if let Ok(spec) = tokenizer_import::llama2c::from_llama2c_bin(&tok, vocab) {
            check_spec(&spec, Some(vocab));
        }
        if let Ok(ir) = ember_converter::llama2c::load(&ckpt, &tok) {
            check_ir(&ir, mode);
        }
    });
}

/// Field `i` of a llama2.c header (7 little-endian i32), if present.
fn header_field(bytes: &[u8], i: usize) -> Option<i32> {
    let b = bytes.get(i * 4..i * 4 + 4)?;
    Some(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The file size a llama2.c header describes (`run.c`'s layout: header, the
/// weights, the unused RoPE tables, the classifier when not shared), or `None`
/// when a field is zero or the size does not fit a `u64`.
fn llama2c_size(bytes: &[u8]) -> Option<u64> {
    // Fields are below 2^31, so every product of three fits a u128.
    let f = |i| {
        header_field(bytes, i)
            .filter(|&v| v != 0)
            .map(|v| u128::from(v.unsigned_abs()))
    };
    let (d, h, l, heads, kv, vocab, seq) = (f(0)?, f(1)?, f(2)?, f(3)?, f(4)?, f(5)?, f(6)?);
    let hs = d / heads;
    let per_layer = d + heads * hs * d + 2 * kv * hs * d + d * heads * hs + d + 3 * h * d;
    let classifiers = if header_field(bytes, 5)? < 0 { 2 } else { 1 };
    let floats = classifiers * vocab * d + l * per_layer + d + seq * hs;
    u64::try_from(floats * 4 + 28).ok()
}

/// Checks a tokenizer an importer produced: the runtime builds it (or refuses
/// it with an error) for its own token count or `vocab`, and a built one
/// encodes and decodes ([`run_tokenizer`]).
fn check_spec(spec: &TokenizerSpec, vocab: Option<u32>) {
    let n = vocab.unwrap_or(spec.tokens.len() as u32);
    if let Ok(tok) = Tokenizer::new(spec.clone(), n) {
        run_tokenizer(&tok);
    }
}

/// Checks a reader's accepted model: every tensor decodes to exactly its
/// shape's element count (`TensorSource::to_f32`'s contract), the tokenizer
/// builds for the vocabulary, and with mode bit 0 the model is converted and
/// run.
fn check_ir(ir: &ModelIr, mode: u8) {
    for t in &ir.tensors {
        if let Ok(v) = t.source.to_f32() {
            let n: u64 = t.shape.iter().product();
            assert_eq!(
                v.len() as u64,
                n,
                "tensor {} of shape {:?}",
                t.name,
                t.shape
            );
        }
    }
    check_spec(&ir.tokenizer, Some(ir.hparams.vocab_size));
    if mode & 1 != 0 {
        write_and_run(ir);
    }
}
