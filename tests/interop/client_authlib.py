"""A service client written with Authlib, given only the issuer URL and its credentials.

    python client_authlib.py ISSUER CLIENT_ID CLIENT_SECRET

Reads RFC 8414 metadata, then for client_secret_basic and client_secret_post in turn:
obtains a token (client credentials, scope "introspect"), introspects it (active, with
its client_id), introspects junk (exactly {"active": false}) and revokes an unknown token
(200). Prints one "ok ..." line per check and exits 0 only if all passed.
"""

import sys

import requests
from authlib.integrations.requests_client import OAuth2Session

issuer, client_id, secret = sys.argv[1:4]
failed = 0


def check(name, ok, detail=""):
    global failed
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f": {detail}"))
    failed += 0 if ok else 1


meta = requests.get(issuer + "/.well-known/oauth-authorization-server", timeout=10).json()
check("authlib: RFC 8414 metadata names the token endpoint", "token_endpoint" in meta, meta)
for method in ("client_secret_basic", "client_secret_post"):
    session = OAuth2Session(
        client_id, secret, token_endpoint_auth_method=method, scope="introspect"
    )
    token = session.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    check(
        f"authlib ({method}) obtains a Bearer token with scope introspect",
        token.get("token_type") == "Bearer" and token.get("scope") == "introspect",
        token,
    )
    answer = session.introspect_token(
        meta["introspection_endpoint"], token=token["access_token"]
    )
    body = answer.json()
    check(
        f"authlib ({method}) introspects it: active, its client_id",
        answer.status_code == 200 and body.get("active") is True and body.get("client_id") == client_id,
        body,
    )
    answer = session.introspect_token(meta["introspection_endpoint"], token="not-a-token")
    check(
        f"authlib ({method}) introspects junk: exactly inactive",
        answer.status_code == 200 and answer.json() == {"active": False},
        answer.text,
    )
    answer = session.revoke_token(meta["revocation_endpoint"], token="unknown-token")
    check(f"authlib ({method}) revokes an unknown token: 200", answer.status_code == 200, answer.text)

sys.exit(1 if failed else 0)
