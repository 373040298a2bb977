#!/usr/bin/env bash
# Soak, the project's only one: the release binary under a mixed load (logins, refresh
# chains, JWKS, /v1/me) at 80% of its measured capacity on loopback, for 10 minutes by
# default. Reports every 10 s (requests, 5xx, p50/p99/max latency, resident memory) and
# fails on any 5xx, unexpected answer or transport error, on > 10% RSS growth after
# warm-up, or on a broken database at the end. See RELIABILITY.md; `bench/run.sh --soak`
# runs it too (on a seeded database, with JSON for its report; BENCHMARKS.md).
#
#   bash scripts/soak.sh                          # 600 s at 80% of capacity
#   DURATION=60 PROBE=10 bash scripts/soak.sh     # a short one
#   LOAD=0.5 CONCURRENCY=64 bash scripts/soak.sh
#   DATABASE=seed.db JSON_OUT=soak.json bash scripts/soak.sh  # on a copy of seed.db
#   PROFILE=debug bash scripts/soak.sh            # debug build: proves it runs, no more
#
# The driver is an ignored test in tests/reliability/soak.rs, built with the binary it
# drives; run nothing else heavy on the machine meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
export GATEHOUSE_SOAK_DURATION="${DURATION:-600}"
export GATEHOUSE_SOAK_PROBE="${PROBE:-30}"
export GATEHOUSE_SOAK_LOAD="${LOAD:-0.8}"
export GATEHOUSE_SOAK_CONCURRENCY="${CONCURRENCY:-32}"
export GATEHOUSE_SOAK_DATABASE="${DATABASE:-}"
export GATEHOUSE_SOAK_JSON="${JSON_OUT:-}"
release=(--release)
[ "${PROFILE:-release}" = debug ] && release=()
exec cargo test "${release[@]}" --test reliability soak:: -- --ignored --nocapture --test-threads=1
