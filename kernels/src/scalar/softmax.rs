/// In-place numerically stable softmax: `x[i] = exp(x[i] - max) / sum`.
/// An empty slice is left as is. `-inf` entries become 0.
pub fn softmax_f32(x: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = libm::expf(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_to_one() {
        let mut x = [1.0f32, 2.0, 3.0, f32::NEG_INFINITY];
        super::softmax_f32(&mut x);
        let s: f32 = x.iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
        assert_eq!(x[3], 0.0);
        assert!(x[2] > x[1] && x[1] > x[0]);
    }
}
