#!/usr/bin/env bash
# The spec is the API: runs schemathesis (from PyPI) against a running gatehouse with
# openapi.yaml, and fails on any 5xx, undocumented status code, response that does not match
# its schema, wrong content type or missing documented header.
#
#   bash scripts/schemathesis.sh            (from anywhere; CI runs it from the repo root)
#
# Needs: cargo, python3 (3.11) with venv + pip, and the PyPI registry the first time.
# What it does, one line per check:
#   1. installs schemathesis (pinned, with its dependencies pinned in
#      scripts/requirements-schemathesis.txt) into a venv under the cache dir
#      (GATEHOUSE_CI_CACHE, default ~/.cache/gatehouse-ci), reused when already there;
#   2. `cargo build` of target/debug/gatehouse (a no-op when up to date; GH_NO_BUILD=1 skips it
#      when the binary exists);
#   3. starts gatehouse on a free loopback port with a temp database and keys directory;
#   4. creates an admin (CLI) and a user (signup), logs both in;
#   5. flows (scripts/schemathesis_flows.py): success and error paths the fuzzer cannot
#      reach (real passwords and refresh tokens, password change, account deletion, lockout,
#      admin actions on a real user), each validated with schemathesis' checks;
#   6. `schemathesis run openapi.yaml` with scripts/schemathesis.toml: coverage, fuzzing and
#      stateful phases, 50 examples per operation, the admin's bearer token;
#   7. asserts the admin token still works and the server is still alive, scans the server
#      log for panics, then stops the server;
#   8. starts a second server with every rate-limit tier at 1/1 and checks that every
#      operation's 429 `rate_limited` (with Retry-After) matches the spec, and that JWKS,
#      discovery, health and metrics are never limited.
# Exit status: 0 only if every step passed.
# Knobs: ST_MAX_EXAMPLES (50), ST_TIMEOUT (seconds for the schemathesis run, 240),
#        GH_KEEP_TMP=1 keeps the temp dir (server log, reports),
#        ST_SPEC / ST_CONFIG another spec or schemathesis config (to test this script itself).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/server.sh
source "$REPO/scripts/lib/server.sh"

ST_VERSION=4.32.5
CACHE="${GATEHOUSE_CI_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/gatehouse-ci}"
PYV="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
VENV="$CACHE/schemathesis-$ST_VERSION-py$PYV"
REQS="$REPO/scripts/requirements-schemathesis.txt"
SPEC="${ST_SPEC:-$REPO/openapi.yaml}"
CONFIG="${ST_CONFIG:-$REPO/scripts/schemathesis.toml}"
START=$SECONDS

cleanup() { gh_stop; }
trap cleanup EXIT
trap 'exit 130' INT TERM

say "== schemathesis $ST_VERSION against gatehouse ($REPO)"

# 1. schemathesis in a venv, reinstalled only when the pinned requirements change.
stamp="$(sha256sum "$REQS" | cut -c1-16)"
if [[ ! -x "$VENV/bin/schemathesis" || "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ]]; then
  say "installing schemathesis $ST_VERSION into $VENV"
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQS"
  echo "$stamp" >"$VENV/.stamp"
fi
st_installed() { "$VENV/bin/schemathesis" --version | grep -qx "schemathesis, version $ST_VERSION"; }
check "schemathesis $ST_VERSION installed" st_installed

# 2-3. the server
gh_build
# Passkeys on (a loopback relying party), so their endpoints answer their real options
# and errors rather than the 404 of a server without them.
PASSKEYS=(GATEHOUSE_WEBAUTHN_RP_ID=localhost GATEHOUSE_WEBAUTHN_ORIGINS=http://localhost)
check "gatehouse starts and /readyz answers 200" gh_start GATEHOUSE_BODY_TIMEOUT=2 "${PASSKEYS[@]}"
[[ -n "$GH_PID" ]] || exit 1
say "     server $GH_BASE (pid $GH_PID, dir $GH_TMP)"

# 4. users and tokens
ADMIN_EMAIL=admin@example.com
ADMIN_PASSWORD='Correct-Horse-9!'
USER_EMAIL=user@example.com
USER_PASSWORD='Battery-Staple-7?'
create_admin() { printf '%s\n' "$ADMIN_PASSWORD" | gh_cli users create --email "$ADMIN_EMAIL" --admin >/dev/null; }
signup_user() { gh_signup "$USER_EMAIL" "$USER_PASSWORD" >/dev/null; }
check "admin created with the CLI" create_admin
check "user signs up" signup_user
ADMIN_TOKEN="$(gh_login "$ADMIN_EMAIL" "$ADMIN_PASSWORD" | gh_json_field access_token)" || true
USER_TOKEN="$(gh_login "$USER_EMAIL" "$USER_PASSWORD" | gh_json_field access_token)" || true
check "admin and user log in" test -n "$ADMIN_TOKEN" -a -n "$USER_TOKEN"
[[ -n "$ADMIN_TOKEN" ]] || exit 1
status_of() { gh_http "$@" | tail -n1; }
user_refused() { [[ "$(status_of GET /v1/admin/users '' "$USER_TOKEN")" == 403 ]]; }
check "user token is refused on an admin endpoint (403)" user_refused

# 5. deterministic flows, validated with schemathesis' checks
say "-- flows (success paths the fuzzer cannot reach)"
flows_ok=true
"$VENV/bin/python" "$REPO/scripts/schemathesis_flows.py" main "$SPEC" "$GH_BASE" "$ADMIN_TOKEN" || flows_ok=false
check "flows: every request answered as the contract and openapi.yaml say" $flows_ok

# 6. the fuzzing run
say "-- schemathesis run (max ${ST_MAX_EXAMPLES:-50} examples per operation, ${ST_TIMEOUT:-240} s at most)"
WORK="$GH_TMP/schemathesis"
mkdir -p "$WORK"
st_ok=true
(
  cd "$WORK"  # schemathesis writes nothing into the repository
  export GH_BASE_URL="$GH_BASE" GH_ADMIN_TOKEN="$ADMIN_TOKEN"
  timeout --kill-after=10 "${ST_TIMEOUT:-240}" \
    "$VENV/bin/schemathesis" --config-file "$CONFIG" --no-color \
    run "$SPEC" \
    --max-examples "${ST_MAX_EXAMPLES:-50}" \
    --report junit --report-dir "$WORK/report"
) >"$WORK/output.txt" 2>&1 || st_ok=false
# Its summary and failures, without the progress noise.
# (Tracebacks of tool errors are cut to their last lines; the whole output is in $WORK/output.txt.)
sed -n '/^=\+ FAILURES\|^=\+ ERRORS\|^=\+ WARNINGS\|^=\+ SUMMARY/,$p' "$WORK/output.txt" |
  grep -v '^ *| ' | cut -c1-400
if ! grep -q '^=\+ SUMMARY' "$WORK/output.txt"; then
  tail -n 40 "$WORK/output.txt"
fi
check "schemathesis: no server error, undocumented status, schema, content-type or header mismatch" $st_ok

# 7. the run stayed meaningful and the server healthy
admin_alive() { [[ "$(status_of GET /v1/me '' "$ADMIN_TOKEN")" == 200 ]]; }
check "admin token still valid after the run (the run exercised authenticated paths)" admin_alive
check "server still running" kill -0 "$GH_PID"
no_panic() { ! grep -qi 'panicked' "$GH_TMP/server.log"; }
check "no panic in the server log" no_panic

gh_stop

# 8. rate limits: a second server with every tier at 1 request a minute, burst 1.
say "-- rate limits (GATEHOUSE_RATE_LIMITS=on, every tier 1/1)"
check "gatehouse starts with strict rate limits" gh_start GATEHOUSE_RATE_LIMITS=on "${PASSKEYS[@]}" \
  GATEHOUSE_RATE_LIMIT_AUTH=1/1 GATEHOUSE_RATE_LIMIT_WRITES=1/1 GATEHOUSE_RATE_LIMIT_READS=1/1
if [[ -n "$GH_PID" ]]; then
  check "admin created with the CLI" create_admin
  ADMIN_TOKEN="$(gh_login "$ADMIN_EMAIL" "$ADMIN_PASSWORD" | gh_json_field access_token)" || true
  check "admin logs in (spends the login bucket)" test -n "$ADMIN_TOKEN"
  rl_ok=true
  "$VENV/bin/python" "$REPO/scripts/schemathesis_flows.py" rate-limits "$SPEC" "$GH_BASE" "$ADMIN_TOKEN" || rl_ok=false
  check "rate limits: every tier answers 429 rate_limited with Retry-After, as documented" $rl_ok
  gh_stop
fi

say "schemathesis.sh: $GH_CHECKS_PASSED passed, $GH_CHECKS_FAILED failed ($((SECONDS - START)) s)"
[[ $GH_CHECKS_FAILED -eq 0 ]]
