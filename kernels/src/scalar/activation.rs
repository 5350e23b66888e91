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
}
