//! Constants of the vectorised `exp` every SIMD tier implements (AVX2, AVX-512
//! and NEON share them, so the tiers differ only in how they scale by `2^n`).
//!
//! Algorithm (Cephes `expf`): clamp `x` to `[EXP_LO, EXP_HI]`, `n = round(x
//! log2(e))`, `r = x - n ln2` (with `ln2` split in two so `n * LN2_HI` is exact),
//! `exp(r) ~ 1 + r + r^2 P(r)` on `|r| <= ln2 / 2`, then `exp(x) = exp(r) 2^n`
//! with one rounding (the scaling is split in two exact powers of two, or
//! `vscalefps`, so results in the subnormal range round once too).
//!
//! Accuracy (measured by each tier's unit test against f64 `exp` on a dense
//! sweep of `[-87.3, 88.7]`): relative error at most `VEXP_MAX_REL_ERR` (2.5
//! units of `2^-24`, i.e. under 1.25 ulp); libm's `expf` is within one ulp. Below the normal
//! range results are subnormal with absolute error under `2^-149`; `exp(-inf)`
//! and inputs below `EXP_LO` give `+0`, inputs above `EXP_HI` and `+inf` give
//! `+inf`, NaN gives NaN.

/// Lower clamp: `exp(-104) < 2^-150`, which rounds to 0.
pub(crate) const EXP_LO: f32 = -104.0;
/// Upper clamp: `exp(89) > f32::MAX`, which rounds to +inf.
pub(crate) const EXP_HI: f32 = 89.0;
/// `log2(e)`.
pub(crate) const LOG2E: f32 = core::f32::consts::LOG2_E;
/// High part of `ln 2` (9 significant bits, so `n * LN2_HI` is exact for
/// `|n| <= 2^15`).
pub(crate) const LN2_HI: f32 = 0.693_359_4;
/// `ln 2 - LN2_HI`.
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes' minimax coefficients of `P`, highest degree first (the last one,
/// `5.0000001201e-1`, is 0.5 in f32).
pub(crate) const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];
/// Bound on the relative error of the vectorised `exp` for results in the
/// normal range, asserted by each tier's unit test: 2.5 units of `2^-24` (the
/// measured worst case of the FMA tiers is 8.3e-8, 1.4 units; the bound leaves
/// room for a tier that evaluates the polynomial without FMA).
pub const VEXP_MAX_REL_ERR: f64 = 2.5 * (f32::EPSILON as f64 / 2.0);

const _: () = assert!(LN2_HI.to_bits() == 0x3F31_8000, "LN2_HI is exactly 355/512");
