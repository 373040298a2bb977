#!/usr/bin/env bash
# Interop for service clients: independent OAuth client libraries, given only the issuer URL
# and a client's credentials, obtain tokens (client_secret_basic and client_secret_post) and
# introspect them - Python Authlib (client_authlib.py) and Node oauth4webapi
# (client_oauth4webapi.mjs, which discovers the issuer by RFC 8414).
#
#   bash tests/interop/clients.sh      (from anywhere; CI runs it from the repo root)
#
# Needs what run.sh needs (python3 with venv + pip, node 20 + npm, the registries the first
# time); it shares run.sh's pinned venv and node_modules. Exit status 0 only if every check
# passed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# shellcheck source=scripts/lib/server.sh
source "$REPO/scripts/lib/server.sh"

CACHE="${GATEHOUSE_CI_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/gatehouse-ci}"
PYV="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
START=$SECONDS
trap gh_stop EXIT
trap 'exit 130' INT TERM

say "== interop: Authlib and oauth4webapi as service clients of gatehouse"

stamp() { sha256sum "$1" | cut -c1-16; }
PYVENV="$CACHE/interop-py$PYV-$(stamp "$HERE/requirements.txt")"
if [[ ! -x "$PYVENV/bin/python" || ! -f "$PYVENV/.complete" ]]; then
  say "installing Authlib into $PYVENV"
  rm -rf "$PYVENV"; mkdir -p "$CACHE"
  python3 -m venv "$PYVENV"
  "$PYVENV/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
  touch "$PYVENV/.complete"
fi
lock_stamp="$(stamp "$HERE/package-lock.json")"
if [[ "$(cat "$HERE/node_modules/.gatehouse-stamp" 2>/dev/null)" != "$lock_stamp" ]]; then
  say "installing oauth4webapi with npm ci"
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$lock_stamp" >"$HERE/node_modules/.gatehouse-stamp"
fi

gh_build
check "gatehouse starts and /readyz answers 200" gh_start
[[ -n "$GH_PID" ]] || exit 1
CREATED="$(gh_cli clients create --name interop --scope introspect 2>/dev/null)" || CREATED=""
CLIENT_ID="$(sed -n 's/^client_id: *//p' <<<"$CREATED")"
CLIENT_SECRET="$(sed -n 's/^client_secret: *//p' <<<"$CREATED")"
check "gatehouse clients create gives an id and a secret" test -n "$CLIENT_ID" -a -n "$CLIENT_SECRET"
[[ -n "$CLIENT_SECRET" ]] || exit 1

authlib_ok() { "$PYVENV/bin/python" -u "$HERE/client_authlib.py" "$GH_BASE" "$CLIENT_ID" "$CLIENT_SECRET"; }
check "Authlib: token by basic and by post, introspection, revocation" authlib_ok
node_ok() { (cd "$HERE" && node client_oauth4webapi.mjs "$GH_BASE" "$CLIENT_ID" "$CLIENT_SECRET"); }
check "oauth4webapi: discovery, token by basic and by post, introspection" node_ok

no_panic() { ! grep -qi 'panicked' "$GH_TMP/server.log"; }
check "no panic in the server log" no_panic
say "interop clients: $GH_CHECKS_PASSED passed, $GH_CHECKS_FAILED failed ($((SECONDS - START)) s)"
[[ $GH_CHECKS_FAILED -eq 0 ]]
