-- Passkeys (issue #21). A WebAuthn credential per row: credential_id is the
-- authenticator's id (unique across users: one authenticator key names one account),
-- credential holds webauthn-rs's serialized credential (public key, algorithm, flags).
-- sign_count is the last signature counter accepted: a login moves it with a conditional
-- UPDATE, so one counter value is accepted once across every process.
CREATE TABLE passkeys (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id   BLOB NOT NULL UNIQUE,
    credential      TEXT NOT NULL,
    sign_count      INTEGER NOT NULL,
    backup_eligible INTEGER NOT NULL,
    backup_state    INTEGER NOT NULL,
    name            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    last_used_at    INTEGER
);
CREATE INDEX passkeys_user ON passkeys (user_id);

-- A WebAuthn ceremony between its options and its response: SHA-256 of the flow_id,
-- what it is for (register, login, mfa), whom (user, or the mfa_token's hash), and the
-- relying party's state (challenge and all). Taken by a DELETE: first use spends it.
CREATE TABLE webauthn_flows (
    hash           BLOB PRIMARY KEY,
    kind           TEXT NOT NULL,
    user_id        TEXT REFERENCES users (id) ON DELETE CASCADE,
    mfa_token_hash BLOB,
    state          TEXT NOT NULL,
    expires_at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX webauthn_flows_expiry ON webauthn_flows (expires_at);
