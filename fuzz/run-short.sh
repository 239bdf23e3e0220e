#!/usr/bin/env bash
# A short fuzzing pass for CI: every target for FUZZ_SECONDS (default 20 s)
# from the committed seeds (fuzz/seeds/) plus whatever corpus earlier runs
# left in fuzz/corpus/. Needs the nightly toolchain and cargo-fuzz; without
# them it says so and exits 0. A crash fails the run and leaves its input in
# fuzz/artifacts/TARGET/ (see docs/SECURITY.md for what to do with it).
set -euo pipefail
cd "$(dirname "$0")"

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain; skipped"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz not installed (cargo install cargo-fuzz); skipped"
  exit 0
fi

secs="${FUZZ_SECONDS:-20}"
# No sanitizer by default: the code under test is safe Rust, and an
# uninstrumented build is several times faster to build and to run.
# FUZZ_SANITIZER=address brings ASan back.
sanitizer="${FUZZ_SANITIZER:-none}"
targets="${FUZZ_TARGETS:-tokens cookies config paths h1_guard request proxy_protocol}"
# The fuzz crate keeps its own target dir (its build flags differ).
unset CARGO_TARGET_DIR

cargo +nightly fuzz build -s "$sanitizer" -a
for t in $targets; do
  mkdir -p "corpus/$t"
  dict=()
  case "$t" in
    h1_guard | request) dict=("-dict=http.dict") ;;
  esac
  echo "fuzz: $t for ${secs}s"
  cargo +nightly fuzz run -s "$sanitizer" -a "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=0 "${dict[@]}"
done
echo "fuzz: all targets ran ${secs}s without a crash"
