//! AdamW with decoupled weight decay and bias correction (PyTorch's
//! `torch.optim.AdamW` update, step for step), and global-norm gradient clipping.

use serde::{Deserialize, Serialize};

/// AdamW hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// The optimizer state: first and second moments per parameter and the number
/// of steps taken.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    pub config: AdamWConfig,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub step: u64,
}

impl AdamW {
    pub fn new(config: AdamWConfig, n: usize) -> Self {
        Self {
            config,
            m: vec![0.0; n],
            v: vec![0.0; n],
            step: 0,
        }
    }

    /// One update with learning rate `lr`:
    /// `p *= 1 - lr wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    ///  p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`.
    pub fn update(&mut self, params: &mut [f32], grads: &[f32], lr: f64) {
        assert!(params.len() == self.m.len() && grads.len() == self.m.len());
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        let decay = (1.0 - lr * c.weight_decay) as f32;
        let step_size = (lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let (b1, b2, eps) = (c.beta1 as f32, c.beta2 as f32, c.eps as f32);
        for (((p, &g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            *p *= decay;
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            let denom = v.sqrt() / bc2_sqrt + eps;
            *p -= step_size * *m / denom;
        }
    }
}

/// Euclidean norm of `g` (accumulated in f64).
pub fn global_norm(g: &[f32]) -> f64 {
    g.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

/// Scales `g` so its global norm is at most `max_norm` (no-op when
/// `max_norm <= 0`); returns the norm before clipping.
pub fn clip_global_norm(g: &mut [f32], max_norm: f64) -> f64 {
    let n = global_norm(g);
    if max_norm > 0.0 && n > max_norm {
        let s = (max_norm / (n + 1e-6)) as f32;
        g.iter_mut().for_each(|x| *x *= s);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_by_lr_times_sign() {
        // Bias correction makes the first step lr * g / (|g| + eps) = lr * sign(g).
        let mut o = AdamW::new(AdamWConfig::default(), 3);
        let mut p = vec![1.0f32, 1.0, 1.0];
        o.update(&mut p, &[0.5, -2.0, 0.0], 0.1);
        assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] - 1.1).abs() < 1e-6 && p[2] == 1.0);
    }

    #[test]
    fn decoupled_decay_shrinks_without_gradient() {
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut o = AdamW::new(cfg, 1);
        let mut p = vec![2.0f32];
        o.update(&mut p, &[0.0], 0.5);
        assert!((p[0] - 2.0 * (1.0 - 0.05)).abs() < 1e-6);
    }

    #[test]
    fn clipping_bounds_the_norm() {
        let mut g = vec![3.0f32, 4.0];
        assert_eq!(clip_global_norm(&mut g, 1.0), 5.0);
        assert!((global_norm(&g) - 1.0).abs() < 1e-5);
        let mut h = vec![0.3f32, 0.4];
        clip_global_norm(&mut h, 1.0);
        assert_eq!(h, vec![0.3, 0.4]);
    }
}
