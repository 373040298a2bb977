-- Second factors (issue #20); the same tables as SQLite's 0006_mfa.sql.
CREATE TABLE mfa_totp (
    user_id        uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    sealed_secret  bytea NOT NULL,
    created_at     timestamptz NOT NULL,
    enabled_at     timestamptz,
    -- The last time step a code was accepted for; claimed by a conditional UPDATE.
    last_totp_step bigint
);

CREATE TABLE mfa_recovery_codes (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hash       bytea NOT NULL CHECK (octet_length(hash) = 32),
    created_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, hash)
);

CREATE TABLE mfa_tokens (
    hash                bytea PRIMARY KEY CHECK (octet_length(hash) = 32),
    user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    password_generation bigint NOT NULL,
    created_at          timestamptz NOT NULL,
    expires_at          timestamptz NOT NULL,
    spent_at            timestamptz,
    ip                  text,
    user_agent          text
);
CREATE INDEX mfa_tokens_user ON mfa_tokens (user_id);

ALTER TABLE refresh_families ADD COLUMN amr text NOT NULL DEFAULT 'pwd';
