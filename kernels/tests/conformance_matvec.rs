//! Conformance of every SIMD tier this CPU has against the scalar reference
//! kernels (STYLE.md rule 2), plus the scalar quantized kernels against an exact
//! f64 reference (the candle-style three-way check).
//!
//! Lengths: every length 0..=4 x (lanes x unroll) + 3 of the widest tier and the
//! awkward list; starts misaligned by one element (or one byte for blocks); edge
//! values. Integer block sums must match exactly; float sums within
//! `reassoc_bound`.

use bytemuck::Zeroable;
use ember_kernels::arch::{kernels_for, Kernels, Tier};
use ember_kernels::blocks::{interleave_rows, BlockIq4Nl, BlockQ4_0, BlockQ8_0, QK, TILE_ROWS};
use ember_kernels::scalar;
use half::f16;

/// ggml's awkward lengths (elements for float kernels, blocks for block kernels).
const AWKWARD: [usize; 18] = [
    1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 33, 63, 67, 127, 129, 193, 255, 1023,
];
/// Widest float tier: 16 lanes (AVX-512) x 4 accumulators (NEON: 4 x 4).
const FLOAT_SPAN: usize = 16 * 4;
/// Widest block tier: 2 blocks per register x 2 accumulators.
const BLOCK_SPAN: usize = 2 * 2;
/// Output rows per test matrix: one group of four (the multi-row kernels) plus
/// three left over, so both paths and row offsets are exercised.
const ROWS: usize = 11;

/// Two summation orders of the same `n` products differ by at most
/// `2 * gamma_n * sum |terms|` (each is within `gamma_n = n u / (1 - n u)` of the
/// exact sum, `u = 2^-24`); the FMA tiers round less, never more. `+ 8` covers
/// the final horizontal reduction of up to 16 lanes.
fn reassoc_bound(n: usize, sum_abs: f64) -> f64 {
    let u = f32::EPSILON as f64 / 2.0;
    let k = (n + 8) as f64 * u;
    2.0 * k / (1.0 - k) * sum_abs + f32::MIN_POSITIVE as f64
}

fn float_lengths() -> Vec<usize> {
    let mut v: Vec<usize> = (0..=4 * FLOAT_SPAN + 3).collect();
    v.extend(AWKWARD);
    v
}

fn block_lengths() -> Vec<usize> {
    let mut v: Vec<usize> = (0..=4 * BLOCK_SPAN + 3).collect();
    v.extend(AWKWARD);
    v
}

/// The SIMD tiers this CPU supports (scalar excluded: it is the reference), of
/// whatever architecture the test runs on (`Tier::ALL` is per architecture).
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
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn i8(&mut self, lo: i32, hi: i32) -> i8 {
        (lo + (self.next() % (hi - lo + 1) as u64) as i32) as i8
    }
}

/// A copy of `v` starting one element past an aligned boundary.
fn misaligned<T: Copy + Default>(v: &[T]) -> (Vec<T>, usize) {
    let mut buf = vec![T::default(); v.len() + 1];
    buf[1..].copy_from_slice(v);
    (buf, 1)
}

fn check_float(tier: Tier, what: &str, n: usize, got: &[f32], want: &[f32], bound: &[f64]) {
    for r in 0..got.len() {
        let (g, w) = (got[r], want[r]);
        if !w.is_finite() && what.starts_with('q') {
            // A non-finite block scale times a partial (per-lane) integer sum of
            // zero is NaN where the scalar kernel's whole-block product is inf:
            // the contract is only "non-finite".
            assert!(
                !g.is_finite(),
                "{} {what} n={n} row {r}: {g} vs {w}",
                tier.name()
            );
            continue;
        }
        if w.is_nan() || g.is_nan() || w.is_infinite() {
            assert!(
                (g.is_nan() && w.is_nan()) || g == w,
                "{} {what} n={n} row {r}: {g} vs {w}",
                tier.name()
            );
            continue;
        }
        assert!(
            ((g - w) as f64).abs() <= bound[r],
            "{} {what} n={n} row {r}: {g} vs scalar {w} (bound {})",
            tier.name(),
            bound[r]
        );
    }
}

fn float_case(tiers: &[Kernels], w: &[f32], x: &[f32], rows: usize) {
    let n = x.len();
    let mut want = vec![0.0f32; rows];
    scalar::matvec_f32_f32(w, x, &mut want);
    let bound: Vec<f64> = (0..rows)
        .map(|r| {
            let s: f64 = (0..n)
                .map(|i| (w[r * n + i] as f64 * x[i] as f64).abs())
                .sum();
            reassoc_bound(n, s)
        })
        .collect();
    let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
    let w16f: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
    let mut want16 = vec![0.0f32; rows];
    scalar::matvec_f16_f32(&w16, x, &mut want16);
    let bound16: Vec<f64> = (0..rows)
        .map(|r| {
            let s: f64 = (0..n)
                .map(|i| (w16f[r * n + i] as f64 * x[i] as f64).abs())
                .sum();
            reassoc_bound(n, s)
        })
        .collect();
    let (wb, wo) = misaligned(w);
    let (xb, xo) = misaligned(x);
    let (w16b, w16o) = misaligned(&w16);
    for k in tiers {
        let mut got = vec![f32::NAN; rows];
        (k.matvec_f32_f32)(w, x, &mut got);
        check_float(k.tier, "matvec_f32_f32", n, &got, &want, &bound);
        (k.matvec_f32_f32)(&wb[wo..], &xb[xo..], &mut got);
        check_float(k.tier, "matvec_f32_f32 misaligned", n, &got, &want, &bound);
        (k.matvec_f16_f32)(&w16, x, &mut got);
        check_float(k.tier, "matvec_f16_f32", n, &got, &want16, &bound16);
        (k.matvec_f16_f32)(&w16b[w16o..], &xb[xo..], &mut got);
        check_float(
            k.tier,
            "matvec_f16_f32 misaligned",
            n,
            &got,
            &want16,
            &bound16,
        );
    }
    let counts: &[usize] = if AWKWARD.contains(&n) || n % 8 == 3 {
        &[1, 2, 3, 4, 5, 8, 9, 17, 32]
    } else {
        &[1, 2, 3, 4, 5]
    };
    for &tokens in counts {
        matmul_f16_case(tiers, &w16, x, rows, tokens);
    }
}

/// The batched f16 product over `tokens` activation vectors (rotations and
/// power-of-two rescalings of `x`, so edge values reach every token): on every
/// tier, including scalar, each token's result must be bit-identical to the
/// same tier's `matvec_f16_f32` for that token (prefill and decode agree
/// exactly) and within `reassoc_bound` of the scalar product; also from
/// misaligned starts.
fn matmul_f16_case(tiers: &[Kernels], w16: &[f16], x: &[f32], rows: usize, tokens: usize) {
    let n = x.len();
    let scales = [1.0f32, -1.0, 0.5, 2.0, -0.25];
    let toks: Vec<Vec<f32>> = (0..tokens)
        .map(|t| {
            let s = scales[t % scales.len()];
            (0..n).map(|i| x[(i + t) % n.max(1)] * s).collect()
        })
        .collect();
    let xs: Vec<f32> = toks.concat();
    let (xb, xo) = misaligned(&xs);
    let (wb, wo) = misaligned(w16);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let all = std::iter::once(ember_kernels::arch::SCALAR).chain(tiers.iter().copied());
    for k in all {
        let mut got = vec![f32::NAN; tokens * rows];
        let mut got_mis = vec![f32::NAN; tokens * rows];
        (k.matmul_f16_f32)(w16, &xs, tokens, &mut got);
        (k.matmul_f16_f32)(&wb[wo..], &xb[xo..], tokens, &mut got_mis);
        assert_eq!(
            bits(&got),
            bits(&got_mis),
            "{} matmul_f16_f32 misaligned n={n} tokens {tokens}",
            k.tier.name()
        );
        for (t, xt) in toks.iter().enumerate() {
            let mut want = vec![0.0f32; rows];
            (k.matvec_f16_f32)(w16, xt, &mut want);
            assert_eq!(
                bits(&got[t * rows..(t + 1) * rows]),
                bits(&want),
                "{} matmul_f16_f32 n={n} tokens {tokens}: token {t}",
                k.tier.name()
            );
            let mut reference = vec![0.0f32; rows];
            scalar::matvec_f16_f32(w16, xt, &mut reference);
            let bound: Vec<f64> = (0..rows)
                .map(|r| {
                    let s: f64 = (0..n)
                        .map(|i| (w16[r * n + i].to_f64() * xt[i] as f64).abs())
                        .sum();
                    reassoc_bound(n, s)
                })
                .collect();
            check_float(k.tier, "matmul_f16_f32", n, &want, &reference, &bound);
        }
    }
}

/// `matmul_f16_f32` on matrices taller than one row panel of the SIMD tiers
/// (64 KiB of weights), with token counts that leave partial token tiles
/// and row counts that leave rows outside the 3-, 4- and 6-row tiles of a
/// panel; token counts 5, 7 and 10 end in every partial tile of AVX-512's
/// 4-token tile for rows wider than 1024 columns.
#[test]
fn matmul_f16_across_row_panels() {
    let tiers = simd_tiers();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for (rows, cols) in [(75usize, 1023usize), (40, 2048), (9, 8192)] {
        let w: Vec<f16> = (0..rows * cols).map(|_| f16::from_f32(rng.f32())).collect();
        let x: Vec<f32> = (0..cols).map(|_| rng.f32()).collect();
        for tokens in [5, 7, 10] {
            matmul_f16_case(&tiers, &w, &x, rows, tokens);
        }
    }
}

#[test]
fn float_matvec_all_lengths() {
    let tiers = simd_tiers();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for n in float_lengths() {
        let w: Vec<f32> = (0..ROWS * n).map(|_| rng.f32()).collect();
        let x: Vec<f32> = (0..n).map(|_| rng.f32() * 3.0).collect();
        float_case(&tiers, &w, &x, ROWS);
    }
}

#[test]
fn float_matvec_edge_values() {
    let tiers = simd_tiers();
    for n in [1usize, 16, 17, 64, 67, 255] {
        let zeros = vec![0.0f32; ROWS * n];
        let x: Vec<f32> = (0..n).map(|i| i as f32 - 3.0).collect();
        float_case(&tiers, &zeros, &x, ROWS);
        // f16 extremes: largest finite, smallest subnormal.
        let big: Vec<f32> = (0..ROWS * n)
            .map(|i| if i % 2 == 0 { 65504.0 } else { -5.960_464_5e-8 })
            .collect();
        float_case(&tiers, &big, &x, ROWS);
        for special in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut w = vec![0.5f32; ROWS * n];
            w[n / 2] = special;
            let x = vec![1.0f32; n];
            float_case(&tiers, &w, &x, ROWS);
        }
    }
}

fn q8_block(rng: &mut Rng, lo: i32, hi: i32, d: f32) -> BlockQ8_0 {
    let mut b = BlockQ8_0::zeroed();
    b.d = f16::from_f32(d).to_bits().to_le_bytes();
    for q in &mut b.qs {
        *q = rng.i8(lo, hi) as u8;
    }
    b
}

fn q4_block(rng: &mut Rng, d: f32) -> BlockQ4_0 {
    let mut b = BlockQ4_0::zeroed();
    b.d = f16::from_f32(d).to_bits().to_le_bytes();
    for q in &mut b.qs {
        *q = rng.next() as u8;
    }
    b
}

/// Blocks copied into a byte buffer one byte past its (aligned) start.
fn misaligned_blocks<B: bytemuck::Pod>(v: &[B]) -> Vec<u8> {
    let bytes: &[u8] = bytemuck::cast_slice(v);
    let mut buf = vec![0u8; bytes.len() + 1];
    buf[1..].copy_from_slice(bytes);
    buf
}

/// Exact value of one row: `sum_b d_w d_a isum_b` in f64 (f16 scales and i32
/// block sums are exact in f64), and `sum_b |d_w d_a| sum_j |w_j a_j|`, the bound
/// on every partial sum a tier may form (lanes split a block's integer sum, so
/// `|isum_b|` alone is not enough when lanes cancel).
fn exact_row(terms: impl Iterator<Item = (f32, f32, i32, i32)>) -> (f64, f64) {
    terms.fold((0.0, 0.0), |(s, a), (dw, da, i, iabs)| {
        let d = dw as f64 * da as f64;
        (s + d * i as f64, a + (d * iabs as f64).abs())
    })
}

fn abs_isum(w: impl Fn(usize) -> i8, a: &BlockQ8_0) -> i32 {
    (0..QK).map(|j| (w(j) as i32 * a.q(j) as i32).abs()).sum()
}

/// Checks Q8_0 and Q4_0 matvec on every tier. `exact`: scales and magnitudes are
/// such that every f32 partial sum is an integer below 2^24, so all summation
/// orders give the exact result and tiers must match scalar bit for bit.
fn block_case(tiers: &[Kernels], w8: &[BlockQ8_0], w4: &[BlockQ4_0], a: &[BlockQ8_0], exact: bool) {
    let nb = a.len();
    let rows = w8.len().checked_div(nb).unwrap_or(ROWS);
    let mut want8 = vec![0.0f32; rows];
    let mut want4 = vec![0.0f32; rows];
    scalar::matvec_q8_0_q8_0(w8, a, &mut want8);
    scalar::matvec_q4_0_q8_0(w4, a, &mut want4);
    let ref8: Vec<(f64, f64)> = (0..rows)
        .map(|r| {
            exact_row((0..nb).map(|b| {
                let (bw, ba) = (&w8[r * nb + b], &a[b]);
                (
                    bw.scale(),
                    ba.scale(),
                    scalar::block_isum_q8_0_q8_0(bw, ba),
                    abs_isum(|j| bw.q(j), ba),
                )
            }))
        })
        .collect();
    let ref4: Vec<(f64, f64)> = (0..rows)
        .map(|r| {
            exact_row((0..nb).map(|b| {
                let (bw, ba) = (&w4[r * nb + b], &a[b]);
                (
                    bw.scale(),
                    ba.scale(),
                    scalar::block_isum_q4_0_q8_0(bw, ba),
                    abs_isum(|j| bw.q(j), ba),
                )
            }))
        })
        .collect();
    // Scalar against the exact reference.
    for r in 0..rows {
        for (got, (ex, abs), what) in [(want8[r], ref8[r], "q8_0"), (want4[r], ref4[r], "q4_0")] {
            if ex.is_finite() {
                assert!(
                    (got as f64 - ex).abs() <= reassoc_bound(nb, abs) / 2.0 + ex.abs() * 1e-7,
                    "scalar {what} nb={nb}: {got} vs exact {ex}"
                );
            }
        }
    }
    let b8: Vec<f64> = ref8.iter().map(|&(_, a)| reassoc_bound(nb, a)).collect();
    let b4: Vec<f64> = ref4.iter().map(|&(_, a)| reassoc_bound(nb, a)).collect();
    let (w8m, w4m, am) = (
        misaligned_blocks(w8),
        misaligned_blocks(w4),
        misaligned_blocks(a),
    );
    let w8m: &[BlockQ8_0] = bytemuck::cast_slice(&w8m[1..]);
    let w4m: &[BlockQ4_0] = bytemuck::cast_slice(&w4m[1..]);
    let am: &[BlockQ8_0] = bytemuck::cast_slice(&am[1..]);
    for k in tiers {
        for (wq8, wq4, aq, how) in [(w8, w4, a, ""), (w8m, w4m, am, " misaligned")] {
            let mut got = vec![f32::NAN; rows];
            (k.matvec_q8_0_q8_0)(wq8, aq, &mut got);
            if exact {
                assert_eq!(got, want8, "{} q8_0{how} nb={nb}: exact", k.tier.name());
            }
            check_float(k.tier, &format!("q8_0{how}"), nb, &got, &want8, &b8);
            (k.matvec_q4_0_q8_0)(wq4, aq, &mut got);
            if exact {
                assert_eq!(got, want4, "{} q4_0{how} nb={nb}: exact", k.tier.name());
            }
            check_float(k.tier, &format!("q4_0{how}"), nb, &got, &want4, &b4);
        }
    }
    tiled_case(tiers, w8, w4, a, exact, (&want8, &want4), (&b8, &b4));
}

/// The row-interleaved kernels on the first `rows / 4 * 4` rows of the same
/// matrices: scalar must equal the plain-layout scalar bit for bit (same
/// per-row summation), every tier must be within the same bounds.
fn tiled_case(
    tiers: &[Kernels],
    w8: &[BlockQ8_0],
    w4: &[BlockQ4_0],
    a: &[BlockQ8_0],
    exact: bool,
    want: (&[f32], &[f32]),
    bound: (&[f64], &[f64]),
) {
    let nb = a.len();
    if nb == 0 {
        return;
    }
    let rows = w8.len() / nb / TILE_ROWS * TILE_ROWS;
    let (want8, want4) = (&want.0[..rows], &want.1[..rows]);
    let (b8, b4) = (&bound.0[..rows], &bound.1[..rows]);
    let mut t8 = w8[..rows * nb].to_vec();
    let mut t4 = w4[..rows * nb].to_vec();
    interleave_rows(&w8[..rows * nb], nb, &mut t8);
    interleave_rows(&w4[..rows * nb], nb, &mut t4);
    let mut got = vec![f32::NAN; rows];
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    scalar::matvec_q8_0x4_q8_0(&t8, a, &mut got);
    assert_eq!(
        bits(&got),
        bits(want8),
        "scalar q8_0x4 nb={nb}: equals the plain layout"
    );
    scalar::matvec_q4_0x4_q8_0(&t4, a, &mut got);
    assert_eq!(
        bits(&got),
        bits(want4),
        "scalar q4_0x4 nb={nb}: equals the plain layout"
    );
    let (t8m, t4m, am) = (
        misaligned_blocks(&t8),
        misaligned_blocks(&t4),
        misaligned_blocks(a),
    );
    let t8m: &[BlockQ8_0] = bytemuck::cast_slice(&t8m[1..]);
    let t4m: &[BlockQ4_0] = bytemuck::cast_slice(&t4m[1..]);
    let am: &[BlockQ8_0] = bytemuck::cast_slice(&am[1..]);
    for k in tiers {
        for (wq8, wq4, aq, how) in [(&t8[..], &t4[..], a, ""), (t8m, t4m, am, " misaligned")] {
            let mut got = vec![f32::NAN; rows];
            (k.matvec_q8_0x4_q8_0)(wq8, aq, &mut got);
            if exact {
                assert_eq!(got, want8, "{} q8_0x4{how} nb={nb}: exact", k.tier.name());
            }
            check_float(k.tier, &format!("q8_0x4{how}"), nb, &got, want8, b8);
            (k.matvec_q4_0x4_q8_0)(wq4, aq, &mut got);
            if exact {
                assert_eq!(got, want4, "{} q4_0x4{how} nb={nb}: exact", k.tier.name());
            }
            check_float(k.tier, &format!("q4_0x4{how}"), nb, &got, want4, b4);
        }
    }
    matmul_case(tiers, &t8, &t4, a, rows);
}

/// The batched kernels over three tokens (`a`, `a` negated, `a`): each
/// token's results must be bit-identical to the same tier's matrix-vector
/// product for that token (prefill and decode agree exactly), including the
/// scalar tier.
fn matmul_case(
    tiers: &[Kernels],
    t8: &[BlockQ8_0],
    t4: &[BlockQ4_0],
    a: &[BlockQ8_0],
    rows: usize,
) {
    let nb = a.len();
    let neg: Vec<BlockQ8_0> = a
        .iter()
        .map(|b| BlockQ8_0 {
            d: b.d,
            qs: b.qs.map(|q| (q as i8).wrapping_neg() as u8),
        })
        .collect();
    let toks: Vec<&[BlockQ8_0]> = vec![a, &neg, a];
    let a3: Vec<BlockQ8_0> = toks.concat();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let all = std::iter::once(ember_kernels::arch::SCALAR).chain(tiers.iter().copied());
    for k in all {
        let mut got8 = vec![f32::NAN; 3 * rows];
        let mut got4 = vec![f32::NAN; 3 * rows];
        (k.matmul_q8_0x4_q8_0)(t8, &a3, 3, &mut got8);
        (k.matmul_q4_0x4_q8_0)(t4, &a3, 3, &mut got4);
        for (t, at) in toks.iter().enumerate() {
            let mut want = vec![0.0f32; rows];
            (k.matvec_q8_0x4_q8_0)(t8, at, &mut want);
            assert_eq!(
                bits(&got8[t * rows..(t + 1) * rows]),
                bits(&want),
                "{} matmul_q8_0x4 nb={nb} token {t}",
                k.tier.name()
            );
            (k.matvec_q4_0x4_q8_0)(t4, at, &mut want);
            assert_eq!(
                bits(&got4[t * rows..(t + 1) * rows]),
                bits(&want),
                "{} matmul_q4_0x4 nb={nb} token {t}",
                k.tier.name()
            );
        }
    }
}

/// Token counts around the kernels' register blocks (1..=4 tokens) and the
/// activation-term chunks (32 tokens), and widths around the column chunks
/// (64 blocks; AVX2's 512 and 1024 for one token block): every token of a
/// matrix-matrix product must equal, bit for bit, the same tier's
/// matrix-vector product for that token.
#[test]
fn block_matmul_token_counts_and_chunks() {
    let tiers = simd_tiers();
    let mut rng = Rng(0x8F3A_61C7_0B2D_94E5);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let rows = 2 * TILE_ROWS;
    for nb in [1, 5, 64, 65, 131, 513, 1025] {
        let w8: Vec<BlockQ8_0> = (0..rows * nb)
            .map(|_| {
                let d = rng.f32() * 0.01;
                q8_block(&mut rng, -128, 127, d)
            })
            .collect();
        let w4: Vec<BlockQ4_0> = (0..rows * nb)
            .map(|_| {
                let d = rng.f32() * 0.01;
                q4_block(&mut rng, d)
            })
            .collect();
        let (mut t8, mut t4) = (w8.clone(), w4.clone());
        interleave_rows(&w8, nb, &mut t8);
        interleave_rows(&w4, nb, &mut t4);
        // IQ4_NL has Q4_0's byte layout (scale, 16 bytes of nibble indices).
        let ti: Vec<BlockIq4Nl> = bytemuck::cast_slice(&t4).to_vec();
        for n in [1, 2, 3, 4, 5, 6, 7, 8, 9, 31, 32, 33, 37, 70] {
            let a: Vec<BlockQ8_0> = (0..n * nb)
                .map(|_| {
                    let d = rng.f32().abs() * 0.05;
                    q8_block(&mut rng, -127, 127, d)
                })
                .collect();
            let all = std::iter::once(ember_kernels::arch::SCALAR).chain(tiers.iter().copied());
            for k in all {
                let mut got8 = vec![f32::NAN; n * rows];
                let mut got4 = vec![f32::NAN; n * rows];
                (k.matmul_q8_0x4_q8_0)(&t8, &a, n, &mut got8);
                (k.matmul_q4_0x4_q8_0)(&t4, &a, n, &mut got4);
                let mut goti = vec![f32::NAN; n * rows];
                (k.matmul_iq4_nlx4_q8_0)(&ti, &a, n, &mut goti);
                for t in 0..n {
                    let at = &a[t * nb..(t + 1) * nb];
                    let mut want = vec![0.0f32; rows];
                    (k.matvec_q8_0x4_q8_0)(&t8, at, &mut want);
                    assert_eq!(
                        bits(&got8[t * rows..(t + 1) * rows]),
                        bits(&want),
                        "{} matmul_q8_0x4 nb={nb} n={n} token {t}",
                        k.tier.name()
                    );
                    (k.matvec_q4_0x4_q8_0)(&t4, at, &mut want);
                    assert_eq!(
                        bits(&got4[t * rows..(t + 1) * rows]),
                        bits(&want),
                        "{} matmul_q4_0x4 nb={nb} n={n} token {t}",
                        k.tier.name()
                    );
                    (k.matvec_iq4_nlx4_q8_0)(&ti, at, &mut want);
                    assert_eq!(
                        bits(&goti[t * rows..(t + 1) * rows]),
                        bits(&want),
                        "{} matmul_iq4_nlx4 nb={nb} n={n} token {t}",
                        k.tier.name()
                    );
                }
            }
        }
    }
}

/// The x86 matrix-vector products of the row-interleaved types take tile
/// groups in pairs (eight rows, two weight streams) with an odd last group on
/// another path, and precompute activation terms in passes of 512 blocks:
/// every group count from one to five and widths around a pass must equal the
/// scalar tier: bit for bit on x86 (documented there), within the
/// reassociation bound on the FMA-based ARM tiers. Weight quants of q8_0 use
/// the full i8 range, -128 included.
#[test]
fn block_matvec_group_pairs_and_passes() {
    let tiers = simd_tiers();
    let mut rng = Rng(0x6A09_E667_F3BC_C908);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for nb in [1usize, 7, 511, 512, 513, 1030] {
        let a: Vec<BlockQ8_0> = (0..nb)
            .map(|_| {
                let d = rng.f32().abs() * 0.05;
                q8_block(&mut rng, -127, 127, d)
            })
            .collect();
        for groups in 1..=5 {
            let rows = groups * TILE_ROWS;
            let w4: Vec<BlockQ4_0> = (0..rows * nb)
                .map(|_| {
                    let d = rng.f32() * 0.01;
                    q4_block(&mut rng, d)
                })
                .collect();
            let mut t4 = w4.clone();
            interleave_rows(&w4, nb, &mut t4);
            let w8: Vec<BlockQ8_0> = (0..rows * nb)
                .map(|_| {
                    let d = rng.f32() * 0.01;
                    q8_block(&mut rng, -128, 127, d)
                })
                .collect();
            let mut t8 = w8.clone();
            interleave_rows(&w8, nb, &mut t8);
            // IQ4_NL has Q4_0's byte layout (scale, 16 bytes of nibble indices).
            let ti: Vec<BlockIq4Nl> = bytemuck::cast_slice(&t4).to_vec();
            let (mut want4, mut wanti) = (vec![0.0f32; rows], vec![0.0f32; rows]);
            let mut want8 = vec![0.0f32; rows];
            scalar::matvec_q8_0x4_q8_0(&t8, &a, &mut want8);
            scalar::matvec_q4_0x4_q8_0(&t4, &a, &mut want4);
            scalar::matvec_iq4_nlx4_q8_0(&ti, &a, &mut wanti);
            // sum_j |w_j a_j| per row bounds every partial sum a tier forms.
            let abs_dot = |deq: &dyn Fn(usize, &mut [f32])| -> Vec<f64> {
                let mut wr = vec![0.0f32; nb * QK];
                (0..rows)
                    .map(|r| {
                        deq(r, &mut wr);
                        let s = wr.iter().enumerate().map(|(j, &w)| {
                            let b = &a[j / QK];
                            (w as f64 * b.scale() as f64 * b.q(j % QK) as f64).abs()
                        });
                        reassoc_bound(nb, s.sum())
                    })
                    .collect()
            };
            let b4 = abs_dot(&|r, o| scalar::dequantize_tiled_row_q4_0(&t4, r, o));
            let bi = abs_dot(&|r, o| scalar::dequantize_tiled_row_iq4_nl(&ti, r, o));
            let b8 = abs_dot(&|r, o| scalar::dequantize_tiled_row_q8_0(&t8, r, o));
            for k in &tiers {
                let bit_exact = matches!(k.tier, Tier::Avx2 | Tier::Avx512);
                let mut got = vec![f32::NAN; rows];
                (k.matvec_q8_0x4_q8_0)(&t8, &a, &mut got);
                let what = format!("q8_0x4 groups={groups}");
                check_float(k.tier, &what, nb, &got, &want8, &b8);
                if bit_exact {
                    assert_eq!(bits(&got), bits(&want8), "{} {what} nb={nb}", k.tier.name());
                }
                (k.matvec_q4_0x4_q8_0)(&t4, &a, &mut got);
                let what = format!("q4_0x4 groups={groups}");
                check_float(k.tier, &what, nb, &got, &want4, &b4);
                if bit_exact {
                    assert_eq!(bits(&got), bits(&want4), "{} {what} nb={nb}", k.tier.name());
                }
                (k.matvec_iq4_nlx4_q8_0)(&ti, &a, &mut got);
                let what = format!("iq4_nlx4 groups={groups}");
                check_float(k.tier, &what, nb, &got, &wanti, &bi);
                if bit_exact {
                    assert_eq!(bits(&got), bits(&wanti), "{} {what} nb={nb}", k.tier.name());
                }
            }
        }
    }
}

#[test]
fn block_matvec_all_lengths_random_scales() {
    let tiers = simd_tiers();
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for nb in block_lengths() {
        let w8: Vec<BlockQ8_0> = (0..ROWS * nb)
            .map(|_| {
                let d = rng.f32() * 0.01;
                q8_block(&mut rng, -128, 127, d)
            })
            .collect();
        let w4: Vec<BlockQ4_0> = (0..ROWS * nb)
            .map(|_| {
                let d = rng.f32() * 0.01;
                q4_block(&mut rng, d)
            })
            .collect();
        let a: Vec<BlockQ8_0> = (0..nb)
            .map(|_| {
                let d = rng.f32().abs() * 0.05;
                q8_block(&mut rng, -127, 127, d)
            })
            .collect();
        block_case(&tiers, &w8, &w4, &a, false);
    }
}

#[test]
fn block_matvec_integer_sums_exact() {
    let tiers = simd_tiers();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    // 32 blocks of at most 32 x 128 x 127 keep every partial sum below 2^24.
    for nb in (0..=32).chain([1, 3, 31]) {
        let w8: Vec<BlockQ8_0> = (0..ROWS * nb)
            .map(|_| q8_block(&mut rng, -128, 127, 1.0))
            .collect();
        let w4: Vec<BlockQ4_0> = (0..ROWS * nb).map(|_| q4_block(&mut rng, 1.0)).collect();
        let a: Vec<BlockQ8_0> = (0..nb)
            .map(|_| q8_block(&mut rng, -127, 127, 1.0))
            .collect();
        block_case(&tiers, &w8, &w4, &a, true);
    }
}

#[test]
fn block_matvec_domain_boundaries_and_edge_scales() {
    let tiers = simd_tiers();
    let mut rng = Rng(7);
    for nb in [1usize, 2, 3, 5, 17, 32] {
        // Weight -128 and 127 against activations -127 and 127: the extremes of
        // the documented domains (maddubs pair sums reach 32512).
        for (wq, aq) in [(-128, -127), (-128, 127), (127, 127), (127, -127), (0, 127)] {
            let w8: Vec<BlockQ8_0> = (0..ROWS * nb)
                .map(|_| q8_block(&mut rng, wq, wq, 1.0))
                .collect();
            let w4: Vec<BlockQ4_0> = (0..ROWS * nb)
                .map(|i| {
                    let mut b = q4_block(&mut rng, 1.0);
                    // All nibbles 0 (-8) or 15 (+7).
                    b.qs = [if i % 2 == 0 { 0x00 } else { 0xFF }; QK / 2];
                    b
                })
                .collect();
            let a: Vec<BlockQ8_0> = (0..nb).map(|_| q8_block(&mut rng, aq, aq, 1.0)).collect();
            block_case(&tiers, &w8, &w4, &a, true);
        }
        // Scales: zero, largest finite f16, smallest subnormal f16, inf, NaN.
        for d in [0.0f32, 65504.0, 5.960_464_5e-8, f32::INFINITY, f32::NAN] {
            let w8: Vec<BlockQ8_0> = (0..ROWS * nb)
                .map(|_| q8_block(&mut rng, -128, 127, d))
                .collect();
            let w4: Vec<BlockQ4_0> = (0..ROWS * nb).map(|_| q4_block(&mut rng, d)).collect();
            let a: Vec<BlockQ8_0> = (0..nb)
                .map(|_| q8_block(&mut rng, -127, 127, 1.0))
                .collect();
            block_case(&tiers, &w8, &w4, &a, false);
            let a: Vec<BlockQ8_0> = (0..nb).map(|_| q8_block(&mut rng, -127, 127, d)).collect();
            block_case(&tiers, &w8, &w4, &a, false);
        }
    }
}

/// Normalised quantization error budgets (sum (x - dequant(quant(x)))^2 /
/// sum x^2 on uniform data in [-1, 1]): Q8_0's step is max/127, so the error is
/// about (1/127)^2/12 / (1/3) = 1.6e-5; Q4_0's step is max/8 (2.6e-3). Budgets are
/// twice those.
const Q8_0_NMSE_BUDGET: f64 = 3.2e-5;
const Q4_0_NMSE_BUDGET: f64 = 5.2e-3;
/// Error of the quantized dot product relative to the exact f32 dot product,
/// normalised by `|w| |x|` (ggml's MAX_DOT_PRODUCT_ERROR scaled to our types:
/// both operands quantized, errors add).
const Q8_0_DOT_BUDGET: f64 = 2e-3;
const Q4_0_DOT_BUDGET: f64 = 2e-2;

#[test]
fn quantizers_within_error_budget_three_way() {
    let mut rng = Rng(99);
    let n = 32 * 64;
    let x: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
    let y: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
    let nmse = |a: &[f32], b: &[f32]| {
        let e: f64 = a.iter().zip(b).map(|(p, q)| ((p - q) as f64).powi(2)).sum();
        e / a.iter().map(|p| (*p as f64).powi(2)).sum::<f64>()
    };
    let mut b8 = vec![BlockQ8_0::zeroed(); n / QK];
    let mut b4 = vec![BlockQ4_0::zeroed(); n / QK];
    let mut ay = vec![BlockQ8_0::zeroed(); n / QK];
    scalar::quantize_row_q8_0(&x, &mut b8);
    scalar::quantize_row_q4_0(&x, &mut b4);
    scalar::quantize_row_q8_0(&y, &mut ay);
    let mut back = vec![0.0f32; n];
    scalar::dequantize_row_q8_0(&b8, &mut back);
    let e8 = nmse(&x, &back);
    assert!(e8 <= Q8_0_NMSE_BUDGET, "q8_0 nmse {e8}");
    scalar::dequantize_row_q4_0(&b4, &mut back);
    let e4 = nmse(&x, &back);
    assert!(e4 <= Q4_0_NMSE_BUDGET, "q4_0 nmse {e4}");
    // Three ways: exact f64 dot of the f32 inputs, scalar quantized, each tier.
    let exact: f64 = x.iter().zip(&y).map(|(p, q)| *p as f64 * *q as f64).sum();
    let norm = (x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>()
        * y.iter().map(|p| (*p as f64).powi(2)).sum::<f64>())
    .sqrt();
    let mut all = vec![ember_kernels::arch::SCALAR];
    all.extend(simd_tiers());
    for k in all {
        let mut o = [0.0f32];
        (k.matvec_q8_0_q8_0)(&b8, &ay, &mut o);
        let e = (o[0] as f64 - exact).abs() / norm;
        assert!(e <= Q8_0_DOT_BUDGET, "{} q8_0 dot error {e}", k.tier.name());
        (k.matvec_q4_0_q8_0)(&b4, &ay, &mut o);
        let e = (o[0] as f64 - exact).abs() / norm;
        assert!(e <= Q4_0_DOT_BUDGET, "{} q4_0 dot error {e}", k.tier.name());
    }
}

#[test]
fn activation_quantizer_respects_domain() {
    let x: Vec<f32> = [1.0f32, -1.0, f32::NAN, 0.0, 1e-30, -3.4e38, 3.4e38]
        .into_iter()
        .cycle()
        .take(4 * QK)
        .collect();
    let mut b = vec![BlockQ8_0::zeroed(); 4];
    scalar::quantize_row_q8_0(&x, &mut b);
    for blk in &b {
        assert!((0..QK).all(|j| blk.q(j) != -128));
    }
    let z = vec![0.0f32; QK];
    let mut bz = [BlockQ8_0::zeroed()];
    scalar::quantize_row_q8_0(&z, &mut bz);
    assert_eq!(bz[0].scale(), 0.0);
    assert!(bz[0].qs.iter().all(|&q| q == 0));
}

#[test]
fn tier_selection() {
    assert_eq!(ember_kernels::arch::best_tier(Tier::Scalar), Tier::Scalar);
    for t in Tier::ALL {
        assert!(ember_kernels::arch::best_tier(t) <= t);
        assert_eq!(Tier::parse(t.name()), Some(t));
    }
    let k = ember_kernels::arch::kernels();
    assert!(kernels_for(k.tier).is_some());
}

/// Every tier's activation quantizer is bit-identical to scalar (scale bits and
/// quants): random magnitudes, exact rounding ties (a block whose maximum is
/// 127 has `d = 1`, so `k + 0.5` values are ties), zeros, NaN and infinities,
/// on misaligned inputs.
#[test]
fn activation_quantizer_tiers_are_bit_identical() {
    let tiers = simd_tiers();
    let mut rng = Rng(0x5EED);
    for nb in block_lengths() {
        let mut cases: Vec<Vec<f32>> = Vec::new();
        for scale in [1e-6f32, 0.37, 1.0, 250.0, 3e4] {
            cases.push((0..nb * QK).map(|_| rng.f32() * scale).collect());
        }
        cases.push(
            (0..nb * QK)
                .map(|i| match i % QK {
                    0 => 127.0,
                    j => (j as f32 - 16.0) + 0.5,
                })
                .collect(),
        );
        cases.push(vec![0.0; nb * QK]);
        cases.push(
            (0..nb * QK)
                .map(|i| match i % 7 {
                    0 => f32::NAN,
                    1 => f32::INFINITY,
                    2 => f32::NEG_INFINITY,
                    _ => rng.f32(),
                })
                .collect(),
        );
        cases.push(
            (0..nb * QK)
                .map(|i| if i % 5 == 0 { f32::NAN } else { rng.f32() })
                .collect(),
        );
        for x in cases {
            let (xm, off) = misaligned(&x);
            let xm = &xm[off..off + x.len()];
            let mut want = vec![BlockQ8_0::zeroed(); nb];
            scalar::quantize_row_q8_0(&x, &mut want);
            for k in &tiers {
                let mut got = vec![BlockQ8_0::zeroed(); nb];
                (k.quantize_row_q8_0)(xm, &mut got);
                assert_eq!(got, want, "{} quantize_row_q8_0 nb={nb}", k.tier.name());
            }
        }
    }
}
