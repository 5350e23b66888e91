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

#[cfg(test)]
mod tests {
    use super::*;

    /// The addresses of a table's slots that do not read int8 or 4-bit
    /// weights (f32/f16 products, the activation quantizer and the rest of the
    /// forward pass). The exhaustive pattern makes a new slot a compile error
    /// here until it is sorted into one group or the other.
    fn float_slots(k: &Kernels) -> [usize; 17] {
        let Kernels {
            tier: _,
            matvec_f32_f32,
            matvec_f16_f32,
            matvec_q8_0_q8_0: _,
            matvec_q4_0_q8_0: _,
            matvec_q8_0x4_q8_0: _,
            matvec_q4_0x4_q8_0: _,
            matmul_q8_0x4_q8_0: _,
            matmul_q4_0x4_q8_0: _,
            matmul_f16_f32,
            matvec_iq4_nl_q8_0: _,
            matvec_iq4_nlx4_q8_0: _,
            matmul_iq4_nlx4_q8_0: _,
            quantize_row_q8_0,
            rmsnorm_f32,
            softmax_f32,
            silu_gate_f32,
            gelu_gate_f32,
            rope_f32,
            dot_f32,
            dot_f16_f32,
            axpy_f32,
            axpy_f16_f32,
            attend_f16,
            attend_f32,
            f16_to_f32,
            add_f32,
        } = *k;
        [
            matvec_f32_f32 as usize,
            matvec_f16_f32 as usize,
            matmul_f16_f32 as usize,
            quantize_row_q8_0 as usize,
            rmsnorm_f32 as usize,
            softmax_f32 as usize,
            silu_gate_f32 as usize,
            gelu_gate_f32 as usize,
            rope_f32 as usize,
            dot_f32 as usize,
            dot_f16_f32 as usize,
            axpy_f32 as usize,
            axpy_f16_f32 as usize,
            attend_f16 as usize,
            attend_f32 as usize,
            f16_to_f32 as usize,
            add_f32 as usize,
        ]
    }

    /// The dotprod and i8mm tables differ from NEON's only in the slots that
    /// read int8 or 4-bit weights: a model with f32 or f16 weights runs the
    /// same kernels on every AArch64 tier. scripts/test_aarch64.sh relies on
    /// this to run such suites on one CPU model only. A tier that gains its
    /// own float kernel fails here: move that slot out of `float_slots` and
    /// run the suites that use it on every tier in that script. (The tables
    /// are built with `..neon::table(..)`, so equal slots hold the same
    /// copied pointer.)
    #[test]
    fn higher_tiers_share_neons_float_kernels() {
        let neon = neon_table().expect("AArch64 has NEON");
        for table in [dotprod_table(), i8mm_table()].into_iter().flatten() {
            assert_eq!(
                float_slots(&table),
                float_slots(&neon),
                "{:?} has its own float kernel",
                table.tier
            );
        }
    }
}
