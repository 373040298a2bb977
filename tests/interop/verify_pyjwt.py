#!/usr/bin/env python3
"""A third-party verifier of gatehouse access tokens: PyJWT with PyJWKClient, given only the issuer.

    python verify_pyjwt.py ISSUER_URL [AUDIENCE]        (AUDIENCE defaults to "gatehouse")

Reads `<issuer>/.well-known/openid-configuration` once, checks that its `issuer` is exactly
ISSUER_URL, takes `jwks_uri` from it and verifies tokens the way a backend service would:
RS256 only, `iss` and `aud` checked, `exp`/`iat`/`nbf`/`sub` required, the key chosen by `kid`
from the cached JWK Set. Long-lived, one command per stdin line, one answer per line:

    VERIFY <jwt>  ->  OK kid=<kid> sub=<sub> fetches=<n>   |  FAIL <error> fetches=<n>
    RELOAD        ->  OK kids=<kid,kid,...> fetches=<n>     (fetch the JWK Set now, as a periodic refresh would)
    FETCHES       ->  OK fetches=<n>

The JWK Set cache lives 10 minutes and an unknown `kid` may trigger a refetch only 10 minutes
after the last fetch, so within a test run a token verifies only if its key was already in the
set this instance cached; `fetches` counts JWKS downloads so the driver can prove it.
"""

import json
import sys
import urllib.request

import jwt
from jwt import PyJWKClient


class CountingJWKClient(PyJWKClient):
    fetches = 0

    def fetch_data(self):
        CountingJWKClient.fetches += 1
        return super().fetch_data()


def answer(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    issuer = sys.argv[1]
    audience = sys.argv[2] if len(sys.argv) > 2 else "gatehouse"
    try:
        with urllib.request.urlopen(issuer.rstrip("/") + "/.well-known/openid-configuration", timeout=10) as r:
            discovery = json.load(r)
        if discovery.get("issuer") != issuer:
            raise ValueError(f"discovery issuer {discovery.get('issuer')!r} is not {issuer!r}")
        jwks_uri = discovery["jwks_uri"]
        client = CountingJWKClient(jwks_uri, cache_jwk_set=True, lifespan=600, cooldown_duration=600)
    except Exception as exc:  # noqa: BLE001
        answer(f"FAIL discovery: {type(exc).__name__}: {exc}")
        return 1
    answer(f"READY jwks_uri={jwks_uri}")

    for raw in sys.stdin:
        cmd, _, arg = raw.strip().partition(" ")
        try:
            if cmd == "VERIFY":
                key = client.get_signing_key_from_jwt(arg)
                claims = jwt.decode(
                    arg,
                    key.key,
                    algorithms=["RS256"],
                    audience=audience,
                    issuer=issuer,
                    options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub"]},
                )
                answer(f"OK kid={key.key_id} sub={claims['sub']} fetches={client.fetches}")
            elif cmd == "RELOAD":
                keys = client.get_signing_keys(refresh=True)
                answer(f"OK kids={','.join(k.key_id for k in keys)} fetches={client.fetches}")
            elif cmd == "FETCHES":
                answer(f"OK fetches={client.fetches}")
            else:
                answer(f"FAIL unknown command {cmd!r}")
        except Exception as exc:  # noqa: BLE001 - every failure is an answer, never a crash
            answer(f"FAIL {type(exc).__name__}: {' '.join(str(exc).split())} fetches={client.fetches}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
