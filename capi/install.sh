#!/usr/bin/env bash
# Builds the release C libraries of softmax-kernels (reusing a fresh
# `cargo build --release -p softmax-kernels-capi`) and installs them into PREFIX:
#   PREFIX/lib/libsoftmax_kernels.so, PREFIX/lib/libsoftmax_kernels.a,
#   PREFIX/include/softmax_kernels.h, PREFIX/lib/pkgconfig/softmax_kernels.pc
# Usage: capi/install.sh PREFIX        (CARGO, CARGO_TARGET_DIR and RUSTFLAGS are honoured)
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 PREFIX" >&2
  exit 2
fi
mkdir -p "$1"
prefix=$(cd "$1" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo=${CARGO:-cargo}

# The build the README runs first (`cargo build --release -p softmax-kernels-capi`): capi's
# Cargo.toml asks for both library kinds, so this is a no-op when that build is fresh, and it
# builds them otherwise. No `cargo rustc` with extra flags here: those change the fingerprint,
# so the capi crate would be compiled a second time (and again by the next `cargo build`).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$cargo" build --release -p softmax-kernels-capi --message-format=json-render-diagnostics \
  >"$tmp/build.json"

# The system libraries a program linking the static archive needs. When no build script in the
# dependency graph links a native library (cargo replays each build script's `linked_libs` in
# its JSON messages, fresh build or not), those are the Rust standard library's, which rustc
# reports for any staticlib: an empty one here, compiled in a fraction of a second. Otherwise
# rustc is asked about the real archive (`cargo rustc`, which compiles the capi crate again).
libs_private=""
if ! grep '"reason":"build-script-executed"' "$tmp/build.json" | grep -qv '"linked_libs":\[\]'; then
  : >"$tmp/empty.rs"
  # shellcheck disable=SC2086
  if "${RUSTC:-rustc}" ${RUSTFLAGS:-} --crate-type staticlib --crate-name sk_native_libs_probe \
       --print native-static-libs --out-dir "$tmp" "$tmp/empty.rs" 2>"$tmp/log"; then
    libs_private=$(sed -n 's/.*native-static-libs: *//p' "$tmp/log" | tail -n 1)
  fi
else
  if ! "$cargo" rustc --release -p softmax-kernels-capi --lib --crate-type cdylib,staticlib \
       -- --print native-static-libs 2>"$tmp/log"; then
    cat "$tmp/log" >&2
    exit 1
  fi
  libs_private=$(sed -n 's/.*native-static-libs: *//p' "$tmp/log" | tail -n 1)
fi
if [ -z "$libs_private" ]; then
  # What rustc reports for x86_64/aarch64 Linux (glibc).
  libs_private="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
  echo "install.sh: rustc did not report the native libraries; using: $libs_private" >&2
fi

# Where cargo put the libraries (honours CARGO_TARGET_DIR and .cargo/config).
target_dir=$("$cargo" metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || target_dir="$root/target"
release="$target_dir/release"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' capi/Cargo.toml | head -n 1)

install -d "$prefix/lib/pkgconfig" "$prefix/include"
install -m 0755 "$release/libsoftmax_kernels.so" "$prefix/lib/libsoftmax_kernels.so"
install -m 0644 "$release/libsoftmax_kernels.a" "$prefix/lib/libsoftmax_kernels.a"
install -m 0644 capi/include/softmax_kernels.h "$prefix/include/softmax_kernels.h"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" -e "s|@LIBS_PRIVATE@|$libs_private|g" \
  capi/softmax_kernels.pc.in >"$prefix/lib/pkgconfig/softmax_kernels.pc"
chmod 0644 "$prefix/lib/pkgconfig/softmax_kernels.pc"

echo "installed softmax_kernels $version into $prefix"
echo "  shared: cc app.c \$(pkg-config --cflags --libs softmax_kernels)   (the .pc adds -Wl,-rpath,$prefix/lib)"
echo "  static: cc app.c \$(pkg-config --cflags softmax_kernels) \$(pkg-config --variable=static_libs softmax_kernels)"
echo "  (PKG_CONFIG_PATH=$prefix/lib/pkgconfig if PREFIX is not a system prefix)"
