#!/usr/bin/env bash
# The whole performance harness in one command (see BENCHMARKS.md):
#
#   bash bench/run.sh            # default: every scenario, 3 rounds, ~14-16 min after the build (5 of them the replicas row)
#   bash bench/run.sh --quick    # smoke test (CI): tiny durations, no timing asserted
#   bash bench/run.sh --full     # longer rounds, plus the 5-minute soak and the 1M growth check
#   bash bench/run.sh --growth   # add the growth check (1,000,000 users and families)
#   bash bench/run.sh --soak     # add the 5-minute soak (scripts/soak.sh) on a seeded database
#   bash bench/run.sh --no-node  # skip the Node.js comparison
#   bash bench/run.sh --no-postgres    # skip the PostgreSQL column
#   bash bench/run.sh --postgres-only  # only the PostgreSQL column (and its table)
#   bash bench/run.sh --postgres-unprepared  # the PostgreSQL column also with statements unnamed
#   bash bench/run.sh --replicas-only  # only the replicas row (and its table)
#   bash bench/run.sh --no-replicas    # skip the replicas row
#   bash bench/run.sh --quick --debug  # smoke test on the debug build (CI: no release build)
#
# The PostgreSQL column runs signup, login, refresh and /v1/me on SQLite and on
# PostgreSQL, alternating (SQLite, PostgreSQL, SQLite, ...), each invocation on a fresh
# database: on PostgreSQL one the load tool creates on the server at
# GATEHOUSE_BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres; its
# user must be allowed to CREATE DATABASE) and drops at the end, also on failure or
# Ctrl-C. No other database is touched. GATEHOUSE_BENCH_POSTGRES_ROUNDS sets the rounds;
# GATEHOUSE_BENCH_POSTGRES=off skips the column (said loudly), as --no-postgres does.
# --postgres-unprepared adds a third invocation to each round, PostgreSQL with
# GATEHOUSE_DB_PREPARED_STATEMENTS=off, and a second table beside the first.
#
# The replicas row runs login, refresh and /v1/me on 1 and on 2 replicas sharing one fresh
# PostgreSQL database, without and with the Redis limiter (a private redis-server on a
# free port, so its CPU is the run's alone; never the shared one), alternating the four
# configurations round by round (and a control: 2 replicas of 1 HTTP worker and 1 hashing
# thread each); the load tool spreads requests round-robin over the replicas itself. GATEHOUSE_BENCH_REPLICAS_ROUNDS sets the rounds. Needs the PostgreSQL
# column's server; --quick runs one minimal invocation (2 replicas, Redis) as a smoke test.
#
# It builds the release binary and the load tool, installs the Node comparison service
# (bench/node, from its lock file), runs the scenarios against gatehouse (synchronous
# NORMAL and FULL) and against Node, measures the raw limits in the same run, and prints
# the ratio table with the raw figures beside each ratio. JSON documents and the table
# are kept in $BENCH_OUT (default target/bench-run/<time>).
#
# Exit status: 0 unless a server crashed, a command failed, or a scenario's error share
# exceeded 1 %. Timing targets are reported, never asserted.
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=default
GROWTH=0
SOAK=0
NODE=1
POSTGRES=1
ONLY_POSTGRES=0
UNPREPARED=0
REPLICAS=1
ONLY_REPLICAS=0
PROFILE=release
for arg in "$@"; do
  case "$arg" in
    --quick) MODE=quick ;;
    --full) MODE=full GROWTH=1 SOAK=1 ;;
    --growth) GROWTH=1 ;;
    --soak) SOAK=1 ;;
    --no-node) NODE=0 ;;
    --no-postgres) POSTGRES=0 ;;
    --postgres-only) ONLY_POSTGRES=1 REPLICAS=0 NODE=0 GROWTH=0 SOAK=0 ;;
    --postgres-unprepared) UNPREPARED=1 ;;
    --replicas-only) ONLY_REPLICAS=1 NODE=0 GROWTH=0 SOAK=0 ;;
    --no-replicas) REPLICAS=0 ;;
    --debug) PROFILE=debug ;;
    -h | --help)
      sed -n '2,41p' "$0"
      exit 0
      ;;
    *)
      echo "bench/run.sh: unknown option $arg" >&2
      exit 2
      ;;
  esac
done

case "$MODE" in
  quick) DUR=1s WARM=300ms REPEAT=1 RAW_DUR=1s CONC=8 SOAK_DUR=20 SOAK_PROBE=5 USERS=20000 SOAK_USERS=2000 PG_ROUNDS=1 TRIPS=2 REP_ROUNDS=1 ;;
  default) DUR=5s WARM=1s REPEAT=3 RAW_DUR=3s CONC=32 SOAK_DUR=300 SOAK_PROBE=30 USERS=1000000 SOAK_USERS=100000 PG_ROUNDS=3 TRIPS=20 REP_ROUNDS=3 ;;
  full) DUR=15s WARM=2s REPEAT=3 RAW_DUR=5s CONC=32 SOAK_DUR=300 SOAK_PROBE=30 USERS=1000000 SOAK_USERS=100000 PG_ROUNDS=5 TRIPS=20 REP_ROUNDS=5 ;;
esac
PG_ROUNDS="${GATEHOUSE_BENCH_POSTGRES_ROUNDS:-$PG_ROUNDS}"
REP_ROUNDS="${GATEHOUSE_BENCH_REPLICAS_ROUNDS:-$REP_ROUNDS}"
PG_URL="${GATEHOUSE_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if [ "${GATEHOUSE_BENCH_POSTGRES:-}" = off ]; then
  POSTGRES=0
fi
if [ "$ONLY_POSTGRES" = 1 ] && [ "$POSTGRES" = 0 ]; then
  echo "bench/run.sh: --postgres-only with the PostgreSQL column off" >&2
  exit 2
fi
if [ "$ONLY_REPLICAS" = 1 ] && { [ "$POSTGRES" = 0 ] || [ "$REPLICAS" = 0 ]; }; then
  echo "bench/run.sh: --replicas-only with PostgreSQL or the replicas row off" >&2
  exit 2
fi

OUT="${BENCH_OUT:-target/bench-run/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
LOAD=target/$PROFILE/examples/load
BIN=target/$PROFILE/gatehouse
FAILED=0
NODE_PID=""
REDIS_PID=""
stop_pid() {
  if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
    kill "$1" 2>/dev/null
    wait "$1" 2>/dev/null
  fi
}
cleanup() {
  stop_pid "$NODE_PID"
  stop_pid "$REDIS_PID"
}
trap cleanup EXIT
# The load tool drops its PostgreSQL database on Ctrl-C and exits; the run stops too.
trap 'exit 130' INT TERM

step() { printf '\n=== %s (%ss)\n' "$1" "$SECONDS"; }
# Runs the load tool; a non-zero exit (crash, errors over 1 %, failure) is remembered.
load() {
  "$LOAD" "$@"
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "bench/run.sh: load $* exited $rc" >&2
    FAILED=1
  fi
  return 0
}
COMMON=(--duration "$DUR" --warmup "$WARM" --repeat "$REPEAT" --raw-duration "$RAW_DUR" --concurrency "$CONC")

step "build ($PROFILE binary and load tool)"
if [ "$PROFILE" = release ]; then
  cargo build --release --example load --bin gatehouse || exit 2
  # The soak driver is a test: built here, so the soak step measures no compiler.
  [ "$SOAK" = 0 ] || cargo test --release --test reliability --no-run || exit 2
else
  # Numbers from a debug build mean nothing; this only proves the harness runs.
  cargo build --example load --bin gatehouse || exit 2
  [ "$SOAK" = 0 ] || cargo test --test reliability --no-run || exit 2
fi

if [ "$NODE" = 1 ]; then
  step "Node comparison service: npm ci (bench/node)"
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "bench/run.sh: node and npm are needed for the comparison (or pass --no-node)" >&2
    exit 2
  fi
  # npm ci reinstalls from scratch (better-sqlite3 may compile from source); skip it
  # when node_modules was installed from this very lock file.
  stamp=bench/node/node_modules/.lock-stamp
  if [ -f "$stamp" ] && cmp -s "$stamp" bench/node/package-lock.json; then
    echo "node_modules is up to date with package-lock.json"
  else
    (cd bench/node && npm ci --no-audit --no-fund) || exit 2
    cp bench/node/package-lock.json "$stamp"
  fi
fi

if [ "$ONLY_POSTGRES" = 0 ] && [ "$ONLY_REPLICAS" = 0 ]; then
  step "gatehouse, synchronous=normal: every scenario, bare actix-web, raw limits"
  load --label gatehouse --spawn "$BIN" --scenarios all --bare --raw all \
    "${COMMON[@]}" --json-out "$OUT/gatehouse.json"

  step "gatehouse, synchronous=full: refresh and its raw limits"
  load --label gatehouse-full --spawn "$BIN" --env GATEHOUSE_SQLITE_SYNCHRONOUS=full \
    --scenarios refresh --raw sign,commit,commit-busy "${COMMON[@]}" --json-out "$OUT/gatehouse-full.json"
fi

if [ "$POSTGRES" = 1 ] && [ "$ONLY_REPLICAS" = 0 ]; then
  # One invocation per backend and round, alternating, so that each PostgreSQL figure
  # has a SQLite one measured within a minute of it on this shared machine; the report
  # divides round by round. Round trips are counted after the rounds (--round-trips).
  step "PostgreSQL column: signup, login, refresh, me; $PG_ROUNDS rounds alternating SQLite and PostgreSQL"
  PG_COMMON=(--spawn "$BIN" --scenarios signup,login,refresh,me --duration "$DUR" --warmup "$WARM"
    --concurrency "$CONC")
  for round in $(seq 1 "$PG_ROUNDS"); do
    n=$(printf %02d "$round")
    load --label pg-sqlite "${PG_COMMON[@]}" --json-out "$OUT/pg-sqlite-$n.json"
    trips=()
    [ "$round" != "$PG_ROUNDS" ] || trips=(--round-trips "$TRIPS")
    load --label pg-postgres "${PG_COMMON[@]}" --postgres "$PG_URL" "${trips[@]}" \
      --json-out "$OUT/pg-postgres-$n.json"
    [ "$UNPREPARED" = 0 ] || load --label pg-noprep "${PG_COMMON[@]}" \
      --env GATEHOUSE_DB_PREPARED_STATEMENTS=off --postgres "$PG_URL" "${trips[@]}" \
      --json-out "$OUT/pg-noprep-$n.json"
  done
elif [ "$POSTGRES" = 0 ]; then
  echo "bench/run.sh: the PostgreSQL column is SKIPPED (--no-postgres or GATEHOUSE_BENCH_POSTGRES=off)" >&2
fi

if [ "$POSTGRES" = 1 ] && [ "$REPLICAS" = 1 ]; then
  # Client-side round-robin (the load tool, one pooled client per replica): no proxy's
  # CPU or hop in the measured path. Server CPU is the replicas' summed; PG us and
  # redis us are the database's and the private redis-server's, per request.
  REP_COMMON=(--spawn "$BIN" --postgres "$PG_URL" --duration "$DUR" --warmup "$WARM"
    --concurrency "$CONC")
  REDIS_PORT=""
  if command -v redis-server >/dev/null; then
    REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
      --daemonize no >"$OUT/redis.log" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 1 50); do
      redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
  else
    echo "bench/run.sh: redis-server not found: the replicas row runs WITHOUT the Redis limiter" >&2
  fi
  # The limiter on, every limit raised so that nothing is refused: its cost, not its
  # refusals. A key prefix per invocation, so no count carries over.
  redis_args() {
    echo --env GATEHOUSE_RATE_LIMITS=on --env GATEHOUSE_RATE_LIMIT_AUTH=1000000000/1000000000 \
      --env GATEHOUSE_RATE_LIMIT_READS=1000000000/1000000000 \
      --env "GATEHOUSE_RATE_LIMIT_STORE=redis://127.0.0.1:$REDIS_PORT" \
      --env "GATEHOUSE_RATE_LIMIT_KEY_PREFIX=bench-$1" --side-pid "$REDIS_PID"
  }
  if [ "$MODE" = quick ]; then
    # CI: one invocation proves the harness (two replicas, the shared database, the
    # limiter in Redis, the round-robin) and costs seconds; numbers mean nothing here.
    step "replicas (smoke): 2 replicas on PostgreSQL with the Redis limiter, refresh and me"
    if [ -n "$REDIS_PORT" ]; then
      # shellcheck disable=SC2046
      load --label replicas-2-redis --replicas 2 "${REP_COMMON[@]}" --scenarios refresh,me \
        $(redis_args "quick-$$") --json-out "$OUT/replicas-2-redis-01.json"
    else
      load --label replicas-2 --replicas 2 "${REP_COMMON[@]}" --scenarios refresh,me \
        --json-out "$OUT/replicas-2-01.json"
    fi
  else
    step "replicas: login, refresh, me on 1 and 2 replicas, without and with the Redis limiter; $REP_ROUNDS rounds"
    for round in $(seq 1 "$REP_ROUNDS"); do
      n=$(printf %02d "$round")
      for cfg in 1 2 2-half 1-redis 2-redis; do
        extra=()
        case "$cfg" in
          # A control: 2 replicas with half the threads each, as many as one replica
          # has, so that 2 vs 1 is not also 4 busy threads vs 2 on these 2 cores.
          *-half) extra=(--env GATEHOUSE_HTTP_WORKERS=1 --env GATEHOUSE_HASH_WORKERS=1) ;;
          *-redis)
            [ -n "$REDIS_PORT" ] || continue
            read -r -a extra <<<"$(redis_args "$$-$n-$cfg")"
            ;;
        esac
        load --label "replicas-$cfg" --replicas "${cfg%%-*}" "${REP_COMMON[@]}" \
          --scenarios login,refresh,me "${extra[@]}" --json-out "$OUT/replicas-$cfg-$n.json"
      done
    done
  fi
  stop_pid "$REDIS_PID"
  REDIS_PID=""
elif [ "$REPLICAS" = 1 ]; then
  echo "bench/run.sh: the replicas row is SKIPPED (it needs PostgreSQL)" >&2
fi

if [ "$NODE" = 1 ]; then
  step "Node.js (Express, jsonwebtoken, argon2, better-sqlite3; 2 cluster workers)"
  NODE_PORT=$(( 20000 + RANDOM % 20000 ))
  NODE_DATA=$(mktemp -d)
  PORT=$NODE_PORT DATA_DIR="$NODE_DATA" NODE_WORKERS=2 node bench/node/server.js \
    >"$OUT/node.log" 2>&1 &
  NODE_PID=$!
  load --label node --url "http://127.0.0.1:$NODE_PORT" --rss-pid "$NODE_PID" \
    --scenarios jwks,jwks-304,me,login,refresh,mixed "${COMMON[@]}" --json-out "$OUT/node.json"
  if ! kill -0 "$NODE_PID" 2>/dev/null; then
    echo "bench/run.sh: the Node service died; see $OUT/node.log" >&2
    FAILED=1
  fi
  cleanup
  NODE_PID=""
  rm -rf "$NODE_DATA"
fi

if [ "$GROWTH" = 1 ]; then
  step "growth: seed $USERS users and families, then refresh and login, empty vs seeded"
  SEED="$OUT/seeded.db"
  rm -f "$SEED" "$SEED-wal" "$SEED-shm"
  load --seed-db "$SEED" --users "$USERS"
  for round in $(seq 1 "$REPEAT"); do
    load --label growth-empty --spawn "$BIN" --scenarios login,refresh \
      --raw commit --raw-duration "$RAW_DUR" --duration "$DUR" --warmup "$WARM" --concurrency "$CONC" \
      --json-out "$OUT/growth-empty-$round.json"
    load --label growth-seeded --spawn "$BIN" --database "$SEED" --scenarios login,refresh \
      --raw commit --raw-duration "$RAW_DUR" --duration "$DUR" --warmup "$WARM" --concurrency "$CONC" \
      --json-out "$OUT/growth-seeded-$round.json"
  done
  rm -f "$SEED" "$SEED-wal" "$SEED-shm"
fi

if [ "$SOAK" = 1 ]; then
  # A deployed service's database is larger than SQLite's page caches (a few MiB in
  # all); on an empty one they would fill during the soak as the database grows, which
  # would look like growth. 100,000 users and families are 68 MiB.
  step "soak (scripts/soak.sh): $SOAK_DUR s at 80 % of capacity on $SOAK_USERS users and families"
  SOAK_DB="$OUT/soak-seed.db"
  rm -f "$SOAK_DB" "$SOAK_DB-wal" "$SOAK_DB-shm"
  load --seed-db "$SOAK_DB" --users "$SOAK_USERS"
  if ! DURATION="$SOAK_DUR" PROBE="$SOAK_PROBE" CONCURRENCY="$CONC" DATABASE="$SOAK_DB" \
    JSON_OUT="$OUT/soak.json" PROFILE="$PROFILE" bash scripts/soak.sh; then
    echo "bench/run.sh: the soak failed" >&2
    FAILED=1
  fi
  rm -f "$SOAK_DB" "$SOAK_DB-wal" "$SOAK_DB-shm"
fi

step "ratio table ($OUT)"
"$LOAD" --report "$OUT"/*.json | tee "$OUT/report.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || FAILED=1

step "done"
if [ "$FAILED" -ne 0 ]; then
  echo "bench/run.sh: something crashed or failed (see above)" >&2
  exit 1
fi
