/// RoPE element pairing (mirrors the file format's `RopePairing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// Pairs `(2i, 2i+1)` rotated by angle `pos * inv_freq[i]`.
    Interleaved,
    /// Pairs `(i, i + rot/2)` rotated by angle `pos * inv_freq[i]`.
    Half,
}

/// The rotation table of one position: `cos[i] = cos(a_i)`, `sin[i] = sin(a_i)`
/// with `a_i = (pos as f32) * inv_freq[i]`, the angle computed in f32 as the
/// reference implementations (llama2.c, transformers) do, then libm's `cosf` /
/// `sinf`. Computed once per position and shared by every head of q and k.
///
/// Contract: `cos.len() == sin.len() == inv_freq.len()`.
pub fn rope_angles_f32(pos: usize, inv_freq: &[f32], cos: &mut [f32], sin: &mut [f32]) {
    assert!(
        cos.len() == inv_freq.len() && sin.len() == inv_freq.len(),
        "rope_angles_f32: length mismatch"
    );
    let p = pos as f32;
    for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(inv_freq) {
        let angle = p * f;
        *c = libm::cosf(angle);
        *s = libm::sinf(angle);
    }
}

/// Rotates the first `2 * cos.len()` elements of every head in `x`
/// (`x: [n_heads, head_dim]`, flattened) by the angles of a table from
/// [`rope_angles_f32`]: pair `i` = `(a, b)` (see [`RopeLayout`]) becomes
/// `(x_a cos_i - x_b sin_i, x_a sin_i + x_b cos_i)`, each product rounded to f32
/// before the sum (no fused multiply-add, so every tier gives the same bits).
///
/// Contract: `head_dim` divides `x.len()`, `sin.len() == cos.len()`,
/// `2 * cos.len() <= head_dim`.
pub fn rope_f32(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], layout: RopeLayout) {
    let half = check_rope(x.len(), head_dim, cos, sin);
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let (a, b) = match layout {
                RopeLayout::Interleaved => (2 * i, 2 * i + 1),
                RopeLayout::Half => (i, i + half),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * cos[i] - x1 * sin[i];
            head[b] = x0 * sin[i] + x1 * cos[i];
        }
    }
}

/// Asserts `rope_f32`'s contract; returns the number of rotated pairs per head.
/// Shared with the SIMD tiers so every tier rejects the same inputs.
#[inline]
pub fn check_rope(len: usize, head_dim: usize, cos: &[f32], sin: &[f32]) -> usize {
    assert!(
        head_dim > 0 && len.is_multiple_of(head_dim),
        "rope_f32: bad head_dim"
    );
    assert_eq!(cos.len(), sin.len(), "rope_f32: cos/sin length mismatch");
    assert!(
        2 * cos.len() <= head_dim,
        "rope_f32: rotary dims exceed head_dim"
    );
    cos.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rope_at(x: &mut [f32], head_dim: usize, pos: usize, inv: &[f32], layout: RopeLayout) {
        let (mut c, mut s) = ([0.0f32; 8], [0.0f32; 8]);
        let (c, s) = (&mut c[..inv.len()], &mut s[..inv.len()]);
        rope_angles_f32(pos, inv, c, s);
        rope_f32(x, head_dim, c, s, layout);
    }

    #[test]
    fn layouts_agree_up_to_permutation() {
        let inv = [1.0f32, 0.1];
        let mut a = [1.0f32, 2.0, 3.0, 4.0];
        // The same two pairs in half layout: (x0, x2) and (x1, x3).
        let mut b = [1.0f32, 3.0, 2.0, 4.0];
        rope_at(&mut a, 4, 3, &inv, RopeLayout::Interleaved);
        rope_at(&mut b, 4, 3, &inv, RopeLayout::Half);
        assert_eq!([a[0], a[1], a[2], a[3]], [b[0], b[2], b[1], b[3]]);
    }

    #[test]
    fn position_zero_is_identity() {
        let mut a = [1.0f32, 2.0, 3.0, 4.0];
        rope_at(&mut a, 4, 0, &[1.0, 0.5], RopeLayout::Half);
        assert_eq!(a, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn quarter_turn() {
        // pos 1, inv_freq pi/2: (x, y) -> (-y, x) up to the rounding of cos(pi/2).
        let mut a = [1.0f32, 2.0, 5.0, 6.0];
        rope_at(
            &mut a,
            4,
            1,
            &[core::f32::consts::FRAC_PI_2],
            RopeLayout::Interleaved,
        );
        assert!((a[0] + 2.0).abs() < 1e-6 && (a[1] - 1.0).abs() < 1e-6);
        assert_eq!(
            [a[2], a[3]],
            [5.0, 6.0],
            "dims past 2 * pairs are untouched"
        );
    }
}
