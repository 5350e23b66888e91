//! Resuming `trainer::train` from a checkpoint with another length: a longer
//! run continues from the checkpoint's exact state (with the constant schedule
//! it equals a run started with the longer total), the learning rate follows
//! the new length's schedule, and a total at or before the checkpoint's step,
//! another setting, or a damaged checkpoint are refused with errors naming the
//! flags.

mod util;

use std::path::{Path, PathBuf};

use ember_runtime::Model;
use ember_train::checkpoint::{self, STATE_JSON, STATE_TENSORS};
use ember_train::data::{prepare, DataOptions, Prepared};
use ember_train::schedule::ScheduleKind;
use ember_train::trainer::{train, RunOptions, Summary, TrainConfig};

/// A few documents of the tiny tokenizer's pieces and bytes: about 20 training
/// sequences of 16 tokens.
fn setup() -> (tempfile::TempDir, Model, Prepared) {
    let dir = util::scratch();
    let model = util::tiny_model(dir.path(), util::tiny_hparams(), None, 1);
    let text: String = (0..8)
        .map(|i| format!("hello he said {i}, the hen heard the hero hum here.\n\n"))
        .collect();
    let data = dir.path().join("data.txt");
    std::fs::write(&data, text).unwrap();
    let opts = DataOptions {
        train: data,
        val: None,
        val_split: 0.25,
        seq_len: 16,
        nfc: false,
        dedup: false,
        seed: 7,
        template: None,
        format: None,
    };
    let prepared = prepare(&model, &opts).unwrap();
    assert!(prepared.train.len() >= 8 && !prepared.val.is_empty());
    (dir, model, prepared)
}

/// Dropout, weight decay, warmup and gradient accumulation, so every piece of
/// the restored state (RNG, moments, step, data position) takes part.
fn config(steps: u64, schedule: ScheduleKind) -> TrainConfig {
    TrainConfig {
        rank: 2,
        alpha: 4.0,
        dropout: 0.1,
        targets: vec!["q".into(), "down".into()],
        lr: 1e-2,
        weight_decay: 0.01,
        warmup: 3,
        schedule,
        epochs: 1,
        steps: Some(steps),
        batch: 2,
        grad_accum: 2,
        seq_len: 16,
        seed: 7,
        clip: 1.0,
    }
}

fn run_opts(out: &Path, resume: Option<&Path>) -> RunOptions {
    RunOptions {
        out: out.to_path_buf(),
        threads: 2,
        save_every: 2,
        eval_every: 0,
        resume: resume.map(Path::to_path_buf),
        quiet: true,
        base_name: "tiny".into(),
    }
}

fn bytes(p: PathBuf) -> Vec<u8> {
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn newest_step(out: &Path) -> u64 {
    checkpoint::list(out)
        .unwrap()
        .last()
        .expect("a checkpoint")
        .0
}

fn assert_finished(s: &Summary, steps: u64, resumed_from: u64) {
    assert_eq!((s.steps, s.resumed_from_step), (steps, resumed_from));
    let loss = s.last_train_loss.expect("a training loss");
    assert!(loss.is_finite(), "last training loss {loss}");
    assert!(s.adapter_dir.join("adapter_model.safetensors").is_file());
    assert!(s.adapter_dir.join("adapter_config.json").is_file());
}

#[test]
fn extending_a_constant_schedule_run_equals_starting_with_the_longer_total() {
    let (dir, model, data) = setup();
    let (short, whole) = (dir.path().join("short"), dir.path().join("whole"));
    let constant = ScheduleKind::Constant;
    let s = train(&model, &data, &config(4, constant), &run_opts(&short, None)).unwrap();
    assert_finished(&s, 4, 0);
    assert_eq!(newest_step(&short), 4, "the last step is checkpointed");

    let cfg = config(8, constant);
    let s = train(&model, &data, &cfg, &run_opts(&short, Some(&short))).unwrap();
    assert_finished(&s, 8, 4);
    assert_eq!(newest_step(&short), 8);
    let ck = short.join(checkpoint::dir_name(8));
    let (state, _) = checkpoint::load(&ck).unwrap();
    assert_eq!((state.total_steps, state.config), (8, cfg.clone()));

    // Warmup (3 steps) is counted from the run's start, the constant rate does
    // not depend on the total, and the data stream, dropout RNG and moments
    // continue exactly: steps 1..4 are the short run's, 5..8 the same as here.
    let s = train(&model, &data, &cfg, &run_opts(&whole, None)).unwrap();
    assert_finished(&s, 8, 0);
    assert!(
        bytes(short.join("adapter_model.safetensors"))
            == bytes(whole.join("adapter_model.safetensors")),
        "the extended adapter differs from the uninterrupted one"
    );
    assert!(
        bytes(ck.join(STATE_TENSORS))
            == bytes(whole.join(checkpoint::dir_name(8)).join(STATE_TENSORS)),
        "the extended optimizer state differs from the uninterrupted one"
    );
}

#[test]
fn an_extended_cosine_run_follows_the_new_schedule() {
    let (dir, model, data) = setup();
    let out = dir.path().join("cosine");
    let cosine = ScheduleKind::Cosine;
    train(&model, &data, &config(4, cosine), &run_opts(&out, None)).unwrap();
    let (_, at4) = checkpoint::load(&out.join(checkpoint::dir_name(4))).unwrap();
    let s = train(
        &model,
        &data,
        &config(8, cosine),
        &run_opts(&out, Some(&out)),
    )
    .unwrap();
    assert_finished(&s, 8, 4);
    // The 4-step cosine has decayed to 0 from step 5 on, which would leave the
    // parameters where they were (weight decay is scaled by the rate too); the
    // 8-step one is halfway down its curve there.
    let (_, at8) = checkpoint::load(&out.join(checkpoint::dir_name(8))).unwrap();
    assert!(at8.params != at4.params, "steps 5..8 did not train");
    assert!(at8.params.iter().all(|p| p.is_finite()));
}

#[test]
fn resume_refuses_nothing_to_do_other_settings_and_damaged_checkpoints() {
    let (dir, model, data) = setup();
    let out = dir.path().join("run");
    let cosine = ScheduleKind::Cosine;
    train(&model, &data, &config(4, cosine), &run_opts(&out, None)).unwrap();
    let never = dir.path().join("never");
    let refused = |cfg: &TrainConfig| {
        let e = train(&model, &data, cfg, &run_opts(&never, Some(&out)))
            .expect_err("the resume must be refused")
            .to_string();
        assert!(
            !never.exists(),
            "a refused resume wrote {}",
            never.display()
        );
        e
    };

    for steps in [3, 4] {
        let e = refused(&config(steps, cosine));
        assert!(
            e.contains(&format!(
                "the checkpoint is at step 4, and --steps {steps} ends the run at step {steps}: \
                 nothing to do"
            )),
            "{e}"
        );
    }

    let e = refused(&TrainConfig {
        rank: 4,
        targets: vec!["q".into()],
        seed: 8,
        ..config(8, cosine)
    });
    assert!(
        e.ends_with(
            "the checkpoint was made with another configuration:\n  \
             --rank: checkpoint 2, now 4\n  \
             --targets: checkpoint q,down, now q\n  \
             --seed: checkpoint 7, now 8"
        ),
        "{e}"
    );
    assert!(!e.contains("TrainConfig {"), "{e}");

    // A state no run writes: a step beyond the run's own total.
    let json = out.join(checkpoint::dir_name(4)).join(STATE_JSON);
    let mut state: serde_json::Value = serde_json::from_slice(&bytes(json.clone())).unwrap();
    state["step"] = 6.into();
    state["position"] = 24.into();
    std::fs::write(&json, serde_json::to_vec(&state).unwrap()).unwrap();
    let e = refused(&config(8, cosine));
    assert!(
        e.contains("step 6 is beyond the run's total of 4 steps"),
        "{e}"
    );
}
