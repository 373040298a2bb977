# shellcheck shell=bash
# Helpers shared by scripts/schemathesis.sh and tests/interop/run.sh: build the debug
# binary if needed, start gatehouse on a free loopback port with a throw-away database and
# keys directory, wait for /readyz, create users, log in, and stop it again.
#
# Source it after setting REPO (the repository root). It defines:
#   GH_BIN, GH_TMP, GH_PORT, GH_BASE, GH_PID, gh_env (array of VAR=value)
#   gh_build, gh_start, gh_stop, gh_cli ARGS..., gh_http METHOD PATH [JSON] [BEARER],
#   gh_json_field FIELD (reads JSON on stdin), check NAME CMD... (one line per check)

: "${REPO:?set REPO to the repository root before sourcing scripts/lib/server.sh}"

GH_LIB="$REPO/scripts/lib"
GH_BIN="$REPO/target/debug/gatehouse"
GH_TMP=""
GH_PORT=""
GH_BASE=""
GH_PID=""
GH_CHECKS_PASSED=0
GH_CHECKS_FAILED=0
gh_env=()

say() { printf '%s\n' "$*"; }

# check NAME CMD...: runs CMD, prints "ok   NAME" or "FAIL NAME", counts the result.
check() {
  local name="$1"; shift
  if "$@"; then
    GH_CHECKS_PASSED=$((GH_CHECKS_PASSED + 1)); printf 'ok   %s\n' "$name"
  else
    GH_CHECKS_FAILED=$((GH_CHECKS_FAILED + 1)); printf 'FAIL %s\n' "$name"
  fi
}

# gh_build: `cargo build` of the debug binary (a no-op when it is up to date, so a stale binary
# is never tested); GH_NO_BUILD=1 uses target/debug/gatehouse as it is, if it exists.
gh_build() {
  if [[ -n "${GH_NO_BUILD:-}" && -x "$GH_BIN" ]]; then
    return 0
  fi
  say "cargo build (debug binary)"
  (cd "$REPO" && cargo build --quiet --bin gatehouse)
}

gh_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# gh_start [EXTRA_ENV=value ...]: a fresh server in a fresh temp dir.
gh_start() {
  GH_TMP="$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-test.XXXXXX")"
  chmod 700 "$GH_TMP"
  GH_PORT="$(gh_free_port)"
  GH_BASE="http://127.0.0.1:$GH_PORT"
  gh_env=(
    "GATEHOUSE_BIND=127.0.0.1:$GH_PORT"
    "GATEHOUSE_DATABASE=$GH_TMP/gh.db"
    "GATEHOUSE_KEYS_DIR=$GH_TMP/keys"
    "GATEHOUSE_ISSUER=$GH_BASE"
    "GATEHOUSE_RATE_LIMITS=off"
    "GATEHOUSE_JWKS_MAX_AGE=1"
    "GATEHOUSE_LOG_FORMAT=json"
    "RUST_LOG=${RUST_LOG:-info}"
    "$@"
  )
  env "${gh_env[@]}" "$GH_BIN" serve >"$GH_TMP/server.log" 2>&1 &
  GH_PID=$!
  local i
  for ((i = 0; i < 300; i++)); do
    if ! kill -0 "$GH_PID" 2>/dev/null; then
      say "gatehouse exited during start; its log:"; cat "$GH_TMP/server.log"; GH_PID=""; return 1
    fi
    if [[ "$(python3 "$GH_LIB/ghhttp.py" --status "$GH_BASE/readyz")" == 200 ]]; then
      return 0
    fi
    sleep 0.1
  done
  say "gatehouse did not become ready in 30 s; its log:"; cat "$GH_TMP/server.log"
  return 1
}

# gh_stop: SIGTERM, then SIGKILL after 10 s; removes the temp dir unless GH_KEEP_TMP is set.
gh_stop() {
  if [[ -n "$GH_PID" ]] && kill -0 "$GH_PID" 2>/dev/null; then
    kill -TERM "$GH_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
      kill -0 "$GH_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$GH_PID" 2>/dev/null || true
    wait "$GH_PID" 2>/dev/null || true
  fi
  GH_PID=""
  if [[ -n "$GH_TMP" && -d "$GH_TMP" ]]; then
    if [[ -n "${GH_KEEP_TMP:-}" ]]; then
      say "kept $GH_TMP (server log: $GH_TMP/server.log)"
    else
      rm -rf "$GH_TMP"
    fi
  fi
  GH_TMP=""
}

# gh_cli ARGS...: the gatehouse CLI with the running server's configuration.
gh_cli() { env "${gh_env[@]}" "$GH_BIN" "$@"; }

# gh_http METHOD PATH [JSON_BODY] [BEARER]: prints the body, then "\n<status>" on the last line.
gh_http() {
  local out
  out="$(python3 "$GH_LIB/ghhttp.py" "$1" "$GH_BASE$2" "${3:-}" "${4:-}")" || return 1
  printf '%s\n' "$out"
}

# gh_json_field FIELD: one top-level field of the JSON document on stdin ("" if absent).
gh_json_field() {
  python3 -c 'import json,sys
try: v = json.load(sys.stdin).get(sys.argv[1], "")
except Exception: v = ""
print(v if isinstance(v, str) else json.dumps(v))' "$1"
}

# gh_login EMAIL PASSWORD: prints the whole token response; fails unless 200.
gh_login() {
  local out status
  out="$(gh_http POST /v1/login "{\"email\":\"$1\",\"password\":\"$2\"}")"
  status="${out##*$'\n'}"
  [[ "$status" == 200 ]] || { say "login of $1 answered $status: ${out%$'\n'*}" >&2; return 1; }
  printf '%s\n' "${out%$'\n'*}"
}

# gh_signup EMAIL PASSWORD: prints the whole token response; fails unless 201.
gh_signup() {
  local out status
  out="$(gh_http POST /v1/signup "{\"email\":\"$1\",\"password\":\"$2\"}")"
  status="${out##*$'\n'}"
  [[ "$status" == 201 ]] || { say "signup of $1 answered $status: ${out%$'\n'*}" >&2; return 1; }
  printf '%s\n' "${out%$'\n'*}"
}
