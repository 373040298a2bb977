#!/usr/bin/env bash
# Runs each cargo-fuzz target (libFuzzer + AddressSanitizer) for a while, and fails if any
# crashes. See RELIABILITY.md.
#
#   bash scripts/fuzz.sh                 # 30 s per target (CI)
#   bash scripts/fuzz.sh 600             # 10 minutes per target
#   bash scripts/fuzz.sh 600 jwt_verify  # one target
#
# cargo-fuzz passes nightly `-Z` flags to rustc; only stable exists here, so the script
# sets RUSTC_BOOTSTRAP=1, which lets stable rustc accept them (the sanitizer included).
# The corpus grows in fuzz/corpus/<target> (git-ignored); fuzz/seeds/<target> is the
# committed starting point. Crashes land in fuzz/artifacts/<target>. The build goes to
# $FUZZ_TARGET_DIR (default ~/.cache/gatehouse/fuzz-target).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-30}"
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then targets=(request_body jwt_verify); fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
# Outside the work tree, so that fresh clones (CI) reuse the sanitizer build (~12 min cold).
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/gatehouse/fuzz-target}"
cargo fuzz build -O
mkdir -p logs
failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log="logs/$t.log"
  printf '=== fuzz %s for %ss\n' "$t" "$secs"
  if cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
      >"$log" 2>&1; then
    status=ok
  else
    status=CRASH
    failed=1
  fi
  execs=$(grep -a 'stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -1)
  rate=$(grep -a 'stat::average_exec_per_sec' "$log" | awk '{print $2}' | tail -1)
  cov=$(grep -a -E '^#[0-9]+.*cov:' "$log" | tail -1 | sed -E 's/.*cov: ([0-9]+).*/\1/')
  printf '%s: %s, %s executions (%s/s), coverage %s edges, corpus %s files\n' \
    "$t" "$status" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$(ls "corpus/$t" | wc -l)"
  if [[ $status != ok ]]; then
    grep -a -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -20 || true
  fi
done
exit "$failed"
