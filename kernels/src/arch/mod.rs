//! Kernel dispatch: the only place that asks which CPU this is.
//!
//! A `Kernels` table starts from the scalar reference kernels; each tier the CPU
//! supports overwrites the slots it improves. The CPU is probed once (with the
//! `std` feature; without it only tiers enabled at compile time, e.g. with
//! `-C target-cpu`, are used) and the table is cached. `EMBER_KERNEL_TIER=
//! scalar|avx2|avx512` (x86-64) or `scalar|neon|dotprod` (AArch64) forces a lower
//! tier, so tests and benchmarks can run every tier on one machine; a tier the
//! CPU lacks is never selected.
//!
//! Safety by construction: a `#[target_feature]` kernel is reachable only through
//! a tier table, and a tier table can only be built from a token whose
//! constructor proved the features exist.

use half::f16;

use crate::blocks::{BlockQ4_0, BlockQ8_0};
use crate::scalar;

#[cfg(target_arch = "aarch64")]
mod aarch64;
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
}

impl Tier {
    /// Every tier of the target architecture, lowest first (scalar first).
    #[cfg(target_arch = "x86_64")]
    pub const ALL: [Tier; 3] = [Tier::Scalar, Tier::Avx2, Tier::Avx512];
    /// Every tier of the target architecture, lowest first (scalar first).
    #[cfg(target_arch = "aarch64")]
    pub const ALL: [Tier; 3] = [Tier::Scalar, Tier::Neon, Tier::Dotprod];
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
        }
    }

    /// Parses the name of a tier of the target architecture (`scalar`, `avx2`,
    /// `avx512` on x86-64; `scalar`, `neon`, `dotprod` on AArch64). Other
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

/// A table of kernels for one tier. Every slot has the contract (shapes, value
/// domains, results) of the scalar kernel of the same name; float results may
/// differ from scalar only by summation order.
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    /// The tier this table was built for.
    pub tier: Tier,
    pub matvec_f32_f32: MatvecF32,
    pub matvec_f16_f32: MatvecF16,
    pub matvec_q8_0_q8_0: MatvecQ8_0,
    pub matvec_q4_0_q8_0: MatvecQ4_0,
}

/// The scalar table.
pub const SCALAR: Kernels = Kernels {
    tier: Tier::Scalar,
    matvec_f32_f32: scalar::matvec_f32_f32,
    matvec_f16_f32: scalar::matvec_f16_f32,
    matvec_q8_0_q8_0: scalar::matvec_q8_0_q8_0,
    matvec_q4_0_q8_0: scalar::matvec_q4_0_q8_0,
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
