//! Which tier each CPU selects. CI runs the suite under qemu with one CPU model
//! per job and sets `EMBER_EXPECT_TIER` to the tier that model must select
//! (`neon` for cortex-a53/a72, `dotprod` for cortex-a76, `i8mm` for max): a tier the CPU
//! lacks must never be chosen, and the best tier it has must not be left unused.
//! Without the variable this checks only the invariants every CPU satisfies.

use ember_kernels::arch::{available_tiers, best_tier, kernels, kernels_for, Tier, TIER_ENV};

/// Environment variable naming the tier this CPU must select (a `Tier::name`).
const EXPECT_ENV: &str = "EMBER_EXPECT_TIER";

#[test]
fn best_tier_is_the_expected_one() {
    let best = best_tier(Tier::TOP);
    let avail: Vec<&str> = available_tiers().map(Tier::name).collect();
    eprintln!("available tiers: {avail:?}, best: {}", best.name());
    assert!(kernels_for(best).is_some());
    assert_eq!(Tier::ALL[0], Tier::Scalar);
    assert!(Tier::ALL.windows(2).all(|p| p[0] < p[1]), "ALL is sorted");
    let Ok(want) = std::env::var(EXPECT_ENV) else {
        eprintln!("{EXPECT_ENV} not set: no expectation to check");
        return;
    };
    let want = Tier::parse(want.trim())
        .unwrap_or_else(|| panic!("{EXPECT_ENV}={want:?} is not a tier of this architecture"));
    assert_eq!(best, want, "best available tier on this CPU");
    // Nothing above the expected tier is available (so it can never be picked).
    for t in Tier::ALL.into_iter().filter(|&t| t > want) {
        assert!(
            kernels_for(t).is_none(),
            "{} must not be available",
            t.name()
        );
    }
    // The cached process-wide choice agrees unless a cap forces it lower.
    if std::env::var_os(TIER_ENV).is_none() {
        assert_eq!(kernels().tier, want);
    }
}

#[test]
fn every_available_tier_can_be_forced() {
    // `EMBER_KERNEL_TIER=<t>` selects `best_tier(t)`: `t` itself when the CPU
    // has it (so e.g. `neon` runs the NEON kernels on a dotprod CPU), never more.
    for t in Tier::ALL {
        let b = best_tier(t);
        assert!(b <= t);
        assert_eq!(kernels_for(t).is_some(), b == t, "{}", t.name());
    }
}
