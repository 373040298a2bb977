-- Second factors (issue #20). A user's TOTP secret, sealed (AES-256-GCM) by the
-- service; pending until a code confirms it (enabled_at). last_totp_step is the last
-- time step a code was accepted for: claiming a step is a conditional UPDATE on it.
CREATE TABLE mfa_totp (
    user_id        TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    sealed_secret  BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    enabled_at     INTEGER,
    last_totp_step INTEGER
);

-- SHA-256 of each unused recovery code; using one deletes its row.
CREATE TABLE mfa_recovery_codes (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hash       BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, hash)
) WITHOUT ROWID;

-- A login between its password and its second factor: SHA-256 of the opaque token.
CREATE TABLE mfa_tokens (
    hash                BLOB PRIMARY KEY,
    user_id             TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    password_generation INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    spent_at            INTEGER,
    ip                  TEXT,
    user_agent          TEXT
) WITHOUT ROWID;
CREATE INDEX mfa_tokens_user ON mfa_tokens (user_id);

-- How a family's login was authenticated (RFC 8176 amr, space-separated).
ALTER TABLE refresh_families ADD COLUMN amr TEXT NOT NULL DEFAULT 'pwd';
