//! Checkpoint directories: exact round trip of the state, newest-first
//! resolution, pruning to `KEEP`, leftovers of a killed save ignored and
//! removed.

mod util;

use ember_runtime::lora::peft::ModuleLayout;
use ember_runtime::lora::{LoraAdapter, LoraTarget};
use ember_runtime::sampler::Rng;
use ember_train::checkpoint::{self, base_fingerprint, StateTensors, TrainerState};
use ember_train::params::Layout;
use ember_train::schedule::ScheduleKind;
use ember_train::trainer::TrainConfig;

fn config() -> TrainConfig {
    TrainConfig {
        rank: 2,
        alpha: 4.0,
        dropout: 0.1,
        targets: vec!["q".into(), "down".into()],
        lr: 1e-3,
        weight_decay: 0.01,
        warmup: 2,
        schedule: ScheduleKind::Cosine,
        epochs: 1,
        steps: None,
        batch: 2,
        grad_accum: 1,
        seq_len: 16,
        seed: 5,
        clip: 1.0,
    }
}

#[test]
fn save_load_resolve_and_prune() {
    let dir = util::scratch();
    let model = util::tiny_model(dir.path(), util::tiny_hparams(), None, 1);
    let hp = *model.hparams();
    let mut adapter = LoraAdapter::zeros(&hp, 2, 4.0, &[LoraTarget::Q, LoraTarget::Down]).unwrap();
    let layout = Layout::of(&adapter, &hp).unwrap();
    let out = dir.path().join("run");
    let mut rng = Rng::seed(3);
    let mut saved = Vec::new();
    // A leftover of a save killed half-way: ignored, then removed.
    std::fs::create_dir_all(out.join(".checkpoint-killed")).unwrap();
    // A checkpoint whose removal was killed half-way: rotation renames it to a
    // hidden name before deleting, so it is never listed, then swept.
    let half = out.join(".checkpoint-retired-checkpoint-00000001");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join(checkpoint::STATE_JSON), b"{}").unwrap();
    assert!(checkpoint::list(&out).unwrap().is_empty());
    for step in [2u64, 4, 6] {
        let vals: Vec<f32> = util::random_values(layout.len, step, 1.0);
        layout.unflatten(&vals, &mut adapter);
        let state = TrainerState {
            format: checkpoint::FORMAT_VERSION,
            base_fingerprint: base_fingerprint(&model),
            data_fingerprint: "0123456789abcdef".into(),
            config: config(),
            step,
            total_steps: 10,
            position: step * 2,
            rng: rng.clone(),
            val_loss_before: Some(4.5),
            first_train_loss: Some(f64::from(step as u32)),
        };
        let tensors = StateTensors {
            params: vals.clone(),
            adam_m: util::random_values(layout.len, step + 100, 1e-3),
            adam_v: util::random_values(layout.len, step + 200, 1e-6),
        };
        let p = checkpoint::save(
            &out,
            &state,
            &tensors,
            &adapter,
            &hp,
            ModuleLayout::Separate,
            "tiny",
        )
        .unwrap();
        assert!(p.join("adapter_model.safetensors").is_file());
        saved.push((state, tensors));
        rng.next_u64();
    }
    assert!(!out.join(".checkpoint-killed").exists());
    let hidden: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.file_name())
        .collect();
    assert!(hidden.is_empty(), "left behind by rotation: {hidden:?}");
    let names: Vec<u64> = checkpoint::list(&out)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        vec![4, 6],
        "only the last {} are kept",
        checkpoint::KEEP
    );
    let newest = checkpoint::resolve(&out).unwrap();
    assert!(newest.ends_with("checkpoint-00000006"));
    let (state, tensors) = checkpoint::load(&newest).unwrap();
    assert_eq!(
        &(state, tensors),
        saved.last().unwrap(),
        "bit-exact round trip"
    );
    let (s4, _) =
        checkpoint::load(&checkpoint::resolve(&out.join("checkpoint-00000004")).unwrap()).unwrap();
    assert_eq!(s4.step, 4);
    let e = checkpoint::resolve(&dir.path().join("nothing-here")).unwrap_err();
    assert!(e.to_string().contains("no such directory"), "{e}");
    // A damaged state file is an error naming the checkpoint.
    std::fs::write(newest.join(checkpoint::STATE_JSON), b"{").unwrap();
    let e = checkpoint::load(&newest).unwrap_err().to_string();
    assert!(
        e.contains("checkpoint-00000006") && e.contains(checkpoint::STATE_JSON),
        "{e}"
    );
}
