#!/usr/bin/env bash
# Cross-builds Ember for aarch64-unknown-linux-gnu (64-bit Raspberry Pi OS on a
# Pi 3, 4 or 5) on an x86-64 Debian workstation, in release, and installs into
# one prefix:
#   <prefix>/bin/ember                 the CLI
#   <prefix>/lib/libember.a            the C library
#   <prefix>/lib/pkgconfig/ember.pc    its pkg-config file
#   <prefix>/include/ember.h           its header
# (scripts/build_capi.sh --cross-aarch64 --with-cli after checking the toolchain).
#
# Usage: scripts/build_aarch64.sh [--prefix DIR] [--check]
#   --prefix DIR  install there (relative to the current directory; default
#                 target/aarch64 in the repository)
#   --check       only check the cross toolchain: exit 0 if it is complete, else
#                 print what is missing and exit 1
# Prints the prefix on the last line of stdout. Needs cargo (rustup) and the
# Debian cross toolchain of ../shared/docs/AARCH64.md (gcc-aarch64-linux-gnu,
# libc6-dev-arm64-cross, and Debian's rustc-web with libstd-rust-web-dev:arm64,
# used through ci/cross-aarch64.toml); installs no packages itself and stops
# with the apt-get command when one is missing. Running the results on x86
# takes qemu-user: `qemu-aarch64 <prefix>/bin/ember --version`.
set -euo pipefail

usage() { echo "usage: $0 [--prefix DIR] [--check]" >&2; exit 2; }
prefix="" check_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || usage; prefix="$2"; shift ;;
        --check) check_only=1 ;;
        *) usage ;;
    esac
    shift
done
# A relative --prefix names a directory below the caller's working directory.
[ -n "$prefix" ] && prefix=$(realpath -m -- "$prefix")
cd "$(dirname "$0")/.."
: "${prefix:=$PWD/target/aarch64}"

# The Debian packages ci/cross-aarch64.toml relies on, each with the file that
# shows it is installed.
missing=()
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || missing+=(gcc-aarch64-linux-gnu)
[ -f /usr/aarch64-linux-gnu/lib/crt1.o ] || missing+=(libc6-dev-arm64-cross)
if [ -x /usr/bin/rustc ]; then
    [ -d "$(/usr/bin/rustc --print sysroot)/lib/rustlib/aarch64-unknown-linux-gnu/lib" ] ||
        missing+=(libstd-rust-web-dev:arm64)
else
    missing+=(rustc-web libstd-rust-web-dev:arm64)
fi
if [ ${#missing[@]} -gt 0 ]; then
    cat >&2 <<EOF
error: the aarch64 cross toolchain is incomplete; missing: ${missing[*]}
Install it (Debian 12, x86-64; see ../shared/docs/AARCH64.md) with:
  sudo dpkg --add-architecture arm64 && sudo apt-get update
  sudo apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross rustc-web libstd-rust-web-dev:arm64
EOF
    exit 1
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install it with rustup (https://rustup.rs)" >&2
    exit 1
fi
[ "$check_only" = 1 ] && exit 0

scripts/build_capi.sh --cross-aarch64 --with-cli --prefix "$prefix" >/dev/null
echo "$prefix"
