#!/usr/bin/env bash
# Cross-builds Ember's test suites for aarch64-unknown-linux-gnu and runs them
# under qemu-aarch64 once per CPU model (Raspberry Pi 3/4: cortex-a53/a72,
# Pi 5: cortex-a76, and max), with EMBER_EXPECT_TIER set to the kernel tier
# that model must select. qemu enforces the model, so a dotprod kernel reached
# on an A53/A72 (or an i8mm one on an A76) dies with SIGILL. Suites that start
# the `ember` binary run the aarch64 one through EMBER_TEST_RUNNER=qemu-aarch64.
#
# What runs where (the kernel tier decides; A72 selects the same tier as A53):
#   every model   kernel conformance (every tier against scalar), runtime unit
#                 tests, stories260K end to end (same text as on x86:
#                 ../shared/models/stories260K/expected_greedy_t0_n200.txt), CLI
#   once per tier (A53 neon, A76 dotprod, max i8mm)  EXTRA below, with
#                 quant_smollm2: SmolLM2 at q8_0 through that tier's int8
#                 kernels must answer with the x86 tokens
#   A72 only      TIER_FREE below: suites whose results no aarch64 tier
#                 changes (f32 runs on the NEON kernels on every model;
#                 tokenizers, converter and trainer are tier-independent code)
#   A76 only      ONCE below
# EMBER_TEST_EMULATED=1 makes the few SmolLM2 checks that take many minutes of
# emulated compute (f32 perplexity, the iq4_nl and calibrated-q8_0 KLD) skip
# with a message; the native suite (scripts/test.sh) runs them in full.
#
# Needs the Debian cross toolchain (../shared/docs/AARCH64.md). Extra arguments
# are passed to every `cargo test` (e.g. `-- --nocapture`).
set -euo pipefail
cd "$(dirname "$0")/.."

CROSS=(--config ci/cross-aarch64.toml)
export EMBER_TEST_EMULATED=1
# CPU model -> expected tier (qemu 7.2: a53/a72 report only neon; a76 neon,
# dotprod, fp16; max also i8mm; see kernels/src/arch/aarch64/mod.rs).
MODELS=(cortex-a53:neon cortex-a72:neon cortex-a76:dotprod max:i8mm)

if [[ ! -f ../shared/models/stories260K/stories260K.bin ]]; then
    echo "error: ../shared/models/stories260K not found; the end-to-end test would skip" >&2
    exit 1
fi

run_all() {
    cargo "${CROSS[@]}" test -p ember-kernels "$@"
    cargo "${CROSS[@]}" test -p ember-runtime --lib "$@"
    cargo "${CROSS[@]}" test -p ember --test stories260k "$@"
    EMBER_TEST_RUNNER=qemu-aarch64 cargo "${CROSS[@]}" test -p ember --test cli "$@"
}

# Further end-to-end suites (loader errors, sessions and context shift, zero
# allocations, threads and batched prefill bit-identity, GGUF block import, chat
# templates, `ember chat` / `ember tokenize` through qemu, quantized SmolLM2 and
# stories260K), run once per kernel tier (A53: neon, A76: dotprod, max: i8mm).
EXTRA=(--test format_errors --test session_api --test no_alloc --test kernels_threads
       --test quant_gguf --test chat_template --test chat_cli --test tokenizer_cli
       --test quant_smollm2)
run_extra() {
    EMBER_TEST_RUNNER=qemu-aarch64 cargo "${CROSS[@]}" test -p ember "${EXTRA[@]}" "$@"
}

# Tier-independent suites, run on the A72 only: SmolLM2 at f32 (the greedy
# answer), tokenizer parity and properties, the `ember` binary's unit tests, and
# the converter and train crates (unit and integration tests, including the
# trainer's gradient checks; they have no doctests). Not built here:
# session_kv_quality and tokenizer_bench, whose only tests are #[ignore]d
# measurements (x86 skips them too), and finetune_cli: three f32 trainings
# through `ember finetune` take about 7 minutes under qemu, which CI's time
# budget does not hold; the training arithmetic is the train crate's (run here)
# on the f32 kernels (conformance on every model, SmolLM2 f32 here).
TIER_FREE=(--test smollm2 --test tokenizer_parity --test tokenizer_props --bins)
run_tier_free() {
    EMBER_TEST_RUNNER=qemu-aarch64 cargo "${CROSS[@]}" test -p ember "${TIER_FREE[@]}" "$@"
    cargo "${CROSS[@]}" test -p ember-converter -p ember-train --lib --tests "$@"
}

# Run on the Pi 5's model only: tiny random Llama/Mistral/Qwen2 logits against
# transformers, LoRA adapters against PEFT (and merged into q8_0), calibrated
# quantization.
ONCE=(--test hf_reference_logits --test lora_adapters --test calibrate)
run_once() {
    EMBER_TEST_RUNNER=qemu-aarch64 cargo "${CROSS[@]}" test -p ember "${ONCE[@]}" "$@"
}

start=$SECONDS
echo "== building (no run)"
cargo "${CROSS[@]}" test -p ember-kernels --no-run
cargo "${CROSS[@]}" test -p ember-runtime --lib --no-run
cargo "${CROSS[@]}" test -p ember --test stories260k --no-run
cargo "${CROSS[@]}" test -p ember --test cli --no-run
cargo "${CROSS[@]}" test -p ember "${EXTRA[@]}" --no-run
cargo "${CROSS[@]}" test -p ember "${ONCE[@]}" --no-run
cargo "${CROSS[@]}" test -p ember "${TIER_FREE[@]}" --no-run
cargo "${CROSS[@]}" test -p ember-converter -p ember-train --lib --tests --no-run
echo "== build: $((SECONDS - start)) s"

# Never let a caller's tier cap hide a wrong selection.
unset EMBER_KERNEL_TIER
for m in "${MODELS[@]}"; do
    cpu=${m%%:*} tier=${m##*:}
    t0=$SECONDS
    echo "== QEMU_CPU=$cpu EMBER_EXPECT_TIER=$tier"
    QEMU_CPU=$cpu EMBER_EXPECT_TIER=$tier run_all "$@"
    if [[ $cpu != cortex-a72 ]]; then
        QEMU_CPU=$cpu EMBER_EXPECT_TIER=$tier run_extra "$@"
    fi
    if [[ $cpu == cortex-a72 ]]; then
        QEMU_CPU=$cpu EMBER_EXPECT_TIER=$tier run_tier_free "$@"
    fi
    if [[ $cpu == cortex-a76 ]]; then
        QEMU_CPU=$cpu EMBER_EXPECT_TIER=$tier run_once "$@"
    fi
    echo "== QEMU_CPU=$cpu: ok in $((SECONDS - t0)) s"
done
echo "== all aarch64 CPU models passed in $((SECONDS - start)) s"
