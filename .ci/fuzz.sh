#!/usr/bin/env bash
# CI fuzzing: builds the cargo-fuzz targets (nightly, AddressSanitizer) and runs each for
# FUZZ_SECONDS (default 60) from a temporary copy of the committed corpus (fuzz/corpus/<target>),
# so the repository is never modified. Fails (non-zero) on any crash or divergence and prints
# how to reproduce it. Before that, replays the committed corpus on stable Rust
# (`cargo test` in fuzz/: the seeds decode as built and every corpus file passes).
#
# Needs: cargo-fuzz (installed here if missing) and the nightly toolchain. Without nightly it
# prints a loud warning and exits 0, so the rest of CI still runs.
#
# Environment: FUZZ_SECONDS (per target), FUZZ_TARGETS (space-separated; default the six other than `shard`),
# FUZZ_NICE (prefix for the fuzz runs; default "nice -n 19"), FUZZ_SEED (libFuzzer -seed; default
# 1, so that a CI run explores the same inputs as the last one on the same machine).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${FUZZ_SECONDS:-60}"
# `shard` is run by hand (FUZZ_TARGETS=shard) until its checker stops finding its own
# domain issues: see fuzz/README.md.
TARGETS="${FUZZ_TARGETS:-softmax cross_entropy linear linear_ce strided token}"
NICE="${FUZZ_NICE:-nice -n 19}"

step() { printf '\n==== fuzz: %s ====\n' "$*"; }

warn_loud() {
  printf '\n%s\n' "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  printf '!!! WARNING: %s\n' "$@"
  printf '%s\n\n' "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
}

step "corpus replay on stable (fuzz/tests/corpus.rs)"
(cd fuzz && cargo test --release --quiet)

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  warn_loud "the nightly toolchain is not installed: the fuzz targets were NOT run." \
            "Install it with: rustup toolchain install nightly"
  exit 0
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  step "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
cargo fuzz --version

step "build (nightly, AddressSanitizer)"
cargo +nightly fuzz build

work="$(mktemp -d "${TMPDIR:-/tmp}/softmax-kernels-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT
failed=()
for t in $TARGETS; do
  step "$t: ${SECS}s from a copy of fuzz/corpus/$t"
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  cp -R "fuzz/corpus/$t/." "$work/corpus/$t/"
  log="$work/$t.log"
  set +e
  $NICE cargo +nightly fuzz run "$t" "$work/corpus/$t" -- \
    -max_total_time="$SECS" -seed="${FUZZ_SEED:-1}" -max_len=8192 -timeout=30 -rss_limit_mb=4096 \
    -artifact_prefix="$work/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' "$log" || true
  crashes=$(find "$work/artifacts/$t" -type f | wc -l)
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    failed+=("$t")
    echo "---- $t FAILED (exit $rc, $crashes artifact(s)); the end of the log:"
    grep -E -A25 'panicked|ERROR: AddressSanitizer|ERROR: libFuzzer|SUMMARY' "$log" | head -80 || tail -40 "$log"
    mkdir -p fuzz/artifacts/"$t"
    for a in "$work/artifacts/$t"/*; do
      [ -f "$a" ] || continue
      cp "$a" fuzz/artifacts/"$t"/
      echo "reproduce: cargo +nightly fuzz run $t fuzz/artifacts/$t/$(basename "$a")"
      echo "       or: (cd fuzz && cargo run --release --example repro -- $t --dump artifacts/$t/$(basename "$a"))"
    done
  fi
done

if [ "${#failed[@]}" -ne 0 ]; then
  echo
  echo "fuzzing FAILED for: ${failed[*]} (inputs copied to fuzz/artifacts/, which git ignores)"
  exit 1
fi
echo
echo "fuzzing passed: $TARGETS, ${SECS}s each"
