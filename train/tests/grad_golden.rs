//! LoRA gradients against PyTorch autograd: the committed golden
//! `tests/fixtures/lora/grad-golden.safetensors` (made by
//! `scripts/make_lora_grad_golden.py` with PEFT on the tiny Hugging Face Llama
//! `tests/fixtures/hf-tiny/llama`) holds the adapter, one batch with a label
//! mask, transformers' loss and d loss / d A, d B of all 14 adapted matrices.
//! Ember converts the same checkpoint, loads the same A and B, and must
//! reproduce the loss and every gradient.

mod util;

use std::path::Path;

use ember_converter::{convert, ConvertOptions};
use ember_runtime::format::RopePairing;
use ember_runtime::lora::{LoraAdapter, LoraTarget};
use ember_runtime::Model;
use ember_train::grad::{sequence_loss, Base, Example, Workspace};
use ember_train::params::Layout;
use safetensors::{Dtype, SafeTensors};

/// Relative difference allowed between Ember's mean loss and transformers'.
/// Both compute in f32 from the same stored weights and differ only in
/// summation order and in the exp/sin/cos/sqrt implementations: a few f32 ulps
/// (~1e-7 relative); a modelling error (a wrong RoPE pairing, a missing scale)
/// changes the loss by percent.
const LOSS_REL_TOL: f64 = 1e-5;
/// Relative L2 error allowed per gradient tensor, ||ember - torch|| / ||torch||.
/// f32 rounding through two layers and a 300-way softmax accumulates to ~1e-6
/// (the f64 pass agrees with torch to the same level); a wrong backward term
/// gives errors of order 1.
const GRAD_REL_TOL: f64 = 1e-4;

fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn i64s(st: &SafeTensors, name: &str) -> Vec<i64> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), Dtype::I64, "{name}");
    t.data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn rel_l2(a: &[f64], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d: f64 = a.iter().zip(b).map(|(x, &y)| (x - y as f64).powi(2)).sum();
    let n: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (d / n).sqrt()
}

#[test]
fn lora_gradients_match_pytorch_autograd() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bytes = std::fs::read(root.join("tests/fixtures/lora/grad-golden.safetensors"))
        .expect("read the golden");
    let st = SafeTensors::deserialize(&bytes).expect("golden is safetensors");
    let dir = util::scratch();
    let path = dir.path().join("llama.ember");
    convert(
        &root.join("tests/fixtures/hf-tiny/llama"),
        &path,
        &ConvertOptions::default(),
    )
    .expect("convert the tiny HF model");
    let model = Model::load(&path).unwrap();
    let hp = *model.hparams();
    // HF checkpoints keep their Q/K row order (half pairing): PEFT's B rows map 1:1.
    assert_eq!(hp.rope_pairing, RopePairing::Half as u32);

    let mut adapter = LoraAdapter::zeros(&hp, 4, 8.0, &LoraTarget::ALL).unwrap();
    for (l, layer) in adapter.layers.iter_mut().enumerate() {
        for t in LoraTarget::ALL {
            let name = format!("layers.{l}.{}", t.peft_module());
            let p = layer.get_mut(t).unwrap();
            p.a = f32s(&st, &format!("{name}.lora_A"));
            p.b = f32s(&st, &format!("{name}.lora_B"));
        }
    }
    let layout = Layout::of(&adapter, &hp).unwrap();
    let ids = i64s(&st, "input_ids");
    let labels = i64s(&st, "labels");
    let ex = Example {
        tokens: ids.iter().map(|&i| i as u32).collect(),
        // transformers shifts: position t predicts labels[t + 1], -100 = not counted.
        loss_mask: labels[1..].iter().map(|&l| l != -100).collect(),
    };
    let want_loss = f32s(&st, "loss")[0] as f64;
    let base = Base::new(&model).unwrap();

    // The training precision (f32) and the checking one (f64).
    let p32: Vec<f32> = layout.flatten(&adapter);
    let mut g32 = vec![0.0f32; layout.len];
    let mut ws32 = Workspace::new(&base, &layout, ex.len());
    let l32 = sequence_loss(&base, &layout, &p32, &ex, None, Some(&mut g32), &mut ws32);
    let p64: Vec<f64> = layout.flatten(&adapter);
    let mut g64 = vec![0.0f64; layout.len];
    let mut ws64 = Workspace::new(&base, &layout, ex.len());
    let l64 = sequence_loss(&base, &layout, &p64, &ex, None, Some(&mut g64), &mut ws64);
    assert_eq!(l32.count, ex.loss_tokens());

    let mut failures = Vec::new();
    for (what, loss, count) in [("f32", l32.sum, l32.count), ("f64", l64.sum, l64.count)] {
        let mean = loss / count as f64;
        let rel = (mean - want_loss).abs() / want_loss;
        eprintln!("{what}: loss {mean:.7} (torch {want_loss:.7}), relative error {rel:.1e}");
        if rel > LOSS_REL_TOL {
            failures.push(format!("{what} loss {mean} vs torch {want_loss}"));
        }
    }
    let n = l32.count as f64;
    let mut worst = (0.0f64, String::new());
    for s in &layout.slots {
        let name = format!("layers.{}.{}", s.layer, s.target.peft_module());
        for (which, off, len) in [
            ("A", s.a, layout.rank * s.inp),
            ("B", s.b, s.out * layout.rank),
        ] {
            let want = f32s(&st, &format!("{name}.lora_{which}.grad"));
            let e32 = rel_l2(
                &g32[off..off + len]
                    .iter()
                    .map(|&g| g as f64 / n)
                    .collect::<Vec<_>>(),
                &want,
            );
            let e64 = rel_l2(
                &g64[off..off + len]
                    .iter()
                    .map(|&g| g / n)
                    .collect::<Vec<_>>(),
                &want,
            );
            let e = e32.max(e64);
            if e > worst.0 {
                worst = (e, format!("{name}.lora_{which}"));
            }
            if e.is_nan() || e > GRAD_REL_TOL {
                failures.push(format!(
                    "{name}.lora_{which}: relative error f32 {e32:.2e}, f64 {e64:.2e}"
                ));
            }
        }
    }
    eprintln!(
        "worst gradient relative error {:.2e} ({})",
        worst.0, worst.1
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
