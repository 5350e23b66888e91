//! The Hugging Face reader on bad (and minimal good) inputs: every malformed
//! config.json, safetensors file or index must come back as an error naming the
//! problem, never a panic.

use std::collections::BTreeMap;
use std::path::Path;

use ember_converter::hf;
use ember_converter::ConvertError;
use ember_runtime::format::{flags, RopePairing, RopeScaling};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::{json, Value};

/// A valid tiny Llama config: dim 8, 1 layer, 2 heads of 4, 1 KV head, FFN 16, vocab 10.
fn llama_config() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 8,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "intermediate_size": 16,
        "vocab_size": 10,
        "max_position_embeddings": 32,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": false
    })
}

/// HF names and shapes of the weights `llama_config()` calls for.
fn llama_shapes() -> Vec<(String, Vec<usize>)> {
    let mut v = vec![("model.embed_tokens.weight".to_string(), vec![10, 8])];
    for (s, shape) in [
        ("input_layernorm.weight", vec![8]),
        ("self_attn.q_proj.weight", vec![8, 8]),
        ("self_attn.k_proj.weight", vec![4, 8]),
        ("self_attn.v_proj.weight", vec![4, 8]),
        ("self_attn.o_proj.weight", vec![8, 8]),
        ("post_attention_layernorm.weight", vec![8]),
        ("mlp.gate_proj.weight", vec![16, 8]),
        ("mlp.up_proj.weight", vec![16, 8]),
        ("mlp.down_proj.weight", vec![8, 16]),
    ] {
        v.push((format!("model.layers.0.{s}"), shape));
    }
    v.push(("model.norm.weight".into(), vec![8]));
    v.push(("lm_head.weight".into(), vec![10, 8]));
    v
}

/// Tensor bytes: element i of every tensor is `i as f32 * 0.5` in the given dtype.
fn tensor_bytes(dtype: Dtype, n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let x = i as f32 * 0.5;
            match dtype {
                Dtype::F32 => x.to_le_bytes().to_vec(),
                Dtype::F16 => half::f16::from_f32(x).to_le_bytes().to_vec(),
                Dtype::BF16 => half::bf16::from_f32(x).to_le_bytes().to_vec(),
                Dtype::I64 => (i as i64).to_le_bytes().to_vec(),
                other => panic!("test helper does not do {other:?}"),
            }
        })
        .collect()
}

/// Serializes `(name, dtype, shape)` tensors with the safetensors crate.
fn safetensors_file(tensors: &[(String, Dtype, Vec<usize>)]) -> Vec<u8> {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, d, s)| tensor_bytes(*d, s.iter().product()))
        .collect();
    let views: BTreeMap<String, TensorView<'_>> = tensors
        .iter()
        .zip(&data)
        .map(|((n, d, s), b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn all_f32() -> Vec<(String, Dtype, Vec<usize>)> {
    llama_shapes()
        .into_iter()
        .map(|(n, s)| (n, Dtype::F32, s))
        .collect()
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

/// A directory with `config` and one `model.safetensors` holding `tensors`.
fn model_dir(config: &Value, tensors: &[(String, Dtype, Vec<usize>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_json(&dir.path().join("config.json"), config);
    std::fs::write(
        dir.path().join("model.safetensors"),
        safetensors_file(tensors),
    )
    .unwrap();
    dir
}

fn config_err(config: Value) -> String {
    match hf::parse_config(&config.to_string()) {
        Ok(c) => panic!("expected an error, got {:?}", c.hparams),
        Err(e) => e.to_string(),
    }
}

fn tensors_err(dir: &Path) -> ConvertError {
    let cfg = hf::read_config(dir).expect("config is valid");
    match hf::load_tensors(dir, &cfg) {
        Ok(t) => panic!("expected an error, got {} tensors", t.len()),
        Err(e) => e,
    }
}

fn assert_contains(msg: &str, needle: &str) {
    assert!(
        msg.contains(needle),
        "error message {msg:?} should mention {needle:?}"
    );
}

// ---- config.json ----

#[test]
fn config_not_json() {
    let e = hf::parse_config("{ this is not json").unwrap_err();
    assert!(matches!(e, ConvertError::Config(_)), "{e:?}");
    assert_contains(&e.to_string(), "not valid JSON");
    let e = hf::parse_config("[1, 2]").unwrap_err();
    assert_contains(&e.to_string(), "JSON object");
}

#[test]
fn config_missing_fields() {
    for field in [
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "vocab_size",
    ] {
        let mut c = llama_config();
        c.as_object_mut().unwrap().remove(field);
        assert_contains(&config_err(c), &format!("missing required field `{field}`"));
    }
    let mut c = llama_config();
    c.as_object_mut().unwrap().remove("architectures");
    assert_contains(&config_err(c), "architectures");
}

#[test]
fn config_wrong_types() {
    let cases = [
        (
            "hidden_size",
            json!("8"),
            "`hidden_size` must be a non-negative integer",
        ),
        (
            "hidden_size",
            json!(-8),
            "`hidden_size` must be a non-negative integer",
        ),
        (
            "hidden_size",
            json!(8.5),
            "`hidden_size` must be a non-negative integer",
        ),
        (
            "num_hidden_layers",
            json!(1u64 << 40),
            "`num_hidden_layers` must be a non-negative integer below 2^32",
        ),
        (
            "rms_norm_eps",
            json!("small"),
            "`rms_norm_eps` must be a finite number",
        ),
        (
            "tie_word_embeddings",
            json!(1),
            "`tie_word_embeddings` must be true or false",
        ),
        (
            "architectures",
            json!("LlamaForCausalLM"),
            "`architectures` must be a list",
        ),
        ("architectures", json!([]), "non-empty list"),
        ("rope_scaling", json!(2), "`rope_scaling` must be an object"),
        ("rope_theta", json!(-1.0), "rope_theta must be positive"),
    ];
    for (field, value, needle) in cases {
        let mut c = llama_config();
        c[field] = value;
        assert_contains(&config_err(c), needle);
    }
}

#[test]
fn config_bad_head_counts() {
    let mut c = llama_config();
    c["num_attention_heads"] = json!(0);
    assert_contains(&config_err(c), "num_attention_heads is zero");

    let mut c = llama_config();
    c["num_key_value_heads"] = json!(0);
    assert_contains(&config_err(c), "num_key_value_heads is zero");

    let mut c = llama_config();
    c["num_attention_heads"] = json!(4);
    c["num_key_value_heads"] = json!(3);
    assert_contains(&config_err(c), "not a multiple of num_key_value_heads");

    let mut c = llama_config();
    c["num_attention_heads"] = json!(3);
    c["num_key_value_heads"] = json!(3);
    assert_contains(
        &config_err(c),
        "hidden_size 8 is not a multiple of num_attention_heads 3",
    );

    let mut c = llama_config();
    c["head_dim"] = json!(3); // odd: RoPE needs pairs
    assert_contains(&config_err(c), "inconsistent hyperparameters");

    let mut c = llama_config();
    c["vocab_size"] = json!(0);
    assert_contains(&config_err(c), "vocab_size is zero");
}

#[test]
fn config_unsupported_features() {
    let mut c = llama_config();
    c["architectures"] = json!(["GPT2LMHeadModel"]);
    let e = hf::parse_config(&c.to_string()).unwrap_err();
    assert!(matches!(e, ConvertError::Unsupported(_)), "{e:?}");
    assert_contains(&e.to_string(), "GPT2LMHeadModel");

    let mut c = llama_config();
    c["hidden_act"] = json!("gelu_fast");
    assert_contains(&config_err(c), "activation \"gelu_fast\"");

    let mut c = llama_config();
    c["rope_scaling"] = json!({"rope_type": "longrope", "factor": 4.0});
    assert_contains(&config_err(c), "RoPE scaling type \"longrope\"");

    let mut c = llama_config();
    c["architectures"] = json!(["Gemma3ForCausalLM"]);
    c["attn_logit_softcapping"] = json!(50.0);
    assert_contains(&config_err(c), "attn_logit_softcapping");

    let mut c = llama_config();
    c["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0});
    assert_contains(&config_err(c), "llama3 RoPE scaling needs");

    let mut c = llama_config();
    c["architectures"] = json!(["Qwen2ForCausalLM"]);
    c["use_sliding_window"] = json!(true);
    c["sliding_window"] = json!(16);
    c["max_window_layers"] = json!(0);
    c["num_hidden_layers"] = json!(2);
    c["layer_types"] = json!(["full_attention", "sliding_attention"]);
    assert_contains(&config_err(c), "sliding-window attention on layers [1]");
}

#[test]
fn config_good_variants() {
    // Defaults: KV heads = heads, head_dim = hidden / heads, theta 10000, untied.
    let mut c = llama_config();
    for k in [
        "num_key_value_heads",
        "rope_theta",
        "tie_word_embeddings",
        "max_position_embeddings",
    ] {
        c.as_object_mut().unwrap().remove(k);
    }
    let hp = hf::parse_config(&c.to_string()).unwrap().hparams;
    assert_eq!((hp.n_kv_heads, hp.head_dim, hp.rope_dim), (2, 4, 4));
    assert_eq!(
        (hp.rope_theta, hp.max_context, hp.flags),
        (10000.0, 2048, 0)
    );
    assert_eq!(hp.rope_pairing, RopePairing::Half as u32);
    assert_eq!(
        (hp.rope_scaling, hp.rope_scaling_factor),
        (RopeScaling::None as u32, 1.0)
    );

    // transformers 5 style rope_parameters with Llama 3 scaling; null treated as absent.
    let mut c = llama_config();
    c["rope_theta"] = Value::Null;
    c["rope_parameters"] = json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
    let hp = hf::parse_config(&c.to_string()).unwrap().hparams;
    assert_eq!(
        (hp.rope_scaling, hp.rope_theta, hp.rope_scaling_factor),
        (RopeScaling::Llama3 as u32, 500000.0, 8.0)
    );
    assert_eq!(
        (
            hp.rope_low_freq_factor,
            hp.rope_high_freq_factor,
            hp.rope_original_context
        ),
        (1.0, 4.0, 8192)
    );

    // transformers 4 style linear scaling under the old key name `type`.
    let mut c = llama_config();
    c["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
    let hp = hf::parse_config(&c.to_string()).unwrap().hparams;
    assert_eq!(
        (hp.rope_scaling, hp.rope_scaling_factor),
        (RopeScaling::Linear as u32, 2.0)
    );

    // Llama with biases.
    let mut c = llama_config();
    c["attention_bias"] = json!(true);
    c["mlp_bias"] = json!(true);
    c["tie_word_embeddings"] = json!(true);
    let hp = hf::parse_config(&c.to_string()).unwrap().hparams;
    assert_eq!(
        hp.flags,
        flags::QKV_BIAS | flags::ATTN_OUT_BIAS | flags::MLP_BIAS | flags::TIED_OUTPUT
    );

    // Qwen2: q/k/v bias always; its window only with use_sliding_window on all layers.
    let mut c = llama_config();
    c["architectures"] = json!(["Qwen2ForCausalLM"]);
    c["sliding_window"] = json!(16);
    let hp = hf::parse_config(&c.to_string()).unwrap().hparams;
    assert_eq!((hp.flags, hp.sliding_window), (flags::QKV_BIAS, 0));
    c["use_sliding_window"] = json!(true);
    c["max_window_layers"] = json!(0);
    assert_eq!(
        hf::parse_config(&c.to_string())
            .unwrap()
            .hparams
            .sliding_window,
        16
    );

    // Absent KV head counts take the class default, explicit null means "= heads".
    let mut c = llama_config();
    c["architectures"] = json!(["MistralForCausalLM"]);
    c["num_attention_heads"] = json!(8);
    c["head_dim"] = json!(4);
    c.as_object_mut().unwrap().remove("num_key_value_heads");
    assert_eq!(
        hf::parse_config(&c.to_string()).unwrap().hparams.n_kv_heads,
        8
    );
    c["num_attention_heads"] = json!(4);
    assert_contains(
        &config_err(c.clone()),
        "not a multiple of num_key_value_heads 8",
    );
    c["num_key_value_heads"] = Value::Null;
    assert_eq!(
        hf::parse_config(&c.to_string()).unwrap().hparams.n_kv_heads,
        4
    );

    // Mistral: window from the config, no biases.
    let mut c = llama_config();
    c["architectures"] = json!(["MistralForCausalLM"]);
    c["sliding_window"] = json!(8);
    c["attention_bias"] = json!(true); // not a Mistral option: ignored like transformers does
    let cfg = hf::parse_config(&c.to_string()).unwrap();
    assert_eq!((cfg.hparams.flags, cfg.hparams.sliding_window), (0, 8));
    assert_eq!(cfg.arch, hf::HfArch::Mistral);
    c["sliding_window"] = Value::Null;
    assert_eq!(
        hf::parse_config(&c.to_string())
            .unwrap()
            .hparams
            .sliding_window,
        0
    );
}

// ---- safetensors ----

#[test]
fn valid_weights_load_and_decode() {
    let mut tensors = all_f32();
    tensors[0].1 = Dtype::BF16; // embeddings
    tensors[2].1 = Dtype::F16; // wq
                               // Ignorable buffer with a dtype Ember would otherwise reject.
    tensors.push((
        "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
        Dtype::I64,
        vec![2],
    ));
    let dir = model_dir(&llama_config(), &tensors);
    let cfg = hf::read_config(dir.path()).unwrap();
    let loaded = hf::load_tensors(dir.path(), &cfg).unwrap();
    assert_eq!(loaded.len(), 12);
    let by_name = |n: &str| loaded.iter().find(|t| t.name == n).unwrap();
    let emb = by_name("tok_embeddings");
    assert_eq!(emb.shape, vec![10, 8]);
    assert_eq!(emb.source.source_dtype(), "bf16");
    let v = emb.source.to_f32().unwrap();
    assert_eq!(v.len(), 80);
    assert_eq!((v[0], v[1], v[79]), (0.0, 0.5, 39.5));
    let wq = by_name("layers.0.wq").source.to_f32().unwrap();
    assert_eq!(wq[63], 31.5);
    assert_eq!(by_name("layers.0.w_down").shape, vec![8, 16]);
    assert_eq!(by_name("output").source.to_f32().unwrap()[3], 1.5);
}

#[test]
fn tied_model_ignores_lm_head() {
    let mut c = llama_config();
    c["tie_word_embeddings"] = json!(true);
    let dir = model_dir(&c, &all_f32()); // still has lm_head.weight
    let cfg = hf::read_config(dir.path()).unwrap();
    let loaded = hf::load_tensors(dir.path(), &cfg).unwrap();
    assert_eq!(loaded.len(), 11);
    assert!(loaded.iter().all(|t| t.name != "output"));
}

#[test]
fn truncated_file() {
    let dir = model_dir(&llama_config(), &all_f32());
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 5, 20, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let e = tensors_err(dir.path());
        assert!(matches!(e, ConvertError::Safetensors(_)), "{e:?}");
        assert_contains(&e.to_string(), "truncated");
    }
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"junk");
    std::fs::write(&path, &longer).unwrap();
    assert_contains(&tensors_err(dir.path()).to_string(), "trailing garbage");
}

#[test]
fn garbage_header() {
    let dir = model_dir(&llama_config(), &all_f32());
    let path = dir.path().join("model.safetensors");
    // Header length far beyond the file.
    std::fs::write(&path, u64::MAX.to_le_bytes()).unwrap();
    assert_contains(&tensors_err(dir.path()).to_string(), "implausibly large");
    // A plausible length followed by non-JSON.
    let mut bytes = 16u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"\xff\xfe not json!!!!!");
    std::fs::write(&path, &bytes).unwrap();
    assert_contains(&tensors_err(dir.path()).to_string(), "not UTF-8");
    let mut bytes = 16u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"a\": [1, 2, 3]}");
    std::fs::write(&path, &bytes).unwrap();
    assert_contains(&tensors_err(dir.path()).to_string(), "bad header JSON");
    // Offsets that overlap.
    let header = br#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0; 12]);
    std::fs::write(&path, &bytes).unwrap();
    assert_contains(&tensors_err(dir.path()).to_string(), "bad header JSON");
    // A tensor named twice (serde_json would keep only the second).
    let header = br#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0; 8]);
    std::fs::write(&path, &bytes).unwrap();
    assert_contains(
        &tensors_err(dir.path()).to_string(),
        "appears twice in the header: \"x\"",
    );
}

#[test]
fn wrong_shape() {
    let mut tensors = all_f32();
    tensors[3].2 = vec![8, 8]; // k_proj should be [4, 8]
    let dir = model_dir(&llama_config(), &tensors);
    let e = tensors_err(dir.path());
    assert!(matches!(e, ConvertError::Tensor { .. }), "{e:?}");
    let msg = e.to_string();
    assert_contains(&msg, "model.layers.0.self_attn.k_proj.weight");
    assert_contains(&msg, "shape [8, 8]");
    assert_contains(&msg, "[4, 8]");
}

#[test]
fn missing_tensor() {
    let mut tensors = all_f32();
    tensors.retain(|(n, _, _)| n != "model.layers.0.mlp.up_proj.weight");
    let dir = model_dir(&llama_config(), &tensors);
    let msg = tensors_err(dir.path()).to_string();
    assert_contains(&msg, "missing tensors");
    assert_contains(&msg, "model.layers.0.mlp.up_proj.weight");

    let mut tensors = all_f32();
    tensors.retain(|(n, _, _)| n != "lm_head.weight");
    let dir = model_dir(&llama_config(), &tensors);
    assert_contains(&tensors_err(dir.path()).to_string(), "lm_head.weight");
}

#[test]
fn extra_tensors() {
    let mut tensors = all_f32();
    tensors.push((
        "model.layers.0.self_attn.q_proj.bias".into(),
        Dtype::F32,
        vec![8],
    ));
    let dir = model_dir(&llama_config(), &tensors);
    assert_contains(&tensors_err(dir.path()).to_string(), "attention_bias");

    let mut tensors = all_f32();
    tensors.push((
        "model.layers.1.input_layernorm.weight".into(),
        Dtype::F32,
        vec![8],
    ));
    let dir = model_dir(&llama_config(), &tensors);
    assert_contains(
        &tensors_err(dir.path()).to_string(),
        "beyond num_hidden_layers",
    );

    let mut tensors = all_f32();
    tensors.push(("model.visual.proj.weight".into(), Dtype::F32, vec![2]));
    let dir = model_dir(&llama_config(), &tensors);
    let msg = tensors_err(dir.path()).to_string();
    assert_contains(&msg, "model.visual.proj.weight");
    assert_contains(&msg, "unexpected tensor");
}

#[test]
fn unsupported_dtype() {
    let mut tensors = all_f32();
    tensors[1].1 = Dtype::I64; // input_layernorm
    let dir = model_dir(&llama_config(), &tensors);
    let e = tensors_err(dir.path());
    assert!(matches!(e, ConvertError::Unsupported(_)), "{e:?}");
    assert_contains(&e.to_string(), "I64");
    assert_contains(&e.to_string(), "model.layers.0.input_layernorm.weight");
}

#[test]
fn no_weights() {
    let dir = tempfile::tempdir().unwrap();
    write_json(&dir.path().join("config.json"), &llama_config());
    assert_contains(
        &tensors_err(dir.path()).to_string(),
        "neither model.safetensors nor",
    );
    std::fs::write(dir.path().join("pytorch_model.bin"), b"").unwrap();
    assert!(matches!(
        tensors_err(dir.path()),
        ConvertError::Unsupported(_)
    ));
}

// ---- sharded checkpoints ----

/// Writes the tensors into two shards plus an index, returning the dir.
fn sharded_dir(index: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_json(&dir.path().join("config.json"), &llama_config());
    let tensors = all_f32();
    let (a, b) = tensors.split_at(5);
    let mut map = serde_json::Map::new();
    for (part, file) in [
        (a, "model-00001-of-00002.safetensors"),
        (b, "model-00002-of-00002.safetensors"),
    ] {
        std::fs::write(dir.path().join(file), safetensors_file(part)).unwrap();
        for (n, _, _) in part {
            map.insert(n.clone(), json!(file));
        }
    }
    let mut idx = json!({"metadata": {"total_size": 0}, "weight_map": map});
    index(&mut idx);
    write_json(&dir.path().join("model.safetensors.index.json"), &idx);
    dir
}

#[test]
fn sharded_ok() {
    let dir = sharded_dir(|_| {});
    let cfg = hf::read_config(dir.path()).unwrap();
    assert_eq!(hf::load_tensors(dir.path(), &cfg).unwrap().len(), 12);
}

#[test]
fn bad_index() {
    let dir = sharded_dir(|_| {});
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    assert_contains(
        &tensors_err(dir.path()).to_string(),
        "names shard \"model-00002-of-00002.safetensors\"",
    );

    let dir = sharded_dir(|idx| {
        idx["weight_map"]["model.norm.weight"] = json!("model-00001-of-00002.safetensors")
    });
    assert_contains(&tensors_err(dir.path()).to_string(), "does not contain it");

    let dir = sharded_dir(|idx| idx["weight_map"]["model.norm.weight"] = json!("../../etc/passwd"));
    assert_contains(
        &tensors_err(dir.path()).to_string(),
        "not a plain file name",
    );

    let dir = sharded_dir(|idx| *idx = json!({"metadata": {}}));
    assert_contains(&tensors_err(dir.path()).to_string(), "missing `weight_map`");

    let dir = sharded_dir(|_| {});
    std::fs::write(dir.path().join("model.safetensors.index.json"), b"{oops").unwrap();
    assert_contains(&tensors_err(dir.path()).to_string(), "not valid JSON");
}

// ---- whole directory ----

#[test]
fn load_requires_tokenizer_json() {
    let dir = model_dir(&llama_config(), &all_f32());
    let e = hf::load(dir.path()).err().expect("no tokenizer.json");
    assert!(matches!(e, ConvertError::Tokenizer(_)), "{e:?}");
    assert_contains(&e.to_string(), "tokenizer.json");
}

#[test]
fn load_reports_config_errors_first() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), b"not json").unwrap();
    assert!(matches!(hf::load(dir.path()), Err(ConvertError::Config(_))));
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        hf::load(empty.path()),
        Err(ConvertError::Io { .. })
    ));
}

#[test]
fn chat_template_sources() {
    let dir = tempfile::tempdir().unwrap();
    let tc = dir.path().join("tokenizer_config.json");
    assert_eq!(hf::read_chat_template(dir.path(), None).unwrap(), None);

    write_json(&tc, &json!({"chat_template": "{{ messages }}"}));
    assert_eq!(
        hf::read_chat_template(dir.path(), Some(&tc))
            .unwrap()
            .as_deref(),
        Some("{{ messages }}")
    );

    write_json(
        &tc,
        &json!({"chat_template": [
        {"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}),
    );
    assert_eq!(
        hf::read_chat_template(dir.path(), Some(&tc))
            .unwrap()
            .as_deref(),
        Some("D")
    );

    write_json(&tc, &json!({"chat_template": [{"template": "T"}]}));
    assert!(hf::read_chat_template(dir.path(), Some(&tc)).is_err());
    write_json(&tc, &json!({"chat_template": 3}));
    assert!(hf::read_chat_template(dir.path(), Some(&tc)).is_err());
    std::fs::write(&tc, b"{").unwrap();
    assert!(hf::read_chat_template(dir.path(), Some(&tc)).is_err());

    // The .jinja file wins.
    std::fs::write(dir.path().join("chat_template.jinja"), "J").unwrap();
    assert_eq!(
        hf::read_chat_template(dir.path(), Some(&tc))
            .unwrap()
            .as_deref(),
        Some("J")
    );
}

#[test]
fn templates_that_cannot_render_are_refused() {
    // The tiny Llama fixture, with its chat template replaced.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf-tiny/llama");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let from = entry.unwrap().path();
        std::fs::copy(&from, dir.path().join(from.file_name().unwrap())).unwrap();
    }
    hf::load(dir.path()).unwrap();
    let jinja = dir.path().join("chat_template.jinja");
    let cases = [
        (
            format!("{{{{ {}1 }}}}", "-".repeat(40_000)),
            "chat template: expression nested deeper than 256 (line 1: 40000 operators",
        ),
        (
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
                .to_string(),
            "chat template: rendering exceeded its fuel of",
        ),
        (
            "{{ 'x' * 10000000 }}".to_string(),
            "chat template output larger than",
        ),
        (
            "{% for m in messages %}".to_string(),
            "chat template syntax error",
        ),
        (
            "{{ raise_exception('no conversation is good enough') }}".to_string(),
            "rejected the messages: no conversation is good enough",
        ),
    ];
    for (template, needle) in cases {
        std::fs::write(&jinja, &template).unwrap();
        let e = hf::load(dir.path()).err().expect("refused");
        assert!(matches!(e, ConvertError::ChatTemplate { .. }), "{e:?}");
        let msg = e.to_string();
        assert_contains(
            &msg,
            "chat_template.jinja: the chat template cannot be used: ",
        );
        assert_contains(&msg, needle);
    }
    // The same check applies to a template in tokenizer_config.json.
    std::fs::remove_file(&jinja).unwrap();
    let tc = dir.path().join("tokenizer_config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&tc).unwrap()).unwrap();
    config["chat_template"] = json!("{{ 'x' * 10000000 }}");
    write_json(&tc, &config);
    let msg = hf::load(dir.path()).err().expect("refused").to_string();
    assert_contains(
        &msg,
        "tokenizer_config.json: the chat template cannot be used: ",
    );
}
