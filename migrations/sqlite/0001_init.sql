-- gatehouse schema, version 1. Times are INTEGER unix seconds (UTC).

CREATE TABLE users (
    id            TEXT PRIMARY KEY,              -- UUID
    email         TEXT NOT NULL UNIQUE,          -- normalized: trimmed, lower-case
    password_hash TEXT NOT NULL,                 -- Argon2id PHC string
    role          TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

-- One family per login: every refresh token descends from that login's first token.
CREATE TABLE refresh_families (
    id             TEXT PRIMARY KEY,             -- UUID, the access token's sid
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at     INTEGER NOT NULL,
    last_used_at   INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,             -- absolute: login + family TTL
    revoked_at     INTEGER,
    revoked_reason TEXT CHECK (revoked_reason IN ('logout', 'reuse_detected', 'admin', 'password_change')),
    user_agent     TEXT,
    ip             TEXT
);
CREATE INDEX refresh_families_user ON refresh_families (user_id, created_at);
CREATE INDEX refresh_families_expiry ON refresh_families (expires_at);

-- Only SHA-256 hashes of refresh tokens are stored. Spent tokens stay until their
-- family's absolute expiry, so a late replay is still recognised as reuse.
CREATE TABLE refresh_tokens (
    hash        BLOB PRIMARY KEY,
    family_id   TEXT NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    parent_hash BLOB,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,                -- idle expiry, capped by the family's
    spent_at    INTEGER
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE UNIQUE INDEX refresh_tokens_parent ON refresh_tokens (parent_hash) WHERE parent_hash IS NOT NULL;

-- Failed-login counters, one fixed window per key ("email:<addr>" or "ip:<addr>").
CREATE TABLE login_attempts (
    key          TEXT PRIMARY KEY,
    window_start INTEGER NOT NULL,
    failures     INTEGER NOT NULL
) WITHOUT ROWID;

-- Security events. user_id is not a foreign key: events outlive deleted users.
CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    type       TEXT NOT NULL,
    user_id    TEXT,
    family_id  TEXT,
    actor_id   TEXT,
    ip         TEXT,
    user_agent TEXT,
    outcome    TEXT NOT NULL,
    detail     TEXT
);
CREATE INDEX audit_events_user ON audit_events (user_id, id);
CREATE INDEX audit_events_type ON audit_events (type, id);
CREATE INDEX audit_events_at ON audit_events (at);
