/// RoPE element pairing (mirrors the file format's `RopePairing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// Pairs `(2i, 2i+1)` rotated by angle `pos * inv_freq[i]`.
    Interleaved,
    /// Pairs `(i, i + rot/2)` rotated by angle `pos * inv_freq[i]`.
    Half,
}

/// Rotates the first `2 * inv_freq.len()` elements of every head in `x`
/// (`x: [n_heads, head_dim]`, flattened) for position `pos`. The angle of pair
/// `i` is `(pos as f32) * inv_freq[i]`, computed in f32 as the reference
/// implementations do.
///
/// Contract: `head_dim` divides `x.len()`, `2 * inv_freq.len() <= head_dim`.
pub fn rope_f32(x: &mut [f32], head_dim: usize, pos: usize, inv_freq: &[f32], layout: RopeLayout) {
    let half = inv_freq.len();
    assert!(
        head_dim > 0 && x.len().is_multiple_of(head_dim),
        "rope_f32: bad head_dim"
    );
    assert!(
        2 * half <= head_dim,
        "rope_f32: rotary dims exceed head_dim"
    );
    let p = pos as f32;
    for head in x.chunks_exact_mut(head_dim) {
        for (i, &f) in inv_freq.iter().enumerate() {
            let angle = p * f;
            let (sin, cos) = (libm::sinf(angle), libm::cosf(angle));
            let (a, b) = match layout {
                RopeLayout::Interleaved => (2 * i, 2 * i + 1),
                RopeLayout::Half => (i, i + half),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * cos - x1 * sin;
            head[b] = x0 * sin + x1 * cos;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_agree_up_to_permutation() {
        let inv = [1.0f32, 0.1];
        let mut a = [1.0f32, 2.0, 3.0, 4.0];
        // The same two pairs in half layout: (x0, x2) and (x1, x3).
        let mut b = [1.0f32, 3.0, 2.0, 4.0];
        rope_f32(&mut a, 4, 3, &inv, RopeLayout::Interleaved);
        rope_f32(&mut b, 4, 3, &inv, RopeLayout::Half);
        assert_eq!([a[0], a[1], a[2], a[3]], [b[0], b[2], b[1], b[3]]);
    }

    #[test]
    fn position_zero_is_identity() {
        let mut a = [1.0f32, 2.0, 3.0, 4.0];
        rope_f32(&mut a, 4, 0, &[1.0, 0.5], RopeLayout::Half);
        assert_eq!(a, [1.0, 2.0, 3.0, 4.0]);
    }
}
