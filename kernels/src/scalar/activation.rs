/// SiLU (swish): `v * sigmoid(v)`.
#[inline]
pub fn silu(v: f32) -> f32 {
    v / (1.0 + libm::expf(-v))
}

/// Gated SiLU (SwiGLU's elementwise part): `gate[i] = silu(gate[i]) * up[i]`.
/// Contract: equal lengths.
pub fn silu_gate_f32(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_gate_f32: length mismatch");
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

/// GELU, tanh approximation: `0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3)))`.
#[inline]
pub fn gelu_tanh(v: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * v * (1.0 + libm::tanhf(SQRT_2_OVER_PI * (v + 0.044_715 * v * v * v)))
}

/// Gated GELU (GeGLU's elementwise part): `gate[i] = gelu_tanh(gate[i]) * up[i]`.
pub fn gelu_gate_f32(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "gelu_gate_f32: length mismatch");
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = gelu_tanh(*g) * u;
    }
}

/// GELU with the exact error function: `0.5 v (1 + erf(v / sqrt(2)))`
/// (transformers' `gelu`).
#[inline]
pub fn gelu_erf(v: f32) -> f32 {
    0.5 * v * (1.0 + libm::erff(v * core::f32::consts::FRAC_1_SQRT_2))
}

/// Gated exact GELU: `gate[i] = gelu_erf(gate[i]) * up[i]`.
pub fn gelu_erf_gate_f32(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "gelu_erf_gate_f32: length mismatch");
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = gelu_erf(*g) * u;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn silu_values() {
        assert_eq!(super::silu(0.0), 0.0);
        assert!((super::silu(1.0) - 0.731_058_6).abs() < 1e-6);
        let mut g = [2.0f32, -1.0];
        super::silu_gate_f32(&mut g, &[0.5, 2.0]);
        assert!((g[0] - 0.880_797).abs() < 1e-5 && (g[1] + 0.537_882_8).abs() < 1e-5);
    }

    /// Values of PyTorch's `F.gelu` (exact erf form).
    #[test]
    fn gelu_erf_values() {
        for (v, want) in [
            (0.0f32, 0.0f32),
            (1.0, 0.841_344_7),
            (-1.0, -0.158_655_25),
            (3.0, 2.995_950_4),
        ] {
            assert!((super::gelu_erf(v) - want).abs() < 1e-6, "{v}");
        }
        let mut g = [1.0f32, -1.0];
        super::gelu_erf_gate_f32(&mut g, &[2.0, 0.5]);
        assert!((g[0] - 1.682_689_4).abs() < 1e-6 && (g[1] + 0.079_327_63).abs() < 1e-6);
    }
}
