#!/usr/bin/env bash
# Interop, proven: gatehouse access tokens verified by real third-party verifiers given only the
# issuer URL - Python PyJWT + PyJWKClient and Node jose + createRemoteJWKSet - before, during
# and after a key rotation, with the same verifier instances throughout.
#
#   bash tests/interop/run.sh          (from anywhere; CI runs it from the repo root)
#
# Needs: cargo, python3 (3.11) with venv + pip, node 20 + npm, and the PyPI and npm registries
# the first time. Dependencies are pinned (tests/interop/requirements.txt, package-lock.json);
# the Python venv lives under GATEHOUSE_CI_CACHE (default ~/.cache/gatehouse-ci), node_modules
# in tests/interop/ (git-ignored); both are reused when the pins have not changed.
#
# The story, one line per check:
#   start gatehouse (GATEHOUSE_JWKS_MAX_AGE=1), sign up, get access token A;
#   both verifiers read discovery and verify A;
#   `gatehouse keys generate` adds a *next* key; rotating at once is refused (not yet published
#   for the JWKS max-age + the key reload interval); SIGHUP; within 1 s the JWKS publishes both
#   keys while A's key still signs; wait > max-age; each verifier refreshes its cached JWK Set
#   and verifies A again; `gatehouse keys rotate` (retried until gatehouse allows it, ~7 s after
#   generate with GATEHOUSE_KEYS_RELOAD_INTERVAL=6); SIGHUP; within 1 s a new login gives token
#   B signed by the former next key;
#   the SAME verifier instances verify A and B without downloading the JWKS again (their
#   pre-rotation cache is enough: zero verifier breakage);
#   both refuse a tampered token, a token for another audience or issuer, an expired one,
#   alg none, HS256 with the public key, and an unknown kid (a re-signed control passes).
# Exit status: 0 only if every check passed.  GH_KEEP_TMP=1 keeps the server's temp dir.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# shellcheck source=scripts/lib/server.sh
source "$REPO/scripts/lib/server.sh"

CACHE="${GATEHOUSE_CI_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/gatehouse-ci}"
PYV="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
START=$SECONDS
PASSWORD='Interop-Password-1!'
declare -A VIN VOUT VPID
VERIFIERS=(pyjwt jose)
FIFO_DIR=""

cleanup() {
  local v
  for v in "${VERIFIERS[@]}"; do
    # shellcheck disable=SC1083,SC2086
    if [[ -n "${VIN[$v]:-}" ]]; then exec {VIN[$v]}>&- || true; fi
    if [[ -n "${VPID[$v]:-}" ]]; then kill "${VPID[$v]}" 2>/dev/null || true; wait "${VPID[$v]}" 2>/dev/null || true; fi
  done
  gh_stop
  [[ -n "$FIFO_DIR" ]] && rm -rf "$FIFO_DIR"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "== interop: PyJWT (PyJWKClient) and jose (createRemoteJWKSet) verify gatehouse tokens across a key rotation"

# -- dependencies -------------------------------------------------------------------------------
stamp() { sha256sum "$1" | cut -c1-16; }
PYVENV="$CACHE/interop-py$PYV-$(stamp "$HERE/requirements.txt")"
if [[ ! -x "$PYVENV/bin/python" || ! -f "$PYVENV/.complete" ]]; then
  say "installing PyJWT into $PYVENV"
  rm -rf "$PYVENV"; mkdir -p "$CACHE"
  python3 -m venv "$PYVENV"
  "$PYVENV/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
  touch "$PYVENV/.complete"
fi
lock_stamp="$(stamp "$HERE/package-lock.json")"
if [[ "$(cat "$HERE/node_modules/.gatehouse-stamp" 2>/dev/null)" != "$lock_stamp" ]]; then
  say "installing jose with npm ci"
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$lock_stamp" >"$HERE/node_modules/.gatehouse-stamp"
fi
py_deps() { "$PYVENV/bin/python" -c 'import jwt, cryptography; assert jwt.__version__ == "2.15.1"'; }
node_deps() { (cd "$HERE" && node -e 'import("jose").then(() => process.exit(0), () => process.exit(1))'); }
check "PyJWT 2.15.1 with cryptography importable" py_deps
check "jose importable from node $(node --version)" node_deps

# -- helpers ------------------------------------------------------------------------------------
# A token's header field, or its claims.
jwt_header() { python3 -c 'import base64,json,sys; h=sys.argv[1].split(".")[0]; print(json.loads(base64.urlsafe_b64decode(h+"="*(-len(h)%4))).get(sys.argv[2],""))' "$1" "$2"; }
jwks_kids() { gh_http GET /.well-known/jwks.json | sed '$d' | python3 -c 'import json,sys; print(" ".join(sorted(k["kid"] for k in json.load(sys.stdin)["keys"])))'; }
login_token() { gh_login "$1" "$PASSWORD" | gh_json_field access_token; }
forge() { "$PYVENV/bin/python" "$HERE/forge.py" "$1" "$2" "$GH_TMP/keys"; }

# start_verifier NAME CMD...: a long-lived verifier on two FIFOs; waits for its READY line.
start_verifier() {
  local name="$1"; shift
  mkfifo "$FIFO_DIR/$name.in" "$FIFO_DIR/$name.out"
  "$@" <"$FIFO_DIR/$name.in" >"$FIFO_DIR/$name.out" 2>"$FIFO_DIR/$name.err" &
  VPID[$name]=$!
  # shellcheck disable=SC1083,SC2086,SC2093
  exec {VIN[$name]}>"$FIFO_DIR/$name.in"
  # shellcheck disable=SC1083,SC2086,SC2093
  exec {VOUT[$name]}<"$FIFO_DIR/$name.out"
  local ready=""
  if read -r -t 30 ready <&"${VOUT[$name]}" && [[ "$ready" == READY* ]]; then
    say "     $name: $ready"
    return 0
  fi
  say "     $name did not start: ${ready:-no answer}"; cat "$FIFO_DIR/$name.err" || true
  return 1
}

# ask NAME COMMAND: one command, one answer line in $REPLY_LINE.
REPLY_LINE=""
ask() {
  REPLY_LINE=""
  printf '%s\n' "$2" >&"${VIN[$1]}" || { REPLY_LINE="FAIL verifier $1 is gone"; return 1; }
  read -r -t 30 REPLY_LINE <&"${VOUT[$1]}" || { REPLY_LINE="FAIL no answer from $1 in 30 s"; return 1; }
}
fetches_in() { sed -n 's/.*fetches=\([0-9]*\).*/\1/p' <<<"$1"; }

# expect_ok NAME TOKEN [KID]: the verifier accepts TOKEN (signed by KID, if given).
expect_ok() {
  ask "$1" "VERIFY $2" || true
  if [[ "$REPLY_LINE" != OK* ]] || { [[ -n "${3:-}" ]] && [[ "$REPLY_LINE" != *"kid=$3 "* ]]; }; then
    say "       $1 answered: $REPLY_LINE"; return 1
  fi
}
# expect_fail NAME TOKEN: the verifier refuses TOKEN.
expect_fail() {
  ask "$1" "VERIFY $2" || true
  if [[ "$REPLY_LINE" != FAIL* ]] || [[ "$REPLY_LINE" == *"no answer"* || "$REPLY_LINE" == *"is gone"* ]]; then
    say "       $1 answered: $REPLY_LINE"; return 1
  fi
}
# wait_for SECONDS CMD...: polls CMD every 0.2 s.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# -- the server and token A ---------------------------------------------------------------------
gh_build
RELOAD_INTERVAL=6
check "gatehouse starts (GATEHOUSE_JWKS_MAX_AGE=1, GATEHOUSE_KEYS_RELOAD_INTERVAL=$RELOAD_INTERVAL) and /readyz answers 200" \
  gh_start GATEHOUSE_KEYS_RELOAD_INTERVAL=$RELOAD_INTERVAL
[[ -n "$GH_PID" ]] || exit 1
say "     issuer $GH_BASE (pid $GH_PID)"
EMAIL="interop-$RANDOM@example.com"
TOKEN_A="$(gh_signup "$EMAIL" "$PASSWORD" | gh_json_field access_token)" || true
check "sign up returns access token A" test -n "$TOKEN_A"
[[ -n "$TOKEN_A" ]] || exit 1
KID_A="$(jwt_header "$TOKEN_A" kid)"
header_ok() { [[ "$(jwt_header "$TOKEN_A" alg)" == RS256 && "$(jwt_header "$TOKEN_A" typ)" == JWT && -n "$KID_A" ]]; }
check "A's header: alg RS256, typ JWT, kid $KID_A" header_ok
a_published() { [[ " $(jwks_kids) " == *" $KID_A "* ]]; }
check "the JWKS publishes A's kid" a_published

# -- the verifiers, given only the issuer -------------------------------------------------------
FIFO_DIR="$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-interop.XXXXXX")"
check "PyJWT verifier reads discovery (issuer only)" \
  start_verifier pyjwt "$PYVENV/bin/python" -u "$HERE/verify_pyjwt.py" "$GH_BASE"
check "jose verifier reads discovery (issuer only)" \
  start_verifier jose node "$HERE/verify_jose.mjs" "$GH_BASE"
for v in "${VERIFIERS[@]}"; do [[ -n "${VOUT[$v]:-}" ]] || exit 1; done
for v in "${VERIFIERS[@]}"; do
  check "$v verifies A" expect_ok "$v" "$TOKEN_A" "$KID_A"
done

# -- next key: generated, published, not signing ------------------------------------------------
GEN_AT=$SECONDS
GEN_OUT="$(gh_cli keys generate 2>&1)" && gen_rc=0 || gen_rc=$?
say "     keys generate: $(head -n1 <<<"$GEN_OUT")"
check "gatehouse keys generate exits 0" test "$gen_rc" -eq 0
early_rotate_refused() {
  local out rc=0
  out="$(gh_cli keys rotate 2>&1)" || rc=$?
  say "       keys rotate at once: exit $rc: $(head -n1 <<<"$out")"
  [[ $rc -eq 1 ]]
}
check "keys rotate right away is refused with exit 1 (next key not yet published for the max-age)" early_rotate_refused
sighup() { kill -HUP "$GH_PID" && sleep 0.2 && kill -0 "$GH_PID"; }
check "SIGHUP: the server keeps running" sighup
two_keys() { [[ "$(wc -w <<<"$(jwks_kids)")" -ge 2 ]]; }
# Within 1 s of the SIGHUP, well inside the ${RELOAD_INTERVAL} s re-scan: the signal did it.
check "the JWKS publishes the next key within 1 s of the SIGHUP" wait_for 1 two_keys
KID_NEXT="$(tr ' ' '\n' <<<"$(jwks_kids)" | grep -vxF -e "$KID_A" | head -n1 || true)"
say "     next kid: ${KID_NEXT:-none}"
TOKEN_A2="$(login_token "$EMAIL")" || true
still_a() { [[ -n "$TOKEN_A2" && "$(jwt_header "$TOKEN_A2" kid)" == "$KID_A" ]]; }
check "the next key does not sign yet: a new login is still signed by A's key" still_a

# -- every verifier refreshes its cache after the max-age ---------------------------------------
sleep 1.5  # > GATEHOUSE_JWKS_MAX_AGE=1: a verifier honouring max-age refetches now
declare -A FETCHES_AFTER_RELOAD
for v in "${VERIFIERS[@]}"; do
  reload_sees_next() {
    ask "$1" RELOAD || true
    FETCHES_AFTER_RELOAD[$1]="$(fetches_in "$REPLY_LINE")"
    [[ "$REPLY_LINE" == OK* && -n "$KID_NEXT" && "$REPLY_LINE" == *"$KID_NEXT"* && "$REPLY_LINE" == *"$KID_A"* ]] ||
      { say "       $1 answered: $REPLY_LINE"; return 1; }
  }
  check "$v refreshes its JWK Set: it now caches A's key and the next key" reload_sees_next "$v"
  check "$v verifies A again" expect_ok "$v" "$TOKEN_A" "$KID_A"
done

# -- rotation -----------------------------------------------------------------------------------
# gatehouse refuses the rotation until the next key has been published for the JWKS max-age
# plus the reload interval (so every replica serves it and every honest cache holds it): retry.
ROT_OUT="" rot_rc=1
rotate_when_allowed() {
  ROT_OUT="$(gh_cli keys rotate 2>&1)" && rot_rc=0 || rot_rc=$?
  [[ $rot_rc -eq 0 ]]
}
check "gatehouse keys rotate succeeds once the next key was published for max-age + reload interval" \
  wait_for $((RELOAD_INTERVAL + 15)) rotate_when_allowed
say "     keys rotate, $((SECONDS - GEN_AT)) s after generate: exit $rot_rc: $(head -n1 <<<"$ROT_OUT")"
check "SIGHUP after the rotation; the server keeps running" sighup
TOKEN_B=""
new_kid_signs() { TOKEN_B="$(login_token "$EMAIL")" && [[ -n "$TOKEN_B" && "$(jwt_header "$TOKEN_B" kid)" != "$KID_A" ]]; }
check "within 1 s of the SIGHUP a new login gives token B with a kid other than A's" wait_for 1 new_kid_signs
KID_B="$(jwt_header "${TOKEN_B:-x.x.x}" kid 2>/dev/null || true)"
say "     B's kid: ${KID_B:-none}"
check "B is signed by the key that was published as next before the rotation" test -n "$KID_B" -a "$KID_B" == "$KID_NEXT"
both_published() { local k; k=" $(jwks_kids) "; [[ "$k" == *" $KID_A "* && "$k" == *" ${KID_B:-none} "* ]]; }
check "the JWKS still publishes A's (retired) key next to B's" both_published
LIST_OUT="$(gh_cli keys list 2>&1)" || true
say "     keys list:"; while IFS= read -r l; do say "       $l"; done <<<"$LIST_OUT"
lists_both() { [[ "$LIST_OUT" == *"$KID_A"* && -n "$KID_B" && "$LIST_OUT" == *"$KID_B"* ]]; }
check "gatehouse keys list shows both keys" lists_both

# -- the same verifier instances, with their pre-rotation cache ---------------------------------
for v in "${VERIFIERS[@]}"; do
  check "$v (cache from before the rotation) verifies A" expect_ok "$v" "$TOKEN_A" "$KID_A"
  check "$v (cache from before the rotation) verifies B" expect_ok "$v" "${TOKEN_B:-none}" "${KID_B:-none}"
  no_refetch() {
    ask "$1" FETCHES || true
    [[ "$(fetches_in "$REPLY_LINE")" == "${FETCHES_AFTER_RELOAD[$1]:-x}" ]] ||
      { say "       $1: fetches ${FETCHES_AFTER_RELOAD[$1]:-?} after the refresh, now: $REPLY_LINE"; return 1; }
  }
  check "$v needed no JWKS download for A and B after the rotation" no_refetch "$v"
done

# -- what must be refused -----------------------------------------------------------------------
SIGNED="${TOKEN_B:-$TOKEN_A}"
for mode in control tampered audience issuer expired none hs256 unknown-kid; do
  forged="$(forge "$mode" "$SIGNED")" || forged="forging-failed"
  for v in "${VERIFIERS[@]}"; do
    case "$mode" in
      control) check "$v accepts a re-signed copy of a real token (control for the cases below)" expect_ok "$v" "$forged" ;;
      tampered) check "$v refuses a tampered token (role changed, signature kept)" expect_fail "$v" "$forged" ;;
      audience) check "$v refuses a validly signed token for another audience" expect_fail "$v" "$forged" ;;
      issuer) check "$v refuses a validly signed token from another issuer" expect_fail "$v" "$forged" ;;
      expired) check "$v refuses a validly signed expired token" expect_fail "$v" "$forged" ;;
      none) check "$v refuses alg none" expect_fail "$v" "$forged" ;;
      hs256) check "$v refuses HS256 keyed with the public key (algorithm confusion)" expect_fail "$v" "$forged" ;;
      unknown-kid) check "$v refuses a token signed by an unpublished key" expect_fail "$v" "$forged" ;;
    esac
  done
done

# -- a verifier refreshing after the rotation still has A's retired key -------------------------
for v in "${VERIFIERS[@]}"; do
  reload_after() { ask "$1" RELOAD || true; [[ "$REPLY_LINE" == OK* ]] || { say "       $1 answered: $REPLY_LINE"; return 1; }; }
  check "$v refreshes its JWK Set after the rotation" reload_after "$v"
  check "$v still verifies A (retired key still published)" expect_ok "$v" "$TOKEN_A" "$KID_A"
  check "$v verifies B" expect_ok "$v" "${TOKEN_B:-none}" "${KID_B:-none}"
done

check "server still running" kill -0 "$GH_PID"
no_panic() { ! grep -qi 'panicked' "$GH_TMP/server.log"; }
check "no panic in the server log" no_panic

say "interop: $GH_CHECKS_PASSED passed, $GH_CHECKS_FAILED failed ($((SECONDS - START)) s)"
[[ $GH_CHECKS_FAILED -eq 0 ]]
