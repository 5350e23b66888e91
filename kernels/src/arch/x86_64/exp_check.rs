//! The accuracy and edge-value test every x86 tier's vectorised `exp` passes
//! (`arch::vexp`): a dense sweep of `[-87.3, 88.7]` against f64 `exp`, then
//! infinities, NaN, zero, a subnormal result and the largest finite one.

use crate::arch::vexp::VEXP_MAX_REL_ERR;

/// Runs the test on `exp`, which maps a chunk of `LANES` inputs lane by lane.
pub(super) fn check_exp<const LANES: usize>(
    name: &str,
    exp: impl Fn([f32; LANES]) -> [f32; LANES],
) {
    let (lo, hi) = (-87.3f32, 88.7f32);
    let steps = 1 << 20;
    let mut worst = 0.0f64;
    for c in 0..steps / LANES {
        let x: [f32; LANES] =
            core::array::from_fn(|j| lo + (hi - lo) * ((c * LANES + j) as f32 / steps as f32));
        let y = exp(x);
        for j in 0..LANES {
            let want = (x[j] as f64).exp();
            worst = worst.max(((y[j] as f64 - want) / want).abs());
        }
    }
    std::eprintln!("{name} exp: worst relative error {worst:e}");
    assert!(worst <= VEXP_MAX_REL_ERR, "{name}: {worst:e}");
    let edges = [
        f32::NEG_INFINITY,
        -200.0,
        f32::INFINITY,
        100.0,
        f32::NAN,
        0.0,
        -100.0,
        88.72,
    ];
    let mut e = [0.0f32; 8];
    for (x, y) in edges.chunks(LANES).zip(e.chunks_mut(LANES)) {
        let mut v = [0.0f32; LANES];
        v[..x.len()].copy_from_slice(x);
        y.copy_from_slice(&exp(v)[..y.len()]);
    }
    assert_eq!(&e[..4], &[0.0, 0.0, f32::INFINITY, f32::INFINITY], "{name}");
    assert!(e[4].is_nan(), "{name}");
    assert_eq!(e[5], 1.0, "{name}");
    let sub = (-100.0f64).exp();
    assert!(
        (e[6] as f64 - sub).abs() <= f32::from_bits(1) as f64,
        "{name}: {}",
        e[6]
    );
    assert!(
        e[7].is_finite()
            && ((e[7] as f64 / (88.72f32 as f64).exp()) - 1.0).abs() <= VEXP_MAX_REL_ERR,
        "{name}: {}",
        e[7]
    );
}
