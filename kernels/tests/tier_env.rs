//! `EMBER_KERNEL_TIER` caps the tier chosen by `arch::kernels()`. The choice is
//! made once per process, so this file holds exactly one test, which sets the
//! variable before the first call.

use ember_kernels::arch::{kernels, Tier, TIER_ENV};

#[test]
fn env_var_forces_scalar() {
    std::env::set_var(TIER_ENV, "scalar");
    assert_eq!(kernels().tier, Tier::Scalar);
    // Cached: later changes have no effect.
    std::env::set_var(TIER_ENV, Tier::TOP.name());
    assert_eq!(kernels().tier, Tier::Scalar);
}
