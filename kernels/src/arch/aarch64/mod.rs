//! AArch64 tiers. `NeonToken` / `DotprodToken` / `I8mmToken` are zero-sized
//! proofs that the CPU has a tier's features; the only way to get one is the
//! detecting constructor, and the tier tables (the only way to reach the
//! `#[target_feature]` kernels) require one.
//!
//! NEON (Advanced SIMD) is part of the AArch64 baseline (Cortex-A53/A72: Pi 3,
//! Pi 4). The dotprod tier (`sdot`, Cortex-A76: Pi 5) is chosen only when the
//! CPU reports the feature: an A53/A72 executing `sdot` dies with SIGILL. The
//! i8mm tier (`smmla`: Neoverse V1/N2, Cortex-A710 and later; no Pi) needs
//! dotprod too, since its table is built from the dotprod one.
//!
//! What qemu 7.2's models report (`is_aarch64_feature_detected!`): cortex-a53
//! and cortex-a72 only neon; cortex-a76 neon, dotprod, fp16 (no fhm, no
//! i8mm); max all of them. There is no fp16 tier: see README, "Running on a
//! Raspberry Pi".

use super::Kernels;

mod dotprod;
mod i8mm;
mod neon;

/// Proof that Advanced SIMD (NEON) is available.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NeonToken(());

impl NeonToken {
    pub(crate) fn new() -> Option<Self> {
        #[cfg(feature = "std")]
        let ok = std::arch::is_aarch64_feature_detected!("neon");
        #[cfg(not(feature = "std"))]
        let ok = cfg!(target_feature = "neon");
        ok.then_some(Self(()))
    }
}

/// Proof that NEON and the dot-product instructions (`sdot`/`udot`) are available.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DotprodToken(NeonToken);

impl DotprodToken {
    pub(crate) fn new() -> Option<Self> {
        let neon = NeonToken::new()?;
        #[cfg(feature = "std")]
        let ok = std::arch::is_aarch64_feature_detected!("dotprod");
        #[cfg(not(feature = "std"))]
        let ok = cfg!(target_feature = "dotprod");
        ok.then_some(Self(neon))
    }

    /// Every dotprod CPU has NEON.
    pub(crate) fn neon(self) -> NeonToken {
        self.0
    }
}

/// Proof that NEON, dotprod and the int8 matrix-multiply instructions
/// (`smmla`) are available.
#[derive(Clone, Copy, Debug)]
pub(crate) struct I8mmToken(DotprodToken);

impl I8mmToken {
    pub(crate) fn new() -> Option<Self> {
        let dotprod = DotprodToken::new()?;
        #[cfg(feature = "std")]
        let ok = std::arch::is_aarch64_feature_detected!("i8mm");
        #[cfg(not(feature = "std"))]
        let ok = cfg!(target_feature = "i8mm");
        ok.then_some(Self(dotprod))
    }

    /// Every i8mm CPU this tier runs on has dotprod (checked by `new`).
    pub(crate) fn dotprod(self) -> DotprodToken {
        self.0
    }
}

pub(super) fn neon_table() -> Option<Kernels> {
    NeonToken::new().map(neon::table)
}

pub(super) fn dotprod_table() -> Option<Kernels> {
    DotprodToken::new().map(dotprod::table)
}

pub(super) fn i8mm_table() -> Option<Kernels> {
    I8mmToken::new().map(i8mm::table)
}
