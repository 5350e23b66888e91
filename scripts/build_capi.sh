#!/usr/bin/env bash
# Builds Ember's static C library and installs it with its header and
# pkg-config file into a prefix:
#   <prefix>/include/ember.h  <prefix>/lib/libember.a  <prefix>/lib/pkgconfig/ember.pc
#
# Usage: scripts/build_capi.sh [--cross-aarch64] [--debug] [--with-cli] [--prefix DIR]
#   --cross-aarch64  build for aarch64-unknown-linux-gnu with ci/cross-aarch64.toml
#                    (Debian's rustc + aarch64 std, see ../shared/docs/AARCH64.md)
#   --debug          the dev profile instead of release
#   --with-cli       also build the `ember` CLI, in the same cargo run, and
#                    install it as <prefix>/bin/ember (scripts/build_aarch64.sh)
#   --prefix DIR     install there (default target/capi/<host|aarch64>)
# Prints the prefix on the last line of stdout. Link a program with
#   cc app.c $(PKG_CONFIG_PATH=<prefix>/lib/pkgconfig pkg-config --cflags --libs --static ember)
# The shared library (libember.so) comes from `cargo build -p ember-capi --release`.
set -euo pipefail
cd "$(dirname "$0")/.."

cross=0 profile=release prefix="" cli=0
while [ $# -gt 0 ]; do
    case "$1" in
        --cross-aarch64) cross=1 ;;
        --debug) profile=debug ;;
        --with-cli) cli=1 ;;
        --prefix) prefix="$2"; shift ;;
        *) echo "usage: $0 [--cross-aarch64] [--debug] [--with-cli] [--prefix DIR]" >&2; exit 2 ;;
    esac
    shift
done

release=()
[ "$profile" = release ] && release=(--release)
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
if [ "$cli" = 1 ]; then
    # One feature resolution for both packages: built apart, the CLI's dependencies
    # (clap, ctrlc) change features of crates the library shares, and the runtime
    # would be compiled twice. capi/Cargo.toml's crate types include staticlib.
    # `cargo build` cannot pass --print native-static-libs: the recorded list serves.
    cargo "${config[@]}" build "${release[@]}" -p ember --bin ember -p ember-capi --lib
elif ! cargo "${config[@]}" rustc "${release[@]}" -p ember-capi --lib --crate-type staticlib \
    -- --print native-static-libs 2>"$log"; then
    cat "$log" >&2
    exit 1
fi
# The system libraries a static link needs, as --print native-static-libs lists them.
libs=$(sed -n 's/.*native-static-libs: //p' "$log" | tail -n 1)
if [ -z "$libs" ]; then
    # Unchanged since the last build (cargo replays no output) or built by
    # `cargo build`: use the recorded list.
    libs=$(cat "$outdir/ember-native-static-libs" 2>/dev/null || echo "-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc")
fi
echo "$libs" >"$outdir/ember-native-static-libs"

version=$(sed -n 's/^#define EMBER_VERSION "\(.*\)"/\1/p' include/ember.h)
mkdir -p "$prefix/include" "$prefix/lib/pkgconfig"
prefix=$(cd "$prefix" && pwd)
cp include/ember.h "$prefix/include/"
cp "$outdir/libember.a" "$prefix/lib/"
[ "$cli" = 1 ] && install -D -m 0755 "$outdir/ember" "$prefix/bin/ember"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" -e "s|@LIBS_PRIVATE@|$libs|" \
    ember.pc.in >"$prefix/lib/pkgconfig/ember.pc"
installed="libember.a ($(du -k "$prefix/lib/libember.a" | cut -f1) KiB), ember.h, ember.pc"
[ "$cli" = 1 ] && installed+=", bin/ember ($(du -k "$prefix/bin/ember" | cut -f1) KiB)"
echo "installed $installed into:" >&2
echo "$prefix"
