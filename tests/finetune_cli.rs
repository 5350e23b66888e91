//! `ember finetune` end to end on stories260K (llama2.c, from `../shared`):
//! learning on tiny-shakespeare, chat data with assistant-only loss, a run
//! killed with SIGKILL and resumed giving the same adapter bytes as an
//! uninterrupted one, a finished run extended with --resume and a larger
//! --steps, and clear errors (with nothing written) for bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use ember_converter::{convert, ConvertOptions, DTypeChoice};
use ember_runtime::format::DType;
use serde_json::Value;

/// The acceptance: at least a 20 % drop of the held-out loss.
/// stories260K was trained on TinyStories, so Shakespeare is far out of domain
/// (val loss 4.85 nats); 22 LoRA steps on a 24 KB slice bring it to 3.06 (a 37 %
/// drop, measured). A broken gradient leaves it flat or increasing.
const ACCEPTANCE_MIN_DROP: f64 = 0.20;

fn ember(args: &[&str]) -> Output {
    common::ember_command()
        .args(args)
        .output()
        .expect("run ember")
}

/// stories260K converted into `dir` (`dtype` f32 or f16), or `None` (skip).
fn stories(dir: &Path, dtype: Option<DType>) -> Option<PathBuf> {
    let bin = common::shared_file("models/stories260K/stories260K.bin")?;
    let tok = common::shared_file("models/stories260K/tok512.bin")?;
    let out = dir.join(format!("stories-{dtype:?}.ember"));
    let opts = ConvertOptions {
        dtype: dtype.map_or(DTypeChoice::Auto, DTypeChoice::Fixed),
        tokenizer: Some(tok),
        ..Default::default()
    };
    convert(&bin, &out, &opts).expect("convert stories260K");
    Some(out)
}

/// The first `bytes` of tiny-shakespeare (cut at a line end) written to `dir`.
fn shakespeare(dir: &Path, bytes: usize) -> Option<PathBuf> {
    let src = common::shared_file("corpus/tinyshakespeare.txt")?;
    let text = std::fs::read_to_string(src).unwrap();
    let cut = text[..bytes].rfind('\n').unwrap_or(bytes);
    let p = dir.join(format!("shakespeare-{bytes}.txt"));
    std::fs::write(&p, &text[..cut]).unwrap();
    Some(p)
}

fn summary(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "ember finetune failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json summary")
}

fn drop_of(s: &Value) -> f64 {
    let before = s["val_loss_before"].as_f64().expect("val loss before");
    let after = s["val_loss_after"].as_f64().expect("val loss after");
    eprintln!(
        "val loss {before:.4} -> {after:.4}, {:.0} tokens/s, peak RSS {} KiB",
        s["tokens_per_second"], s["peak_rss_kib"]
    );
    (before - after) / before
}

#[test]
fn finetune_lowers_stories260k_validation_loss() {
    let dir = common::scratch();
    let (Some(model), Some(data)) = (stories(dir.path(), None), shakespeare(dir.path(), 24_000))
    else {
        return;
    };
    let out = dir.path().join("adapter");
    let s = summary(&ember(&[
        "finetune",
        "-m",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--targets",
        "q,k,v,o,gate,up,down",
        "--rank",
        "8",
        "--lr",
        "3e-3",
        "--seq-len",
        "64",
        "--batch",
        "4",
        "--epochs",
        "1",
        "--threads",
        "2",
        "--quiet",
        "--json",
    ]));
    let drop = drop_of(&s);
    assert!(
        drop >= ACCEPTANCE_MIN_DROP,
        "validation loss dropped by only {:.1} %",
        drop * 100.0
    );
    assert!(out.join("adapter_model.safetensors").is_file());
    assert!(out.join("adapter_config.json").is_file());
}

/// The acceptance measurement (a few minutes on 2 cores): `cargo test --test
/// finetune_cli -- --ignored --nocapture`.
#[test]
#[ignore]
fn acceptance_stories260k_tiny_shakespeare_drop_of_20_percent() {
    let dir = common::scratch();
    let (Some(model), Some(data)) = (stories(dir.path(), None), shakespeare(dir.path(), 200_000))
    else {
        return;
    };
    let out = dir.path().join("adapter");
    let s = summary(&ember(&[
        "finetune",
        "-m",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--targets",
        "q,k,v,o,gate,up,down",
        "--rank",
        "16",
        "--alpha",
        "32",
        "--lr",
        "3e-3",
        "--warmup",
        "10",
        "--seq-len",
        "128",
        "--batch",
        "8",
        "--epochs",
        "1",
        "--threads",
        "2",
        "--quiet",
        "--json",
    ]));
    eprintln!("{}", serde_json::to_string_pretty(&s).unwrap());
    let drop = drop_of(&s);
    assert!(
        drop >= ACCEPTANCE_MIN_DROP,
        "validation loss dropped by only {:.1} %",
        drop * 100.0
    );
}

#[test]
fn chat_jsonl_trains_on_assistant_tokens() {
    let dir = common::scratch();
    let Some(model) = stories(dir.path(), None) else {
        return;
    };
    let data = dir.path().join("chat.jsonl");
    let mut lines = String::new();
    for i in 0..24 {
        let rec = serde_json::json!({"messages": [
            {"role": "user", "content": format!("Tell me about the cat number {i}.")},
            {"role": "assistant", "content": "Meow! The cat is happy and sleeps in the sun."},
        ]});
        lines.push_str(&rec.to_string());
        lines.push('\n');
    }
    std::fs::write(&data, lines).unwrap();
    let out = dir.path().join("chat-adapter");
    let s = summary(&ember(&[
        "finetune",
        "-m",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--template",
        "chatml",
        "--val-split",
        "0.25",
        "--out",
        out.to_str().unwrap(),
        "--lr",
        "1e-2",
        "--batch",
        "2",
        "--epochs",
        "2",
        "--seq-len",
        "128",
        "--quiet",
        "--json",
    ]));
    // The assistant reply is the same in every record: it must become easy.
    let drop = drop_of(&s);
    assert!(
        drop > 0.3,
        "chat validation loss dropped by only {:.1} %",
        drop * 100.0
    );
}

fn adapter_bytes(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(dir.join("adapter_model.safetensors")).expect("adapter weights"),
        std::fs::read(dir.join("adapter_config.json")).expect("adapter config"),
    )
}

#[test]
fn sigkill_and_resume_gives_the_same_adapter_bits() {
    let dir = common::scratch();
    // 36 optimizer steps per run (18 under emulation, where each run takes
    // minutes: still several checkpoints before and after the kill; the
    // property does not depend on the length, and the check below that the
    // kill came before the end guards it).
    let bytes = if common::emulated() { 3_000 } else { 6_000 };
    let (Some(model), Some(data)) = (stories(dir.path(), None), shakespeare(dir.path(), bytes))
    else {
        return;
    };
    let run_args = |out: &Path| -> Vec<String> {
        [
            "finetune",
            "-m",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--targets",
            "q,v,down",
            "--rank",
            "4",
            "--dropout",
            "0.1",
            "--weight-decay",
            "0.01",
            "--warmup",
            "3",
            "--lr",
            "2e-3",
            "--seq-len",
            "32",
            "--batch",
            "3",
            "--grad-accum",
            "2",
            "--epochs",
            "2",
            "--threads",
            "2",
            "--save-every",
            "4",
            "--seed",
            "11",
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let whole = dir.path().join("whole");
    let o = ember(
        &run_args(&whole)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Kill the second run after its first checkpoint.
    let killed = dir.path().join("killed");
    let mut child = common::ember_command()
        .args(run_args(&killed))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A liveness guard, not part of the property: under emulation (qemu on a
    // shared host) the first checkpoint can take minutes of wall time.
    let limit = Duration::from_secs(if common::emulated() { 900 } else { 60 });
    let t0 = Instant::now();
    while !killed
        .join("checkpoint-00000004")
        .join("trainer_state.json")
        .is_file()
    {
        assert!(t0.elapsed() < limit, "no checkpoint after {limit:?}");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(
        !killed.join("adapter_model.safetensors").exists(),
        "the run finished before it was killed: the test needs a longer run"
    );

    let mut resume = run_args(&killed);
    resume.extend(["--resume".to_string(), killed.to_str().unwrap().to_string()]);
    let o = ember(&resume.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        adapter_bytes(&whole) == adapter_bytes(&killed),
        "resumed adapter differs"
    );

    // Another thread count gives the same bits too (per-sequence gradients are
    // summed in batch order).
    let one = dir.path().join("one-thread");
    let mut args = run_args(&one);
    let t = args.iter().position(|a| a == "--threads").unwrap();
    args[t + 1] = "1".into();
    let o = ember(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success());
    assert!(
        adapter_bytes(&whole) == adapter_bytes(&one),
        "1 thread differs from 2"
    );
}

/// Runs a failing finetune; returns stderr. `out` must not exist afterwards.
fn fails(args: &[&str], out: &Path) -> String {
    let o = ember(args);
    assert!(!o.status.success(), "expected failure for {args:?}");
    assert!(
        !out.exists(),
        "{} was created by a failing run",
        out.display()
    );
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn bad_input_gives_clear_errors_and_writes_nothing() {
    let dir = common::scratch();
    let Some(model) = stories(dir.path(), None) else {
        return;
    };
    let m = model.to_str().unwrap();
    let out = dir.path().join("never");
    let o = out.to_str().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };

    let empty = file("empty.txt", b"\n \n");
    let e = fails(&["finetune", "-m", m, "--data", &empty, "--out", o], &out);
    assert!(e.contains("empty"), "{e}");

    let bad = file("bad.txt", b"line one\nline two\nbad \xff\xfe here\n");
    let e = fails(&["finetune", "-m", m, "--data", &bad, "--out", o], &out);
    assert!(e.contains("bad.txt:3") && e.contains("UTF-8"), "{e}");

    let nomsg = file("nomsg.jsonl", b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n{\"text\": \"hello\"}\n");
    let e = fails(
        &[
            "finetune",
            "-m",
            m,
            "--data",
            &nomsg,
            "--template",
            "chatml",
            "--out",
            o,
        ],
        &out,
    );
    assert!(e.contains("nomsg.jsonl:2") && e.contains("messages"), "{e}");

    let good = file(
        "good.txt",
        b"Some text to learn.\n\nAnother document here.\n",
    );
    // stories260K's k/v projections are [32, 64]: rank 33 does not fit.
    let e = fails(
        &[
            "finetune",
            "-m",
            m,
            "--data",
            &good,
            "--targets",
            "k",
            "--rank",
            "33",
            "--out",
            o,
        ],
        &out,
    );
    assert!(e.contains("rank 33") && e.contains("k_proj"), "{e}");

    let e = fails(
        &[
            "finetune",
            "-m",
            m,
            "--data",
            &good,
            "--targets",
            "q,x",
            "--out",
            o,
        ],
        &out,
    );
    assert!(e.contains("unknown LoRA target"), "{e}");

    // A checkpoint made on the f32 model cannot resume on the f16 one.
    let ck = dir.path().join("ck");
    let r = ember(&[
        "finetune",
        "-m",
        m,
        "--data",
        &good,
        "--out",
        ck.to_str().unwrap(),
        "--steps",
        "2",
        "--save-every",
        "1",
        "--seq-len",
        "8",
        "--batch",
        "1",
        "--val-split",
        "0",
        "--quiet",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let Some(m16) = stories(dir.path(), Some(DType::F16)) else {
        return;
    };
    let e = fails(
        &[
            "finetune",
            "-m",
            m16.to_str().unwrap(),
            "--data",
            &good,
            "--out",
            o,
            "--steps",
            "2",
            "--seq-len",
            "8",
            "--batch",
            "1",
            "--val-split",
            "0",
            "--resume",
            ck.to_str().unwrap(),
        ],
        &out,
    );
    assert!(e.contains("another base model"), "{e}");
    // ... nor with another configuration.
    let e = fails(
        &[
            "finetune",
            "-m",
            m,
            "--data",
            &good,
            "--out",
            o,
            "--steps",
            "2",
            "--seq-len",
            "8",
            "--batch",
            "1",
            "--val-split",
            "0",
            "--rank",
            "4",
            "--resume",
            ck.to_str().unwrap(),
        ],
        &out,
    );
    assert!(e.contains("another configuration"), "{e}");
    assert!(e.contains("\n  --rank: checkpoint 8, now 4"), "{e}");
    assert!(!e.contains("TrainConfig {"), "{e}");
}

#[test]
fn resume_with_a_larger_total_extends_a_finished_run() {
    let dir = common::scratch();
    let (Some(model), Some(data)) = (stories(dir.path(), None), shakespeare(dir.path(), 3_000))
    else {
        return;
    };
    // The constant schedule's rate does not depend on the total, so extending
    // a run gives the bits of a run started with the longer total.
    let run_args = |out: &Path, steps: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "finetune",
            "-m",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--rank",
            "4",
            "--dropout",
            "0.1",
            "--warmup",
            "2",
            "--schedule",
            "constant",
            "--lr",
            "2e-3",
            "--seq-len",
            "16",
            "--batch",
            "2",
            "--grad-accum",
            "2",
            "--steps",
            steps,
            "--save-every",
            "2",
            "--seed",
            "5",
            "--threads",
            "2",
            "--quiet",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: Vec<String>| ember(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let run_fails = |args: Vec<String>, out: &Path| {
        fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), out)
    };

    let short = dir.path().join("short");
    let s = summary(&run(run_args(&short, "4", &[])));
    assert_eq!(s["steps"], 4);
    assert!(
        short.join("checkpoint-00000004").is_dir(),
        "no final checkpoint"
    );

    let resume = ["--resume", short.to_str().unwrap()];
    let s = summary(&run(run_args(&short, "8", &resume)));
    assert_eq!(
        (s["steps"].as_u64(), s["resumed_from_step"].as_u64()),
        (Some(8), Some(4))
    );
    let loss = s["last_train_loss"].as_f64().expect("a training loss");
    assert!(loss.is_finite(), "last training loss {loss}");
    assert!(short.join("checkpoint-00000008").is_dir());

    let whole = dir.path().join("whole");
    summary(&run(run_args(&whole, "8", &[])));
    assert!(
        adapter_bytes(&short) == adapter_bytes(&whole),
        "the extended adapter differs from an uninterrupted 8-step run"
    );

    // The run now ends at step 8: a total at or before it has nothing to do.
    let never = dir.path().join("never");
    for steps in ["8", "6"] {
        let e = run_fails(run_args(&never, steps, &resume), &never);
        let want = format!(
            "the checkpoint is at step 8, and --steps {steps} ends the run at step {steps}: \
             nothing to do"
        );
        assert!(e.contains(&want), "{e}");
    }
    // Other settings are named as flags, one per line, with both values.
    let mut changed = run_args(
        &never,
        "12",
        &[&resume[..], &["--targets", "q,k,v"]].concat(),
    );
    for (flag, value) in [("--rank", "8"), ("--schedule", "cosine")] {
        let i = changed.iter().position(|a| a == flag).unwrap();
        changed[i + 1] = value.into();
    }
    let e = run_fails(changed, &never);
    for line in [
        "\n  --rank: checkpoint 4, now 8",
        "\n  --targets: checkpoint q,v, now q,k,v",
        "\n  --schedule: checkpoint constant, now cosine",
    ] {
        assert!(e.contains(line), "{e}");
    }
    assert!(!e.contains("TrainConfig {"), "{e}");
}

/// `--eval-mc`: multiple-choice accuracy of the adapter before training and
/// at every validation point; the last one is the saved adapter's, as
/// `ember eval mc --lora` measures it. A bad task file fails before training.
#[test]
fn eval_mc_reports_the_adapter_accuracy_at_each_evaluation() {
    let tmp = common::scratch();
    let model = tmp.path().join("tiny.ember");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/llama");
    convert(&src, &model, &ConvertOptions::default()).expect("convert the tiny model");
    let data = tmp.path().join("train.txt");
    std::fs::write(
        &data,
        "the cat sat on the mat. the dog ran in the park. ".repeat(40),
    )
    .unwrap();
    let tasks = tmp.path().join("mc.jsonl");
    std::fs::write(
        &tasks,
        concat!(
            "{\"context\": \"the cat sat on the\", \"endings\": [\"mat\", \"moon\"], \"label\": 0}\n",
            "{\"context\": \"the dog ran in the\", \"endings\": [\"sky\", \"park\"], \"label\": 1}\n",
        ),
    )
    .unwrap();
    let out = tmp.path().join("run");
    let (m, d, t, o) = (
        model.to_str().unwrap(),
        data.to_str().unwrap(),
        tasks.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let s = summary(&ember(&[
        "finetune",
        "-m",
        m,
        "--data",
        d,
        "--out",
        o,
        "--steps",
        "6",
        "--eval-every",
        "3",
        "--seq-len",
        "32",
        "--lr",
        "1e-2",
        "--eval-mc",
        t,
        "--json",
        "-q",
        "-t",
        "1",
    ]));
    let points = s["mc_evals"].as_array().expect("mc_evals");
    let steps: Vec<u64> = points.iter().map(|p| p["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [0, 3, 6]);
    let r = ember(&[
        "eval", "mc", "-m", m, "--file", t, "--lora", o, "--json", "-q",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let v: Value = serde_json::from_slice(&r.stdout).unwrap();
    let last = points.last().unwrap();
    assert_eq!(last["acc"], v["acc"]["value"]);
    assert_eq!(last["acc_norm"], v["acc_norm"]["value"]);

    std::fs::write(
        &tasks,
        "{\"context\": \"a\", \"endings\": [\"b\"], \"label\": 3}\n",
    )
    .unwrap();
    let out2 = tmp.path().join("run2");
    let r = ember(&[
        "finetune",
        "-m",
        m,
        "--data",
        d,
        "--out",
        out2.to_str().unwrap(),
        "--steps",
        "1",
        "--seq-len",
        "32",
        "--eval-mc",
        t,
        "-q",
    ]);
    assert!(!r.status.success());
    let e = String::from_utf8_lossy(&r.stderr);
    assert!(e.contains("mc.jsonl:1:") && e.contains("label 3"), "{e}");
    assert!(!out2.exists(), "nothing written");
}
