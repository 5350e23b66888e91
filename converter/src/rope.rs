//! RoPE scaling parameters the readers derive the same way from different
//! sources (Hugging Face `config.json`, GGUF metadata).

/// YaRN's magnitude correction `0.1 * m * ln(scale) + 1` (1 for `scale <= 1`),
/// transformers' `get_mscale`.
pub fn yarn_mscale(scale: f64, m: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * m * scale.ln() + 1.0
    }
}

/// YaRN's correction range in rotary-pair indices, as transformers'
/// `find_correction_range` (and llama.cpp's `ggml_rope_yarn_corr_dims`)
/// compute it in f64: the pairs whose wavelength completes `beta_fast` and
/// `beta_slow` rotations over the original context, floored / ceiled when
/// `truncate`, clamped to `0..=rot - 1`.
pub fn yarn_range(
    theta: f64,
    rot: u32,
    original_context: u32,
    beta_fast: f64,
    beta_slow: f64,
    truncate: bool,
) -> (f64, f64) {
    let dim = rot as f64;
    let correction = |rotations: f64| {
        dim * (original_context as f64 / (rotations * 2.0 * std::f64::consts::PI)).ln()
            / (2.0 * theta.ln())
    };
    let (mut low, mut high) = (correction(beta_fast), correction(beta_slow));
    if truncate {
        low = low.floor();
        high = high.ceil();
    }
    (low.max(0.0), high.min(dim - 1.0))
}
