//! Multiple-choice scoring (`ember_runtime::eval::choice`, `ember eval mc`)
//! against transformers: SmolLM2-135M-Instruct on the committed task file
//! `tests/fixtures/eval/mc_tasks.jsonl`, compared with the goldens that
//! `scripts/make_mc_goldens.py` computed (lm-evaluation-harness's tokenisation
//! and scoring, written out over transformers). The command line runs on a
//! tiny fixture model, including its error cases.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ember_converter::{convert, ConvertOptions};
use ember_runtime::eval::choice::{
    accuracy, encode_pair, score_choices, ChoiceItem, DEFAULT_DELIMITER,
};
use ember_runtime::{KvType, Model, Session, SessionConfig};
use serde_json::Value;

/// Largest |Δ| between Ember's and transformers' summed log-likelihood of an
/// ending (nats). Both run the same f32 weights in f32 and differ only in the
/// order of float operations; logits then agree to ~1e-5 (see
/// `hf_reference_logits.rs`), and a sum over at most 15 tokens of
/// log-probabilities of magnitude <= 60 stays well inside 1e-3.
const MAX_LL_DIFF: f64 = 1e-3;

/// The goldens' best and second-best scores (summed, and per character or
/// byte: a length divides the error too, so the bound is conservative) differ
/// by more than this, so equal choices are a real check, not luck.
const MIN_DECISION_MARGIN: f64 = 2.0 * MAX_LL_DIFF;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval")
}

/// The task file parsed here independently of the command's reader.
fn tasks() -> Vec<ChoiceItem> {
    let text = std::fs::read_to_string(fixtures().join("mc_tasks.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            ChoiceItem {
                context: v["context"].as_str().unwrap().to_string(),
                endings: v["endings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e.as_str().unwrap().to_string())
                    .collect(),
                label: v["label"].as_u64().unwrap() as usize,
            }
        })
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn session(model: &Arc<Model>, context: usize) -> Session<'static> {
    Session::new(
        model.clone(),
        SessionConfig {
            context,
            kv_type: KvType::F32,
            threads: 2,
            ..SessionConfig::new(context)
        },
    )
    .expect("session")
}

/// The SmolLM2 Hugging Face checkpoint (float32, rebuilt by
/// `scripts/fetch_models.sh --hf`) converted without changing a weight.
fn smollm2(dir: &Path) -> Option<Arc<Model>> {
    let hf = common::models_dir().join("smollm2-hf");
    if !hf.join("model.safetensors").is_file() {
        eprintln!(
            "skipping: {} not found (run scripts/fetch_models.sh --hf)",
            hf.display()
        );
        return None;
    }
    let out = dir.join("smollm2.ember");
    convert(&hf, &out, &ConvertOptions::default())
        .unwrap_or_else(|e| panic!("converting {}: {e}", hf.display()));
    Some(Arc::new(Model::load(&out).expect("load converted SmolLM2")))
}

#[test]
fn smollm2_choices_match_transformers() {
    if common::skip_under_emulation("30 forward passes of SmolLM2 per item") {
        return;
    }
    let tmp = common::scratch();
    let Some(model) = smollm2(tmp.path()) else {
        return;
    };
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("mc_smollm2.json")).unwrap())
            .unwrap();
    let items = tasks();
    let want = golden["items"].as_array().unwrap();
    assert_eq!(items.len(), want.len());
    let mut s = session(&model, 256);
    let mut scores = Vec::new();
    let mut worst = (0.0f64, 0, 0);
    for (n, (item, g)) in items.iter().zip(want).enumerate() {
        // Tokenisation first: the same ids as the harness's _encode_pair.
        for (k, ending) in item.endings.iter().enumerate() {
            let (ctx, cont) = encode_pair(
                model.tokenizer(),
                &item.context,
                &format!("{DEFAULT_DELIMITER}{ending}"),
            )
            .unwrap();
            assert_eq!(ctx, ids(&g["context_ids"]), "item {n}: context ids");
            assert_eq!(
                cont,
                ids(&g["continuation_ids"][k]),
                "item {n}, ending {k}: continuation ids"
            );
        }
        let got = score_choices(&mut s, item, DEFAULT_DELIMITER).unwrap();
        for (k, (&a, b)) in got
            .loglikelihoods
            .iter()
            .zip(g["loglikelihoods"].as_array().unwrap())
            .enumerate()
        {
            let d = (a - b.as_f64().unwrap()).abs();
            if d > worst.0 {
                worst = (d, n, k);
            }
        }
        for key in ["pred", "pred_norm", "pred_bytes", "label"] {
            let mine = match key {
                "pred" => got.pred,
                "pred_norm" => got.pred_norm,
                "pred_bytes" => got.pred_bytes,
                _ => item.label,
            };
            assert_eq!(mine as u64, g[key].as_u64().unwrap(), "item {n}: {key}");
        }
        scores.push(got);
    }
    eprintln!(
        "SmolLM2 multiple choice: max |Δ log-likelihood| {:.3e} (item {}, ending {})",
        worst.0, worst.1, worst.2
    );
    assert!(
        worst.0 <= MAX_LL_DIFF,
        "log-likelihood differs by {} > {MAX_LL_DIFF} at item {}, ending {}",
        worst.0,
        worst.1,
        worst.2
    );
    // The goldens' decisions are not knife-edge: under each normalisation the
    // runner-up trails the winner by more than the tolerance allows to flip.
    for (item, g) in items.iter().zip(want) {
        let lls: Vec<f64> = g["loglikelihoods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let per = |len: &dyn Fn(&str) -> usize| -> f64 {
            let mut v: Vec<f64> = lls
                .iter()
                .zip(&item.endings)
                .map(|(ll, e)| ll / len(e) as f64)
                .collect();
            v.sort_by(|a, b| b.total_cmp(a));
            v[0] - v[1]
        };
        let margins = [per(&|_| 1), per(&|e| e.chars().count()), per(&|e| e.len())];
        for m in margins {
            assert!(m > MIN_DECISION_MARGIN, "{lls:?}: margins {margins:?}");
        }
    }
    let acc = accuracy(&items, &scores);
    for (key, a) in [
        ("acc", acc.acc),
        ("acc_norm", acc.acc_norm),
        ("acc_bytes", acc.acc_bytes),
    ] {
        assert_eq!(a.value, golden[key].as_f64().unwrap(), "{key}");
    }
}

/// The tiny fixture model converted into `dir`.
fn tiny_model(dir: &Path) -> PathBuf {
    let out = dir.join("tiny.ember");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/llama");
    convert(&src, &out, &ConvertOptions::default()).expect("convert the tiny model");
    out
}

fn ember(args: &[&str]) -> std::process::Output {
    common::ember_command()
        .args(args)
        .output()
        .expect("run ember")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn cli_mc_reports_the_library_scores() {
    let tmp = common::scratch();
    let model_path = tiny_model(tmp.path());
    let tasks = tmp.path().join("tasks.jsonl");
    // A blank line is skipped; a context ending in a space; an empty context.
    std::fs::write(
        &tasks,
        concat!(
            "{\"context\": \"the cat sat on the\", \"endings\": [\"mat\", \"moon\", \"hat\"], \"label\": 0}\n",
            "\n",
            "{\"context\": \"hello \", \"endings\": [\"world\", \"there, friend\"], \"label\": 1}\n",
            "{\"context\": \"\", \"endings\": [\"a b c\", \"é è\"], \"label\": 1}\n",
        ),
    )
    .unwrap();
    let m = model_path.to_str().unwrap();
    let t = tasks.to_str().unwrap();
    let o = ember(&[
        "eval",
        "mc",
        "-m",
        m,
        "--file",
        t,
        "--json",
        "-q",
        "--kv-type",
        "f32",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["items"], 3);

    let model = Arc::new(Model::load(&model_path).unwrap());
    let ctx = 2048.min(model.hparams().max_context as usize);
    let mut s = session(&model, ctx);
    let items: Vec<ChoiceItem> = std::fs::read_to_string(&tasks)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let j: Value = serde_json::from_str(l).unwrap();
            ChoiceItem {
                context: j["context"].as_str().unwrap().into(),
                endings: j["endings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e.as_str().unwrap().into())
                    .collect(),
                label: j["label"].as_u64().unwrap() as usize,
            }
        })
        .collect();
    let scores: Vec<_> = items
        .iter()
        .map(|i| score_choices(&mut s, i, " ").unwrap())
        .collect();
    let per_item = v["per_item"].as_array().unwrap();
    assert_eq!(
        per_item
            .iter()
            .map(|p| p["line"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 3, 4]
    );
    for (p, sc) in per_item.iter().zip(&scores) {
        let lls: Vec<f64> = p["loglikelihoods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        // The same computation; JSON may move the last bit.
        for (a, b) in lls.iter().zip(&sc.loglikelihoods) {
            assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
        }
        assert_eq!(p["pred"], sc.pred);
        assert_eq!(p["pred_norm"], sc.pred_norm);
    }
    let acc = accuracy(&items, &scores);
    assert_eq!(v["acc"]["correct"], acc.acc.correct);
    assert_eq!(v["acc_norm"]["correct"], acc.acc_norm.correct);
    assert_eq!(v["acc"]["ci95"][1].as_f64().unwrap(), acc.acc.ci95_high);

    // The text report names the measures and the interval.
    let o = ember(&["eval", "mc", "-m", m, "--file", t, "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("acc_norm") && text.contains("95% CI"),
        "{text}"
    );
}

#[test]
fn cli_mc_errors_name_the_line() {
    let tmp = common::scratch();
    let model_path = tiny_model(tmp.path());
    let m = model_path.to_str().unwrap();
    let good = "{\"context\": \"a\", \"endings\": [\"b\", \"c\"], \"label\": 0}\n";
    let cases: &[(&str, &str)] = &[
        (
            "{\"context\": \"a\", \"endings\": [\"b\"], \"label\": 0",
            "tasks.jsonl:2: not valid JSON",
        ),
        (
            "{\"context\": \"a\", \"endings\": [\"b\", \"c\"], \"label\": 2}",
            "tasks.jsonl:2: invalid argument: label 2 is out of range",
        ),
        (
            "{\"context\": \"a\", \"endings\": [], \"label\": 0}",
            "tasks.jsonl:2: invalid argument: the item has no endings",
        ),
        (
            "{\"context\": \"a\", \"endings\": [\"b\", \"\"], \"label\": 0}",
            "tasks.jsonl:2: invalid argument: ending 1 is empty",
        ),
        (
            "{\"context\": \"a\", \"endings\": \"b\", \"label\": 0}",
            "tasks.jsonl:2: \"endings\" must be an array of strings",
        ),
        (
            "{\"endings\": [\"b\"], \"label\": 0}",
            "tasks.jsonl:2: \"context\" must be a string",
        ),
        (
            "{\"context\": \"a\", \"endings\": [\"b\"], \"label\": -1}",
            "tasks.jsonl:2: \"label\" must be a whole number",
        ),
    ];
    let tasks = tmp.path().join("tasks.jsonl");
    for (bad, want) in cases {
        std::fs::write(&tasks, format!("{good}{bad}\n")).unwrap();
        let o = ember(&[
            "eval",
            "mc",
            "-m",
            m,
            "--file",
            tasks.to_str().unwrap(),
            "-q",
        ]);
        assert!(!o.status.success(), "{bad}: should fail");
        let e = stderr(&o);
        assert!(e.contains(want), "{bad}: want {want:?} in {e}");
    }
    let missing = tmp.path().join("missing.jsonl");
    let o = ember(&["eval", "mc", "-m", m, "--file", missing.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot read"), "{}", stderr(&o));
    std::fs::write(&tasks, "\n\n").unwrap();
    let o = ember(&["eval", "mc", "-m", m, "--file", tasks.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("holds no item"), "{}", stderr(&o));
}
