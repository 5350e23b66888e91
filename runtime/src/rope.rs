//! RoPE frequency table, including the scaling variants the format supports.

use crate::format::{HyperParams, RopeScaling};

/// The `rope_dim / 2` inverse frequencies `1 / theta^(2i / rope_dim)`, computed
/// in f32 as llama2.c and transformers do, then adjusted for the model's RoPE
/// scaling (linear: divided by the factor; Llama 3: the frequency-dependent
/// blend of transformers' `_compute_llama3_parameters`).
pub fn inverse_frequencies(hp: &HyperParams) -> Vec<f32> {
    let rot = hp.rope_dim as usize;
    let base: Vec<f32> = (0..rot / 2)
        .map(|i| 1.0 / libm::powf(hp.rope_theta, (2 * i) as f32 / rot as f32))
        .collect();
    match RopeScaling::from_u32(hp.rope_scaling) {
        Some(RopeScaling::Linear) => base.iter().map(|f| f / hp.rope_scaling_factor).collect(),
        Some(RopeScaling::Llama3) => {
            let factor = hp.rope_scaling_factor;
            let (low, high) = (hp.rope_low_freq_factor, hp.rope_high_freq_factor);
            let orig = hp.rope_original_context as f32;
            let low_wavelen = orig / low;
            let high_wavelen = orig / high;
            base.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (orig / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
        _ => base,
    }
}
