#!/usr/bin/env bash
# Cross-builds Ember's test suites for aarch64-unknown-linux-gnu and runs them
# under qemu-aarch64 once per CPU model (Raspberry Pi 3/4: cortex-a53/a72,
# Pi 5: cortex-a76, and max), with EMBER_EXPECT_TIER set to the kernel tier
# that model must select. qemu enforces the model, so a dotprod kernel reached
# on an A53/A72 (or an i8mm one on an A76) dies with SIGILL. Suites that start
# the `ember` binary run the aarch64 one through EMBER_TEST_RUNNER=qemu-aarch64.
#
# What runs where. qemu's CPU models differ only in the features they
# report, so a suite's results can differ between models only through the
# kernel tier they select (A72 selects the same tier as A53), and on AArch64
# the tiers differ only in the kernels that read int8 or 4-bit weights (the
# kernel unit test `higher_tiers_share_neons_float_kernels` fails if a tier
# gains its own float kernel):
#   every model   kernel conformance (every tier against scalar) and tier
#                 selection, runtime unit tests, stories260K end to end (same
#                 text as on x86: ../shared/models/stories260K/
#                 expected_greedy_t0_n200.txt), CLI
#   each tier (A53 neon, A76 dotprod, max i8mm)  TIERED below: every other
#                 end-to-end suite, with quant_smollm2 (SmolLM2 at q8_0 through
#                 that tier's int8 kernels must answer with the x86 tokens),
#                 except the tests that take minutes on models with only f32
#                 or f16 weights (FLOAT_ONLY): they give the same results on
#                 every tier and run once
#   A72           FLOAT below: those f32/f16 suites and tests (SmolLM2's greedy
#                 answer, GGUF vs Hugging Face conversions with and without an
#                 adapter, sessions and context shifts on f32 stories260K,
#                 `ember finetune`), tokenizers, the `ember` binary's unit
#                 tests, the converter and train crates (unit and integration
#                 tests, including the trainer's gradient checks)
# Not built here: session_kv_quality and tokenizer_bench, whose only tests
# are #[ignore]d measurements (x86 skips them too).
# EMBER_TEST_EMULATED=1 makes the SmolLM2 checks that take many minutes of
# emulated compute (f32 perplexity, the iq4_nl and calibrated-q8_0 KLD, the
# rotated q8_0 conversion) skip with a message, and shortens the runs of the
# finetune SIGKILL/resume test; the native suite (scripts/test.sh) runs them
# in full.
# Needs the Debian cross toolchain (../shared/docs/AARCH64.md). Extra arguments
# are passed to every `cargo test`; those after a `--` to every test binary
# (e.g. `-- --nocapture`; a name filter there is exact in the runs that pass
# --exact).
set -euo pipefail
cd "$(dirname "$0")/.."

CROSS=(--config ci/cross-aarch64.toml)
# The caller's arguments: for cargo, and (after `--`) for the test binaries.
CARGO_ARGS=() TEST_ARGS=() seen_dashes=0
for a in "$@"; do
    if ((seen_dashes)); then TEST_ARGS+=("$a")
    elif [[ $a == -- ]]; then seen_dashes=1
    else CARGO_ARGS+=("$a"); fi
done
export EMBER_TEST_EMULATED=1
# CPU model -> expected tier (qemu 7.2: a53/a72 report only neon; a76 neon,
# dotprod, fp16; max also i8mm; see kernels/src/arch/aarch64/mod.rs).
MODELS=(cortex-a53:neon cortex-a72:neon cortex-a76:dotprod max:i8mm)

if [[ ! -f ../shared/models/stories260K/stories260K.bin ]]; then
    echo "error: ../shared/models/stories260K not found; the end-to-end test would skip" >&2
    exit 1
fi

# `xtest CARGO_TEST_ARGS... [-- HARNESS_ARGS...]`: cargo test for aarch64 with
# the caller's arguments added on both sides of the `--`.
xtest() {
    local own=() harness=() dashes=0
    for a in "$@"; do
        if ((dashes)); then harness+=("$a")
        elif [[ $a == -- ]]; then dashes=1
        else own+=("$a"); fi
    done
    cargo "${CROSS[@]}" test "${own[@]}" "${CARGO_ARGS[@]}" -- "${harness[@]}" "${TEST_ARGS[@]}"
}

run_all() {
    xtest -p ember-kernels
    xtest -p ember-runtime --lib
    xtest -p ember --test stories260k
    EMBER_TEST_RUNNER=qemu-aarch64 xtest -p ember --test cli
}

# Tests of TIERED suites whose models have only f32/f16 weights and which
# take minutes under qemu: run once, in run_float.
FLOAT_ONLY=(smollm2_gguf_and_hf_agree smollm2_adapter_agrees_on_gguf_and_hf_conversions)
# A renamed test would match no filter and silently run nowhere.
for t in "${FLOAT_ONLY[@]}"; do
    grep -q "^fn $t()" tests/hf_reference_logits.rs tests/lora_adapters.rs ||
        { echo "error: FLOAT_ONLY test $t not found" >&2; exit 1; }
done
TIERED=(--test format_errors --test no_alloc --test kernels_threads --test quant_gguf
        --test chat_template --test chat_cli --test tokenizer_cli --test quant_smollm2
        --test hf_reference_logits --test lora_adapters --test calibrate
        --test sliding_window_kv)
run_tiered() {
    local skip=()
    for t in "${FLOAT_ONLY[@]}"; do skip+=(--skip "$t"); done
    EMBER_TEST_RUNNER=qemu-aarch64 xtest -p ember "${TIERED[@]}" -- --exact "${skip[@]}"
}

FLOAT=(--test smollm2 --test session_api --test finetune_cli --test tokenizer_parity
       --test tokenizer_props --bins)
run_float() {
    EMBER_TEST_RUNNER=qemu-aarch64 xtest -p ember "${FLOAT[@]}"
    EMBER_TEST_RUNNER=qemu-aarch64 xtest -p ember --test hf_reference_logits \
        --test lora_adapters -- --exact "${FLOAT_ONLY[@]}"
    xtest -p ember-converter -p ember-train --lib --tests
}

start=$SECONDS
echo "== building (no run)"
cargo "${CROSS[@]}" test -p ember-kernels --no-run
cargo "${CROSS[@]}" test -p ember-runtime --lib --no-run
cargo "${CROSS[@]}" test -p ember --test stories260k --no-run
cargo "${CROSS[@]}" test -p ember --test cli --no-run
cargo "${CROSS[@]}" test -p ember "${TIERED[@]}" --no-run
cargo "${CROSS[@]}" test -p ember "${FLOAT[@]}" --no-run
cargo "${CROSS[@]}" test -p ember-converter -p ember-train --lib --tests --no-run
echo "== build: $((SECONDS - start)) s"

# Never let a caller's tier cap hide a wrong selection.
unset EMBER_KERNEL_TIER

# `run_model CPU TIER`: that CPU model's suites (see "What runs where").
run_model() {
    local cpu=$1 tier=$2 t0=$SECONDS
    echo "== QEMU_CPU=$cpu EMBER_EXPECT_TIER=$tier"
    QEMU_CPU=$cpu EMBER_EXPECT_TIER=$tier run_all
    if [[ $cpu == cortex-a72 ]]; then
        QEMU_CPU=$cpu EMBER_EXPECT_TIER=$tier run_float
    else
        QEMU_CPU=$cpu EMBER_EXPECT_TIER=$tier run_tiered
    fi
    echo "== QEMU_CPU=$cpu: ok in $((SECONDS - t0)) s"
}

# The A72's suites run beside the other models' (cargo holds its lock only
# while building): they are mostly one test, one emulated thread, at a time,
# so the two streams keep both cores busy. Each model runs in its own
# background subshell, where `set -e` stops it at its first failure (it would
# not inside `cmd || ...`); after a failure the script still waits for the
# A72 run, so nothing is left running.
for m in "${MODELS[@]}"; do [[ ${m%%:*} == cortex-a72 ]] && a72_tier=${m##*:}; done
a72_log=$(mktemp)
trap 'rm -f "$a72_log"' EXIT
(run_model cortex-a72 "$a72_tier") > "$a72_log" 2>&1 &
a72=$!
status=0
for m in "${MODELS[@]}"; do
    cpu=${m%%:*} tier=${m##*:}
    [[ $cpu == cortex-a72 ]] && continue
    (run_model "$cpu" "$tier") &
    wait $! || { status=1; echo "== QEMU_CPU=$cpu: FAILED"; break; }
done
wait $a72 || { status=1; echo "== QEMU_CPU=cortex-a72: FAILED (its log follows)"; }
cat "$a72_log"
if ((status)); then
    echo "== aarch64: failed after $((SECONDS - start)) s" >&2
    exit 1
fi
echo "== all aarch64 CPU models passed in $((SECONDS - start)) s"
