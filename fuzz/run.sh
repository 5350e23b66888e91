#!/usr/bin/env bash
# Long run of one fuzz target with cargo-fuzz (nightly): fuzz/run.sh TARGET [RUNS]
#
# Builds the seeds if missing (scripts/fuzz_seeds.sh), then runs libFuzzer on
# one core with a 2 GiB RSS limit and a 10 s per-input timeout until RUNS
# inputs (default 10,000,000) have run. New inputs go to
# target/fuzz-corpus/TARGET (later runs continue from it), crashes to
# fuzz/artifacts/TARGET, the log to target/fuzz-logs/TARGET-TIME.log. Scratch files go to $TMPDIR (default /dev/shm,
# where the converter's fsync costs nothing).
#
# The targets that run the forward pass (SIMD kernels, the loader's memory
# map: the crate's unsafe code) are built with AddressSanitizer; the others
# run only safe Rust, where it finds nothing, and are built without it for
# speed. Debug assertions and overflow checks are on in both.
# $FUZZ_SANITIZER overrides (address or none); $FUZZ_FLAGS adds libFuzzer flags.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: fuzz/run.sh TARGET [RUNS]}
runs=${2:-10000000}
case $target in
    ember_load | session_state | peft) sanitizer=address ;;
    *) sanitizer=none ;;
esac
sanitizer=${FUZZ_SANITIZER:-$sanitizer}
target_dir=target
[[ $sanitizer == address ]] || target_dir=target/nosan
[[ -d target/fuzz-seeds/$target ]] || scripts/fuzz_seeds.sh
mkdir -p "target/fuzz-corpus/$target" target/fuzz-logs
export TMPDIR=${TMPDIR:-/dev/shm}
cd fuzz
# shellcheck disable=SC2086
cargo +nightly fuzz run -s "$sanitizer" --target-dir "$target_dir" "$target" \
    "../target/fuzz-corpus/$target" "../target/fuzz-seeds/$target" -- \
    -runs="$runs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    ${FUZZ_FLAGS:-} 2>&1 | tee "../target/fuzz-logs/$target-$(date -u +%Y%m%dT%H%M%S).log"
