#!/usr/bin/env python3
"""Deterministic flows that random generation cannot reach, checked with schemathesis' own checks.

Fuzzing never knows a valid password or a live refresh token, and some successes would
destroy the session the fuzzer runs with (DELETE /v1/me, a password change). Each flow here
sends one real request (signing up its own throw-away users), asserts the status the contract
requires, and validates the response against openapi.yaml with the same checks as
`schemathesis run`: not_a_server_error, status_code_conformance, content_type_conformance,
response_headers_conformance, response_schema_conformance.

Usage: schemathesis_flows.py main|rate-limits OPENAPI_YAML BASE_URL ADMIN_TOKEN
  main         the flows below, against a server with GATEHOUSE_RATE_LIMITS=off
  rate-limits  every tier answers 429 `rate_limited` with `Retry-After` once its bucket is
               spent, against a server started with GATEHOUSE_RATE_LIMITS=on and every tier at
               1/1 (the admin has logged in once, spending the login bucket); JWKS, discovery,
               health and metrics are never limited
Prints one line per check ("ok   ..." / "FAIL ...") and exits 1 if any failed.
Runs inside the schemathesis venv (it brings requests and schemathesis).
"""

from __future__ import annotations

import base64
import http.client
import json
import sys
import time
import urllib.parse
import uuid

import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.core.failures import FailureGroup
from schemathesis.core.transport import Response as StResponse
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
PASSWORD = "Flow-Password-42!"

passed = 0
failed = 0


def sid_of(access_token: str) -> str:
    """The session (refresh-token family) an access token acts through."""
    try:
        claims = access_token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["sid"]
    except (IndexError, ValueError, KeyError):
        return ""


class Flows:
    def __init__(self, spec: str, base: str, admin_token: str) -> None:
        self.schema = schemathesis.openapi.from_path(spec)
        self.base = base.rstrip("/")
        self.admin = admin_token
        self.http = requests.Session()

    # -- plumbing ---------------------------------------------------------------------

    def send(
        self,
        op_id: str,
        *,
        expect: int,
        title: str,
        path: dict | None = None,
        query: dict | None = None,
        body=None,
        token: str | None = None,
        headers: dict | None = None,
        raw: bytes | None = None,
        content_type: str | None = "application/json",
        also=None,
    ):
        """One request of operation `op_id`; asserts `expect` and the schema checks."""
        global passed, failed
        op = self.schema.find_operation_by_id(op_id)
        url = self.base + op.path.format(**(path or {}))
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        data = None
        if raw is not None:
            data = raw
        elif body is not None:
            data = json.dumps(body).encode()
        if data is not None and content_type:
            hdrs["Content-Type"] = content_type
        resp = self.http.request(op.method.upper(), url, params=query, data=data, headers=hdrs, timeout=30)
        case = op.Case(path_parameters=path or {}, query=query or {}, headers=hdrs,
                       body=body if body is not None else NOT_SET)
        return self.judge(op, case, resp, expect=expect, title=title, also=also)

    def judge(self, op, case, resp, *, expect: int, title: str, also=None):
        """Asserts the status and runs the schema checks on a response to `case`."""
        global passed, failed
        problems = []
        if resp.status_code != expect:
            problems.append(f"expected {expect}, got {resp.status_code}: {resp.text[:300]}")
        try:
            case.validate_response(resp, checks=CHECKS)
        except (AssertionError, FailureGroup) as exc:
            problems.append(" ".join(str(exc).split())[:900])
        if also is not None and not problems:
            try:
                extra = also(resp)
                if extra:
                    problems.append(extra)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{type(exc).__name__}: {exc}")
        name = f"{op.method.upper()} {op.path} -> {expect}: {title}"
        if problems:
            failed += 1
            print(f"FAIL {name}")
            for p in problems:
                print(f"       {p}")
        else:
            passed += 1
            print(f"ok   {name}")
        sys.stdout.flush()
        return resp

    def slow_body(self, op_id: str, *, title: str):
        """Sends headers and half a body, then nothing: expects 408 within the body timeout."""
        op = self.schema.find_operation_by_id(op_id)
        url = urllib.parse.urlsplit(self.base + op.path)
        partial = b'{"email": "slow@example.com", '
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        started = time.monotonic()
        conn.putrequest("POST", url.path)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", "200")
        conn.endheaders()
        conn.send(partial)
        raw = conn.getresponse()
        content = raw.read()
        elapsed = time.monotonic() - started
        headers: dict[str, list[str]] = {}
        for k, v in raw.getheaders():
            headers.setdefault(k.lower(), []).append(v)
        conn.close()
        prepared = requests.Request("POST", self.base + op.path, data=partial,
                                    headers={"Content-Type": "application/json"}).prepare()
        resp = StResponse(status_code=raw.status, headers=headers, content=content, request=prepared,
                          elapsed=elapsed, verify=True, message=raw.reason)
        case = op.Case(headers={"Content-Type": "application/json"}, body={"email": "slow@example.com"})
        if elapsed > 5:
            # Not a contract matter, so only noted: the script starts the server with
            # GATEHOUSE_BODY_TIMEOUT=2, and gatehouse answered after the 10 s default.
            print(f"note GATEHOUSE_BODY_TIMEOUT=2 was not honoured: 408 after {elapsed:.1f} s")
        return self.judge(op, case, resp, expect=408, title=f"{title} ({elapsed:.1f} s)",
                          also=lambda r: None if json.loads(r.content)["error"] == "request_timeout"
                          else r.content[:200])

    def signup(self, tag: str, title: str = "a new account"):
        email = f"flow-{tag}-{uuid.uuid4().hex[:8]}@example.com"
        r = self.send("signup", expect=201, title=title, body={"email": email, "password": PASSWORD})
        body = r.json() if r.status_code == 201 else {}
        return email, body

    # -- the flows --------------------------------------------------------------------

    def run(self) -> None:
        s = self.send
        # discovery and operations
        jwks = s("getJwks", expect=200, title="the key set")
        etag = jwks.headers.get("ETag", "")
        s("getJwks", expect=304, title="If-None-Match with the current ETag",
          headers={"If-None-Match": etag})
        s("getOpenIdConfiguration", expect=200, title="discovery document",
          also=lambda r: None if r.json().get("jwks_uri") == self.base + "/.well-known/jwks.json"
          else f"jwks_uri is {r.json().get('jwks_uri')}")
        s("healthz", expect=200, title="liveness")
        s("readyz", expect=200, title="readiness")
        s("metrics", expect=200, title="Prometheus text")

        # signup and request-body errors
        email, tokens = self.signup("main", "signup")
        s("signup", expect=409, title="same email again, other case and spaces",
          body={"email": f"  {email.upper()} ", "password": PASSWORD})
        s("signup", expect=400, title="every failing field at once",
          body={"email": "not-an-email", "password": "short"},
          also=lambda r: None if {d["field"] for d in r.json()["details"]} == {"email", "password"}
          else f"details: {r.json()['details']}")
        s("signup", expect=400, title="missing fields", body={})
        s("signup", expect=400, title="invalid JSON", raw=b'{"email": ')
        s("signup", expect=400, title="wrong JSON type", body={"email": 5, "password": PASSWORD})
        s("signup", expect=415, title="text/plain body", raw=b"hello", content_type="text/plain")
        s("signup", expect=415, title="no Content-Type", raw=b'{"email":"a@b.c"}', content_type=None)
        s("signup", expect=413, title="17 KiB body",
          body={"email": "a@example.com", "password": PASSWORD, "pad": "x" * 17 * 1024})
        s("signup", expect=400, title="body that is not UTF-8", raw=b'{"email": "\xff", "password": "x"}')
        self.slow_body("login", title="half a body, then silence (GATEHOUSE_BODY_TIMEOUT=2)")

        # login
        s("login", expect=200, title="right password", body={"email": email, "password": PASSWORD})
        s("login", expect=401, title="wrong password", body={"email": email, "password": PASSWORD + "x"})
        s("login", expect=401, title="unknown email",
          body={"email": "nobody-" + uuid.uuid4().hex[:8] + "@example.com", "password": PASSWORD})
        s("login", expect=400, title="missing password", body={"email": email})

        # refresh: rotation, grace, reuse
        rt0 = tokens.get("refresh_token", "")
        r1 = s("refresh", expect=200, title="rotate", body={"refresh_token": rt0})
        rt1 = r1.json().get("refresh_token", "") if r1.status_code == 200 else ""
        s("refresh", expect=200, title="replay inside the grace returns the same child",
          body={"refresh_token": rt0},
          also=lambda r: None if r.json()["refresh_token"] == rt1 else "a different child was returned")
        s("refresh", expect=200, title="use the child", body={"refresh_token": rt1})
        s("refresh", expect=401, title="replay after the child was used is reuse",
          body={"refresh_token": rt0},
          also=lambda r: None if r.json()["error"] == "refresh_token_reused" else r.json()["error"])
        s("refresh", expect=401, title="unknown token",
          body={"refresh_token": base64.urlsafe_b64encode(uuid.uuid4().bytes * 2).decode().rstrip("=")})
        s("refresh", expect=400, title="empty token", body={"refresh_token": ""})

        # logout
        _, t2 = self.signup("logout")
        s("logout", expect=204, title="revokes the family", body={"refresh_token": t2.get("refresh_token", "")})
        s("logout", expect=204, title="again (idempotent)", body={"refresh_token": t2.get("refresh_token", "")})
        s("refresh", expect=401, title="token of a logged-out family",
          body={"refresh_token": t2.get("refresh_token", "")})
        s("logout", expect=400, title="missing token", body={})

        # me: a user with two sessions, acting through the newer one (the older one is
        # revoked below, and the first login's family was revoked by the reuse above; a
        # revoked session's access token is refused on /v1/me)
        memail, mfirst = self.signup("me")
        mr = self.http.post(self.base + "/v1/login", json={"email": memail, "password": PASSWORD}, timeout=30)
        at = mr.json().get("access_token", "") if mr.status_code == 200 else ""
        first_sid = sid_of(mfirst.get("access_token", ""))
        s("getMe", expect=200, title="the caller", token=at)
        s("getMe", expect=401, title="no token",
          also=lambda r: None if r.headers.get("WWW-Authenticate", "").startswith("Bearer")
          else "no WWW-Authenticate: Bearer")
        s("getMe", expect=401, title="garbage token", token="not.a.jwt")
        s("getMe", expect=401, title="forged signature", token=at[:-4] + ("AAAA" if not at.endswith("AAAA") else "BBBB"))
        sessions = s("listMySessions", expect=200, title="live sessions", token=at)
        sids = [x["id"] for x in sessions.json().get("sessions", [])] if sessions.status_code == 200 else []
        if first_sid in sids:
            s("revokeMySession", expect=204, title="own session", path={"id": first_sid}, token=at)
            s("revokeMySession", expect=204, title="own session again", path={"id": first_sid}, token=at)
        s("revokeMySession", expect=404, title="unknown session", path={"id": str(uuid.uuid4())}, token=at)
        s("revokeMySession", expect=404, title="id that is not a UUID", path={"id": "nope"}, token=at)
        s("revokeMySession", expect=401, title="no token", path={"id": str(uuid.uuid4())})

        # password change and account deletion (never run by the fuzzer with a known password)
        pemail, pt = self.signup("password")
        pat = pt.get("access_token", "")
        s("changePassword", expect=401, title="wrong current password", token=pat,
          body={"current_password": PASSWORD + "x", "new_password": "Another-Password-7?"})
        s("changePassword", expect=400, title="weak new password", token=pat,
          body={"current_password": PASSWORD, "new_password": "weak"})
        s("changePassword", expect=400, title="new equals current", token=pat,
          body={"current_password": PASSWORD, "new_password": PASSWORD})
        changed = s("changePassword", expect=200, title="new family, others revoked", token=pat,
                    body={"current_password": PASSWORD, "new_password": "Another-Password-7?"})
        s("refresh", expect=401, title="family revoked by the password change",
          body={"refresh_token": pt.get("refresh_token", "")})
        s("getMe", expect=401, title="access token of a session the password change revoked", token=pat)
        # From here on, the new family's token.
        pat = changed.json().get("access_token", "") if changed.status_code == 200 else ""
        s("deleteMe", expect=401, title="wrong password", token=pat, body={"password": PASSWORD})
        s("deleteMe", expect=400, title="missing password", token=pat, body={})
        s("deleteMe", expect=204, title="account deleted", token=pat, body={"password": "Another-Password-7?"})
        s("getMe", expect=401, title="token of a deleted user", token=pat)
        s("login", expect=401, title="deleted user", body={"email": pemail, "password": "Another-Password-7?"})

        # lockout
        lemail, _ = self.signup("lockout")
        for _ in range(5):
            self.http.post(self.base + "/v1/login", json={"email": lemail, "password": "Wrong-Password-1!"}, timeout=30)
        s("login", expect=429, title="locked after repeated failures, even with the right password",
          body={"email": lemail, "password": PASSWORD})

        # admin
        vemail, vt = self.signup("victim")
        victim = vt.get("user", {}).get("id", str(uuid.uuid4()))
        vat = vt.get("access_token", "")
        s("adminListUsers", expect=200, title="exact email", token=self.admin, query={"email": vemail},
          also=lambda r: None if [u["email"] for u in r.json()["users"]] == [vemail] else r.text[:200])
        s("adminListUsers", expect=200, title="prefix, % is literal", token=self.admin,
          query={"email": "flow-%"}, also=lambda r: None if r.json()["users"] == [] else "wildcard matched")
        s("adminListUsers", expect=200, title="no filter", token=self.admin)
        s("adminListUsers", expect=400, title="limit 0", token=self.admin, query={"limit": 0})
        s("adminListUsers", expect=400, title="limit 101", token=self.admin, query={"limit": 101})
        s("adminListUsers", expect=403, title="not an admin", token=vat)
        s("adminListUsers", expect=401, title="no token")
        s("adminGetUser", expect=200, title="one user, logged in at signup", path={"id": victim}, token=self.admin,
          also=lambda r: None if r.json()["last_login_at"] else "no last_login_at after a signup")
        s("adminGetUser", expect=404, title="unknown user", path={"id": str(uuid.uuid4())}, token=self.admin)
        s("adminGetUser", expect=403, title="not an admin", path={"id": victim}, token=vat)
        s("adminListKeys", expect=200, title="the signing key is current", token=self.admin,
          also=lambda r: None if r.json()["keys"][0]["stage"] == "current" else r.text[:300])
        s("adminListKeys", expect=403, title="not an admin", token=vat)
        s("adminAuditStats", expect=200, title="last 24 hours", token=self.admin,
          also=lambda r: None if sum(r.json()["counts"]["login_succeeded"]) >= 1 else r.text[:300])
        s("adminAuditStats", expect=400, title="since is not a date-time", token=self.admin,
          query={"since": "yesterday"})
        s("adminAuditStats", expect=400, title="since over a month ago", token=self.admin,
          query={"since": "2000-01-01T00:00:00Z"})
        s("adminAuditStats", expect=403, title="not an admin", token=vat)
        us = s("adminListUserSessions", expect=200, title="a user's sessions", path={"id": victim}, token=self.admin)
        fams = [x["id"] for x in us.json().get("sessions", [])] if us.status_code == 200 else []
        s("adminListUserSessions", expect=404, title="unknown user", path={"id": str(uuid.uuid4())}, token=self.admin)
        s("adminListUserSessions", expect=403, title="not an admin", path={"id": victim}, token=vat)
        if fams:
            s("adminRevokeSession", expect=204, title="revoke a family", path={"family_id": fams[0]}, token=self.admin)
            s("adminRevokeSession", expect=204, title="already revoked", path={"family_id": fams[0]}, token=self.admin)
        s("adminRevokeSession", expect=404, title="unknown family", path={"family_id": str(uuid.uuid4())},
          token=self.admin)
        s("adminListUserSessions", expect=200, title="revoked sessions are listed", path={"id": victim},
          token=self.admin,
          also=lambda r: None if any(x["revoked_reason"] == "admin" for x in r.json()["sessions"])
          else "no session revoked by admin listed")
        s("adminRevokeUserSessions", expect=204, title="revoke all", path={"id": victim}, token=self.admin)
        s("adminRevokeUserSessions", expect=404, title="unknown user", path={"id": str(uuid.uuid4())},
          token=self.admin)
        s("adminUpdateUser", expect=400, title="empty patch", path={"id": victim}, token=self.admin, body={})
        s("adminUpdateUser", expect=400, title="unknown role", path={"id": victim}, token=self.admin,
          body={"role": "root"})
        s("adminUpdateUser", expect=404, title="unknown user", path={"id": str(uuid.uuid4())},
          token=self.admin, body={"disabled": True})
        # The victim's sessions are revoked now, and with them its access token: sign in
        # again to be refused as a non-admin rather than as a revoked session.
        vr = self.http.post(self.base + "/v1/login", json={"email": vemail, "password": PASSWORD}, timeout=30)
        vat = vr.json().get("access_token", "") if vr.status_code == 200 else ""
        s("adminUpdateUser", expect=403, title="not an admin", path={"id": victim}, token=vat,
          body={"disabled": True})
        s("adminUpdateUser", expect=200, title="disable", path={"id": victim}, token=self.admin,
          body={"disabled": True}, also=lambda r: None if r.json()["disabled"] is True else "not disabled")
        s("getMe", expect=401, title="token of a disabled user", token=vat)
        s("login", expect=401, title="disabled user", body={"email": vemail, "password": PASSWORD})
        s("adminUpdateUser", expect=200, title="enable and promote", path={"id": victim}, token=self.admin,
          body={"disabled": False, "role": "admin"})
        me = self.http.get(self.base + "/v1/me", headers={"Authorization": f"Bearer {self.admin}"}, timeout=30)
        admin_id = me.json().get("id", str(uuid.uuid4())) if me.status_code == 200 else str(uuid.uuid4())
        s("adminUpdateUser", expect=400, title="an admin cannot demote themself", path={"id": admin_id},
          token=self.admin, body={"role": "user"})
        s("adminListAuditEvents", expect=200, title="all events", token=self.admin)
        s("adminListAuditEvents", expect=200, title="one user's events", token=self.admin,
          query={"user_id": victim, "type": "user_updated", "limit": 10},
          also=lambda r: None if r.json()["events"] and all(e["user_id"] == victim for e in r.json()["events"])
          else r.text[:300])
        s("adminListAuditEvents", expect=400, title="limit 0", token=self.admin, query={"limit": 0})
        first = s("adminListAuditEvents", expect=200, title="a page of two", token=self.admin, query={"limit": 2})
        last_id = first.json()["events"][-1]["id"] if first.status_code == 200 and first.json()["events"] else 1
        s("adminListAuditEvents", expect=200, title="the next page is older", token=self.admin,
          query={"limit": 2, "before": last_id},
          also=lambda r: None if all(e["id"] < last_id for e in r.json()["events"]) else r.text[:300])
        s("adminListAuditEvents", expect=403, title="not an admin", token=at)
        wanted = {"signup", "login_succeeded", "login_failed", "login_locked", "refresh_reuse_detected",
                  "logout", "session_revoked", "password_changed", "account_deleted", "user_updated"}
        s("adminListAuditEvents", expect=200, title="500 events, every kind the flows caused",
          token=self.admin, query={"limit": 500},
          also=lambda r: None if wanted <= {e["type"] for e in r.json()["events"]}
          else f"missing kinds: {sorted(wanted - {e['type'] for e in r.json()['events']})}")

    def run_rate_limits(self) -> None:
        s = self.send
        limited = {"also": lambda r: None if r.json()["error"] == "rate_limited" else r.json()["error"]}
        for _ in range(3):
            s("getJwks", expect=200, title="never limited")
            s("getOpenIdConfiguration", expect=200, title="never limited")
            s("healthz", expect=200, title="never limited")
            s("readyz", expect=200, title="never limited")
            s("metrics", expect=200, title="never limited")
        email = f"flow-rl-{uuid.uuid4().hex[:8]}@example.com"
        r = s("signup", expect=201, title="first signup of this client", body={"email": email, "password": PASSWORD})
        t = r.json() if r.status_code == 201 else {}
        s("signup", expect=429, title="signup bucket spent", body={"email": "x" + email, "password": PASSWORD},
          **limited)
        s("login", expect=429, title="login bucket spent (the admin's login)",
          body={"email": email, "password": PASSWORD}, **limited)
        s("refresh", expect=200, title="refresh has its own bucket", body={"refresh_token": t.get("refresh_token", "")})
        s("refresh", expect=429, title="refresh bucket spent", body={"refresh_token": "x"}, **limited)
        s("logout", expect=204, title="logout has its own bucket", body={"refresh_token": "x"})
        s("logout", expect=429, title="logout bucket spent", body={"refresh_token": "x"}, **limited)
        a = self.admin
        u = str(uuid.uuid4())
        s("getMe", expect=200, title="first read", token=a)
        s("getMe", expect=429, title="reads bucket spent", token=a, **limited)
        s("listMySessions", expect=429, title="reads bucket spent", token=a, **limited)
        s("adminListUsers", expect=429, title="reads bucket spent", token=a, **limited)
        s("adminListUserSessions", expect=429, title="reads bucket spent", path={"id": u}, token=a, **limited)
        s("adminListAuditEvents", expect=429, title="reads bucket spent", token=a, **limited)
        s("adminGetUser", expect=429, title="reads bucket spent", path={"id": u}, token=a, **limited)
        s("adminListKeys", expect=429, title="reads bucket spent", token=a, **limited)
        s("adminAuditStats", expect=429, title="reads bucket spent", token=a, **limited)
        s("revokeMySession", expect=404, title="first write", path={"id": u}, token=a)
        s("revokeMySession", expect=429, title="writes bucket spent", path={"id": u}, token=a, **limited)
        s("changePassword", expect=429, title="writes bucket spent", token=a,
          body={"current_password": "x", "new_password": "y"}, **limited)
        s("deleteMe", expect=429, title="writes bucket spent", token=a, body={"password": "x"}, **limited)
        s("adminUpdateUser", expect=429, title="writes bucket spent", path={"id": u}, token=a,
          body={"disabled": True}, **limited)
        s("adminRevokeSession", expect=429, title="writes bucket spent", path={"family_id": u}, token=a, **limited)
        s("adminRevokeUserSessions", expect=429, title="writes bucket spent", path={"id": u}, token=a, **limited)


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] not in ("main", "rate-limits"):
        print(__doc__)
        return 2
    flows = Flows(*argv[1:])
    flows.run() if argv[0] == "main" else flows.run_rate_limits()
    print(f"flows: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
