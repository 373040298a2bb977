-- gatehouse schema for PostgreSQL, version 1: the same tables as SQLite's migrations 1-3.
-- Times are timestamptz (written in whole seconds, as SQLite stores them), ids uuid,
-- token hashes bytea. Every WHERE the store writes has an index below.

CREATE TABLE users (
    id                  uuid PRIMARY KEY,
    -- "C": byte order, so the prefix search's range [q, q || U+10FFFF) is exact and
    -- uses this index, whatever the database's default collation.
    email               text COLLATE "C" NOT NULL,
    password_hash       text NOT NULL,                -- Argon2id PHC string
    role                text NOT NULL CHECK (role IN ('user', 'admin')),
    disabled            boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    -- Counts password changes; a family opened under an older count is dead.
    password_generation bigint NOT NULL DEFAULT 0,
    -- The store recognises a taken email by this name (SQLSTATE 23505), never by text.
    CONSTRAINT users_email_key UNIQUE (email)
);
CREATE INDEX users_created ON users (created_at DESC, email);

CREATE TABLE refresh_families (
    id                  uuid PRIMARY KEY,             -- the access token's sid
    user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at          timestamptz NOT NULL,
    last_used_at        timestamptz NOT NULL,
    expires_at          timestamptz NOT NULL,         -- absolute: login + family TTL
    revoked_at          timestamptz,
    revoked_reason      text CHECK (revoked_reason IN ('logout', 'reuse_detected', 'admin', 'password_change')),
    user_agent          text,
    ip                  text,
    password_generation bigint NOT NULL DEFAULT 0
);
CREATE INDEX refresh_families_user ON refresh_families (user_id, created_at);
CREATE INDEX refresh_families_expiry ON refresh_families (expires_at);

-- Only SHA-256 hashes of refresh tokens. Spent tokens stay until their family's
-- absolute expiry, so a late replay is still recognised as reuse.
CREATE TABLE refresh_tokens (
    hash        bytea PRIMARY KEY CHECK (octet_length(hash) = 32),
    family_id   uuid NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    parent_hash bytea,
    issued_at   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,                 -- idle expiry, capped by the family's
    spent_at    timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
-- One child per token, even for a bug in the claim.
CREATE UNIQUE INDEX refresh_tokens_parent ON refresh_tokens (parent_hash) WHERE parent_hash IS NOT NULL;

-- Failed-login counters, one fixed window per key ("email:<addr>", "ip:<bucket>", ...).
CREATE TABLE login_attempts (
    key          text PRIMARY KEY,
    window_start timestamptz NOT NULL,
    failures     integer NOT NULL
);
CREATE INDEX login_attempts_window ON login_attempts (window_start);

-- Security events. user_id is not a foreign key: events outlive deleted users.
CREATE TABLE audit_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL,
    type       text NOT NULL,
    user_id    uuid,
    family_id  uuid,
    actor_id   uuid,
    ip         text,
    user_agent text,
    outcome    text NOT NULL,
    detail     text
);
CREATE INDEX audit_events_user ON audit_events (user_id, id);
CREATE INDEX audit_events_type ON audit_events (type, id);
CREATE INDEX audit_events_at ON audit_events (at);
