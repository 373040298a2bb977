-- A password check in flight holds a lease on each of its lockout keys (its email or
-- session, and its client's address), so a check counts against the limit from the
-- moment it is admitted, in every process that shares the database. A lease ends with
-- its check; one whose process died ends at expires_at.
CREATE TABLE login_leases (
    key        TEXT NOT NULL,
    id         TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (key, id)
) WITHOUT ROWID;
CREATE INDEX login_leases_id ON login_leases (id);
