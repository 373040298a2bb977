-- Service clients (OAuth 2.0 client credentials), and what the revocation feed needs.

CREATE TABLE clients (
    id           uuid PRIMARY KEY,                -- the client_id
    name         text NOT NULL,
    scopes       text NOT NULL,                   -- space-separated, sorted, no duplicates
    audience     text,                            -- NULL: the audience user tokens carry
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    disabled     boolean NOT NULL DEFAULT false
);

-- SHA-256 of each secret (256 random bits, so no salt or slow hash is needed). A secret
-- replaced by a rotation keeps working until not_after; the current one has none.
CREATE TABLE client_secrets (
    client_id  uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    hash       bytea NOT NULL CHECK (octet_length(hash) = 32),
    created_at timestamptz NOT NULL,
    not_after  timestamptz,
    PRIMARY KEY (client_id, hash)
);

-- Families deleted with their user: the feed lists their ids as it lists revoked
-- families, from listed_from (when the family was revoked, or else deleted) for one
-- access-token lifetime. Rows older than the longest lifetime (1 h) are pruned.
CREATE TABLE family_tombstones (
    id          uuid PRIMARY KEY,                 -- the family's id (an access token's sid)
    listed_from timestamptz NOT NULL
);
CREATE INDEX family_tombstones_listed ON family_tombstones (listed_from);

-- The feed reads the families revoked since a moment: a small slice of the table.
CREATE INDEX refresh_families_revoked ON refresh_families (revoked_at)
    WHERE revoked_at IS NOT NULL;
