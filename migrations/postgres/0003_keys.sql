-- gatehouse schema for PostgreSQL, version 2: the signing-key ring and the refresh-token
-- secret, so that replicas need no shared writable file system. Private material is
-- stored only sealed (AES-256-GCM under the key-encryption key, which is never stored
-- here); see src/crypto/sealing.rs.

CREATE TABLE signing_keys (
    -- RFC 7638 thumbprint of the public key, as published in the JWKS.
    kid          text PRIMARY KEY,
    -- `key-<UTC timestamp>.pem`, or the file name an imported key had.
    name         text NOT NULL UNIQUE,
    stage        text NOT NULL CHECK (stage IN ('next', 'current', 'retired')),
    published_at timestamptz NOT NULL,
    activated_at timestamptz,                       -- signs since
    retired_at   timestamptz,                       -- published until this + access TTL
    -- The PKCS#8 DER private key, sealed with the kid as associated data.
    sealed_key   bytea NOT NULL
);
-- One signing key, whatever two replicas or operators do at once.
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (stage) WHERE stage = 'current';

-- Sealed secrets by purpose: 'refresh' (the refresh-child HMAC key) and 'kek-check' (a
-- known value sealed under the KEK, so a wrong KEK is recognised before any key exists).
CREATE TABLE sealed_secrets (
    purpose    text PRIMARY KEY,
    sealed     bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
