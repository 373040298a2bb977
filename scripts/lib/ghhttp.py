#!/usr/bin/env python3
"""Tiny HTTP client for the test scripts (no curl needed): python3 only, stdlib only.

    ghhttp.py METHOD URL [JSON_BODY] [BEARER]   prints the body, then the status on the last line
    ghhttp.py --status URL                      prints only the status (000 when unreachable)
"""
import sys
import urllib.error
import urllib.request


def request(method, url, body=None, bearer=None, timeout=10):
    data = body.encode() if body else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if bearer:
        req.add_header("Authorization", "Bearer " + bearer)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def main(argv):
    if len(argv) >= 2 and argv[0] == "--status":
        try:
            status, _ = request("GET", argv[1], timeout=2)
        except Exception:
            status = 0
        print(f"{status:03d}")
        return 0
    method, url = argv[0], argv[1]
    body = argv[2] if len(argv) > 2 and argv[2] else None
    bearer = argv[3] if len(argv) > 3 and argv[3] else None
    status, payload = request(method, url, body, bearer)
    sys.stdout.write(payload.decode("utf-8", "replace"))
    sys.stdout.write(f"\n{status}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
