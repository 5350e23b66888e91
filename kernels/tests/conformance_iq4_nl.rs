//! Conformance of the IQ4_NL kernels (STYLE.md rule 2): every SIMD tier this CPU
//! has against the scalar reference, the scalar kernels against an exact f64
//! reference, the row-interleaved products against the plain layout, the
//! batched products bit-identical per token to the same tier's matrix-vector
//! product, and the quantizer within its error budget.

use bytemuck::Zeroable;
use ember_kernels::arch::{kernels_for, Kernels, Tier, SCALAR};
use ember_kernels::blocks::{interleave_rows, BlockIq4Nl, BlockQ8_0, QK, TILE_ROWS};
use ember_kernels::scalar;
use half::f16;

/// ggml's awkward lengths (in blocks).
const AWKWARD: [usize; 18] = [
    1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 33, 63, 67, 127, 129, 193, 255, 1023,
];
/// Widest block tier: 2 blocks per register x 2 accumulators.
const BLOCK_SPAN: usize = 2 * 2;
/// One group of four rows (the multi-row paths) plus three left over.
const ROWS: usize = 11;

/// Normalised squared error (sum err^2 / sum x^2) on bell-shaped data (a sum
/// of four uniforms, like trained weights: dense near zero). IQ4_NL's codebook
/// is dense near zero, so it must beat Q4_0 there clearly: at most this
/// fraction of Q4_0's error (numpy on Gaussian data measures 0.76), and at most
/// twice its measured value (5.6e-3 on Gaussian data).
const IQ4_NL_VS_Q4_0_NMSE: f64 = 0.85;
const IQ4_NL_NMSE_BUDGET: f64 = 1.2e-2;
/// Quantized dot product error relative to `|w| |x|` (as Q4_0's budget).
const IQ4_NL_DOT_BUDGET: f64 = 2e-2;

/// Two summation orders of `n` products differ by at most
/// `2 * gamma_{n+8} * sum |terms|` (see conformance_matvec.rs).
fn reassoc_bound(n: usize, sum_abs: f64) -> f64 {
    let u = f32::EPSILON as f64 / 2.0;
    let k = (n + 8) as f64 * u;
    2.0 * k / (1.0 - k) * sum_abs + f32::MIN_POSITIVE as f64
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

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

fn q8_block(rng: &mut Rng, lo: i32, hi: i32, d: f32) -> BlockQ8_0 {
    let mut b = BlockQ8_0::zeroed();
    b.d = f16::from_f32(d).to_bits().to_le_bytes();
    for q in &mut b.qs {
        *q = (lo + (rng.next() % (hi - lo + 1) as u64) as i32) as i8 as u8;
    }
    b
}

fn iq4_block(rng: &mut Rng, d: f32) -> BlockIq4Nl {
    let mut b = BlockIq4Nl::zeroed();
    b.d = f16::from_f32(d).to_bits().to_le_bytes();
    for q in &mut b.qs {
        *q = rng.next() as u8;
    }
    b
}

/// Blocks viewed one byte past an aligned start.
fn misaligned<B: bytemuck::Pod>(v: &[B]) -> Vec<u8> {
    let bytes: &[u8] = bytemuck::cast_slice(v);
    let mut buf = vec![0u8; bytes.len() + 1];
    buf[1..].copy_from_slice(bytes);
    buf
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `got` against scalar's `want` within `bound`; non-finite results need only
/// be non-finite (a lane-split block sum of zero times an infinite scale is
/// NaN where the whole-block product is inf).
fn check(tier: Tier, what: &str, got: &[f32], want: &[f32], bound: &[f64]) {
    for r in 0..got.len() {
        let (g, w) = (got[r], want[r]);
        if !w.is_finite() {
            assert!(!g.is_finite(), "{} {what} row {r}: {g} vs {w}", tier.name());
        } else {
            assert!(
                ((g - w) as f64).abs() <= bound[r],
                "{} {what} row {r}: {g} vs scalar {w} (bound {})",
                tier.name(),
                bound[r]
            );
        }
    }
}

/// Every product on every tier for one matrix `w: [ROWS, nb]` and activation
/// `a`. `exact`: every partial sum is an integer below 2^24, so all tiers must
/// equal scalar bit for bit.
fn case(tiers: &[Kernels], w: &[BlockIq4Nl], a: &[BlockQ8_0], exact: bool) {
    let nb = a.len();
    let mut want = vec![0.0f32; ROWS];
    scalar::matvec_iq4_nl_q8_0(w, a, &mut want);
    // Exact f64 value and the bound on every partial sum, per row.
    let (exact_v, abs): (Vec<f64>, Vec<f64>) = (0..ROWS)
        .map(|r| {
            (0..nb).fold((0.0, 0.0), |(s, m), k| {
                let (bw, ba) = (&w[r * nb + k], &a[k]);
                let d = bw.scale() as f64 * ba.scale() as f64;
                let isum = scalar::block_isum_iq4_nl_q8_0(bw, ba) as f64;
                let iabs: f64 = (0..QK)
                    .map(|j| (bw.q(j) as f64 * ba.q(j) as f64).abs())
                    .sum();
                (s + d * isum, m + (d * iabs).abs())
            })
        })
        .unzip();
    for r in 0..ROWS {
        if exact_v[r].is_finite() {
            let tol = reassoc_bound(nb, abs[r]) / 2.0 + exact_v[r].abs() * 1e-7;
            assert!(
                (want[r] as f64 - exact_v[r]).abs() <= tol,
                "scalar iq4_nl nb={nb}: {} vs exact {}",
                want[r],
                exact_v[r]
            );
        }
    }
    let bound: Vec<f64> = abs.iter().map(|&s| reassoc_bound(nb, s)).collect();
    let (wm, am) = (misaligned(w), misaligned(a));
    let (wm, am): (&[BlockIq4Nl], &[BlockQ8_0]) = (
        bytemuck::cast_slice(&wm[1..]),
        bytemuck::cast_slice(&am[1..]),
    );
    for k in tiers {
        for (wq, aq, how) in [(w, a, ""), (wm, am, " misaligned")] {
            let mut got = vec![f32::NAN; ROWS];
            (k.matvec_iq4_nl_q8_0)(wq, aq, &mut got);
            if exact {
                assert_eq!(got, want, "{} iq4_nl{how} nb={nb}: exact", k.tier.name());
            }
            check(k.tier, &format!("iq4_nl{how} nb={nb}"), &got, &want, &bound);
        }
    }
    if nb == 0 {
        return;
    }
    // Row-interleaved: the first 8 rows.
    let rows = ROWS / TILE_ROWS * TILE_ROWS;
    let mut t = w[..rows * nb].to_vec();
    interleave_rows(&w[..rows * nb], nb, &mut t);
    let mut got = vec![f32::NAN; rows];
    scalar::matvec_iq4_nlx4_q8_0(&t, a, &mut got);
    assert_eq!(bits(&got), bits(&want[..rows]), "scalar iq4_nlx4 nb={nb}");
    let tm = misaligned(&t);
    let tm: &[BlockIq4Nl] = bytemuck::cast_slice(&tm[1..]);
    for k in tiers {
        for (wq, aq, how) in [(&t[..], a, ""), (tm, am, " misaligned")] {
            let mut got = vec![f32::NAN; rows];
            (k.matvec_iq4_nlx4_q8_0)(wq, aq, &mut got);
            if exact {
                assert_eq!(got, want[..rows], "{} iq4_nlx4{how} nb={nb}", k.tier.name());
            }
            check(
                k.tier,
                &format!("iq4_nlx4{how} nb={nb}"),
                &got,
                &want[..rows],
                &bound,
            );
        }
    }
    // Batched: three tokens (a, -a, a), each bit-identical to the matvec.
    let neg: Vec<BlockQ8_0> = a
        .iter()
        .map(|b| BlockQ8_0 {
            d: b.d,
            qs: b.qs.map(|q| (q as i8).wrapping_neg() as u8),
        })
        .collect();
    let toks: [&[BlockQ8_0]; 3] = [a, &neg, a];
    let a3 = toks.concat();
    for k in std::iter::once(SCALAR).chain(tiers.iter().copied()) {
        let mut got = vec![f32::NAN; 3 * rows];
        (k.matmul_iq4_nlx4_q8_0)(&t, &a3, 3, &mut got);
        for (i, at) in toks.iter().enumerate() {
            let mut one = vec![0.0f32; rows];
            (k.matvec_iq4_nlx4_q8_0)(&t, at, &mut one);
            assert_eq!(
                bits(&got[i * rows..(i + 1) * rows]),
                bits(&one),
                "{} matmul_iq4_nlx4 nb={nb} token {i}",
                k.tier.name()
            );
        }
    }
}

#[test]
fn iq4_nl_all_lengths_random_scales() {
    let tiers = simd_tiers();
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for nb in (0..=4 * BLOCK_SPAN + 3).chain(AWKWARD) {
        let w: Vec<BlockIq4Nl> = (0..ROWS * nb)
            .map(|_| {
                let d = rng.f32() * 0.01;
                iq4_block(&mut rng, d)
            })
            .collect();
        let a: Vec<BlockQ8_0> = (0..nb)
            .map(|_| {
                let d = rng.f32().abs() * 0.05;
                q8_block(&mut rng, -127, 127, d)
            })
            .collect();
        case(&tiers, &w, &a, false);
    }
}

#[test]
fn iq4_nl_integer_sums_exact_and_domain_boundaries() {
    let tiers = simd_tiers();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    // 32 blocks of at most 32 x 127 x 127 keep every partial sum below 2^24.
    for nb in (0..=32).chain([3, 31]) {
        let w: Vec<BlockIq4Nl> = (0..ROWS * nb).map(|_| iq4_block(&mut rng, 1.0)).collect();
        let a: Vec<BlockQ8_0> = (0..nb)
            .map(|_| q8_block(&mut rng, -127, 127, 1.0))
            .collect();
        case(&tiers, &w, &a, true);
    }
    // The codebook's extremes (-127: nibble 0, 113: nibble 15) against
    // activations -127 and 127.
    for nb in [1usize, 2, 5, 17, 32] {
        for aq in [-127, 127] {
            let w: Vec<BlockIq4Nl> = (0..ROWS * nb)
                .map(|i| {
                    let mut b = iq4_block(&mut rng, 1.0);
                    b.qs = [if i % 2 == 0 { 0x00 } else { 0xFF }; QK / 2];
                    b
                })
                .collect();
            let a: Vec<BlockQ8_0> = (0..nb).map(|_| q8_block(&mut rng, aq, aq, 1.0)).collect();
            case(&tiers, &w, &a, true);
        }
    }
}

#[test]
fn iq4_nl_edge_scales() {
    let tiers = simd_tiers();
    let mut rng = Rng(7);
    // Zero, largest finite f16, smallest subnormal f16, negative, inf, NaN.
    for d in [
        0.0f32,
        65504.0,
        5.960_464_5e-8,
        -0.5,
        f32::INFINITY,
        f32::NAN,
    ] {
        for nb in [1usize, 3, 17] {
            let w: Vec<BlockIq4Nl> = (0..ROWS * nb).map(|_| iq4_block(&mut rng, d)).collect();
            let a: Vec<BlockQ8_0> = (0..nb)
                .map(|_| q8_block(&mut rng, -127, 127, 1.0))
                .collect();
            case(&tiers, &w, &a, false);
            let a: Vec<BlockQ8_0> = (0..nb).map(|_| q8_block(&mut rng, -127, 127, d)).collect();
            case(&tiers, &w, &a, false);
        }
    }
}

#[test]
fn iq4_nl_quantizer_within_budget_three_way() {
    let mut rng = Rng(99);
    let n = 32 * 64;
    let x: Vec<f32> = (0..n)
        .map(|_| (0..4).map(|_| rng.f32()).sum::<f32>())
        .collect();
    let y: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
    let mut bw = vec![BlockIq4Nl::zeroed(); n / QK];
    let mut b4 = vec![ember_kernels::blocks::BlockQ4_0::zeroed(); n / QK];
    let mut ay = vec![BlockQ8_0::zeroed(); n / QK];
    scalar::quantize_row_iq4_nl(&x, &mut bw);
    scalar::quantize_row_q4_0(&x, &mut b4);
    scalar::quantize_row_q8_0(&y, &mut ay);
    let nmse = |back: &[f32]| {
        let err: f64 = x
            .iter()
            .zip(back)
            .map(|(p, q)| ((p - q) as f64).powi(2))
            .sum();
        err / x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>()
    };
    let mut back = vec![0.0f32; n];
    scalar::dequantize_row_q4_0(&b4, &mut back);
    let e4 = nmse(&back);
    scalar::dequantize_row_iq4_nl(&bw, &mut back);
    let e = nmse(&back);
    assert!(
        e <= IQ4_NL_NMSE_BUDGET && e <= IQ4_NL_VS_Q4_0_NMSE * e4,
        "iq4_nl nmse {e}, q4_0 {e4}"
    );
    // Importance weights steer the error: weighting the first half of every
    // block lowers that half's error.
    let im: Vec<f32> = (0..n)
        .map(|i| if i % QK < QK / 2 { 1.0 } else { 0.01 })
        .collect();
    let mut bi = vec![BlockIq4Nl::zeroed(); n / QK];
    scalar::quantize_row_iq4_nl_weighted(&x, Some(&im), &mut bi);
    let mut back_i = vec![0.0f32; n];
    scalar::dequantize_row_iq4_nl(&bi, &mut back_i);
    let werr = |b: &[f32]| -> f64 {
        (0..n)
            .map(|i| im[i] as f64 * ((x[i] - b[i]) as f64).powi(2))
            .sum()
    };
    assert!(werr(&back_i) < werr(&back), "weighted error not lower");
    // Exact f64 dot of the f32 inputs vs the quantized product on every tier.
    let exact: f64 = x.iter().zip(&y).map(|(p, q)| *p as f64 * *q as f64).sum();
    let norm = (x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>()
        * y.iter().map(|p| (*p as f64).powi(2)).sum::<f64>())
    .sqrt();
    for k in std::iter::once(SCALAR).chain(simd_tiers()) {
        let mut o = [0.0f32];
        (k.matvec_iq4_nl_q8_0)(&bw, &ay, &mut o);
        let e = (o[0] as f64 - exact).abs() / norm;
        assert!(
            e <= IQ4_NL_DOT_BUDGET,
            "{} iq4_nl dot error {e}",
            k.tier.name()
        );
    }
    // Zeros, NaN and infinities quantize without panicking, to valid blocks.
    let odd: Vec<f32> = [0.0f32, f32::NAN, f32::INFINITY, -1.0, 1e-30]
        .into_iter()
        .cycle()
        .take(2 * QK)
        .collect();
    let mut b = vec![BlockIq4Nl::zeroed(); 2];
    scalar::quantize_row_iq4_nl(&odd, &mut b);
    let z = vec![0.0f32; QK];
    scalar::quantize_row_iq4_nl(&z, &mut b[..1]);
    assert_eq!(b[0].scale(), 0.0);
}
