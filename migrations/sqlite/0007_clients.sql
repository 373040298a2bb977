-- Service clients (OAuth 2.0 client credentials), and what the revocation feed needs.
-- Times are INTEGER unix seconds (UTC), as everywhere.

CREATE TABLE clients (
    id           TEXT PRIMARY KEY,               -- UUID, the client_id
    name         TEXT NOT NULL,
    scopes       TEXT NOT NULL,                  -- space-separated, sorted, no duplicates
    audience     TEXT,                           -- NULL: the audience user tokens carry
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    disabled     INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1))
);

-- SHA-256 of each secret (256 random bits, so no salt or slow hash is needed). A secret
-- replaced by a rotation keeps working until not_after; the current one has none.
CREATE TABLE client_secrets (
    client_id  TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    hash       BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    not_after  INTEGER,
    PRIMARY KEY (client_id, hash)
) WITHOUT ROWID;

-- Families deleted with their user: the feed lists their ids as it lists revoked
-- families, from listed_from (when the family was revoked, or else deleted) for one
-- access-token lifetime. Rows older than the longest lifetime (1 h) are pruned.
CREATE TABLE family_tombstones (
    id          TEXT PRIMARY KEY,                -- the family's id (an access token's sid)
    listed_from INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX family_tombstones_listed ON family_tombstones (listed_from);

-- The feed reads the families revoked since a moment: a small slice of the table.
CREATE INDEX refresh_families_revoked ON refresh_families (revoked_at)
    WHERE revoked_at IS NOT NULL;
