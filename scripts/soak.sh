#!/usr/bin/env bash
# Soak: the release binary under a mixed load (logins, refresh chains, JWKS, /v1/me) at
# 80% of its measured capacity on loopback, for 10 minutes by default. Reports every 10 s
# (requests, 5xx, p50/p99/max latency, resident memory) and fails on any 5xx, unexpected
# answer or transport error, or on > 10% RSS growth after warm-up. See RELIABILITY.md.
#
#   bash scripts/soak.sh                          # 600 s at 80% of capacity
#   DURATION=60 PROBE=10 bash scripts/soak.sh     # a short one
#   LOAD=0.5 CONCURRENCY=64 bash scripts/soak.sh
#
# The driver is an ignored test in tests/reliability/soak.rs, built in release with the
# binary it drives; run nothing else heavy on the machine meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
export GATEHOUSE_SOAK_DURATION="${DURATION:-600}"
export GATEHOUSE_SOAK_PROBE="${PROBE:-30}"
export GATEHOUSE_SOAK_LOAD="${LOAD:-0.8}"
export GATEHOUSE_SOAK_CONCURRENCY="${CONCURRENCY:-32}"
exec cargo test --release --test reliability soak:: -- --ignored --nocapture --test-threads=1
