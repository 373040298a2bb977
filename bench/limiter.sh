#!/usr/bin/env bash
# What the shared (Redis) rate limiter costs per request, against the in-memory limiter
# and no limiter, in one run (see BENCHMARKS.md): the release binary under the `me`
# scenario (GET /v1/me: a bearer check, a read, and one limiter check on the `reads`
# tier, whose limit is raised so that nothing is refused). Redis is a private
# redis-server on a free port, so its CPU per request can be read too; the shared one is
# never touched. Rounds alternate the three modes so the machine's noise falls on all.
#
#   bash bench/limiter.sh            # 3 rounds of 5 s per mode
#   ROUNDS=1 DUR=2s bash bench/limiter.sh
#
# Prints one line per mode: median requests/s, p50 and p99 latency, gatehouse CPU per
# request, and (redis mode) redis-server CPU per request. Nothing is asserted.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-3}"
DUR="${DUR:-5s}"
CONC="${CONC:-16}"
OUT="${BENCH_OUT:-target/bench-limiter/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
cargo build --release --quiet --bin gatehouse --example load
LOAD=target/release/examples/load
BIN=target/release/gatehouse

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
  >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
trap 'kill "$REDIS_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  redis-cli -p "$PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done

# utime + stime of a process, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ="$(getconf CLK_TCK)"

LIMITS=(--env GATEHOUSE_RATE_LIMIT_READS=1000000000/1000000000
  --env GATEHOUSE_RATE_LIMIT_AUTH=1000000000/1000000000)
for round in $(seq 1 "$ROUNDS"); do
  for mode in off memory redis; do
    args=()
    case "$mode" in
      off) ;;
      memory) args=(--env GATEHOUSE_RATE_LIMITS=on "${LIMITS[@]}") ;;
      redis) args=(--env GATEHOUSE_RATE_LIMITS=on "${LIMITS[@]}"
        --env "GATEHOUSE_RATE_LIMIT_STORE=redis://127.0.0.1:$PORT"
        --env "GATEHOUSE_RATE_LIMIT_KEY_PREFIX=bench:$round") ;;
    esac
    before="$(ticks "$REDIS_PID")"
    "$LOAD" --spawn "$BIN" "${args[@]}" --scenarios me --duration "$DUR" --warmup 1s \
      --concurrency "$CONC" --label "$mode" --json >"$OUT/$mode-$round.json"
    after="$(ticks "$REDIS_PID")"
    jq --argjson t "$((after - before))" '.redis_cpu_ticks = $t' "$OUT/$mode-$round.json" \
      >"$OUT/$mode-$round.tmp" && mv "$OUT/$mode-$round.tmp" "$OUT/$mode-$round.json"
  done
done

printf '%-7s %9s %8s %8s %14s %14s\n' mode req/s p50_ms p99_ms gh_cpu_us/req redis_cpu_us/req
for mode in off memory redis; do
  jq -r -s --argjson hz "$HZ" '
    def median: sort | .[(length / 2 | floor)];
    [.[] | .scenarios.me.median] as $m
    | [.[] | (.redis_cpu_ticks / $hz * 1e6) / (.scenarios.me.median.requests | if . == 0 then 1 else . end)] as $r
    | [($m | map(.rps) | median), ($m | map(.p50_ms) | median), ($m | map(.p99_ms) | median),
       ($m | map(.server_cpu_us_per_req) | median), ($r | median)]
    | @tsv' "$OUT"/"$mode"-*.json |
    awk -v m="$mode" '{printf "%-7s %9.0f %8.2f %8.2f %14.1f %14.1f\n", m, $1, $2, $3, $4, $5}'
done
echo "(JSON in $OUT; redis_cpu for off/memory is the idle private redis-server)"
