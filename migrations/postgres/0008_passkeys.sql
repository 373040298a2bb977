-- Passkeys (issue #21); the same tables as SQLite's 0008_passkeys.sql.
CREATE TABLE passkeys (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id   bytea NOT NULL UNIQUE,
    credential      text NOT NULL,
    -- The last signature counter accepted; moved by a conditional UPDATE.
    sign_count      bigint NOT NULL,
    backup_eligible boolean NOT NULL,
    backup_state    boolean NOT NULL,
    name            text NOT NULL,
    created_at      timestamptz NOT NULL,
    last_used_at    timestamptz
);
CREATE INDEX passkeys_user ON passkeys (user_id);

CREATE TABLE webauthn_flows (
    hash           bytea PRIMARY KEY CHECK (octet_length(hash) = 32),
    kind           text NOT NULL,
    user_id        uuid REFERENCES users (id) ON DELETE CASCADE,
    mfa_token_hash bytea,
    state          text NOT NULL,
    expires_at     timestamptz NOT NULL
);
CREATE INDEX webauthn_flows_expiry ON webauthn_flows (expires_at);
