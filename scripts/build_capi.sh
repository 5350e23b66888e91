#!/usr/bin/env bash
# Builds Ember's static C library and installs it with its header and
# pkg-config file into a prefix:
#   <prefix>/include/ember.h  <prefix>/lib/libember.a  <prefix>/lib/pkgconfig/ember.pc
#
# Usage: scripts/build_capi.sh [--cross-aarch64] [--debug] [--prefix DIR]
#   --cross-aarch64  build for aarch64-unknown-linux-gnu with ci/cross-aarch64.toml
#                    (Debian's rustc + aarch64 std, see ../shared/docs/AARCH64.md)
#   --debug          the dev profile instead of release
#   --prefix DIR     install there (default target/capi/<host|aarch64>)
# Prints the prefix on the last line of stdout. Link a program with
#   cc app.c $(PKG_CONFIG_PATH=<prefix>/lib/pkgconfig pkg-config --cflags --libs --static ember)
# The shared library (libember.so) comes from `cargo build -p ember-capi --release`.
set -euo pipefail
cd "$(dirname "$0")/.."

cross=0 profile=release prefix=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cross-aarch64) cross=1 ;;
        --debug) profile=debug ;;
        --prefix) prefix="$2"; shift ;;
        *) echo "usage: $0 [--cross-aarch64] [--debug] [--prefix DIR]" >&2; exit 2 ;;
    esac
    shift
done

cargo_args=(rustc -p ember-capi --lib --crate-type staticlib)
[ "$profile" = release ] && cargo_args+=(--release)
if [ "$cross" = 1 ]; then
    config=(--config ci/cross-aarch64.toml)
    outdir="target/cross-aarch64/aarch64-unknown-linux-gnu/$profile"
    : "${prefix:=target/capi/aarch64}"
else
    config=()
    outdir="target/$profile"
    : "${prefix:=target/capi/host}"
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --print native-static-libs: the system libraries a static link needs.
if ! cargo "${config[@]}" "${cargo_args[@]}" -- --print native-static-libs 2>"$log"; then
    cat "$log" >&2
    exit 1
fi
libs=$(sed -n 's/.*native-static-libs: //p' "$log" | tail -n 1)
if [ -z "$libs" ]; then
    # Unchanged since the last build: cargo replays no output; use the recorded list.
    libs=$(cat "$outdir/ember-native-static-libs" 2>/dev/null || echo "-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc")
fi
echo "$libs" >"$outdir/ember-native-static-libs"

version=$(sed -n 's/^#define EMBER_VERSION "\(.*\)"/\1/p' include/ember.h)
mkdir -p "$prefix/include" "$prefix/lib/pkgconfig"
prefix=$(cd "$prefix" && pwd)
cp include/ember.h "$prefix/include/"
cp "$outdir/libember.a" "$prefix/lib/"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" -e "s|@LIBS_PRIVATE@|$libs|" \
    ember.pc.in >"$prefix/lib/pkgconfig/ember.pc"
echo "installed libember.a ($(du -k "$prefix/lib/libember.a" | cut -f1) KiB), ember.h, ember.pc into:" >&2
echo "$prefix"
