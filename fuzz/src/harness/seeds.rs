//! Seed inputs for every target, built from real files: the repository's
//! fixtures (`tests/fixtures`) and, when present, `../shared`'s stories260K and
//! Llama 2 tokenizer (read at run time, never copied into the repository).
//!
//! Fixture models are shrunk so the fuzzers stay fast: every width of a
//! `hf-tiny` / `gguf-tiny` checkpoint (hidden, FFN and head sizes; the
//! vocabulary is kept) is divided by 4 (or 2 where a rotary width would turn
//! odd), keeping the real configs, tokenizers, templates and tensor names, and
//! each shrunk model is checked to convert. Seeds keep the real file when
//! shrinking does not convert.

use std::collections::BTreeMap;
use std::path::Path;

use ember_converter::gguf::types::ALL_TYPES;
use ember_converter::gguf::{self, GgufFile, GgufValue};
use ember_converter::writer::{DTypeChoice, WriteOptions};
use ember_runtime::format::DType;
use ember_runtime::tokenizer::TokenType;
use ember_runtime::{Session, SessionConfig};
use serde_json::{json, Value};

use super::fixtures::{ember_bytes, fixture, model, shared, tiny_ir, tiny_tokenizer, with_files};
use super::frame::join;
use super::readers::HF_FILES;
use super::state::{state_session, PEFT_BASES};
use super::text::{goldens, templates, tokenizers};

/// A named seed input.
pub type Seed = (String, Vec<u8>);

/// The seeds of target `name` (see `harness::TARGETS`).
pub fn seeds(name: &str) -> Vec<Seed> {
    match name {
        "ember_load" => ember_seeds(),
        "gguf" => gguf_seeds(),
        "hf_import" => hf_seeds(),
        "llama2c" => llama2c_seeds(),
        "session_state" => state_seeds(),
        "peft" => peft_seeds(),
        "tokenizer" => tokenizer_seeds(),
        "chat_template" => chat_seeds(),
        _ => panic!("no fuzz target {name}"),
    }
}

/// The `hf-tiny` families the seeds use (one directory each).
const HF_FAMILIES: [&str; 10] = [
    "llama",
    "gpt-neox-seq",
    "mistral",
    "qwen2",
    "qwen3",
    "qwen3-yarn",
    "phi3",
    "gemma3",
    "stablelm",
    "llama-rope-llama3",
];

/// Dimension divisors tried when shrinking, in order.
const SHRINK: [u64; 2] = [4, 2];

/// `(width divisor, attention-head divisor)` pairs tried when shrinking a
/// Hugging Face config, in order: halving the heads keeps a partial rotary
/// width even where dividing the head size by 4 would make it odd.
const SHRINK_HF: [(u64, u64); 3] = [(4, 1), (4, 2), (2, 1)];

// ---------------------------------------------------------------- .ember

/// `.ember` files (mode byte 1: header checksum recomputed): the tiny model in
/// every stored dtype, and the shrunk `hf-tiny` families converted with
/// default options.
fn ember_seeds() -> Vec<Seed> {
    ember_files()
        .into_iter()
        .map(|(name, bytes)| (name, [&[1u8][..], &bytes].concat()))
        .collect()
}

fn ember_files() -> Vec<Seed> {
    let mut out = Vec::new();
    let opts = |d: Option<DType>| WriteOptions {
        dtype: d.map_or(DTypeChoice::Auto, DTypeChoice::Fixed),
        ..WriteOptions::default()
    };
    let small = ember_bytes(&tiny_ir(8, 1), &opts(None)).expect("tiny f32");
    out.push(("tiny-f32".to_string(), small));
    for d in [
        DType::F16,
        DType::BF16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Iq4Nl,
    ] {
        let bytes = ember_bytes(&tiny_ir(32, 1), &opts(Some(d))).expect("tiny quantized");
        out.push((format!("tiny-{}", d.name()), bytes));
    }
    for family in HF_FAMILIES {
        let files = shrunk_hf(family);
        match with_hf_dir(&files, |dir| {
            ember_converter::hf::load(dir).and_then(|ir| ember_bytes(&ir, &opts(None)))
        }) {
            Ok(bytes) => out.push((format!("hf-{family}"), bytes)),
            Err(e) => eprintln!("no .ember seed for hf-tiny/{family}: {e}"),
        }
    }
    out
}

// ---------------------------------------------------------------- GGUF

/// GGUF files (mode byte 1: convert and run too): llama.cpp's conversions of
/// the `hf-tiny` families shrunk, the quantized `tiny-llama.gguf` as is, and
/// one tensor of every ggml type the reader decodes.
fn gguf_seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    let with_mode = |bytes: Vec<u8>| [&[1u8][..], &bytes].concat();
    let real = std::fs::read(fixture("gguf/tiny-llama.gguf")).expect("tiny-llama.gguf");
    out.push(("tiny-llama".to_string(), with_mode(real)));
    let mut names: Vec<String> = std::fs::read_dir(fixture("gguf-tiny"))
        .expect("gguf-tiny")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".gguf").map(str::to_string)
        })
        .collect();
    names.sort();
    for name in names {
        let bytes = std::fs::read(fixture(&format!("gguf-tiny/{name}.gguf"))).expect("read");
        let file = GgufFile::from_bytes(bytes.clone()).expect("a fixture parses");
        let shrunk = SHRINK.iter().find_map(|&k| shrink_gguf(&file, k));
        out.push((
            format!("gguf-tiny-{name}"),
            with_mode(shrunk.unwrap_or(bytes)),
        ));
    }
    out.push(("all-types".to_string(), with_mode(all_types_gguf())));
    out
}

/// Type ids of GGUF metadata values.
fn gguf_type(v: &GgufValue) -> u32 {
    match v {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::String(_) => 8,
        GgufValue::Array(_) => 9,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    }
}

fn put_gguf_string(o: &mut Vec<u8>, s: &str) {
    o.extend_from_slice(&(s.len() as u64).to_le_bytes());
    o.extend_from_slice(s.as_bytes());
}

fn put_gguf_value(o: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => o.push(*x),
        GgufValue::I8(x) => o.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U16(x) => o.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => o.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => o.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => o.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => o.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => o.push(u8::from(*x)),
        GgufValue::String(s) => put_gguf_string(o, s),
        GgufValue::Array(items) => {
            let elem = items.first().map_or(4, gguf_type);
            o.extend_from_slice(&elem.to_le_bytes());
            o.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.iter().for_each(|i| put_gguf_value(o, i));
        }
        GgufValue::U64(x) => o.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => o.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => o.extend_from_slice(&x.to_le_bytes()),
    }
}

/// A GGUF v3 file: metadata in key order, tensors `(name, ne, type id, data)`
/// in order, `alignment`-aligned.
fn gguf_file(
    metadata: &BTreeMap<String, GgufValue>,
    tensors: &[(String, Vec<u64>, u32, Vec<u8>)],
    alignment: u64,
) -> Vec<u8> {
    let align = |o: &mut Vec<u8>| {
        o.resize(
            (o.len() as u64).div_ceil(alignment) as usize * alignment as usize,
            0,
        )
    };
    let mut o = b"GGUF".to_vec();
    o.extend_from_slice(&3u32.to_le_bytes());
    o.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    o.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_gguf_string(&mut o, k);
        o.extend_from_slice(&gguf_type(v).to_le_bytes());
        put_gguf_value(&mut o, v);
    }
    let mut rel = 0u64;
    for (name, ne, ty, data) in tensors {
        put_gguf_string(&mut o, name);
        o.extend_from_slice(&(ne.len() as u32).to_le_bytes());
        ne.iter()
            .for_each(|d| o.extend_from_slice(&d.to_le_bytes()));
        o.extend_from_slice(&ty.to_le_bytes());
        o.extend_from_slice(&rel.to_le_bytes());
        rel += (data.len() as u64).div_ceil(alignment) * alignment;
    }
    align(&mut o);
    for (.., data) in tensors {
        o.extend_from_slice(data);
        align(&mut o);
    }
    o
}

/// `file` with its widths divided by `k` (metadata and tensor dimensions; the
/// vocabulary kept), if that still parses and, when `file` maps onto a model,
/// still maps and converts.
fn shrink_gguf(file: &GgufFile, k: u64) -> Option<Vec<u8>> {
    let arch = file.get_str("general.architecture")?.to_string();
    let mut md = file.metadata.clone();
    for key in [
        "embedding_length",
        "feed_forward_length",
        "attention.key_length",
        "attention.value_length",
        "rope.dimension_count",
    ] {
        if let Some(v) = md.get_mut(&format!("{arch}.{key}")) {
            let n = v.as_u64()?;
            if n % k != 0 {
                return None;
            }
            *v = GgufValue::U32(u32::try_from(n / k).ok()?);
        }
    }
    let ids = match md.get("tokenizer.ggml.tokens") {
        Some(GgufValue::Array(t)) => kept_ids(t.iter().map(|v| v.as_str().unwrap_or_default())),
        _ => return None,
    };
    let (vocab, new_vocab) = (ids.len() as u64, ids.iter().flatten().count() as u64);
    shrink_gguf_vocab(&mut md, &arch, &ids);
    let mut tensors = Vec::new();
    for t in &file.tensors {
        let ne: Vec<u64> =
            t.ne.iter()
                .map(|&d| match d {
                    _ if d == vocab => new_vocab,
                    _ if d % k != 0 => d,
                    _ => d / k,
                })
                .collect();
        let rows: u64 = ne[1..].iter().product();
        let n_bytes = t.ggml_type.row_bytes(ne[0])? * rows;
        let mut data = file.tensor_bytes(t).ok()?;
        data.truncate(n_bytes as usize);
        tensors.push((t.name.clone(), ne, t.ggml_type.id(), data));
    }
    let bytes = gguf_file(&md, &tensors, file.alignment);
    let shrunk = GgufFile::from_bytes(bytes.clone()).ok()?;
    if gguf::map_weights(file, None).is_err() {
        return Some(bytes); // A fixture of an unsupported family: parsing is what it tests.
    }
    let weights = gguf::map_weights(&shrunk, None).ok()?;
    let spec =
        ember_converter::tokenizer_import::gguf::from_gguf_metadata(&shrunk.metadata).ok()?;
    let ir = ember_converter::ir::ModelIr {
        hparams: weights.hparams,
        tensors: weights.tensors,
        tokenizer: spec,
        chat_template: None,
        metadata: weights.metadata,
    };
    ember_bytes(&ir, &WriteOptions::default()).ok()?;
    Some(bytes)
}

/// New ids of a vocabulary's tokens in the shrunk seeds (`None`: dropped):
/// the first three (special in every fixture) and those spelled only with
/// ASCII letters and digits and byte-level BPE's space `Ġ` and newline `Ċ`,
/// which include every merge of the `hf-tiny` tokenizer, in their order.
fn kept_ids<'a>(tokens: impl Iterator<Item = &'a str>) -> Vec<Option<u32>> {
    let mut next = 0;
    tokens
        .enumerate()
        .map(|(i, t)| {
            let keep = i < 3
                || t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == 'Ġ' || c == 'Ċ');
            keep.then(|| {
                next += 1;
                next - 1
            })
        })
        .collect()
}

/// GGUF tokenizer metadata keeping the tokens `ids` keeps (and the merges of
/// kept tokens), with token ids and `{arch}.vocab_size` renumbered.
fn shrink_gguf_vocab(md: &mut BTreeMap<String, GgufValue>, arch: &str, ids: &[Option<u32>]) {
    for key in ["tokens", "scores", "token_type"] {
        if let Some(GgufValue::Array(v)) = md.get_mut(&format!("tokenizer.ggml.{key}")) {
            let mut keep = ids.iter().map(Option::is_some);
            v.retain(|_| keep.next().unwrap_or(false));
        }
    }
    let kept: std::collections::BTreeSet<String> = match md.get("tokenizer.ggml.tokens") {
        Some(GgufValue::Array(v)) => v
            .iter()
            .filter_map(|t| t.as_str().map(String::from))
            .collect(),
        _ => Default::default(),
    };
    if let Some(GgufValue::Array(merges)) = md.get_mut("tokenizer.ggml.merges") {
        merges.retain(|m| {
            let Some((a, b)) = m.as_str().and_then(|m| m.split_once(' ')) else {
                return false;
            };
            kept.contains(a) && kept.contains(b) && kept.contains(&format!("{a}{b}"))
        });
    }
    for (key, v) in md.iter_mut() {
        if key.starts_with("tokenizer.ggml.") && key.ends_with("_token_id") {
            if let Some(id) = v
                .as_u64()
                .and_then(|i| ids.get(i as usize).copied().flatten())
            {
                *v = GgufValue::U32(id);
            }
        }
    }
    if let Some(v) = md.get_mut(&format!("{arch}.vocab_size")) {
        *v = GgufValue::U32(ids.iter().flatten().count() as u32);
    }
}

/// A GGUF file holding one two-row tensor of every ggml type the reader
/// decodes, with deterministic bytes (no model: only the dequantizers run).
fn all_types_gguf() -> Vec<u8> {
    let mut md = BTreeMap::new();
    md.insert(
        "general.architecture".to_string(),
        GgufValue::String("llama".into()),
    );
    let tensors: Vec<_> = ALL_TYPES
        .iter()
        .filter(|t| t.can_dequantize())
        .enumerate()
        .map(|(i, t)| {
            let n = 2 * t.block_bytes();
            let data = (0..n).map(|j| (j * 37 + i * 11) as u8 & 0x3F).collect();
            (
                format!("t.{}", t.name()),
                vec![t.block_size() as u64, 2],
                t.id(),
                data,
            )
        })
        .collect();
    gguf_file(&md, &tensors, 32)
}

// ---------------------------------------------------------------- Hugging Face

/// The files of `hf-tiny/<family>` in [`HF_FILES`] order (absent: `None`), shrunk.
fn shrunk_hf(family: &str) -> Vec<Option<Vec<u8>>> {
    let dir = fixture(&format!("hf-tiny/{family}"));
    let real: Vec<Option<Vec<u8>>> = HF_FILES
        .iter()
        .map(|f| std::fs::read(dir.join(f)).ok())
        .collect();
    SHRINK_HF
        .iter()
        .find_map(|&(k, heads)| {
            let mut files = real.clone();
            let vocab = serde_json::from_slice::<Value>(real[0].as_deref()?).ok()?["vocab_size"]
                .as_u64()?;
            let (tokenizer, new_vocab) = shrink_tokenizer_json(real[2].as_deref()?)?;
            files[2] = Some(tokenizer);
            let config = shrink_config(real[0].as_deref()?, k, heads)?;
            let mut config: Value = serde_json::from_slice(&config).ok()?;
            config["vocab_size"] = json!(new_vocab);
            files[0] = Some(serde_json::to_vec_pretty(&config).ok()?);
            for i in [1, 6, 7, 8] {
                if let Some(st) = &real[i] {
                    files[i] = Some(shrink_safetensors(st, k, (vocab, new_vocab))?);
                }
            }
            with_hf_dir(&files, |d| {
                ember_converter::hf::load(d)
                    .and_then(|ir| ember_bytes(&ir, &WriteOptions::default()))
            })
            .ok()?;
            Some(files)
        })
        .unwrap_or(real)
}

/// Runs `f` on a scratch directory holding `files` ([`HF_FILES`] order).
fn with_hf_dir<R>(files: &[Option<Vec<u8>>], f: impl FnOnce(&Path) -> R) -> R {
    let named: Vec<(&str, Option<&[u8]>)> = HF_FILES
        .iter()
        .zip(files)
        .map(|(&n, b)| (n, b.as_deref()))
        .collect();
    with_files(&named, f)
}

/// `config.json` with `hidden_size`, `intermediate_size` and `head_dim`
/// divided by `k`, and the attention and KV head counts by `heads`.
fn shrink_config(text: &[u8], k: u64, heads: u64) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(text).ok()?;
    let keys = [
        ("hidden_size", k),
        ("intermediate_size", k),
        ("head_dim", k),
        ("num_attention_heads", heads),
        ("num_key_value_heads", heads),
    ];
    for (key, d) in keys {
        if let Some(n) = v.get(key).and_then(Value::as_u64) {
            if n % d != 0 {
                return None;
            }
            v[key] = json!(n / d);
        }
    }
    serde_json::to_vec_pretty(&v).ok()
}

/// The tensors of a safetensors file: `(name, dtype, shape, data)` in offset order.
type StTensors = Vec<(String, String, Vec<u64>, Vec<u8>)>;

fn read_safetensors(bytes: &[u8]) -> Option<StTensors> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: BTreeMap<String, Value> = serde_json::from_slice(bytes.get(8..8 + n)?).ok()?;
    let data = &bytes[8 + n..];
    let mut out = Vec::new();
    for (name, t) in header.iter().filter(|(k, _)| *k != "__metadata__") {
        let shape = t["shape"]
            .as_array()?
            .iter()
            .map(Value::as_u64)
            .collect::<Option<_>>()?;
        let off = t["data_offsets"].as_array()?;
        let (a, b) = (off[0].as_u64()? as usize, off[1].as_u64()? as usize);
        out.push((
            name.clone(),
            t["dtype"].as_str()?.to_string(),
            shape,
            data.get(a..b)?.to_vec(),
        ));
    }
    out.sort_by_key(|t| t.0.clone());
    Some(out)
}

fn write_safetensors(tensors: &[(String, String, Vec<u64>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut at = 0;
    for (name, dtype, shape, data) in tensors {
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [at, at + data.len()]}),
        );
        at += data.len();
    }
    let mut h = serde_json::to_vec(&Value::Object(header)).expect("JSON");
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let mut o = (h.len() as u64).to_le_bytes().to_vec();
    o.extend(h);
    tensors.iter().for_each(|t| o.extend_from_slice(&t.3));
    o
}

/// `tokenizer.json` keeping the tokens [`kept_ids`] keeps (and the merges of
/// kept tokens), renumbered, and the new vocabulary size.
fn shrink_tokenizer_json(text: &[u8]) -> Option<(Vec<u8>, u64)> {
    let mut v: Value = serde_json::from_slice(text).ok()?;
    let vocab = v["model"]["vocab"].as_object()?;
    let mut by_id: Vec<(u64, String)> = vocab
        .iter()
        .map(|(t, id)| Some((id.as_u64()?, t.clone())))
        .collect::<Option<_>>()?;
    by_id.sort();
    if by_id.iter().enumerate().any(|(i, (id, _))| *id != i as u64) {
        return None; // Not dense: leave it whole.
    }
    let ids = kept_ids(by_id.iter().map(|(_, t)| t.as_str()));
    let new_vocab: serde_json::Map<String, Value> = by_id
        .iter()
        .zip(&ids)
        .filter_map(|((_, t), id)| Some((t.clone(), json!((*id)?))))
        .collect();
    let kept = |t: &str| new_vocab.contains_key(t);
    let merges: Vec<Value> = v["model"]["merges"]
        .as_array()?
        .iter()
        .filter(|m| {
            let pair = match m {
                Value::String(s) => s
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string())),
                Value::Array(p) => p
                    .first()
                    .and_then(Value::as_str)
                    .zip(p.get(1).and_then(Value::as_str))
                    .map(|(a, b)| (a.to_string(), b.to_string())),
                _ => None,
            };
            pair.is_some_and(|(a, b)| kept(&a) && kept(&b) && kept(&format!("{a}{b}")))
        })
        .cloned()
        .collect();
    for t in v["added_tokens"].as_array_mut()? {
        let id = t["id"].as_u64()? as usize;
        t["id"] = json!(ids.get(id).copied().flatten()?);
    }
    let n = new_vocab.len() as u64;
    v["model"]["vocab"] = Value::Object(new_vocab);
    v["model"]["merges"] = Value::Array(merges);
    Some((serde_json::to_vec(&v).ok()?, n))
}

/// A safetensors file with every dimension of `vocab.0` made `vocab.1` and
/// every other divided by `k`, each tensor keeping the first bytes of its data.
fn shrink_safetensors(bytes: &[u8], k: u64, vocab: (u64, u64)) -> Option<Vec<u8>> {
    let mut tensors = read_safetensors(bytes)?;
    for (_, dtype, shape, data) in &mut tensors {
        let elem = match dtype.as_str() {
            "F32" => 4,
            "F16" | "BF16" => 2,
            _ => return None,
        };
        for d in shape.iter_mut() {
            if *d == vocab.0 {
                *d = vocab.1;
            } else if *d % k == 0 {
                *d /= k;
            } else {
                return None;
            }
        }
        data.truncate(shape.iter().product::<u64>() as usize * elem);
    }
    Some(write_safetensors(&tensors))
}

/// Hugging Face directories (mode byte 1: convert and run too): every shrunk
/// family (Mistral's as an index and three shards, as committed), the llama
/// one as an index and three shards, and the llama one with each committed
/// trained `tokenizer.json`.
fn hf_seeds() -> Vec<Seed> {
    let frame_files = |files: &[Option<Vec<u8>>]| {
        let parts: Vec<&[u8]> = files
            .iter()
            .map(|f| f.as_deref().unwrap_or_default())
            .collect();
        join(&[1], &parts)
    };
    let mut out = Vec::new();
    for family in HF_FAMILIES {
        out.push((format!("hf-{family}"), frame_files(&shrunk_hf(family))));
    }
    let llama = shrunk_hf("llama");
    let tensors = read_safetensors(llama[1].as_deref().expect("weights")).expect("safetensors");
    let mut sharded = llama.clone();
    let mut weight_map = serde_json::Map::new();
    let per_shard = tensors.len().div_ceil(3);
    for (i, shard) in tensors.chunks(per_shard).enumerate() {
        for t in shard {
            weight_map.insert(t.0.clone(), json!(HF_FILES[6 + i]));
        }
        sharded[6 + i] = Some(write_safetensors(shard));
    }
    sharded[1] = None;
    sharded[5] =
        Some(serde_json::to_vec(&json!({"metadata": {}, "weight_map": weight_map})).expect("JSON"));
    out.push(("hf-llama-sharded".into(), frame_files(&sharded)));
    for name in ["gpt2_bpe", "llama3_bpe", "qwen2_bpe"] {
        let mut files = llama.clone();
        files[2] =
            Some(std::fs::read(fixture(&format!("tokenizer/trained/{name}.json"))).expect("read"));
        files[3] = None;
        out.push((format!("hf-llama-{name}"), frame_files(&files)));
    }
    out
}

// ---------------------------------------------------------------- llama2.c

/// A llama2.c checkpoint: width 8, FFN 16, 1 layer, 2 heads, 1 KV head, 16
/// positions, `vocab` tokens (negative: classifier not shared), weights
/// deterministic and norms 1.
fn llama2c_checkpoint(vocab: i32) -> Vec<u8> {
    let (d, h, l, heads, kv, seq) = (8i32, 16, 1, 2, 1, 16);
    let mut o: Vec<u8> = [d, h, l, heads, kv, vocab, seq]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let hs = d / heads;
    let (d, h, hs, kv, heads) = (
        d as usize,
        h as usize,
        hs as usize,
        kv as usize,
        heads as usize,
    );
    let v = vocab.unsigned_abs() as usize;
    let mut floats: Vec<f32> = Vec::new();
    let mut push = |n: usize, norm: bool| {
        floats.extend((0..n).map(|i| {
            if norm {
                1.0
            } else {
                ((i * 7919 % 97) as f32 - 48.0) / 200.0
            }
        }));
    };
    push(v * d, false);
    push(d, true);
    push(heads * hs * d, false);
    push(2 * kv * hs * d, false);
    push(d * heads * hs, false);
    push(d, true);
    push(3 * h * d, false);
    push(d, true);
    push(seq as usize * hs, false);
    if vocab < 0 {
        push(v * d, false);
    }
    o.extend(floats.iter().flat_map(|f| f.to_le_bytes()));
    o
}

/// A llama2.c `tokenizer.bin` for [`tiny_tokenizer`] (SentencePiece's `▁`
/// written as a space, as llama2.c's exporter does).
fn llama2c_tokenizer() -> Vec<u8> {
    let spec = tiny_tokenizer();
    let mut o = 16i32.to_le_bytes().to_vec();
    for (i, piece) in spec.tokens.iter().enumerate() {
        let text = match (i, spec.token_types[i]) {
            (1, _) => "\n<s>\n".to_string(),
            (2, _) => "\n</s>\n".to_string(),
            (_, TokenType::Byte) => piece.clone(),
            _ => piece.replace('▁', " "),
        };
        o.extend_from_slice(&spec.scores[i].to_le_bytes());
        o.extend_from_slice(&(text.len() as i32).to_le_bytes());
        o.extend_from_slice(text.as_bytes());
    }
    o
}

/// The first `n` pieces of a SentencePiece `ModelProto` (field 1, repeated)
/// and every other top-level field, or `None` if it does not parse.
fn first_pieces(model: &[u8], n: usize) -> Option<Vec<u8>> {
    let varint = |b: &[u8], at: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*at)?;
            *at += 1;
            v |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    let (mut at, mut kept, mut out) = (0, 0, Vec::new());
    while at < model.len() {
        let start = at;
        let tag = varint(model, &mut at)?;
        if tag & 7 != 2 {
            return None;
        }
        let len = varint(model, &mut at)? as usize;
        at = at.checked_add(len).filter(|&e| e <= model.len())?;
        if tag >> 3 == 1 {
            kept += 1;
            if kept > n {
                continue;
            }
        }
        out.extend_from_slice(&model[start..at]);
    }
    Some(out)
}

/// llama2.c checkpoints and tokenizers (mode bit 0: convert and run too):
/// the 264-token tokenizer with checkpoints sharing and not sharing the
/// classifier; with `../shared`, the real tok512 with a 512-token checkpoint,
/// stories260K's real header (mode bit 1: padded), and Llama 2's
/// SentencePiece model cut to its first 300 pieces (mode bit 2).
fn llama2c_seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    let tok = llama2c_tokenizer();
    out.push(("tiny".into(), join(&[1], &[&llama2c_checkpoint(264), &tok])));
    out.push((
        "tiny-unshared".into(),
        join(&[1], &[&llama2c_checkpoint(-264), &tok]),
    ));
    if let Some(p) = shared("models/stories260K/tok512.bin") {
        let tok512 = std::fs::read(p).expect("tok512.bin");
        out.push((
            "tok512".into(),
            join(&[1], &[&llama2c_checkpoint(512), &tok512]),
        ));
        if let Some(p) = shared("models/stories260K/stories260K.bin") {
            let ckpt = std::fs::read(p).expect("stories260K.bin");
            out.push((
                "stories260k-header".into(),
                join(&[3], &[&ckpt[..28], &tok512]),
            ));
        }
    }
    if let Some(p) = shared("models/llama2-tokenizer/tokenizer.model") {
        let sp = std::fs::read(p).expect("tokenizer.model");
        let sp = first_pieces(&sp, 300).expect("a SentencePiece model");
        out.push((
            "llama2-sentencepiece".into(),
            join(&[5], &[&llama2c_checkpoint(300), &sp]),
        ));
    }
    out
}

// ---------------------------------------------------------------- sessions

/// Prompt caches written by sessions of both fixed models, every KV type and
/// context policy, after prompts that fill part of the context (and, for
/// Gemma 3's sliding layers, pass their window), with application data; an
/// empty state; and a few with the CRC-fixing bit set.
fn state_seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    for selector in 0u8..16 {
        if (selector >> 1 & 3) == 3 {
            continue; // the same KV type as selector bits 00
        }
        let (name, config) = state_session(selector);
        let mut s = Session::new(model(name), config).expect("a session");
        let n = if name == "tiny" { 5 } else { 20 };
        let prompt: Vec<u32> = (1..=n).collect();
        s.prefill(&prompt).expect("prefill");
        let mut bytes = vec![selector];
        s.write_state(&mut bytes, b"{\"history\": []}")
            .expect("write");
        out.push((format!("{name}-{selector:02}"), bytes));
        if selector < 4 {
            let fixed = bytes_with(
                selector | super::state::FIX_CRC,
                &out.last().expect("seed").1,
            );
            out.push((format!("{name}-{selector:02}-crc"), fixed));
        }
    }
    let config = SessionConfig {
        batch: 2,
        ..SessionConfig::new(16)
    };
    let s = Session::new(model("tiny"), config).expect("a session");
    let mut bytes = vec![2u8];
    s.write_state(&mut bytes, b"").expect("write");
    out.push(("tiny-empty".into(), bytes));
    out
}

/// `seed` with its selector byte replaced.
fn bytes_with(selector: u8, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    v[0] = selector;
    v
}

// ---------------------------------------------------------------- PEFT

/// The committed PEFT adapters (`tests/fixtures/lora`), each with the base
/// model its `base_model_name_or_path` names, at scale 1.
fn peft_seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(fixture("lora"))
        .expect("lora fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("adapter_config.json").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let config = std::fs::read(dir.join("adapter_config.json")).expect("read");
        let weights = std::fs::read(dir.join("adapter_model.safetensors")).expect("read");
        let v: Value = serde_json::from_slice(&config).expect("JSON");
        let base = v["base_model_name_or_path"].as_str().unwrap_or_default();
        let Some(i) = PEFT_BASES
            .iter()
            .position(|b| base.ends_with(&format!("hf-tiny/{b}")))
        else {
            continue;
        };
        let name = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        out.push((name, join(&[i as u8, 0], &[&config, &weights])));
    }
    out
}

// ---------------------------------------------------------------- text

/// Texts for the tokenizer seeds: the goldens' texts (from the reference
/// tokenizers' test cases), the multilingual sample's lines, chat markup.
fn sample_texts() -> Vec<String> {
    let mut texts = Vec::new();
    for name in ["tok512_ids", "smollm2_ids", "minilm_ids"] {
        let path = fixture(&format!("tokenizer/{name}.json"));
        let v: Value = serde_json::from_slice(&std::fs::read(path).expect("read")).expect("JSON");
        for case in v["cases"].as_array().expect("cases").iter().take(6) {
            texts.push(case["text"].as_str().expect("text").to_string());
        }
    }
    let multi = std::fs::read_to_string(fixture("tokenizer/multilingual.txt")).expect("read");
    texts.extend(
        multi
            .lines()
            .filter(|l| !l.is_empty())
            .take(12)
            .map(str::to_string),
    );
    texts.extend(
        [
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
            "<s>[INST] Hello [/INST] Hi </s>",
            "[CLS] the quick ##brown fox [SEP]",
            "  leading and trailing spaces  \t\n",
        ]
        .map(str::to_string),
    );
    texts
}

/// Every sample text for every fixed tokenizer, with both encode flags set.
fn tokenizer_seeds() -> Vec<Seed> {
    let texts = sample_texts();
    let mut out = Vec::new();
    for (i, t) in tokenizers().iter().enumerate() {
        for (j, text) in texts.iter().enumerate() {
            let mut bytes = vec![i as u8, 3];
            bytes.extend_from_slice(text.as_bytes());
            out.push((format!("{}-{j:02}", t.name), bytes));
        }
    }
    out
}

/// Every golden conversation with its template; and each template as the
/// input's own source, with its first conversation.
fn chat_seeds() -> Vec<Seed> {
    let g = goldens();
    let mut out = Vec::new();
    let n = templates().len();
    for (i, t) in g["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .enumerate()
    {
        let name = t["name"].as_str().expect("name");
        for (j, case) in t["cases"].as_array().expect("cases").iter().enumerate() {
            let agp = u8::from(case["add_generation_prompt"].as_bool().unwrap_or(true));
            let mut parts: Vec<Vec<u8>> = vec![Vec::new(); 3];
            for m in case["messages"].as_array().expect("messages") {
                for k in ["role", "content"] {
                    parts.push(m[k].as_str().unwrap_or_default().as_bytes().to_vec());
                }
            }
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            out.push((format!("{name}-{j:02}"), join(&[i as u8, agp], &refs)));
            if j == 0 {
                let t = &templates()[i];
                let mut own = parts.clone();
                own[0] = t.source.as_bytes().to_vec();
                own[1] = t.bos.as_bytes().to_vec();
                own[2] = t.eos.as_bytes().to_vec();
                let refs: Vec<&[u8]> = own.iter().map(Vec::as_slice).collect();
                out.push((format!("{name}-source"), join(&[n as u8, agp | 2], &refs)));
            }
        }
    }
    out
}
