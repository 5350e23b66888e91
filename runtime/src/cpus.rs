//! How many threads to use by default: one per physical core this process may
//! run on. Hyper-threads share a core's SIMD units and memory port, so a second
//! thread per core adds little to matrix-vector products and costs latency.

use std::collections::BTreeSet;
use std::path::Path;

/// Logical CPUs this process may run on (affinity and cgroup quotas included), at least 1.
pub fn logical_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Physical cores this process may run on, at least 1: the logical CPUs
/// scaled by the machine's cores-per-CPU ratio (Linux sysfs topology); where
/// the topology cannot be read, the logical count.
pub fn physical_cores() -> usize {
    let logical = logical_cpus();
    match sysfs_topology(Path::new("/sys/devices/system/cpu")) {
        Some((cpus, cores)) if cpus > 0 && cores > 0 && cores <= cpus => {
            // Rounded up: an affinity set of 3 logical CPUs on a 2-way SMT
            // machine spans at least 2 cores.
            (logical * cores).div_ceil(cpus).max(1)
        }
        _ => logical,
    }
}

/// The default worker-thread count of sessions and commands: [`physical_cores`].
pub fn default_threads() -> usize {
    physical_cores()
}

/// `(logical CPUs, distinct (package, core) pairs)` listed under `root`
/// (`cpuN/topology/{physical_package_id,core_id}`), or `None` if unreadable.
fn sysfs_topology(root: &Path) -> Option<(usize, usize)> {
    let mut cpus = 0;
    let mut cores = BTreeSet::new();
    for entry in std::fs::read_dir(root).ok()?.flatten() {
        let name = entry.file_name();
        let name = name.to_str().unwrap_or_default();
        let is_cpu = name
            .strip_prefix("cpu")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_cpu {
            continue;
        }
        let read = |f: &str| -> Option<String> {
            let text = std::fs::read_to_string(entry.path().join("topology").join(f)).ok()?;
            Some(text.trim().to_string())
        };
        // Offline CPUs have no topology directory: not counted.
        let (Some(package), Some(core)) = (read("physical_package_id"), read("core_id")) else {
            continue;
        };
        cpus += 1;
        cores.insert((package, core));
    }
    Some((cpus, cores.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_cpu(root: &Path, n: usize, package: u32, core: u32) {
        let dir = root.join(format!("cpu{n}/topology"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("physical_package_id"), format!("{package}\n")).unwrap();
        std::fs::write(dir.join("core_id"), format!("{core}\n")).unwrap();
    }

    #[test]
    fn smt_siblings_count_as_one_core() {
        let dir = std::env::temp_dir().join(format!("ember-cpus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // 2 packages x 2 cores x 2 threads, plus entries that are not CPUs.
        let mut n = 0;
        for package in 0..2 {
            for core in 0..2 {
                for _ in 0..2 {
                    fake_cpu(&dir, n, package, core);
                    n += 1;
                }
            }
        }
        std::fs::create_dir_all(dir.join("cpufreq")).unwrap();
        std::fs::create_dir_all(dir.join("cpu9")).unwrap(); // offline: no topology
        assert_eq!(sysfs_topology(&dir), Some((8, 4)));
        assert_eq!(sysfs_topology(&dir.join("missing")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn counts_are_positive_and_consistent() {
        let (l, p) = (logical_cpus(), physical_cores());
        assert!(p >= 1 && p <= l, "physical {p}, logical {l}");
        assert_eq!(default_threads(), p);
    }
}
