#!/usr/bin/env bash
# Writes the seed corpora of the fuzz targets (fuzz/, issue 24) into
# target/fuzz-seeds/<target>/ (or $EMBER_FUZZ_SEEDS), replacing what is there.
# The seeds are built from the real fixtures under tests/fixtures and, when
# present, ../shared's stories260K and Llama 2 tokenizer (read here, never
# copied into the repository); tests/fuzz_smoke.rs builds the same seeds.
# Stable Rust is enough.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --test fuzz_smoke --quiet -- --ignored --exact write_seeds --nocapture
