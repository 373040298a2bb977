#!/usr/bin/env python3
"""Makes bad variants of a real gatehouse access token, to prove the verifiers refuse them.

    python forge.py MODE TOKEN KEYS_DIR      prints the forged token

The variants that need a valid signature are signed with gatehouse's own private key (the
`*.pem` in KEYS_DIR whose RFC 7638 thumbprint is the token's `kid`), so the only thing wrong
with them is the one claim or header the mode changes:

    control   same header and claims, re-signed       -> must VERIFY (proves the re-signing is sound)
    tampered  `role` flipped in the payload, original signature kept
    audience  `aud` = "another-service", re-signed
    issuer    `iss` = "https://evil.example", re-signed
    expired   `exp`/`iat`/`nbf` an hour in the past, re-signed
    none      `alg` none, no signature
    hs256     `alg` HS256 with the public key's PEM as the HMAC secret (algorithm confusion)
    unknown-kid  `kid` of a key nobody published, signed with a fresh RSA key
"""

import base64
import hashlib
import hmac
import json
import pathlib
import sys
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def thumbprint(public_key) -> str:
    numbers = public_key.public_numbers()
    n = b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"))
    e = b64(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"))
    canonical = json.dumps({"e": e, "kty": "RSA", "n": n}, separators=(",", ":"), sort_keys=True)
    return b64(hashlib.sha256(canonical.encode()).digest())


def signing_key(keys_dir: str, kid: str):
    for path in sorted(pathlib.Path(keys_dir).rglob("*.pem")):
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError):
            continue
        if isinstance(key, rsa.RSAPrivateKey) and thumbprint(key.public_key()) == kid:
            return key
    raise SystemExit(f"forge.py: no private key with kid {kid} under {keys_dir}")


def rs256(key, header: dict, claims: dict) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


def main(mode: str, token: str, keys_dir: str) -> str:
    h64, p64, s64 = token.split(".")
    header, claims = json.loads(unb64(h64)), json.loads(unb64(p64))
    if mode == "tampered":
        claims["role"] = "user" if claims.get("role") == "admin" else "admin"
        return f"{h64}.{b64(json.dumps(claims).encode())}.{s64}"
    if mode == "none":
        return f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{p64}."
    if mode == "unknown-kid":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return rs256(other, {**header, "kid": thumbprint(other.public_key())}, claims)
    key = signing_key(keys_dir, header["kid"])
    if mode == "hs256":
        secret = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        signing_input = f"{b64(json.dumps({**header, 'alg': 'HS256'}).encode())}.{p64}"
        return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"
    if mode == "audience":
        claims["aud"] = "another-service"
    elif mode == "issuer":
        claims["iss"] = "https://evil.example"
    elif mode == "expired":
        now = int(time.time())
        claims.update(iat=now - 3600, nbf=now - 3600, exp=now - 3000)
    elif mode != "control":
        raise SystemExit(f"forge.py: unknown mode {mode}")
    return rs256(key, header, claims)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    print(main(*sys.argv[1:]))
