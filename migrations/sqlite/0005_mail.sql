-- Mail (#19): verified addresses, mail tokens and the outbox. Times are unix seconds.
-- The CHECK on refresh_families.revoked_reason gains 'password_reset' in the migration's
-- hook (sqlite/mod.rs): SQLite cannot alter a CHECK, and rebuilding the table would
-- cascade-delete every refresh token.

ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0 CHECK (email_verified IN (0, 1));

-- Only SHA-256 hashes of mail tokens. `purpose`: verify (the address), change (to
-- `new_email`), reset (the password). Spent or superseded tokens have `spent_at`.
CREATE TABLE mail_tokens (
    hash       BLOB PRIMARY KEY CHECK (length(hash) = 32),
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    TEXT NOT NULL CHECK (purpose IN ('verify', 'change', 'reset')),
    new_email  TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    spent_at   INTEGER
);
CREATE INDEX mail_tokens_user ON mail_tokens (user_id, purpose);
CREATE INDEX mail_tokens_expiry ON mail_tokens (expires_at);

-- Mail written in the transaction of the action that causes it, sent in the background.
-- The bodies (which carry the token's link) are blanked once the mail is sent, failed
-- or expired: only a queued mail holds a live token in clear.
CREATE TABLE mail_outbox (
    id              TEXT PRIMARY KEY,             -- UUID, also the Message-ID's left part
    user_id         TEXT REFERENCES users (id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,                -- verify | change | notice | reset
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body_text       TEXT NOT NULL,
    body_html       TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('queued', 'sent', 'failed', 'expired')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    lease_until     INTEGER,
    finished_at     INTEGER,
    last_error      TEXT
);
CREATE INDEX mail_outbox_due ON mail_outbox (status, next_attempt_at);
CREATE INDEX mail_outbox_user ON mail_outbox (user_id, created_at);
