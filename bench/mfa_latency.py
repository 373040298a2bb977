#!/usr/bin/env python3
"""Login + second factor latency, end to end over HTTP: p50/p99 of `POST /v1/login`
(answered 401 `mfa_required`), of `POST /v1/login/mfa`, and of the two together.

    python3 bench/mfa_latency.py [BINARY] [N]      (defaults: target/debug/gatehouse, 200)

Starts BINARY on a free loopback port with a temporary SQLite database and keys directory
(production Argon2 parameters; rate limits off), signs up N users, enrols each in TOTP
(codes computed here, RFC 6238 with the standard library), then logs each in once with
password + code, sequentially. One login per user: a TOTP code is accepted once per
30-second step, so a loop over one user would measure refusals. Python standard library only.
"""
import base64, hashlib, hmac, json, os, socket, struct, subprocess, sys, tempfile, time
import urllib.request, urllib.error

BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/debug/gatehouse"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 200
PASSWORD = "Tr0ub4dor&3-horse"


def totp(secret_b32, at):
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(at) // 30), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return "%06d" % (value % 1_000_000)


def call(base, path, body, token=None):
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp()
    env = dict(os.environ, GATEHOUSE_BIND=f"127.0.0.1:{port}",
               GATEHOUSE_DATABASE=os.path.join(tmp, "g.db"),
               GATEHOUSE_KEYS_DIR=os.path.join(tmp, "keys"), GATEHOUSE_RATE_LIMITS="off")
    server = subprocess.Popen([BINARY, "serve"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        users = []
        for i in range(N):
            email = f"bench-{i}-{os.getpid()}@example.com"
            status, body = call(base, "/v1/signup", {"email": email, "password": PASSWORD})
            assert status == 201, body
            access = body["access_token"]
            status, body = call(base, "/v1/me/mfa/totp", {"password": PASSWORD}, access)
            assert status == 200, body
            secret = body["secret"]
            status, body = call(base, "/v1/me/mfa/totp/confirm", {"code": totp(secret, time.time())}, access)
            assert status == 200, body
            users.append((email, secret))
        # Every confirming code claimed the current step: log in with the next one (one step
        # of drift is accepted), so no login meets its own confirming code.
        login, second, both = [], [], []
        for email, secret in users:
            t0 = time.perf_counter()
            status, body = call(base, "/v1/login", {"email": email, "password": PASSWORD})
            t1 = time.perf_counter()
            assert status == 401 and body["error"] == "mfa_required", body
            status, body = call(base, "/v1/login/mfa",
                                {"mfa_token": body["mfa_token"], "code": totp(secret, time.time() + 30)})
            t2 = time.perf_counter()
            assert status == 200, body
            login.append(t1 - t0)
            second.append(t2 - t1)
            both.append(t2 - t0)
        for name, values in [("POST /v1/login (mfa_required)", login),
                             ("POST /v1/login/mfa", second), ("login + mfa", both)]:
            print(f"{name:32} n={len(values)}  p50 {pct(values, 50) * 1000:7.1f} ms"
                  f"  p99 {pct(values, 99) * 1000:7.1f} ms")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
