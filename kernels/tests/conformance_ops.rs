//! Conformance of every SIMD tier this CPU has against the scalar reference
//! kernels (STYLE.md rule 2) for the non-matvec slots: RMSNorm, softmax, the
//! gated activations, RoPE, the attention helpers (dot, axpy, f16 widening) and
//! the residual add.
//!
//! Lengths: every length 0..=4 x SPAN + 3 and the awkward list; starts
//! misaligned by 1..=3 elements; edge values (zeros, huge, tiny, NaN, +-inf).
//!
//! What the tiers promise (and what is asserted):
//! - `rope_f32`, `dot_f32`, `dot_f16_f32`, `axpy_f32`, `axpy_f16_f32`,
//!   `f16_to_f32`, `add_f32`: the same bits as scalar (same products, same
//!   summation order, no FMA), NaN where scalar is NaN.
//! - `rmsnorm_f32`: within `RMSNORM_REL_TOL` (only the f64 sum order differs).
//! - `softmax_f32`, `silu_gate_f32`, `gelu_gate_f32` (vectorised `exp`): within
//!   the bounds below; NaN exactly where scalar is NaN, the same infinities.

use ember_kernels::arch::vexp::VEXP_MAX_REL_ERR;
use ember_kernels::arch::{kernels_for, Kernels, Tier};
use ember_kernels::scalar::{self, RopeLayout};
use half::f16;

/// ggml's awkward lengths.
const AWKWARD: [usize; 18] = [
    1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 33, 63, 67, 127, 129, 193, 255, 1023,
];
/// Widest lanes x unroll of these kernels: 16 (AVX-512 lanes; the AVX2
/// softmax sums in 2 x 8 lanes).
const SPAN: usize = 16;
/// Unit roundoff of f32.
const U: f64 = f32::EPSILON as f64 / 2.0;
/// RMSNorm: the f64 mean of squares of a tier and of scalar differ only by
/// summation order (relative 1e-13 for these lengths), so `inv` rounds to the
/// same f32 or a neighbour (1 ulp = `EPSILON` relative); `x * inv * w` then
/// rounds twice in each (4 u). Relative to |scalar|.
const RMSNORM_REL_TOL: f64 = f32::EPSILON as f64 + 4.0 * U;
/// libm's `expf`/`tanhf` (the scalar reference) are within one ulp, relative
/// `EPSILON`; the tiers' `exp` within `VEXP_MAX_REL_ERR`.
const LIBM_REL: f64 = f32::EPSILON as f64;
/// Results this small come from an intermediate `exp` over- or underflowing at
/// the ends of the f32 range in one implementation and not the other (e.g.
/// `silu(-88.72)` is `-2.6e-37` or `-0`); they are zero for every purpose.
const ACT_ABS_FLOOR: f64 = 1e-30;
/// SiLU `g / (1 + e) * u`: the two `exp`s differ by `LIBM_REL + VEXP`; `1 + e`,
/// the division and the product round once each in both (6 u). Relative.
const SILU_REL_TOL: f64 = LIBM_REL + VEXP_MAX_REL_ERR + 6.0 * U;
/// GELU: scalar computes `0.5 v (1 + tanhf z)`, whose `1 + t` has an absolute
/// (not relative) error of `tanhf`'s ulp plus one rounding, i.e. up to
/// `1.5 * 2^-23` of `|0.5 v|`; the tiers compute `v / (1 + exp(-2z))` with
/// relative error `VEXP + 4u`; both then round twice more. Bound relative to
/// `|v * up|` (which is >= |result|).
const GELU_TOL: f64 = 1.5 * f32::EPSILON as f64 + VEXP_MAX_REL_ERR + 8.0 * U;

/// Softmax: each output is `e_i / sum`; the two `exp`s differ by `LIBM + VEXP`,
/// the two sums (positive terms, any order) by `2 gamma_n` plus the terms'
/// errors, and the reciprocal and product round twice in each. Relative.
fn softmax_rel_tol(n: usize) -> f64 {
    let g = (n as f64 + 16.0) * U;
    2.0 * (LIBM_REL + VEXP_MAX_REL_ERR) + 2.0 * g / (1.0 - g) + 4.0 * U
}

fn lengths() -> Vec<usize> {
    let mut v: Vec<usize> = (0..=4 * SPAN + 3).collect();
    v.extend(AWKWARD);
    v
}

/// The SIMD tiers this CPU supports (scalar excluded: it is the reference).
fn simd_tiers() -> Vec<Kernels> {
    let v: Vec<Kernels> = Tier::ALL
        .into_iter()
        .filter(|&t| t != Tier::Scalar)
        .filter_map(kernels_for)
        .collect();
    eprintln!(
        "tiers under test: {:?}",
        v.iter().map(|k| k.tier.name()).collect::<Vec<_>>()
    );
    v
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * scale).collect()
    }
}

/// A buffer holding `v` at element offset `off` (so the slice starts
/// `off * size_of::<T>()` bytes past the allocation's alignment).
struct Shifted<T> {
    buf: Vec<T>,
    off: usize,
}
impl<T: Copy + Default> Shifted<T> {
    fn new(v: &[T], off: usize) -> Self {
        let mut buf = vec![T::default(); v.len() + off];
        buf[off..].copy_from_slice(v);
        Self { buf, off }
    }
    fn get(&self) -> &[T] {
        &self.buf[self.off..]
    }
    fn get_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.off..]
    }
}

/// Offsets used per length: aligned and misaligned by 1..=3 elements.
fn offset(n: usize) -> usize {
    n % 4
}

fn same_bits(tier: Tier, what: &str, n: usize, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{} {what} n={n} [{i}]: {g:e} vs scalar {w:e}",
            tier.name()
        );
    }
}

/// `got` within `bound(i)` of `want`, NaN exactly where `want` is NaN and the
/// same value where `want` is infinite.
fn close(
    tier: Tier,
    what: &str,
    n: usize,
    got: &[f32],
    want: &[f32],
    bound: impl Fn(usize) -> f64,
) {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() || g.is_nan() || w.is_infinite() || g.is_infinite() {
            (g.is_nan() && w.is_nan()) || g == w
        } else {
            ((g as f64) - (w as f64)).abs() <= bound(i)
        };
        assert!(
            ok,
            "{} {what} n={n} [{i}]: {g:e} vs scalar {w:e} (bound {:e})",
            tier.name(),
            bound(i)
        );
    }
}

const EDGE: [f32; 14] = [
    0.0,
    -0.0,
    1e-30,
    -1e-30,
    1e30,
    -1e30,
    88.72,
    -88.72,
    100.0,
    -100.0,
    f32::MAX,
    f32::MIN_POSITIVE,
    f32::INFINITY,
    f32::NEG_INFINITY,
];

/// `n` values mixing ordinary values with the edge values (and NaN if asked).
fn with_edges(rng: &mut Rng, n: usize, nan: bool) -> Vec<f32> {
    let mut v = rng.vec(n, 8.0);
    for (i, x) in v.iter_mut().enumerate() {
        match rng.next() % 5 {
            0 => *x = EDGE[(rng.next() % EDGE.len() as u64) as usize],
            1 if nan && i % 7 == 3 => *x = f32::NAN,
            _ => {}
        }
    }
    v
}

#[test]
fn rmsnorm_matches_scalar() {
    let tiers = simd_tiers();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for n in lengths().into_iter().filter(|&n| n > 0) {
        let o = offset(n);
        let w = Shifted::new(&rng.vec(n, 2.0), (o + 1) % 4);
        let cases: Vec<(Vec<f32>, f32)> = vec![
            (rng.vec(n, 3.0), 1e-5),
            (rng.vec(n, 1e30), 1e-6),
            (rng.vec(n, 1e-30), 1e-6),
            (vec![0.0; n], 1e-5),
            (vec![0.0; n], 0.0),
            (with_edges(&mut rng, n, true), 1e-5),
            (with_edges(&mut rng, n, false), 1e-5),
        ];
        for (x, eps) in cases {
            let x = Shifted::new(&x, o);
            let mut want = vec![0.0; n];
            scalar::rmsnorm_f32(&mut want, x.get(), w.get(), eps);
            for k in &tiers {
                let mut out = Shifted::new(&vec![7.0f32; n], (o + 2) % 4);
                (k.rmsnorm_f32)(out.get_mut(), x.get(), w.get(), eps);
                close(k.tier, "rmsnorm_f32", n, out.get(), &want, |i| {
                    RMSNORM_REL_TOL * (want[i] as f64).abs() + f32::MIN_POSITIVE as f64
                });
            }
        }
    }
}

#[test]
fn softmax_matches_scalar() {
    let tiers = simd_tiers();
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    for n in lengths() {
        let o = offset(n);
        let mut spread = rng.vec(n, 100.0);
        if n > 1 {
            spread[n / 2] = f32::NEG_INFINITY;
        }
        let cases = [
            rng.vec(n, 10.0),
            spread,
            vec![0.0; n],
            vec![-3.5; n],
            vec![f32::NEG_INFINITY; n],
            with_edges(&mut rng, n, true),
            with_edges(&mut rng, n, false)
                .into_iter()
                .map(|v| if v.is_finite() { v } else { -1.0 })
                .collect(),
        ];
        for x in cases {
            let mut want = x.clone();
            scalar::softmax_f32(&mut want);
            let tol = softmax_rel_tol(n);
            for k in &tiers {
                let mut got = Shifted::new(&x, o);
                (k.softmax_f32)(got.get_mut());
                close(k.tier, "softmax_f32", n, got.get(), &want, |i| {
                    tol * (want[i] as f64).abs() + f32::MIN_POSITIVE as f64
                });
            }
        }
    }
}

#[test]
fn softmax_promises() {
    // Non-finite inputs, as in the reference: -inf entries become 0; a NaN or a
    // +inf entry, or all entries -inf, make every output NaN.
    for k in simd_tiers() {
        let mut x = [1.0f32, f32::NEG_INFINITY, 2.0, 0.5, -1.0];
        (k.softmax_f32)(&mut x);
        assert_eq!(x[1], 0.0, "{}", k.tier.name());
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        for bad in [f32::NAN, f32::INFINITY] {
            let mut x = [1.0f32; 19];
            x[11] = bad;
            (k.softmax_f32)(&mut x);
            assert!(x.iter().all(|v| v.is_nan()), "{} {bad}", k.tier.name());
        }
        let mut e: [f32; 0] = [];
        (k.softmax_f32)(&mut e);
    }
}

#[test]
fn gated_activations_match_scalar() {
    let tiers = simd_tiers();
    let mut rng = Rng(0xfeed_face_dead_beef);
    for n in lengths() {
        let o = offset(n);
        let cases = [
            (rng.vec(n, 6.0), rng.vec(n, 2.0)),
            (rng.vec(n, 40.0), rng.vec(n, 1.0)),
            (with_edges(&mut rng, n, true), rng.vec(n, 1.0)),
            (rng.vec(n, 3.0), with_edges(&mut rng, n, true)),
            (vec![0.0; n], rng.vec(n, 1.0)),
        ];
        for (g, u) in cases {
            let up = Shifted::new(&u, (o + 3) % 4);
            let mut ws = g.clone();
            scalar::silu_gate_f32(&mut ws, &u);
            let mut wg = g.clone();
            scalar::gelu_gate_f32(&mut wg, &u);
            for k in &tiers {
                let mut got = Shifted::new(&g, o);
                (k.silu_gate_f32)(got.get_mut(), up.get());
                close(k.tier, "silu_gate_f32", n, got.get(), &ws, |i| {
                    SILU_REL_TOL * (ws[i] as f64).abs() + ACT_ABS_FLOOR
                });
                let mut got = Shifted::new(&g, o);
                (k.gelu_gate_f32)(got.get_mut(), up.get());
                close(k.tier, "gelu_gate_f32", n, got.get(), &wg, |i| {
                    GELU_TOL * (g[i] as f64 * u[i] as f64).abs() + ACT_ABS_FLOOR
                });
            }
        }
    }
}

#[test]
fn rope_matches_scalar_bit_for_bit() {
    let tiers = simd_tiers();
    let mut rng = Rng(0x5eed_0f5e_ed0f);
    let mut pairs: Vec<usize> = (0..=4 * SPAN + 3).collect();
    pairs.extend([127, 129]);
    for half in pairs {
        for extra in [0usize, 3] {
            let head_dim = 2 * half + extra;
            if head_dim == 0 {
                continue;
            }
            let o = offset(half + extra);
            let inv: Vec<f32> = (0..half)
                .map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / (2 * half) as f32))
                .collect();
            let (mut cos, mut sin) = (vec![0.0; half], vec![0.0; half]);
            scalar::rope_angles_f32(1234, &inv, &mut cos, &mut sin);
            let (cos, sin) = (
                Shifted::new(&cos, (o + 1) % 4),
                Shifted::new(&sin, (o + 2) % 4),
            );
            for n_heads in [1usize, 3] {
                let cases = [
                    rng.vec(n_heads * head_dim, 4.0),
                    with_edges(&mut rng, n_heads * head_dim, true),
                ];
                for x in cases {
                    for layout in [RopeLayout::Interleaved, RopeLayout::Half] {
                        let mut want = x.clone();
                        scalar::rope_f32(&mut want, head_dim, cos.get(), sin.get(), layout);
                        for k in &tiers {
                            let mut got = Shifted::new(&x, o);
                            (k.rope_f32)(got.get_mut(), head_dim, cos.get(), sin.get(), layout);
                            same_bits(
                                k.tier,
                                &format!("rope_f32 {layout:?} hd={head_dim}"),
                                x.len(),
                                got.get(),
                                &want,
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn rope_table_matches_per_pair_angles() {
    // The table is the reference's angle: (pos as f32) * inv_freq, then cosf/sinf.
    let inv = [1.0f32, 0.25, 1e-4];
    let (mut c, mut s) = ([0.0f32; 3], [0.0f32; 3]);
    scalar::rope_angles_f32(77, &inv, &mut c, &mut s);
    for i in 0..3 {
        let a = (77.0f32 * inv[i]) as f64;
        // libm's cosf/sinf are within one ulp (<= 2^-24 absolute for |v| < 1).
        assert!((c[i] as f64 - a.cos()).abs() <= 2.0 * U, "cos {i}");
        assert!((s[i] as f64 - a.sin()).abs() <= 2.0 * U, "sin {i}");
    }
}

#[test]
fn attention_helpers_match_scalar_bit_for_bit() {
    let tiers = simd_tiers();
    let mut rng = Rng(0xabad_1dea_0bad_cafe);
    for n in lengths() {
        let o = offset(n);
        let cases = [
            (rng.vec(n, 1.0), rng.vec(n, 1.0)),
            (rng.vec(n, 1e4), rng.vec(n, 1e-3)),
            (with_edges(&mut rng, n, true), rng.vec(n, 1.0)),
            (vec![0.0; n], vec![-0.0; n]),
        ];
        for (a, b) in cases {
            let a16: Vec<f16> = a.iter().map(|&v| f16::from_f32(v)).collect();
            let (sa, sb, sa16) = (
                Shifted::new(&a, o),
                Shifted::new(&b, (o + 1) % 4),
                Shifted::new(&a16, (o + 3) % 4),
            );
            let want_dot = scalar::dot_f32(&a, &b);
            let want_dot16 = scalar::dot_f16_f32(&a16, &b);
            let mut want_wide = vec![0.0f32; n];
            scalar::f16_to_f32(&a16, &mut want_wide);
            let scale = rng.f32();
            let mut want_axpy = b.clone();
            scalar::axpy_f32(&mut want_axpy, scale, &a);
            let mut want_axpy16 = b.clone();
            scalar::axpy_f16_f32(&mut want_axpy16, scale, &a16);
            let mut want_add = b.clone();
            scalar::add_f32(&mut want_add, &a);
            for k in &tiers {
                let t = k.tier;
                same_bits(
                    t,
                    "dot_f32",
                    n,
                    &[(k.dot_f32)(sa.get(), sb.get())],
                    &[want_dot],
                );
                same_bits(
                    t,
                    "dot_f16_f32",
                    n,
                    &[(k.dot_f16_f32)(sa16.get(), sb.get())],
                    &[want_dot16],
                );
                let mut w = Shifted::new(&vec![1.0f32; n], (o + 2) % 4);
                (k.f16_to_f32)(sa16.get(), w.get_mut());
                same_bits(t, "f16_to_f32", n, w.get(), &want_wide);
                let mut acc = Shifted::new(&b, (o + 2) % 4);
                (k.axpy_f32)(acc.get_mut(), scale, sa.get());
                same_bits(t, "axpy_f32", n, acc.get(), &want_axpy);
                let mut acc = Shifted::new(&b, (o + 2) % 4);
                (k.axpy_f16_f32)(acc.get_mut(), scale, sa16.get());
                same_bits(t, "axpy_f16_f32", n, acc.get(), &want_axpy16);
                let mut acc = Shifted::new(&b, (o + 2) % 4);
                (k.add_f32)(acc.get_mut(), sa.get());
                same_bits(t, "add_f32", n, acc.get(), &want_add);
            }
        }
    }
}

/// The fused attention over an f16 cache equals, bit for bit, its definition:
/// the same tier's dot product, softmax and `axpy` composed by
/// `scalar::attend_with` (each of which is checked against scalar above),
/// one head after another. The fused attention over f32 rows equals its own
/// composition and, on the same rows widened from f16, the f16 kernel's
/// results. Head sizes around the 8-lane groups and the 64-column register
/// block, position counts around the 4-row score blocks (and one and two
/// blocks past them), groups of one, two and three heads sharing the keys
/// (what the runtime passes) and of 4 to 8 (passes 2 + 2, 3 + 2, 3 + 3,
/// 3 + 2 + 2, 3 + 3 + 2), padded strides, misaligned starts, keys and values
/// that end with the last row's `head_dim` elements, guard elements after
/// the scores and outputs that must stay untouched, and large, tiny and
/// signed-zero values.
#[test]
fn attention_is_the_tiers_composition_bit_for_bit() {
    let tiers: Vec<Kernels> = Tier::ALL.into_iter().filter_map(kernels_for).collect();
    let mut rng = Rng(0x5eed_a77e_7d00_0001);
    let head_dims = (1..=20).chain([31, 63, 64, 65, 72, 80, 96, 127, 128, 129, 136]);
    let mut groups = [4usize, 5, 6, 7, 8].into_iter().cycle();
    for hd in head_dims {
        for n in [0usize, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 17, 33] {
            for pad in [0, 3] {
                for heads in [1, 2, 3, groups.next().unwrap()] {
                    let stride = hd + pad;
                    // The last row ends the slices: no padding after it.
                    let len = n.checked_sub(1).map_or(0, |last| last * stride + hd);
                    let o = offset(hd + n + heads);
                    let scale = 1.0 / (hd as f32).sqrt();
                    let q = rng.vec(heads * hd, 2.0);
                    let mut kf = rng.vec(len, 1.0);
                    let mut vf = rng.vec(len, 1.0);
                    if n > 2 {
                        kf[stride..stride + hd].iter_mut().for_each(|x| *x *= 300.0);
                        vf[0] = -0.0;
                        vf[len - 1] = 6e-5;
                    }
                    let k16: Vec<f16> = kf.iter().map(|&v| f16::from_f32(v)).collect();
                    let v16: Vec<f16> = vf.iter().map(|&v| f16::from_f32(v)).collect();
                    let shape = AttendCase {
                        heads,
                        hd,
                        n,
                        stride,
                        scale,
                        o,
                    };
                    for kt in &tiers {
                        check_attention_case(kt, &shape, &q, (&kf, &vf), (&k16, &v16));
                    }
                }
            }
        }
    }
}

/// Elements after an attention call's scores and outputs that it must leave
/// as they were.
const GUARD: usize = 5;

/// `buf` without its last `GUARD` elements, after checking that they still
/// hold `fill`.
fn guarded<'a>(tier: Tier, what: &str, buf: &'a [f32], fill: f32) -> &'a [f32] {
    let (body, guard) = buf.split_at(buf.len() - GUARD);
    assert!(
        guard.iter().all(|g| g.to_bits() == fill.to_bits()),
        "{} {what}: wrote past the end: {guard:?}",
        tier.name()
    );
    body
}

/// One shape of `attention_is_the_tiers_composition_bit_for_bit`.
struct AttendCase {
    heads: usize,
    hd: usize,
    n: usize,
    stride: usize,
    scale: f32,
    /// Misalignment of the first row (the other buffers' follow from it).
    o: usize,
}

fn check_attention_case(
    kt: &Kernels,
    c: &AttendCase,
    q: &[f32],
    (kf, vf): (&[f32], &[f32]),
    (k16, v16): (&[f16], &[f16]),
) {
    let AttendCase {
        heads,
        hd,
        n,
        stride,
        scale,
        o,
    } = *c;
    let (sk, sv) = (Shifted::new(k16, o), Shifted::new(v16, (o + 1) % 4));
    let mut want_scores = vec![0.0f32; heads * n];
    let mut want = vec![7.0f32; heads * hd];
    scalar::attend_with(
        (kt.dot_f16_f32, kt.softmax_f32, kt.axpy_f16_f32),
        heads,
        (q, k16, v16, stride, scale),
        &mut want_scores,
        &mut want,
    );
    let mut scores = Shifted::new(&vec![0.5f32; heads * n + GUARD], (o + 2) % 4);
    let mut out = Shifted::new(&vec![-9.0f32; heads * hd + GUARD], (o + 3) % 4);
    (kt.attend_f16)(
        heads,
        q,
        sk.get(),
        sv.get(),
        stride,
        scale,
        &mut scores.get_mut()[..heads * n],
        &mut out.get_mut()[..heads * hd],
    );
    let what = format!("attend_f16 heads={heads} hd={hd} stride={stride}");
    let t = kt.tier;
    let (scores, out) = (
        guarded(t, &what, scores.get(), 0.5),
        guarded(t, &what, out.get(), -9.0),
    );
    same_bits(t, &format!("{what} scores"), n, scores, &want_scores);
    same_bits(t, &format!("{what} out"), n, out, &want);

    // f32 rows: the f16 rows widened (so the same results), and the raw f32
    // values against the f32 composition.
    let (kw, vw): (Vec<f32>, Vec<f32>) = (
        k16.iter().map(|x| x.to_f32()).collect(),
        v16.iter().map(|x| x.to_f32()).collect(),
    );
    for (kr, vr, widened) in [(&kw[..], &vw[..], true), (kf, vf, false)] {
        let what = match widened {
            true => format!("attend_f32 widened heads={heads} hd={hd} stride={stride}"),
            false => format!("attend_f32 heads={heads} hd={hd} stride={stride}"),
        };
        let mut want32_scores = vec![0.0f32; heads * n];
        let mut want32 = vec![7.0f32; heads * hd];
        scalar::attend_with(
            (kt.dot_f32, kt.softmax_f32, kt.axpy_f32),
            heads,
            (q, kr, vr, stride, scale),
            &mut want32_scores,
            &mut want32,
        );
        let (sk, sv) = (Shifted::new(kr, o), Shifted::new(vr, (o + 1) % 4));
        let mut scores = Shifted::new(&vec![0.5f32; heads * n + GUARD], (o + 2) % 4);
        let mut out = Shifted::new(&vec![-9.0f32; heads * hd + GUARD], (o + 3) % 4);
        (kt.attend_f32)(
            heads,
            q,
            sk.get(),
            sv.get(),
            stride,
            scale,
            &mut scores.get_mut()[..heads * n],
            &mut out.get_mut()[..heads * hd],
        );
        let (scores, out) = (
            guarded(t, &what, scores.get(), 0.5),
            guarded(t, &what, out.get(), -9.0),
        );
        let sc = format!("{what} scores");
        same_bits(t, &sc, n, scores, &want32_scores);
        same_bits(t, &format!("{what} out"), n, out, &want32);
        if widened {
            same_bits(t, &sc, n, scores, &want_scores);
            same_bits(t, &format!("{what} out"), n, out, &want);
        }
    }
}

#[test]
fn f16_widening_is_exact_for_every_value() {
    // All 65536 f16 bit patterns (subnormals, +-inf, NaNs) in one row.
    let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    let mut want = vec![0.0f32; all.len()];
    scalar::f16_to_f32(&all, &mut want);
    for k in simd_tiers() {
        let mut got = vec![0.0f32; all.len()];
        (k.f16_to_f32)(&all, &mut got);
        same_bits(k.tier, "f16_to_f32 (all values)", all.len(), &got, &want);
    }
}

/// A call that must panic (a violated contract), boxed to list several.
type Case<'a> = Box<dyn FnOnce() + 'a>;

#[test]
fn contracts_are_asserted_on_every_tier() {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let tiers: Vec<Kernels> = Tier::ALL.into_iter().filter_map(kernels_for).collect();
    for k in tiers {
        let name = k.tier.name();
        let mut a = [0.0f32; 5];
        let b = [0.0f32; 4];
        let h = [f16::ZERO; 4];
        let cases: [(&str, Case); 15] = [
            (
                "rmsnorm len",
                Box::new(|| (k.rmsnorm_f32)(&mut [0.0; 5], &b, &b, 1e-5)),
            ),
            (
                "rmsnorm empty",
                Box::new(|| (k.rmsnorm_f32)(&mut [], &[], &[], 1e-5)),
            ),
            ("silu", Box::new(|| (k.silu_gate_f32)(&mut [0.0; 5], &b))),
            ("gelu", Box::new(|| (k.gelu_gate_f32)(&mut [0.0; 5], &b))),
            (
                "rope head_dim",
                Box::new(|| (k.rope_f32)(&mut [0.0; 5], 4, &b[..1], &b[..1], RopeLayout::Half)),
            ),
            (
                "rope pairs",
                Box::new(|| {
                    (k.rope_f32)(&mut [0.0; 4], 4, &b[..3], &b[..3], RopeLayout::Interleaved)
                }),
            ),
            (
                "dot",
                Box::new(|| {
                    let _ = (k.dot_f16_f32)(&h, &a);
                }),
            ),
            ("axpy", Box::new(move || (k.axpy_f16_f32)(&mut a, 1.0, &h))),
            (
                "attend rows",
                Box::new(|| (k.attend_f16)(1, &b, &h, &h, 4, 1.0, &mut [0.0; 2], &mut [0.0; 4])),
            ),
            (
                "attend out",
                Box::new(|| (k.attend_f16)(1, &b, &h, &h, 4, 1.0, &mut [0.0; 1], &mut [0.0; 3])),
            ),
            (
                "attend_f32 rows",
                Box::new(|| (k.attend_f32)(1, &b, &b, &b, 4, 1.0, &mut [0.0; 2], &mut [0.0; 4])),
            ),
            (
                "attend_f32 out",
                Box::new(|| (k.attend_f32)(1, &b, &b, &b, 4, 1.0, &mut [0.0; 1], &mut [0.0; 3])),
            ),
            (
                // 4 query elements are not 3 heads.
                "attend heads of q",
                Box::new(|| (k.attend_f16)(3, &b, &h, &h, 4, 1.0, &mut [0.0; 3], &mut [0.0; 4])),
            ),
            (
                // 3 scores are not 2 heads' rows (the rest would fit: 1 row of 2).
                "attend heads of scores",
                Box::new(|| (k.attend_f32)(2, &b, &b, &b, 4, 1.0, &mut [0.0; 3], &mut [0.0; 4])),
            ),
            (
                // (n - 1) * stride + head_dim wraps to 8 without the overflow check.
                "attend_f32 stride overflow",
                Box::new(|| {
                    let huge = 1usize << (usize::BITS - 2);
                    (k.attend_f32)(1, &b, &b, &b, huge, 1.0, &mut [0.0; 5], &mut [0.0; 4])
                }),
            ),
        ];
        for (what, f) in cases {
            let r = catch_unwind(AssertUnwindSafe(f));
            assert!(r.is_err(), "{name} {what}: contract violation not rejected");
        }
    }
}
