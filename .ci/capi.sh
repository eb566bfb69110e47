#!/usr/bin/env bash
# CI for the C ABI (capi/): lints and unit tests of the capi crate, the release libraries built
# and installed into a staging prefix by capi/install.sh, the exported symbols checked against
# the header, the C tests compiled (gcc -std=c99 -Wall -Wextra -Werror -pedantic) and run
# against BOTH the shared and the static library, again under valgrind (no errors, no definite
# or indirect leaks), the C++ header check (g++ -std=c++11), and the Python ctypes example.
# Exits non-zero on any failure. Works from a clean clone; installs valgrind (apt) and numpy
# (pip, into a venv under the target directory) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export CARGO_TERM_COLOR=never
export CARGO_INCREMENTAL=0
# The panic test prints Rust's panic message; a backtrace there is only noise.
export RUST_BACKTRACE=0

step() { printf '\n==== capi: %s ====\n' "$*"; }
fail() { echo "capi: FAILED: $*" >&2; exit 1; }

passed=0
failed=0
# Runs a test command; counts it; prints its output.
run_test() {
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "capi: FAILED: $name" >&2
  fi
}

step "toolchain"
cargo --version
gcc --version | head -n 1
g++ --version | head -n 1

step "rustfmt --check (capi)"
rustfmt --check --edition 2021 capi/src/*.rs

step "cargo clippy -p softmax-kernels-capi --all-targets -- -D warnings"
cargo clippy -p softmax-kernels-capi --all-targets -- -D warnings

step "cargo test -p softmax-kernels-capi (unit tests: status codes vs header, guard, checks)"
cargo test --release -p softmax-kernels-capi

step "capi/install.sh into a staging prefix (release cdylib + staticlib, header, .pc)"
stage=$(mktemp -d "${TMPDIR:-/tmp}/sk-capi-stage.XXXXXX")
build=$(mktemp -d "${TMPDIR:-/tmp}/sk-capi-build.XXXXXX")
trap 'rm -rf "$stage" "$build"' EXIT
bash capi/install.sh "$stage"
export PKG_CONFIG_PATH="$stage/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
libdir="$stage/lib"
if command -v pkg-config >/dev/null 2>&1; then
  cflags=$(pkg-config --cflags softmax_kernels)
  shared_libs="$(pkg-config --libs softmax_kernels) -Wl,-rpath,$libdir"
  static_libs=$(pkg-config --variable=static_libs softmax_kernels)
  echo "pkg-config: softmax_kernels $(pkg-config --modversion softmax_kernels)"
else
  echo "pkg-config not found: reading the flags from the .pc file's values" >&2
  cflags="-I$stage/include"
  shared_libs="-L$libdir -lsoftmax_kernels -Wl,-rpath,$libdir"
  static_libs="$libdir/libsoftmax_kernels.a $(sed -n 's/^Libs.private: //p' "$libdir/pkgconfig/softmax_kernels.pc")"
fi
echo "cflags:      $cflags"
echo "shared libs: $shared_libs"
echo "static libs: $static_libs"

step "exported symbols == functions declared in the header"
nm -D --defined-only "$libdir/libsoftmax_kernels.so" | awk '$2 == "T" && $3 ~ /^sk_/ {print $3}' |
  sort >"$build/exported.txt"
grep -oE '\bsk_[a-z0-9_]+\(' capi/include/softmax_kernels.h | tr -d '(' | sort -u >"$build/declared.txt"
if ! diff -u "$build/declared.txt" "$build/exported.txt"; then
  fail "the header's functions and the library's exports differ (- header, + library)"
fi
echo "$(wc -l <"$build/exported.txt") functions, all declared and all exported"
# The archive defines them too.
nm --defined-only "$libdir/libsoftmax_kernels.a" 2>/dev/null | awk '$2 == "T" && $3 ~ /^sk_/ {print $3}' |
  sort -u >"$build/archived.txt"
diff -u "$build/declared.txt" "$build/archived.txt" || fail "the archive's sk_ symbols differ"

step "header prototypes and structs == the Rust definitions (types, order)"
python3 capi/tests/check_abi.py

step "compile the C tests (gcc -std=c99 -Wall -Wextra -Werror -pedantic) against both libraries"
CFLAGS_STRICT="-std=c99 -Wall -Wextra -Werror -pedantic -O1 -g"
tests=()
for src in capi/tests/test_*.c; do
  name=$(basename "$src" .c)
  tests+=("$name")
  # shellcheck disable=SC2086
  gcc $CFLAGS_STRICT $cflags -Icapi/tests "$src" -o "$build/$name.shared" $shared_libs -lm -lpthread
  # shellcheck disable=SC2086
  gcc $CFLAGS_STRICT $cflags -Icapi/tests "$src" -o "$build/$name.static" $static_libs -lm -lpthread
done
# The static binaries must not need the shared library, and the shared ones must.
# (ldd's output is captured first: `ldd | grep -q` can fail under pipefail when grep exits early.)
for name in "${tests[@]}"; do
  deps=$(ldd "$build/$name.static")
  if grep -q libsoftmax_kernels <<<"$deps"; then
    fail "$name.static links libsoftmax_kernels.so"
  fi
  deps=$(ldd "$build/$name.shared")
  grep -q "libsoftmax_kernels.so => $libdir" <<<"$deps" ||
    fail "$name.shared does not load $libdir/libsoftmax_kernels.so"
done
echo "compiled: ${tests[*]} (each .shared and .static)"

step "compile the C++ header check (g++ -std=c++11 -Wall -Wextra -Werror -pedantic)"
# shellcheck disable=SC2086
g++ -std=c++11 -Wall -Wextra -Werror -pedantic $cflags capi/tests/test_cpp.cpp -o "$build/test_cpp.shared" $shared_libs
# shellcheck disable=SC2086
g++ -std=c++11 -Wall -Wextra -Werror -pedantic $cflags capi/tests/test_cpp.cpp -o "$build/test_cpp.static" $static_libs
tests+=("test_cpp")

step "run the tests (shared and static)"
for name in "${tests[@]}"; do
  for kind in shared static; do
    echo "-- $name.$kind"
    run_test "$name.$kind" "$build/$name.$kind"
  done
done

step "valgrind (memcheck: errors and definite/indirect leaks fail)"
if ! command -v valgrind >/dev/null 2>&1; then
  echo "valgrind not found: installing it with apt-get"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; }; then
    fail "valgrind is missing and could not be installed"
  fi
fi
valgrind --version
# Valgrind cannot execute AVX-512: under it the library detects the AVX2 tier (and the tier
# tests see AVX-512 as unavailable). Rayon's worker threads live until the process exits;
# their blocks are "possibly lost" / "still reachable", which do not count here.
# SK_TEST_UNDER_VALGRIND tells the tests to skip what reads freed memory on purpose (the
# freed-handle checks of test_handles).
vg=(env SK_TEST_UNDER_VALGRIND=1 valgrind -q --error-exitcode=1 --leak-check=full
  --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect)
for name in "${tests[@]}"; do
  for kind in shared static; do
    echo "-- valgrind $name.$kind"
    run_test "valgrind $name.$kind" "${vg[@]}" "$build/$name.$kind"
  done
done

step "Python ctypes example (numpy)"
py=python3
if ! command -v python3 >/dev/null 2>&1; then
  py=""
elif ! python3 -c 'import numpy' 2>/dev/null; then
  venv="$root/target/capi-pyenv"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import numpy' 2>/dev/null; then
    py="$venv/bin/python"
  else
    echo "numpy is not importable: installing it with pip into $venv"
    if python3 -m venv "$venv" && "$venv/bin/python" -m pip install -q numpy; then
      py="$venv/bin/python"
    else
      py=""
    fi
  fi
fi
if [ -z "$py" ]; then
  printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
  echo "!!! capi: SKIPPING the Python ctypes check: no python3 with numpy, and pip failed" >&2
  printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' >&2
else
  run_test "python_ctypes" "$py" capi/examples/python_ctypes.py "$libdir/libsoftmax_kernels.so"
fi

step "summary"
echo "capi: $passed passed, $failed failed"
[ "$failed" -eq 0 ] || exit 1
