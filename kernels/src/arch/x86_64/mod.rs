//! x86-64 tiers. `Avx2Token` / `Avx512Token` are zero-sized proofs that the CPU
//! has a tier's features; the only way to get one is the detecting constructor,
//! and the tier tables (the only way to reach the `#[target_feature]` kernels)
//! require one.

use super::Kernels;

mod avx2;
mod avx512;
#[cfg(test)]
mod exp_check;

/// Proof that AVX2, FMA and F16C are available.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2Token(());

impl Avx2Token {
    pub(crate) fn new() -> Option<Self> {
        #[cfg(feature = "std")]
        let ok = std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c");
        #[cfg(not(feature = "std"))]
        let ok = cfg!(all(
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "f16c"
        ));
        ok.then_some(Self(()))
    }
}

/// Proof that the AVX2 features plus AVX-512 F, BW, VL and VNNI are available.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512Token(());

impl Avx512Token {
    pub(crate) fn new() -> Option<Self> {
        Avx2Token::new()?;
        #[cfg(feature = "std")]
        let ok = std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vnni");
        #[cfg(not(feature = "std"))]
        let ok = cfg!(all(
            target_feature = "avx512f",
            target_feature = "avx512bw",
            target_feature = "avx512vl",
            target_feature = "avx512vnni"
        ));
        ok.then_some(Self(()))
    }

    /// Every AVX-512 tier CPU has the AVX2 tier's features (checked in `new`).
    pub(crate) fn avx2(self) -> Avx2Token {
        Avx2Token(())
    }
}

pub(super) fn avx2_table() -> Option<Kernels> {
    Avx2Token::new().map(avx2::table)
}

pub(super) fn avx512_table() -> Option<Kernels> {
    Avx512Token::new().map(avx512::table)
}
