//! RoPE frequency tables of a loaded model, per kind of layer.

use crate::format::names;
use crate::model::Model;

/// The inverse frequencies of every RoPE kind of `model`
/// ([`ModelConfig::ropes`] order), scaled and divided by the model's
/// `rope_freqs` factors when it has them: exactly what the forward pass uses.
pub fn inverse_frequencies(model: &Model) -> Vec<Vec<f32>> {
    let factors = model
        .weights_by_name(names::ROPE_FREQS)
        .and_then(|w| match w {
            crate::Weights::F32(v) => Some(v),
            _ => None,
        });
    model
        .config()
        .ropes
        .iter()
        .map(|r| r.inverse_frequencies(factors))
        .collect()
}
