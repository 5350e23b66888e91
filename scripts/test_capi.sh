#!/usr/bin/env bash
# End-to-end test of the C API (issue 7):
#  1. builds libember.a + ember.h + ember.pc (scripts/build_capi.sh);
#  2. compiles ember.h as C99 (-Wall -Wextra -Werror -pedantic) and as C++;
#  3. checks that the functions declared in ember.h and the ember_* symbols
#     exported by libember.a are the same set;
#  4. compiles examples/c with a plain `cc` line via pkg-config and with CMake;
#  5. runs generate and chat on stories260K and compares their text with
#     `ember run` / `ember chat` (greedy), and runs the misuse test;
#  6. runs all three under valgrind (no errors, no leaks);
#  7. reports the size of libember.a and of a stripped, statically linked generate;
#  8. if the aarch64 toolchain is installed (see ../shared/docs/AARCH64.md):
#     builds the Raspberry Pi artefacts with scripts/build_aarch64.sh (the
#     `ember` CLI and libember.a + ember.h + ember.pc in one prefix); under
#     qemu-aarch64 runs `ember --version`, converts stories260K (the same bytes
#     as the x86 conversion) and generates 200 greedy tokens on a Cortex-A72
#     (llama2.c's text, expected_greedy_t0_n200.txt); links the examples
#     against that libember.a through its ember.pc with aarch64-linux-gnu-gcc
#     and runs them, expecting the same text as on x86.
# Needs: cargo, cc, c++, pkg-config, cmake, valgrind (steps are skipped with a
# message when cmake / valgrind / the aarch64 toolchain are missing, unless
# EMBER_CAPI_STRICT=1). Models: ../shared/models/stories260K (or EMBER_SHARED).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
strict=${EMBER_CAPI_STRICT:-0}
shared=${EMBER_SHARED:-$root/../shared}
stories=$shared/models/stories260K
work=$root/target/capi/test
rm -rf "$work" && mkdir -p "$work/scratch"
fails=0

step() { echo; echo "== $*"; }
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
skip() {
    if [ "$strict" = 1 ]; then bad "$* (EMBER_CAPI_STRICT=1)"; else echo "skipping: $*"; fi
}
have() { command -v "$1" >/dev/null 2>&1; }

step "build libember.a"
prefix=$(scripts/build_capi.sh | tail -n 1)
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
lib=$prefix/lib/libember.a
ok "installed into $prefix"

step "header: C99 and C++"
printf '#include "ember.h"\nint main(void) { return ember_abi_version() == EMBER_ABI_VERSION ? 0 : 1; }\n' \
    >"$work/header.c"
if cc -std=c99 -Wall -Wextra -Werror -pedantic -I include -fsyntax-only "$work/header.c"; then
    ok "cc -std=c99 -Wall -Wextra -Werror -pedantic"
else bad "ember.h as C99"; fi
if g++ -x c++ -std=c++11 -Wall -Wextra -Werror -pedantic -I include -fsyntax-only "$work/header.c"; then
    ok "g++ -x c++ -std=c++11 -Wall -Wextra -Werror -pedantic"
else bad "ember.h as C++"; fi

step "header <-> library symbols"
# Declarations: `ember_xxx(` outside comments, minus the callback typedef.
sed -e 's#/\*.*\*/##g' -e '/\/\*/,/\*\//d' include/ember.h |
    grep -oE '\bember_[a-z0-9_]+\s*\(' | sed 's/\s*(//' | sort -u >"$work/header.syms"
nm -g --defined-only "$lib" 2>/dev/null | awk '$2 == "T" && $3 ~ /^ember_/ {print $3}' |
    sort -u >"$work/lib.syms"
if diff -u "$work/header.syms" "$work/lib.syms"; then
    ok "$(wc -l <"$work/header.syms") functions, same set"
else bad "ember.h and libember.a disagree (- header only, + library only)"; fi

step "examples: plain cc via pkg-config"
bin=$work/bin && mkdir -p "$bin"
for ex in generate chat misuse; do
    # shellcheck disable=SC2046
    cc -std=c99 -O2 -g -Wall -Wextra -Werror -o "$bin/$ex" "examples/c/$ex.c" \
        $(pkg-config --cflags --libs --static ember)
done
ok "cc -std=c99 ... \$(pkg-config --cflags --libs --static ember)"

step "examples: CMake"
if have cmake; then
    cmake -S examples/c -B "$work/cmake" -DCMAKE_BUILD_TYPE=Release >"$work/cmake.log" 2>&1 &&
        cmake --build "$work/cmake" >>"$work/cmake.log" 2>&1 &&
        ok "cmake build" || { cat "$work/cmake.log"; bad "CMake build"; }
else skip "cmake not installed"; fi

if [ ! -f "$stories/stories260K.bin" ]; then
    skip "$stories not found: no run checks"
    [ "$fails" = 0 ] && exit 0 || exit 1
fi

step "reference text from the ember CLI"
cargo build -q -p ember --bin ember
ember=$root/target/debug/ember
model=$work/stories.ember
"$ember" convert "$stories/stories260K.bin" --tokenizer "$stories/tok512.bin" -o "$model" >/dev/null 2>&1
prompts=("Once upon a time" "" "The little dog")
for i in "${!prompts[@]}"; do
    "$ember" run -m "$model" -p "${prompts[$i]}" -n 60 >"$work/ref$i.txt" 2>/dev/null
done
printf 'Tell me a story\n\nAbout a cat\nAnd a dog\n' >"$work/chat_in.txt"
"$ember" chat -m "$model" --template chatml -n 30 <"$work/chat_in.txt" >"$work/chat_ref.txt" 2>/dev/null
ok "ember run / ember chat"

# run_checks LABEL RUNNER BINDIR: generate (3 prompts, 3 loading modes), chat, misuse.
run_checks() {
    local label=$1 runner=$2 dir=$3 i mode
    for i in "${!prompts[@]}"; do
        for mode in "" "--buffer" "--arena"; do
            # shellcheck disable=SC2086
            if $runner "$dir/generate" -m "$model" -p "${prompts[$i]}" -n 60 $mode \
                >"$work/out.txt" 2>"$work/err.txt" && cmp -s "$work/out.txt" "$work/ref$i.txt"; then :
            else
                bad "$label generate prompt '${prompts[$i]}' $mode differs from ember run"
                diff "$work/ref$i.txt" "$work/out.txt" | head -5 || true
                cat "$work/err.txt"
            fi
        done
    done
    ok "$label generate == ember run ($(tail -n1 "$work/err.txt"))"
    # shellcheck disable=SC2086
    if $runner "$dir/chat" -m "$model" --template chatml -n 30 <"$work/chat_in.txt" \
        >"$work/chat_out.txt" && cmp -s "$work/chat_out.txt" "$work/chat_ref.txt"; then
        ok "$label chat == ember chat"
    else bad "$label chat differs from ember chat"; fi
    # shellcheck disable=SC2086
    if $runner "$dir/misuse" "$model" "$work/scratch" >/dev/null; then ok "$label misuse"
    else bad "$label misuse"; fi
}

step "run on x86_64"
run_checks "cc" "" "$bin"
[ -x "$work/cmake/generate" ] && run_checks "cmake" "" "$work/cmake"

step "valgrind"
if have valgrind; then
    vg="valgrind -q --leak-check=full --error-exitcode=1 --suppressions=$root/examples/c/valgrind.supp"
    run_checks "valgrind" "$vg" "$bin"
else skip "valgrind not installed"; fi

step "sizes"
cp "$bin/generate" "$work/generate.stripped" && strip "$work/generate.stripped"
a_bytes=$(stat -c %s "$lib")
g_bytes=$(stat -c %s "$work/generate.stripped")
echo "libember.a (release): $a_bytes bytes ($((a_bytes / 1024)) KiB)"
echo "generate, static libember, stripped: $g_bytes bytes ($((g_bytes / 1024)) KiB)"
# shellcheck disable=SC2046
cc -std=c99 -O2 -o "$work/generate.gc" examples/c/generate.c \
    $(pkg-config --cflags --libs --static ember) -Wl,--gc-sections -s
gc_bytes=$(stat -c %s "$work/generate.gc")
echo "generate, static libember, -Wl,--gc-sections, stripped: $gc_bytes bytes ($((gc_bytes / 1024)) KiB)"
[ "$g_bytes" -lt $((5 * 1024 * 1024)) ] && ok "stripped generate < 5 MB" || bad "stripped generate >= 5 MB"

step "aarch64 (cross-compiled, qemu)"
# aarch64_checks PREFIX: the artefacts scripts/build_aarch64.sh installed there.
aarch64_checks() {
    local xprefix=$1 xember=$1/bin/ember xbin=$work/bin-aarch64 ex t0=$SECONDS
    if qemu-aarch64 "$xember" --version >"$work/out.txt" 2>"$work/err.txt"; then
        ok "qemu-aarch64 bin/ember --version: $(cat "$work/out.txt")"
    else bad "qemu-aarch64 bin/ember --version"; cat "$work/err.txt"; fi
    local xmodel=$work/stories-aarch64.ember expected=$stories/expected_greedy_t0_n200.txt
    if QEMU_CPU=cortex-a72 qemu-aarch64 "$xember" convert "$stories/stories260K.bin" \
        --tokenizer "$stories/tok512.bin" -o "$xmodel" >"$work/err.txt" 2>&1; then
        cmp -s "$xmodel" "$model" && ok "aarch64 ember convert == x86 ember convert (bytes)" ||
            bad "stories260K converted by the aarch64 ember differs from the x86 conversion"
        if [ ! -f "$expected" ]; then
            skip "$expected not found: no aarch64 greedy check"
        # `ember run` ends the text with a newline, as llama2.c does.
        elif QEMU_CPU=cortex-a72 qemu-aarch64 "$xember" run -m "$xmodel" -n 200 \
            >"$work/out.txt" 2>"$work/err.txt" &&
            { cat "$expected"; echo; } | cmp -s - "$work/out.txt"; then
            ok "qemu-aarch64 (cortex-a72) ember run -n 200 == llama2.c greedy text"
        else
            bad "qemu-aarch64 (cortex-a72) ember run -n 200 differs from $expected"
            { cat "$expected"; echo; } | diff - "$work/out.txt" | head -5 || true
            cat "$work/err.txt"
        fi
    else bad "qemu-aarch64 bin/ember convert stories260K"; cat "$work/err.txt"; fi
    echo "time: aarch64 ember checks $((SECONDS - t0)) s"
    t0=$SECONDS
    mkdir -p "$xbin"
    for ex in generate chat misuse; do
        # shellcheck disable=SC2046
        aarch64-linux-gnu-gcc -std=c99 -O2 -Wall -Wextra -Werror -o "$xbin/$ex" "examples/c/$ex.c" \
            $(PKG_CONFIG_PATH=$xprefix/lib/pkgconfig pkg-config --cflags --libs --static ember) ||
            { bad "aarch64-linux-gnu-gcc examples/c/$ex.c + $xprefix/lib/libember.a"; return; }
    done
    ok "aarch64-linux-gnu-gcc + $xprefix/lib/libember.a ($(stat -c %s "$xprefix/lib/libember.a") bytes)"
    for cpu in cortex-a53 cortex-a72 cortex-a76; do
        QEMU_CPU=$cpu run_checks "qemu-aarch64 ($cpu)" "qemu-aarch64 -cpu $cpu" "$xbin"
    done
    echo "time: aarch64 C examples $((SECONDS - t0)) s"
}
if ! have qemu-aarch64; then
    skip "qemu-aarch64 not installed (qemu-user)"
elif ! scripts/build_aarch64.sh --check 2>"$work/err.txt"; then
    skip "$(cat "$work/err.txt")"
else
    t0=$SECONDS
    if xprefix=$(scripts/build_aarch64.sh --prefix "$work/aarch64" | tail -n 1); then
        ok "scripts/build_aarch64.sh into $xprefix"
        echo "time: scripts/build_aarch64.sh $((SECONDS - t0)) s"
        aarch64_checks "$xprefix"
    else bad "scripts/build_aarch64.sh"; fi
fi

echo
if [ "$fails" = 0 ]; then echo "test_capi: all checks passed"; else echo "test_capi: $fails failure(s)"; exit 1; fi
