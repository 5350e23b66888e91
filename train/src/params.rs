//! The trainable parameters as one flat vector: every LoRA `A` and `B` of a
//! [`LoraAdapter`] laid end to end, so the optimizer, gradient clipping,
//! gradient accumulation and checkpoints work on plain slices.

use ember_runtime::format::HyperParams;
use ember_runtime::lora::{LoraAdapter, LoraPair, LoraTarget};

use crate::float::Float;
use ember_runtime::sampler::Rng;

/// One adapted matrix inside the flat vector: `A: [rank, inp]` at `a`,
/// `B: [out, rank]` at `b` (offsets in elements).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub layer: usize,
    pub target: LoraTarget,
    pub inp: usize,
    pub out: usize,
    pub a: usize,
    pub b: usize,
}

/// Where each pair of an adapter lives in the flat parameter vector. Slots are in
/// layer order, then `LoraTarget::ALL` order.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub rank: usize,
    /// `alpha / rank` (or `alpha / sqrt(rank)` with rsLoRA).
    pub scale: f32,
    pub slots: Vec<Slot>,
    /// Per layer, per target: index into `slots`.
    pub index: Vec<[Option<usize>; 7]>,
    /// Total number of parameters.
    pub len: usize,
}

impl Layout {
    /// The layout of `adapter` (validated against `hp`).
    pub fn of(adapter: &LoraAdapter, hp: &HyperParams) -> ember_runtime::Result<Self> {
        adapter.validate(hp)?;
        let rank = adapter.rank;
        let mut slots = Vec::new();
        let mut index = vec![[None; 7]; adapter.layers.len()];
        let mut off = 0;
        for (l, layer) in adapter.layers.iter().enumerate() {
            for t in LoraTarget::ALL {
                if layer.get(t).is_none() {
                    continue;
                }
                let (inp, out) = t.dims(hp);
                index[l][t.index()] = Some(slots.len());
                slots.push(Slot {
                    layer: l,
                    target: t,
                    inp,
                    out,
                    a: off,
                    b: off + rank * inp,
                });
                off += rank * inp + out * rank;
            }
        }
        Ok(Self {
            rank,
            scale: adapter.scale(),
            slots,
            index,
            len: off,
        })
    }

    /// The slot of `target` in `layer`, if adapted.
    pub fn slot(&self, layer: usize, target: LoraTarget) -> Option<&Slot> {
        self.index[layer][target.index()].map(|i| &self.slots[i])
    }

    /// The adapter's values laid out flat, converted to `F`.
    pub fn flatten<F: Float>(&self, adapter: &LoraAdapter) -> Vec<F> {
        let mut v = vec![F::ZERO; self.len];
        for s in &self.slots {
            let p = adapter.layers[s.layer]
                .get(s.target)
                .expect("layout made from this adapter");
            for (d, &x) in v[s.a..s.a + p.a.len()].iter_mut().zip(&p.a) {
                *d = F::from_f32(x);
            }
            for (d, &x) in v[s.b..s.b + p.b.len()].iter_mut().zip(&p.b) {
                *d = F::from_f32(x);
            }
        }
        v
    }

    /// Writes flat f32 values back into `adapter` (same shape as the layout).
    pub fn unflatten(&self, values: &[f32], adapter: &mut LoraAdapter) {
        assert_eq!(values.len(), self.len, "parameter vector length");
        for s in &self.slots {
            let rank = self.rank;
            let pair =
                adapter.layers[s.layer].pairs[s.target.index()].get_or_insert_with(|| LoraPair {
                    a: vec![0.0; rank * s.inp],
                    b: vec![0.0; s.out * rank],
                });
            pair.a.copy_from_slice(&values[s.a..s.a + rank * s.inp]);
            pair.b.copy_from_slice(&values[s.b..s.b + s.out * rank]);
        }
    }
}

/// PEFT's default initialisation: `A ~ U(-1/sqrt(in), 1/sqrt(in))` (Kaiming
/// uniform with `a = sqrt(5)`), `B = 0`, so the adapted model starts equal to the
/// base. Values are drawn from `rng` slot by slot in layout order.
pub fn init_peft_default(layout: &Layout, values: &mut [f32], rng: &mut Rng) {
    for s in &layout.slots {
        let bound = 1.0 / (s.inp as f64).sqrt();
        for v in &mut values[s.a..s.a + layout.rank * s.inp] {
            *v = ((rng.next_f64() * 2.0 - 1.0) * bound) as f32;
        }
        values[s.b..s.b + s.out * layout.rank].fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp() -> HyperParams {
        HyperParams {
            dim: 16,
            n_layers: 2,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 8,
            ffn_dim: 24,
            ..Default::default()
        }
    }

    #[test]
    fn flatten_round_trips_and_offsets_tile_the_vector() {
        let hp = hp();
        let mut ad = LoraAdapter::zeros(&hp, 2, 4.0, &[LoraTarget::Q, LoraTarget::Down]).unwrap();
        let layout = Layout::of(&ad, &hp).unwrap();
        assert_eq!(layout.len, ad.num_params());
        let vals: Vec<f32> = (0..layout.len).map(|i| i as f32).collect();
        layout.unflatten(&vals, &mut ad);
        assert_eq!(layout.flatten::<f32>(&ad), vals);
        let s = layout.slot(1, LoraTarget::Down).unwrap();
        assert_eq!(ad.layers[1].get(LoraTarget::Down).unwrap().a[0], s.a as f32);
        assert!(layout.slot(0, LoraTarget::K).is_none());
    }
}
