#!/usr/bin/env bash
# Crash consistency, large: SIGKILL the real binary at random moments under concurrent
# signups, logins and refresh chains, restart it on the same files, and check that nothing
# acknowledged is lost (see RELIABILITY.md). `cargo test` runs the same test small.
#
#   bash scripts/crash.sh                # 25 kills, load phases up to 4 s
#   KILLS=50 ROUND_MS=6000 bash scripts/crash.sh
#   SEED=123 bash scripts/crash.sh       # replay a run
#   GATEHOUSE_CRASH_SERVER_ENV=K=V,K=V bash scripts/crash.sh   # extra server settings
set -euo pipefail
cd "$(dirname "$0")/.."
export GATEHOUSE_CRASH_KILLS="${KILLS:-25}"
export GATEHOUSE_CRASH_ROUND_MS="${ROUND_MS:-4000}"
export GATEHOUSE_CRASH_WORKERS="${WORKERS:-8}"
if [[ -n "${SEED:-}" ]]; then export GATEHOUSE_CRASH_SEED="$SEED"; fi
exec cargo test --test reliability crash::sigkill -- --nocapture --test-threads=1
