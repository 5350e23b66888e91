//! Kernel dispatch: the only place that asks which CPU this is.
//!
//! A `Kernels` table starts from the scalar reference kernels; each tier the CPU
//! supports overwrites the slots it improves. The CPU is probed once (with the
//! `std` feature; without it only tiers enabled at compile time, e.g. with
//! `-C target-cpu`, are used) and the table is cached. `EMBER_KERNEL_TIER=
//! scalar|avx2|avx512` (x86-64) or `scalar|neon|dotprod|i8mm` (AArch64) forces a lower
//! tier, so tests and benchmarks can run every tier on one machine; a tier the
//! CPU lacks is never selected.
//!
//! Safety by construction: a `#[target_feature]` kernel is reachable only through
//! a tier table, and a tier table can only be built from a token whose
//! constructor proved the features exist.

use half::f16;

use crate::blocks::{BlockIq4Nl, BlockQ4_0, BlockQ8_0};
use crate::scalar;

#[cfg(target_arch = "aarch64")]
mod aarch64;
pub mod vexp;
#[cfg(target_arch = "x86_64")]
mod x86_64;

/// Instruction-set tiers, lowest first within each architecture (the x86 and
/// ARM tiers are never compared with each other: `Tier::ALL` lists only the
/// running architecture's). New tiers are appended so names and order stay stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Portable reference kernels (`crate::scalar`).
    Scalar,
    /// x86-64 AVX2 + FMA + F16C (Haswell, Zen 1 and later).
    Avx2,
    /// x86-64 AVX-512 F/BW/VL + VNNI (Ice Lake, Zen 4 and later). CPUs with
    /// AVX-512 but no VNNI (Skylake-X) use the AVX2 tier.
    Avx512,
    /// AArch64 Advanced SIMD (NEON): the AArch64 baseline (Cortex-A53/A72:
    /// Raspberry Pi 3, 4). Int8 via widening multiply and pairwise add.
    Neon,
    /// AArch64 NEON + DotProd (`sdot`; Cortex-A76: Raspberry Pi 5).
    Dotprod,
    /// AArch64 NEON + DotProd + I8MM (`smmla` for the row-interleaved int8
    /// products; Neoverse V1/N2, Cortex-A710 and later).
    I8mm,
}

impl Tier {
    /// Every tier of the target architecture, lowest first (scalar first).
    #[cfg(target_arch = "x86_64")]
    pub const ALL: [Tier; 3] = [Tier::Scalar, Tier::Avx2, Tier::Avx512];
    /// Every tier of the target architecture, lowest first (scalar first).
    #[cfg(target_arch = "aarch64")]
    pub const ALL: [Tier; 4] = [Tier::Scalar, Tier::Neon, Tier::Dotprod, Tier::I8mm];
    /// Every tier of the target architecture, lowest first (scalar first).
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub const ALL: [Tier; 1] = [Tier::Scalar];

    /// The highest tier of the target architecture (the default cap).
    pub const TOP: Tier = Tier::ALL[Tier::ALL.len() - 1];

    /// The name used by `EMBER_KERNEL_TIER` and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Scalar => "scalar",
            Tier::Avx2 => "avx2",
            Tier::Avx512 => "avx512",
            Tier::Neon => "neon",
            Tier::Dotprod => "dotprod",
            Tier::I8mm => "i8mm",
        }
    }

    /// Parses the name of a tier of the target architecture (`scalar`, `avx2`,
    /// `avx512` on x86-64; `scalar`, `neon`, `dotprod`, `i8mm` on AArch64). Other
    /// architectures' tier names give `None`.
    pub fn parse(s: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// Matrix-vector product over f32 weights: `out = W x`, `W: [out.len(), x.len()]`.
pub type MatvecF32 = fn(&[f32], &[f32], &mut [f32]);
/// Matrix-vector product over f16 weights and f32 activations.
pub type MatvecF16 = fn(&[f16], &[f32], &mut [f32]);
/// Matrix-vector product over Q8_0 weights and Q8_0 activations
/// (`W: [out.len(), a.len() * QK]`; activation quants in -127..=127).
pub type MatvecQ8_0 = fn(&[BlockQ8_0], &[BlockQ8_0], &mut [f32]);
/// Matrix-vector product over Q4_0 weights and Q8_0 activations.
pub type MatvecQ4_0 = fn(&[BlockQ4_0], &[BlockQ8_0], &mut [f32]);
/// Matrix-matrix product over row-interleaved Q8_0 weights and `n` Q8_0
/// activation vectors `(w, a, n, out)`: `out: [n, rows]`, token-major.
pub type MatmulQ8_0 = fn(&[BlockQ8_0], &[BlockQ8_0], usize, &mut [f32]);
/// Like `MatmulQ8_0` for row-interleaved Q4_0 weights.
pub type MatmulQ4_0 = fn(&[BlockQ4_0], &[BlockQ8_0], usize, &mut [f32]);
/// Matrix-matrix product over a plain row-major f16 matrix and `n` f32
/// activation vectors `(w, x, n, out)`: `x: [n, cols]`, `out: [n, rows]`,
/// token-major; per token bit-identical to the same tier's `MatvecF16`.
pub type MatmulF16 = fn(&[f16], &[f32], usize, &mut [f32]);
/// Matrix-vector product over IQ4_NL weights (plain or row-interleaved) and
/// Q8_0 activations.
pub type MatvecIq4Nl = fn(&[BlockIq4Nl], &[BlockQ8_0], &mut [f32]);
/// Like `MatmulQ8_0` for row-interleaved IQ4_NL weights.
pub type MatmulIq4Nl = fn(&[BlockIq4Nl], &[BlockQ8_0], usize, &mut [f32]);
/// Activation quantizer `(x, blocks)`; every tier is bit-identical to scalar.
pub type QuantizeQ8_0 = fn(&[f32], &mut [BlockQ8_0]);

// Non-matvec slots (the rest of the forward pass; contracts: `crate::scalar`).
/// RMSNorm `(out, x, weight, eps)`.
pub type RmsnormF32 = fn(&mut [f32], &[f32], &[f32], f32);
/// In-place softmax.
pub type SoftmaxF32 = fn(&mut [f32]);
/// Gated activation `(gate, up)`: `gate = act(gate) * up`.
pub type GateF32 = fn(&mut [f32], &[f32]);
/// RoPE rotation `(x, head_dim, cos, sin, layout)` by a `rope_angles_f32` table.
pub type RopeF32 = fn(&mut [f32], usize, &[f32], &[f32], scalar::RopeLayout);
/// Dot product of two f32 rows.
pub type DotF32 = fn(&[f32], &[f32]) -> f32;
/// Dot product of an f16 row with an f32 row.
pub type DotF16F32 = fn(&[f16], &[f32]) -> f32;
/// `acc += scale * x` over f32.
pub type AxpyF32 = fn(&mut [f32], f32, &[f32]);
/// `acc += scale * x` with an f16 `x`.
pub type AxpyF16F32 = fn(&mut [f32], f32, &[f16]);
/// Attention of a group of query heads sharing one head of f16 keys and
/// values `(heads, q, k, v, stride, scale, scores, out)`: `scalar::attend_f16`.
pub type AttendF16 = fn(usize, &[f32], &[f16], &[f16], usize, f32, &mut [f32], &mut [f32]);
/// The same over f32 keys and values: `scalar::attend_f32`.
pub type AttendF32 = fn(usize, &[f32], &[f32], &[f32], usize, f32, &mut [f32], &mut [f32]);
/// f16 row to f32 `(src, dst)`.
pub type F16ToF32 = fn(&[f16], &mut [f32]);
/// Residual add `acc += x`.
pub type AddF32 = fn(&mut [f32], &[f32]);

/// A table of kernels for one tier. Every slot has the contract (shapes, value
/// domains, results) of the scalar kernel of the same name; float results may
/// differ from scalar only by summation order, except the kernels that use a
/// vectorised `exp` (softmax, SiLU, GELU; accuracy in `vexp`): those are within
/// the named tolerances of `kernels/tests/conformance_ops.rs`.
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    /// The tier this table was built for.
    pub tier: Tier,
    pub matvec_f32_f32: MatvecF32,
    pub matvec_f16_f32: MatvecF16,
    pub matvec_q8_0_q8_0: MatvecQ8_0,
    pub matvec_q4_0_q8_0: MatvecQ4_0,
    /// Q8_0 weights in the row-interleaved layout (`blocks::TILE_ROWS`).
    pub matvec_q8_0x4_q8_0: MatvecQ8_0,
    /// Q4_0 weights in the row-interleaved layout.
    pub matvec_q4_0x4_q8_0: MatvecQ4_0,
    /// Batched (prefill) products over the row-interleaved layouts.
    pub matmul_q8_0x4_q8_0: MatmulQ8_0,
    pub matmul_q4_0x4_q8_0: MatmulQ4_0,
    /// Batched (prefill) product over plain f16 matrices.
    pub matmul_f16_f32: MatmulF16,
    /// IQ4_NL weights: plain, row-interleaved, and the batched product.
    pub matvec_iq4_nl_q8_0: MatvecIq4Nl,
    pub matvec_iq4_nlx4_q8_0: MatvecIq4Nl,
    pub matmul_iq4_nlx4_q8_0: MatmulIq4Nl,
    pub quantize_row_q8_0: QuantizeQ8_0,
    pub rmsnorm_f32: RmsnormF32,
    pub softmax_f32: SoftmaxF32,
    pub silu_gate_f32: GateF32,
    pub gelu_gate_f32: GateF32,
    pub rope_f32: RopeF32,
    pub dot_f32: DotF32,
    pub dot_f16_f32: DotF16F32,
    pub axpy_f32: AxpyF32,
    pub axpy_f16_f32: AxpyF16F32,
    /// Fused attention over an f16 cache; bit-identical to
    /// `scalar::attend_with` over this table's `dot_f16_f32`, `softmax_f32`
    /// and `axpy_f16_f32`.
    pub attend_f16: AttendF16,
    /// Fused attention over f32 rows; bit-identical to `scalar::attend_with`
    /// over this table's `dot_f32`, `softmax_f32` and `axpy_f32`, and so to
    /// `attend_f16` over the same rows in f16 (widening is exact).
    pub attend_f32: AttendF32,
    pub f16_to_f32: F16ToF32,
    pub add_f32: AddF32,
}

/// The scalar table.
pub const SCALAR: Kernels = Kernels {
    tier: Tier::Scalar,
    matvec_f32_f32: scalar::matvec_f32_f32,
    matvec_f16_f32: scalar::matvec_f16_f32,
    matvec_q8_0_q8_0: scalar::matvec_q8_0_q8_0,
    matvec_q4_0_q8_0: scalar::matvec_q4_0_q8_0,
    matvec_q8_0x4_q8_0: scalar::matvec_q8_0x4_q8_0,
    matvec_q4_0x4_q8_0: scalar::matvec_q4_0x4_q8_0,
    matmul_q8_0x4_q8_0: scalar::matmul_q8_0x4_q8_0,
    matmul_q4_0x4_q8_0: scalar::matmul_q4_0x4_q8_0,
    matmul_f16_f32: scalar::matmul_f16_f32,
    matvec_iq4_nl_q8_0: scalar::matvec_iq4_nl_q8_0,
    matvec_iq4_nlx4_q8_0: scalar::matvec_iq4_nlx4_q8_0,
    matmul_iq4_nlx4_q8_0: scalar::matmul_iq4_nlx4_q8_0,
    quantize_row_q8_0: scalar::quantize_row_q8_0,
    rmsnorm_f32: scalar::rmsnorm_f32,
    softmax_f32: scalar::softmax_f32,
    silu_gate_f32: scalar::silu_gate_f32,
    gelu_gate_f32: scalar::gelu_gate_f32,
    rope_f32: scalar::rope_f32,
    dot_f32: scalar::dot_f32,
    dot_f16_f32: scalar::dot_f16_f32,
    axpy_f32: scalar::axpy_f32,
    axpy_f16_f32: scalar::axpy_f16_f32,
    attend_f16: scalar::attend_f16,
    attend_f32: scalar::attend_f32,
    f16_to_f32: scalar::f16_to_f32,
    add_f32: scalar::add_f32,
};

/// The table for `tier` if this CPU supports it, else `None`. Probes the CPU on
/// every call; use `kernels()` on hot paths.
pub fn kernels_for(tier: Tier) -> Option<Kernels> {
    match tier {
        Tier::Scalar => Some(SCALAR),
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2 => x86_64::avx2_table(),
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512 => x86_64::avx512_table(),
        #[cfg(target_arch = "aarch64")]
        Tier::Neon => aarch64::neon_table(),
        #[cfg(target_arch = "aarch64")]
        Tier::Dotprod => aarch64::dotprod_table(),
        #[cfg(target_arch = "aarch64")]
        Tier::I8mm => aarch64::i8mm_table(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The tiers this CPU supports, lowest first.
pub fn available_tiers() -> impl Iterator<Item = Tier> {
    Tier::ALL.into_iter().filter(|&t| kernels_for(t).is_some())
}

/// The best supported tier at or below `limit`.
pub fn best_tier(limit: Tier) -> Tier {
    available_tiers()
        .filter(|&t| t <= limit)
        .last()
        .unwrap_or(Tier::Scalar)
}

/// Environment variable that caps the tier (a `Tier::name` of this architecture).
pub const TIER_ENV: &str = "EMBER_KERNEL_TIER";

/// The process-wide kernel table: chosen once (best supported tier, capped by
/// `EMBER_KERNEL_TIER`), then cached. An unknown value of the variable is
/// ignored (the cap is the best tier).
#[cfg(feature = "std")]
pub fn kernels() -> Kernels {
    static TABLE: std::sync::OnceLock<Kernels> = std::sync::OnceLock::new();
    *TABLE.get_or_init(|| {
        let limit = std::env::var(TIER_ENV)
            .ok()
            .and_then(|v| Tier::parse(v.trim()))
            .unwrap_or(Tier::TOP);
        kernels_for(best_tier(limit)).unwrap_or(SCALAR)
    })
}

/// The kernel table (without `std`: the best tier enabled at compile time, e.g.
/// with `-C target-cpu`; chosen on every call, which costs only a few branches).
#[cfg(not(feature = "std"))]
pub fn kernels() -> Kernels {
    kernels_for(best_tier(Tier::TOP)).unwrap_or(SCALAR)
}
