/// RMSNorm: `out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i]`.
/// The mean of squares is accumulated in f64 (n is small; this keeps the
/// reference close to the exact value). Contract: equal, non-zero lengths.
pub fn rmsnorm_f32(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    assert!(!x.is_empty(), "rmsnorm_f32: empty input");
    assert!(
        out.len() == x.len() && weight.len() == x.len(),
        "rmsnorm_f32: length mismatch"
    );
    let ss: f64 = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / x.len() as f64;
    // libm: no_std has no inherent sqrt; both are correctly rounded (same bits).
    let inv = (1.0 / libm::sqrt(ss + eps as f64)) as f32;
    for ((o, &xi), &wi) in out.iter_mut().zip(x).zip(weight) {
        *o = xi * inv * wi;
    }
}

/// LayerNorm: `out = (x - mean) / sqrt(var + eps) * weight + bias` with the
/// biased variance, mean and variance accumulated in f64.
pub fn layernorm_f32(out: &mut [f32], x: &[f32], weight: &[f32], bias: &[f32], eps: f32) {
    assert!(!x.is_empty(), "layernorm_f32: empty input");
    assert!(
        out.len() == x.len() && weight.len() == x.len() && bias.len() == x.len(),
        "layernorm_f32: length mismatch"
    );
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / libm::sqrt(var + eps as f64);
    let mean = mean as f32;
    let inv = inv as f32;
    for (((o, &xi), &wi), &bi) in out.iter_mut().zip(x).zip(weight).zip(bias) {
        *o = (xi - mean) * inv * wi + bi;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unit_rms() {
        let x = [3.0f32, -3.0, 3.0, -3.0];
        let w = [1.0f32, 2.0, 1.0, 1.0];
        let mut out = [0.0f32; 4];
        super::rmsnorm_f32(&mut out, &x, &w, 0.0);
        assert_eq!(out, [1.0, -2.0, 1.0, -1.0]);
    }

    #[test]
    fn layernorm_centres_and_scales() {
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let mut out = [0.0f32; 4];
        super::layernorm_f32(&mut out, &x, &[1.0; 4], &[0.5; 4], 0.0);
        // mean 2.5, variance 1.25
        let inv = 1.0 / 1.25f32.sqrt();
        for (o, xi) in out.iter().zip(x) {
            assert!((o - ((xi - 2.5) * inv + 0.5)).abs() < 1e-6);
        }
    }
}
